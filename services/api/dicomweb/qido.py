"""QIDO-RS (PS3.18 10.6): search for studies, series and instances, answered as application/dicom+json.

Matching is C-FIND's (shared.query): the same keys, wildcards, ranges, UID lists and policies. Query parameters
name attributes by keyword or tag; ``limit``/``offset`` page the answer (a ``Warning`` header says when more
matches exist); ``includefield`` adds attributes (``all``: every attribute the node can answer at that level).
``fuzzymatching=true`` is not supported: literal matching is done and a ``Warning`` header says so (PatientName
matching is case-insensitive anyway, and accent-insensitive when the live configuration says so). Sequence
matching: ``RequestAttributesSequence.ScheduledProcedureStepID=X`` (attribute paths, PS3.18 8.3.4.1) matches as
a C-FIND sequence key does. No match answers 200 with an empty array.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_runtime, get_session
from services.api.dicomweb.dicomjson import UnknownAttribute, element, keyword_of, tag_of, vr_of, without_bulk
from services.api.dicomweb.multipart import parse_accept
from services.api.dicomweb.negotiation import NotAcceptable, require_json
from services.api.dicomweb.search import TooManyToPage, search_page
from services.api.dicomweb.urls import dicomweb_base, require_path_uid
from shared.query.levels import LEVELS, keys_up_to
from shared.query.matching import InvalidMatchingKey
from shared.node_config import default_config, load_config
from shared.query.dicomjson import json_element
from shared.query.sequences import SequenceKey
from shared.runtime import Runtime

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

DICOM_JSON = "application/dicom+json"
STUDY_DEFAULTS = ("StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy", "ReferringPhysicianName",
                  "TimezoneOffsetFromUTC", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyID", "StudyDescription", "NumberOfStudyRelatedSeries",
                  "NumberOfStudyRelatedInstances")
SERIES_DEFAULTS = ("Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
                   "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
                   "PerformedProcedureStepStartTime", "StudyInstanceUID")
INSTANCE_DEFAULTS = ("SOPClassUID", "SOPInstanceUID", "TimezoneOffsetFromUTC", "InstanceNumber", "Rows", "Columns",
                     "BitsAllocated", "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID")
RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
MAX_PAGING_VALUE = 2_147_483_647  # beyond what a database OFFSET takes
ADDED_BY_NODE = {"RetrieveURL", "InstanceAvailability"}


def _defaults(level: str, in_study: bool, in_series: bool) -> list[str]:
    """PS3.18 Tables 10.6.3-3/-4/-5; a search across studies (or series) also returns the higher levels."""
    if level == "STUDY":
        return list(STUDY_DEFAULTS)
    if level == "SERIES":
        return list(SERIES_DEFAULTS) + ([] if in_study else list(STUDY_DEFAULTS))
    above = ([] if in_study else list(STUDY_DEFAULTS)) + ([] if in_series else list(SERIES_DEFAULTS))
    return list(INSTANCE_DEFAULTS) + above


def _positive(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise HTTPException(400, f"{name} must be a non-negative integer") from exc
    if not 0 <= value <= MAX_PAGING_VALUE:
        raise HTTPException(400, f"{name} must be an integer from 0 to {MAX_PAGING_VALUE}")
    return value


def parse_query(request: Request) -> tuple[dict[str, Any], list[str], bool]:
    """(keyword → matching value or SequenceKey, keywords asked with includefield, includefield=all)."""
    values: dict[str, Any] = {}
    paths: dict[str, Any] = {}  # sequence keyword → nested {keyword: value or dict}
    included: list[str] = []
    everything = False
    for name, raw in request.query_params.multi_items():
        if name.lower() in RESERVED:
            if name.lower() == "includefield":
                for field in (part.strip() for part in raw.split(",")):
                    if field.lower() == "all":
                        everything = True
                    elif field:
                        included.append(_keyword(field.split(".")[0]))  # a path includes its whole sequence
            continue
        keywords = [_keyword(part) for part in name.split(".")]
        if len(keywords) > 1:
            node = paths
            for keyword in keywords[:-1]:
                node = node.setdefault(keyword, {})
            node[keywords[-1]] = _joined(node.get(keywords[-1]), raw, keywords[-1])
            continue
        values[keywords[0]] = _joined(values.get(keywords[0]), raw, keywords[0])
    for keyword, tree in paths.items():
        values[keyword] = _sequence_key(tree)
    return values, included, everything


def _joined(previous: Any, raw: str, keyword: str) -> Any:
    """Repeated parameters and comma-separated UIDs are value lists (backslash-joined, as in C-FIND)."""
    value = raw.replace(",", "\\") if vr_of(keyword) == "UI" else raw
    if isinstance(previous, str) and previous and value:
        return f"{previous}\\{value}"
    return value or previous


def _sequence_key(tree: dict[str, Any]) -> SequenceKey:
    return SequenceKey(tuple((keyword, _sequence_key(value) if isinstance(value, dict) else value)
                             for keyword, value in tree.items()))


def _keyword(name: str) -> str:
    try:
        return keyword_of(name)
    except UnknownAttribute as exc:
        raise HTTPException(400, str(exc)) from exc


def _retrieve_url(base: str, level: str, row: dict[str, Any]) -> str:
    url = f"{base}/studies/{row['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{row['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{row['SOPInstanceUID']}"
    return url


def answer_of(level: str, row: dict[str, Any], requested: list[str], values: dict[str, Any], explicit: set[str],
              everything: bool, base: str) -> dict[str, Any]:
    """One DICOM JSON object: indexed and computed keys from the row, the others from stored attributes."""
    attributes: dict[str, Any] = row.get("_attributes") or {}
    answer: dict[str, Any] = {}
    if everything and level == "IMAGE":
        answer.update(without_bulk(attributes))
    for keyword in requested:
        if keyword in ADDED_BY_NODE:
            continue
        if keyword in row:
            answer[tag_of(keyword)] = element(keyword, row[keyword])
            continue
        stored = json_element(attributes, keyword)
        asked = values.get(keyword)
        if isinstance(asked, SequenceKey):
            stored = asked.answer(stored)
        if stored is not None and not ("BulkDataURI" in stored and not stored["BulkDataURI"]):
            answer[tag_of(keyword)] = stored
        elif keyword in explicit:
            answer[tag_of(keyword)] = {"vr": vr_of(keyword)}
    answer[tag_of("InstanceAvailability")] = element("InstanceAvailability", "ONLINE")
    answer[tag_of("RetrieveURL")] = {"vr": "UR", "Value": [_retrieve_url(base, level, row)]}
    return dict(sorted(answer.items()))


def _search(request: Request, runtime: Runtime, session: Session, level: str,
            fixed: dict[str, str]) -> JSONResponse:
    try:
        require_json(parse_accept(request.headers.get("accept")))
    except NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    values, included, everything = parse_query(request)
    for keyword, uid in fixed.items():
        values[keyword] = require_path_uid(uid)
    requested = _defaults(level, "StudyInstanceUID" in fixed, "SeriesInstanceUID" in fixed)
    explicit = set(values) | set(included)
    if everything:
        requested += list(keys_up_to(level)) + sorted(LEVELS[level].computed_keys)
    for keyword in [*values, *included]:
        if keyword not in requested:
            requested.append(keyword)
    elsewhere = {key for name, spec in LEVELS.items() if name != level for key in spec.computed_keys}
    requested = [keyword for keyword in dict.fromkeys(requested) if keyword not in elsewhere]
    max_results = runtime.settings.find_result_limit
    limit = min(_positive(request, "limit", max_results) or max_results, max_results)
    offset = _positive(request, "offset", 0)
    try:
        config = load_config(session, default_config(runtime.settings.check_called_aet))
        page = search_page(session, level, values, requested, offset, limit, max_results,
                           config.patient_name_ignore_accents)
    except InvalidMatchingKey as exc:
        raise HTTPException(400, str(exc)) from exc
    except TooManyToPage as exc:
        raise HTTPException(400, f"{exc}: refine the query (keys outside the index match too much)") from exc
    except SQLAlchemyError as exc:
        log.error("qido.index_unavailable error=%s", exc.__class__.__name__)
        raise HTTPException(503, "index database unavailable") from exc
    base = dicomweb_base(request)
    body = [answer_of(level, row, requested, values, explicit, everything, base) for row in page.rows]
    headers: dict[str, str] = {}
    warnings = []
    if page.more:
        warnings.append('299 pacs "There are additional results that can be requested"')
    if request.query_params.get("fuzzymatching", "").lower() == "true":
        warnings.append('299 pacs "The fuzzymatching parameter is not supported. Only literal matching has been '
                        'performed."')
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    log.info("qido.done level=%s matches=%d", level, len(body))
    return JSONResponse(body, media_type=DICOM_JSON, headers=headers)


@router.get("/dicomweb/studies", summary="QIDO-RS: search for studies")
def search_studies(request: Request, runtime: Runtime = Depends(get_runtime),
                   session: Session = Depends(get_session)) -> JSONResponse:
    return _search(request, runtime, session, "STUDY", {})


@router.get("/dicomweb/series", summary="QIDO-RS: search for series (all studies)")
def search_series(request: Request, runtime: Runtime = Depends(get_runtime),
                  session: Session = Depends(get_session)) -> JSONResponse:
    return _search(request, runtime, session, "SERIES", {})


@router.get("/dicomweb/studies/{study}/series", summary="QIDO-RS: search for series of a study")
def search_study_series(study: str, request: Request, runtime: Runtime = Depends(get_runtime),
                        session: Session = Depends(get_session)) -> JSONResponse:
    return _search(request, runtime, session, "SERIES", {"StudyInstanceUID": study})


@router.get("/dicomweb/instances", summary="QIDO-RS: search for instances (all studies)")
def search_instances(request: Request, runtime: Runtime = Depends(get_runtime),
                     session: Session = Depends(get_session)) -> JSONResponse:
    return _search(request, runtime, session, "IMAGE", {})


@router.get("/dicomweb/studies/{study}/instances", summary="QIDO-RS: search for instances of a study")
def search_study_instances(study: str, request: Request, runtime: Runtime = Depends(get_runtime),
                           session: Session = Depends(get_session)) -> JSONResponse:
    return _search(request, runtime, session, "IMAGE", {"StudyInstanceUID": study})


@router.get("/dicomweb/studies/{study}/series/{series}/instances", summary="QIDO-RS: search for instances of a series")
def search_series_instances(study: str, series: str, request: Request, runtime: Runtime = Depends(get_runtime),
                            session: Session = Depends(get_session)) -> JSONResponse:
    return _search(request, runtime, session, "IMAGE", {"StudyInstanceUID": study, "SeriesInstanceUID": series})
