"""C-FIND SCP (Patient Root and Study Root): match the identifier against the index, answer the asked keys.

Statuses (PS3.4 C.4.1.1.4): 0xFF00 pending per match, 0x0000 at the end, 0xFE00 after C-CANCEL,
0xA900 for a level the information model does not have, 0xA700 when more entities match than
the result limit allows (refine the query), 0xC001 for a matching value that cannot be understood,
0xC002 when the index cannot be reached.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.scp import find_answer
from services.scp.find_answer import INTEGER_FORMATS, FindAnswer, Integer, Value, stored_value, text_of
from services.scp.statuses import failure
from shared.live_config import LiveConfig
from shared.query.dicomjson import json_element
from shared.query.matching import InvalidMatchingKey
from shared.query.search import Query, TooManyMatches, run_query
from shared.query.sequences import SequenceKey

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCELLED = 0xFE00
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS_KEY = 0xC001
UNABLE_TO_PROCESS_INDEX = 0xC002

LEVELS_OF_MODEL = {
    PatientRootQueryRetrieveInformationModelFind: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    StudyRootQueryRetrieveInformationModelFind: ("STUDY", "SERIES", "IMAGE"),
}
QUERY_RETRIEVE_LEVEL = 0x00080052
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


def requested_values(identifier: Dataset) -> tuple[dict[str, Any], list[str]]:
    """Keyword → matching value (text, list, SequenceKey, or None for universal) and the keywords to return,
    in order."""
    values: dict[str, Any] = {}
    for element in identifier:
        keyword = element.keyword or keyword_for_tag(element.tag)
        if not keyword or keyword in _NOT_KEYS or element.tag.group == 0x0002:
            continue
        values[keyword] = _query_value(element)
    return values, list(values)


def _query_value(element: DataElement) -> Any:
    if element.VR == "SQ":  # sequence matching on the first (the only allowed) item
        items = element.value or []
        return SequenceKey(tuple(requested_values(items[0])[0].items()) if len(items) else ())
    value = element.value
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return [str(item) for item in value]
    return str(value)


def _element(keyword: str, value: Any, attributes: dict[str, Any] | None, asked: Any = None,
             ) -> tuple[int, str, Value] | None:
    """The (tag, VR, value) of one returned key: from the index row, or (``attributes``) from the stored ones."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    vr = str(dictionary_VR(tag))
    if attributes is not None:
        stored = json_element(attributes, keyword)
        if isinstance(asked, SequenceKey):
            stored = asked.answer(stored)
        if stored is None:
            return tag, vr, None
        stored_vr = str(stored.get("vr") or vr)
        text = stored_value(stored_vr, stored)
        if text is not None:
            return tag, stored_vr, text
        return tag, stored_vr, Dataset.from_json({f"{tag:08X}": stored})[tag]
    if value is None or value == []:
        return tag, vr, None
    if vr in INTEGER_FORMATS and not isinstance(value, list):
        return tag, vr, Integer(int(value))
    return tag, vr, text_of(value)


def build_response(level: str, row: dict[str, Any], order: list[str], asked: dict[str, Any] | None = None,
                   ) -> FindAnswer:
    """The answer for one entity: exactly the requested keys (``asked`` holds their query values, which shape
    sequence answers), in UTF-8 (with its Specific Character Set) when a value is not ASCII."""
    attributes = row.get("_attributes")
    elements = []
    for keyword in order:
        in_row = keyword in row
        element = _element(keyword, row.get(keyword), None if in_row else (attributes or {}),
                           (asked or {}).get(keyword))
        if element is not None:
            elements.append(element)
    elements.append((QUERY_RETRIEVE_LEVEL, "CS", text_of(level)))
    return FindAnswer(elements)


CANCEL_CHECK_EVERY = 64  # answers sent between two chances for a C-CANCEL to be read (a query of up to this many
# answers never pauses for it: each pause waits for the queued answers to be sent, a few ms of its latency)
_DRAIN_WAIT_SECONDS = 5.0


def _let_incoming_through(assoc: Any) -> None:
    """Wait until the answers queued so far are sent. pynetdicom's DUL thread reads incoming PDUs only when it has
    nothing to send, so without this pause a fast query would queue every answer before a C-CANCEL is read."""
    outgoing = assoc.dul.to_provider_queue
    deadline = time.monotonic() + _DRAIN_WAIT_SECONDS
    while not outgoing.empty() and time.monotonic() < deadline:
        time.sleep(0.0005)
    time.sleep(0.001)  # one DUL loop: it reads what has arrived


EARLY_CANCEL_ATTRIBUTE = "find_cancelled_before_served"


def note_early_cancel(assoc: Any, request: Any) -> None:
    """Before pynetdicom serves a C-FIND: note whether its C-CANCEL has already arrived.

    A C-CANCEL may follow its request at any time (PS3.7 9.3.2.3), so it can be read while the request still waits
    for the association's thread. pynetdicom empties its C-CANCEL requests just before it serves a request (to drop
    stale ones), that one included, and the query then ran to its end: kept on the association for ``handle``."""
    setattr(assoc, EARLY_CANCEL_ATTRIBUTE, request.MessageID if request.MessageID in assoc.dimse.cancel_req else None)


def _cancelled_before_served(event: Any) -> bool:
    return getattr(event.assoc, EARLY_CANCEL_ATTRIBUTE, None) == event.request.MessageID


class FindService:
    def __init__(self, sessions: sessionmaker[Session], result_limit: int, live_config: LiveConfig) -> None:
        find_answer.install()
        self._sessions = sessions
        self._result_limit = result_limit
        self._live_config = live_config

    def handle(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """The EVT_C_FIND handler."""
        if _cancelled_before_served(event):
            yield CANCELLED, None
            return
        try:
            identifier: Dataset = event.identifier
            level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        except Exception:
            yield failure(IDENTIFIER_DOES_NOT_MATCH, "identifier cannot be decoded"), None
            return
        model = str(event.request.AffectedSOPClassUID)
        if level not in LEVELS_OF_MODEL.get(model, ()):
            yield failure(IDENTIFIER_DOES_NOT_MATCH, "query level not in this information model"), None
            return
        values, order = requested_values(identifier)
        query = Query(level=level, values=values, limit=self._result_limit, requested=order,
                      ignore_accents=self._live_config.current().config.patient_name_ignore_accents)
        try:
            with self._sessions() as session:
                rows = run_query(session, query)
        except TooManyMatches:
            log.info("find.too_many_matches limit=%d", self._result_limit)
            yield failure(OUT_OF_RESOURCES, f"more than {self._result_limit} matches: refine the query"), None
            return
        except InvalidMatchingKey as exc:
            yield failure(UNABLE_TO_PROCESS_KEY, str(exc)), None
            return
        except SQLAlchemyError as exc:
            log.error("find.index_unavailable error=%s", exc.__class__.__name__)
            yield failure(UNABLE_TO_PROCESS_INDEX, "index unavailable"), None
            return
        log.info("find.done level=%s matches=%d", level, len(rows))
        for index, row in enumerate(rows):
            if index and index % CANCEL_CHECK_EVERY == 0:
                _let_incoming_through(event.assoc)
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, build_response(level, row, order, values)
