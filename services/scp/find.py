"""C-FIND SCP (Patient Root and Study Root): match the identifier against the index, answer the asked keys.

Statuses (PS3.4 C.4.1.1.4): 0xFF00 pending per match, 0x0000 at the end, 0xFE00 after C-CANCEL,
0xA900 for a level the information model does not have, 0xA700 when more entities match than
the result limit allows (refine the query), 0xC001 for a matching value that cannot be understood,
0xC002 when the index cannot be reached.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.scp.statuses import failure
from shared.query.matching import InvalidMatchingKey
from shared.query.search import Query, TooManyMatches, json_element, run_query

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
UTF8 = "ISO_IR 192"
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


def requested_values(identifier: Dataset) -> tuple[dict[str, Any], list[str]]:
    """Keyword → matching value (text, list, or None for universal) and the keywords to return, in order."""
    values: dict[str, Any] = {}
    order: list[str] = []
    for element in identifier:
        keyword = element.keyword or keyword_for_tag(element.tag)
        if not keyword or keyword in _NOT_KEYS or element.tag.group == 0x0002:
            continue
        order.append(keyword)
        if element.VR == "SQ":
            values[keyword] = None  # sequence keys are returned; sequence matching is not applied
            continue
        value = element.value
        if value is None or value == "":
            values[keyword] = None
        elif isinstance(value, (list, tuple, MultiValue)):
            values[keyword] = [str(item) for item in value]
        else:
            values[keyword] = str(value)
    return values, order


def _element(keyword: str, value: Any, attributes: dict[str, Any] | None) -> DataElement | None:
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    vr = dictionary_VR(tag)
    if attributes is not None:
        stored = json_element(attributes, keyword)
        if stored is not None:
            holder = Dataset.from_json({f"{tag:08X}": stored})
            return holder[tag]
        return DataElement(tag, vr, Sequence() if vr == "SQ" else None)
    if value is None or value == []:
        return DataElement(tag, vr, Sequence() if vr == "SQ" else None)
    if isinstance(value, list):
        return DataElement(tag, vr, [str(item) for item in value])
    return DataElement(tag, vr, str(value) if vr not in ("US", "UL", "SS", "SL") else int(value))


def build_response(level: str, row: dict[str, Any], order: list[str]) -> Dataset:
    response = Dataset()
    attributes = row.get("_attributes")
    for keyword in order:
        in_row = keyword in row
        element = _element(keyword, row.get(keyword), None if in_row else (attributes or {}))
        if element is not None:
            response.add(element)
    response.QueryRetrieveLevel = level
    if any(isinstance(v, str) and not v.isascii() for v in (str(e.value) for e in response)):
        response.SpecificCharacterSet = UTF8
    return response


class FindService:
    def __init__(self, sessions: sessionmaker[Session], result_limit: int) -> None:
        self._sessions = sessions
        self._result_limit = result_limit

    def handle(self, event: Any) -> Iterator[tuple[int | Dataset, Dataset | None]]:
        """The EVT_C_FIND handler."""
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
        query = Query(level=level, values=values, limit=self._result_limit, requested=order)
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
        for row in rows:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, build_response(level, row, order)
