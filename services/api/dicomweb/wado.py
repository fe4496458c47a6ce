"""WADO-RS (PS3.18 10.4): studies, series and instances as multipart/related application/dicom, and metadata.

Instances are streamed from the object store in 1 MiB chunks, one after the other (memory stays flat whatever
the size of the study); only an instance that must be transcoded (an explicit transfer-syntax asked for that
is not the stored one) is decoded in memory. Metadata is each instance's stored attributes (DICOM JSON, bulk
data left out), with AvailableTransferSyntaxUID (0008,3002) naming the stored syntax.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pydicom
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_runtime, get_session
from services.api.dicomweb.dicomjson import without_bulk
from services.api.dicomweb.multipart import Part, multipart_content_type, new_boundary, parse_accept, write_multipart
from services.api.dicomweb.negotiation import DICOM, InstancePlan, NotAcceptable, plan_instances, require_json
from services.api.dicomweb.urls import require_path_uid
from shared.db.models import Instance, Series, Study
from shared.dicom.transcode import to_uncompressed
from shared.jobs import Item
from shared.query.retrieve import instances_to_retrieve
from shared.runtime import Runtime
from shared.storage import ObjectStore, StorageError

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

CHUNK = 1 << 20
DICOM_JSON = "application/dicom+json"


def _selection(study: str, series: str | None, instance: str | None) -> tuple[str, dict[str, Any]]:
    values: dict[str, Any] = {"StudyInstanceUID": require_path_uid(study)}
    level = "STUDY"
    if series is not None:
        values["SeriesInstanceUID"] = require_path_uid(series)
        level = "SERIES"
    if instance is not None:
        values["SOPInstanceUID"] = require_path_uid(instance)
        level = "IMAGE"
    return level, values


def select_items(session: Session, study: str, series: str | None, instance: str | None) -> list[Item]:
    level, values = _selection(study, series, instance)
    try:
        items = instances_to_retrieve(session, level, values)
    except SQLAlchemyError as exc:
        log.error("wado.index_unavailable error=%s", exc.__class__.__name__)
        raise HTTPException(503, "index database unavailable") from exc
    if not items:
        raise HTTPException(404, f"no such {'instance' if instance else 'series' if series else 'study'}")
    return items


def stored_chunks(store: ObjectStore, key: str) -> Iterator[bytes]:
    with store.open(key) as stream:
        while chunk := stream.read(CHUNK):
            yield chunk


def transcoded(store: ObjectStore, key: str) -> bytes:
    dataset = to_uncompressed(pydicom.dcmread(BytesIO(b"".join(stored_chunks(store, key)))), ExplicitVRLittleEndian)
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _instance_part(store: ObjectStore, item: Item, plan: InstancePlan) -> Part | None:
    """The part of one instance: streamed as stored, or transcoded (None when its decoder fails)."""
    if plan.sends_as_stored(item.transfer_syntax):
        return Part(f"{DICOM}; transfer-syntax={item.transfer_syntax}", stored_chunks(store, item.object_key))
    try:
        data = transcoded(store, item.object_key)
    except StorageError:
        raise
    except Exception as exc:  # decoding failed although the syntax has a decoder: the instance is left out
        log.warning("wado.transcode_failed error=%s", exc.__class__.__name__)
        return None
    return Part(f"{DICOM}; transfer-syntax={ExplicitVRLittleEndian}", [data])


def _parts(store: ObjectStore, items: list[Item], plan: InstancePlan) -> Iterator[Part]:
    """Made one by one while the answer is written (an instance is read only when its turn comes)."""
    for item in items:
        part = _instance_part(store, item, plan)
        if part is not None:
            yield part


def _retrieve(request: Request, runtime: Runtime, session: Session, study: str, series: str | None = None,
              instance: str | None = None) -> Response:
    items = select_items(session, study, series, instance)
    try:
        plan = plan_instances(parse_accept(request.headers.get("accept")), single_instance=instance is not None)
    except NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    refused = [item for item in items if not plan.can_send(item.transfer_syntax)]
    if refused:
        raise HTTPException(406, f"{len(refused)} instance(s) are not available in the requested transfer syntax")
    store = runtime.store
    if not plan.multipart:
        [item] = items
        part = _instance_part(store, item, plan)
        if part is None:
            raise HTTPException(406, "the instance cannot be decoded to the requested transfer syntax")
        return StreamingResponse(iter(part.chunks), media_type=part.content_type)
    boundary = new_boundary()
    body = write_multipart(_parts(store, items, plan), boundary)
    return StreamingResponse(body, media_type=multipart_content_type(DICOM, boundary))


@router.get("/dicomweb/studies/{study}", summary="WADO-RS: retrieve a study (multipart/related application/dicom)")
def retrieve_study(study: str, request: Request, runtime: Runtime = Depends(get_runtime),
                   session: Session = Depends(get_session)) -> Response:
    return _retrieve(request, runtime, session, study)


@router.get("/dicomweb/studies/{study}/series/{series}", summary="WADO-RS: retrieve a series")
def retrieve_series(study: str, series: str, request: Request, runtime: Runtime = Depends(get_runtime),
                    session: Session = Depends(get_session)) -> Response:
    return _retrieve(request, runtime, session, study, series)


@router.get("/dicomweb/studies/{study}/series/{series}/instances/{instance}", summary="WADO-RS: retrieve an instance")
def retrieve_instance(study: str, series: str, instance: str, request: Request,
                      runtime: Runtime = Depends(get_runtime), session: Session = Depends(get_session)) -> Response:
    return _retrieve(request, runtime, session, study, series, instance)


# ---- metadata ------------------------------------------------------------------------------------------------

def _metadata_statement(level: str, values: dict[str, Any]) -> Any:
    statement = (select(Instance.attributes, Instance.transfer_syntax)
                 .join(Series, Instance.series_fk == Series.pk).join(Study, Series.study_fk == Study.pk)
                 .where(Study.study_instance_uid == values["StudyInstanceUID"]))
    if level in ("SERIES", "IMAGE"):
        statement = statement.where(Series.series_instance_uid == values["SeriesInstanceUID"])
    if level == "IMAGE":
        statement = statement.where(Instance.sop_instance_uid == values["SOPInstanceUID"])
    return statement.order_by(Series.series_number, Series.pk, Instance.instance_number, Instance.pk)


def metadata_of(attributes: dict[str, Any] | None, transfer_syntax: str) -> dict[str, Any]:
    document = without_bulk(attributes or {})
    document["00083002"] = {"vr": "UI", "Value": [transfer_syntax]}  # AvailableTransferSyntaxUID
    return dict(sorted(document.items()))


def _metadata_body(runtime: Runtime, statement: Any, first: dict[str, Any]) -> Iterator[bytes]:
    """A JSON array written document by document (a large study is never one big string)."""
    yield b"[" + json.dumps(first, ensure_ascii=False).encode()
    with runtime.sessions() as session:
        for index, (attributes, syntax) in enumerate(session.execute(statement.execution_options(yield_per=200))):
            if index == 0:
                continue  # already written
            yield b"," + json.dumps(metadata_of(attributes, syntax), ensure_ascii=False).encode()
    yield b"]"


def _metadata(request: Request, runtime: Runtime, session: Session, study: str, series: str | None = None,
              instance: str | None = None) -> Response:
    level, values = _selection(study, series, instance)
    try:
        require_json(parse_accept(request.headers.get("accept")))
    except NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc
    statement = _metadata_statement(level, values)
    try:
        first = session.execute(statement.limit(1)).first()
    except SQLAlchemyError as exc:
        log.error("wado.index_unavailable error=%s", exc.__class__.__name__)
        raise HTTPException(503, "index database unavailable") from exc
    if first is None:
        raise HTTPException(404, f"no such {'instance' if instance else 'series' if series else 'study'}")
    return StreamingResponse(_metadata_body(runtime, statement, metadata_of(*first)), media_type=DICOM_JSON)


@router.get("/dicomweb/studies/{study}/metadata", summary="WADO-RS: metadata of a study (DICOM JSON)")
def study_metadata(study: str, request: Request, runtime: Runtime = Depends(get_runtime),
                   session: Session = Depends(get_session)) -> Response:
    return _metadata(request, runtime, session, study)


@router.get("/dicomweb/studies/{study}/series/{series}/metadata", summary="WADO-RS: metadata of a series")
def series_metadata(study: str, series: str, request: Request, runtime: Runtime = Depends(get_runtime),
                    session: Session = Depends(get_session)) -> Response:
    return _metadata(request, runtime, session, study, series)


@router.get("/dicomweb/studies/{study}/series/{series}/instances/{instance}/metadata",
            summary="WADO-RS: metadata of an instance")
def instance_metadata(study: str, series: str, instance: str, request: Request,
                      runtime: Runtime = Depends(get_runtime), session: Session = Depends(get_session)) -> Response:
    return _metadata(request, runtime, session, study, series, instance)
