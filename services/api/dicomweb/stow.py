"""STOW-RS (PS3.18 10.5): POST /dicomweb/studies[/{study}] with multipart/related; type="application/dicom".

The body is spooled to a file under ``<data_dir>/spool`` (at most ``dicomweb_max_request_bytes``; more gets 413),
then each part (a Part-10 file) goes through the C-STORE ingest path (shared.ingest): identifying UIDs
validated, pending marker, durable object, event to the indexer, duplicate policy. One part at a time is held
in memory. The live configuration applies as for C-STORE: only standard storage SOP classes unless
``accept_unknown_sop_classes``, only ``accepted_transfer_syntaxes`` when set.

Each request is audited as one ``stow`` row (outcome success, partial or failure; counts and failure reasons,
the caller's address and token name; no identifiers). Answer (application/dicom+json, PS3.18 Annex I): ReferencedSOPSequence (stored, with RetrieveURL) and
FailedSOPSequence (with FailureReason) per instance; 200 all stored, 202 some failed, 409 none stored (507 when
none stored and the storage is full: a storage limit or the object store), 400 for a
body that is no multipart/related, 415 for another part type. FailureReason values: 0xC000 not a readable
Part-10 file; 0xC001 a Study/Series/SOP UID missing or invalid; 0xA900 File Meta and dataset name another
instance or class; 0x0122 SOP class not accepted; 0xC122 transfer syntax not accepted; 0xC409 the instance's
Study Instance UID is not the one in the URL; 0xA700 storage full (storage_max_bytes/storage_max_instances reached,
or the object store full; also audited as ``storage_full``); 0xA701 object store unavailable, or the instance is
being deleted (send it again once the deletion finished).
"""

from __future__ import annotations

import logging
import mmap
import os
import tempfile
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydicom.filereader import _read_file_meta_info, read_preamble
from pynetdicom import AllStoragePresentationContexts
from pynetdicom._globals import ALL_TRANSFER_SYNTAXES
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from services.api.auth import actor_of
from services.api.dependencies import get_runtime
from services.api.dicomweb.multipart import MalformedMultipart, locate_parts, parse_media_type
from services.api.dicomweb.urls import dicomweb_base, require_path_uid
from shared.db.models import AuditEvent
from shared.events import Reception, utc_now
from shared.ingest import Ingest, StoragePolicy
from shared.ingest_identify import InstanceIdentity, UnreadableDataset, identify
from shared.node_config import NodeConfig, default_config_for, load_config
from shared.queue import INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK
from shared.runtime import Runtime
from shared.storage import StorageError, StorageFull
from shared.storage.claims import InstanceBeingDeleted
from shared.storage_usage import StorageLimitReached, StorageUsage
from shared.uids import InvalidUID, is_valid_uid

log = logging.getLogger(__name__)
router = APIRouter(tags=["dicomweb"])

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
KNOWN_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in ALL_TRANSFER_SYNTAXES)
CANNOT_UNDERSTAND, INVALID_IDENTITY, DOES_NOT_MATCH = 0xC000, 0xC001, 0xA900
SOP_CLASS_NOT_SUPPORTED, SYNTAX_NOT_SUPPORTED, STUDY_MISMATCH = 0x0122, 0xC122, 0xC409
STORE_FULL, STORE_UNAVAILABLE = 0xA700, 0xA701


class Refused(Exception):
    def __init__(self, reason: int, sop_class: str | None = None, sop_instance: str | None = None) -> None:
        super().__init__(f"0x{reason:04X}")
        self.reason, self.sop_class, self.sop_instance = reason, sop_class, sop_instance


@dataclass
class Outcome:
    stored: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    study_uids: set[str] = field(default_factory=set)
    events: list[tuple[str, dict[str, object]]] = field(default_factory=list)


def _uid_element(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def split_part10(data: bytes) -> tuple[str, str | None, str | None, int]:
    """(transfer syntax, File Meta SOP class, File Meta SOP instance, offset of the dataset) of a Part-10 file.

    The File Meta names the transfer syntax: a part without one cannot be read (0xC000)."""
    stream = BytesIO(data)
    try:
        read_preamble(stream, True)  # lenient: a File Meta without the preamble (pydicom.dcmwrite's default)
        meta = _read_file_meta_info(stream)
    except Exception as exc:
        raise Refused(CANNOT_UNDERSTAND) from exc
    syntax = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ")
    if not syntax:
        raise Refused(CANNOT_UNDERSTAND)
    sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "").strip("\x00 ") or None
    sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "").strip("\x00 ") or None
    return syntax, sop_class, sop_instance, stream.tell()


def _check(identity: InstanceIdentity, syntax: str, meta_class: str | None, meta_instance: str | None,
           config: NodeConfig, study: str | None) -> None:
    refused = (identity.sop_class_uid, identity.sop_instance_uid)
    if (meta_class and meta_class != identity.sop_class_uid) or (meta_instance and
                                                                 meta_instance != identity.sop_instance_uid):
        raise Refused(DOES_NOT_MATCH, *refused)
    if identity.sop_class_uid not in STORAGE_SOP_CLASSES and not config.accept_unknown_sop_classes:
        raise Refused(SOP_CLASS_NOT_SUPPORTED, *refused)
    accepted = config.accepted_transfer_syntaxes
    if syntax not in KNOWN_TRANSFER_SYNTAXES or (accepted is not None and syntax not in accepted):
        raise Refused(SYNTAX_NOT_SUPPORTED, *refused)
    if study is not None and identity.study_instance_uid != study:
        raise Refused(STUDY_MISMATCH, *refused)


class StowRequest:
    """One STOW-RS request: its parts stored one after the other through the ingest core."""

    def __init__(self, runtime: Runtime, config: NodeConfig, study: str | None, reception: Reception,
                 base: str, usage: StorageUsage | None = None) -> None:
        self._runtime = runtime
        self._config = config
        self._study = study
        self._reception = reception
        self._base = base
        self.outcome = Outcome()
        self.full_limits: set[str] = set()
        policy = StoragePolicy.of(config)
        if usage is not None and (policy.max_bytes is not None or policy.max_instances is not None):
            usage.ensure_known()  # a request reads the database anyway (its configuration): no blind first send
        self._ingest = Ingest(runtime.store, runtime.ledger, lambda task, payload: self.outcome.events.append(
            (task, payload)), lambda: policy, usage)

    def store_part(self, data: bytes) -> None:
        try:
            identity = self._store(data)
        except Refused as refused:
            log.info("stow.refused reason=0x%04X", refused.reason)
            self.outcome.failed.append({
                "00081150": _uid_element(refused.sop_class), "00081155": _uid_element(refused.sop_instance),
                "00081197": {"vr": "US", "Value": [refused.reason]}})
            return
        url = (f"{self._base}/studies/{identity.study_instance_uid}/series/{identity.series_instance_uid}"
               f"/instances/{identity.sop_instance_uid}")
        self.outcome.study_uids.add(identity.study_instance_uid)
        self.outcome.stored.append({"00081150": _uid_element(identity.sop_class_uid),
                                    "00081155": _uid_element(identity.sop_instance_uid),
                                    "00081190": {"vr": "UR", "Value": [url]}})

    def _store(self, data: bytes) -> InstanceIdentity:
        syntax, meta_class, meta_instance, offset = split_part10(data)
        dataset = data[offset:]
        fallback = (meta_class if is_valid_uid(meta_class) else None,
                    meta_instance if is_valid_uid(meta_instance) else None)
        try:
            identity = identify(dataset, syntax)
        except UnreadableDataset as exc:
            raise Refused(CANNOT_UNDERSTAND, *fallback) from exc
        except (InvalidUID, ValueError) as exc:
            raise Refused(INVALID_IDENTITY, *fallback) from exc
        _check(identity, syntax, meta_class, meta_instance, self._config, self._study)
        try:
            self._ingest.store_instance(identity, syntax, dataset, self._reception)
        except StorageFull as exc:
            log.error("stow.failed reason=storage_full")
            self.full_limits.add(exc.limit if isinstance(exc, StorageLimitReached) else "object_store")
            raise Refused(STORE_FULL, identity.sop_class_uid, identity.sop_instance_uid) from exc
        except InstanceBeingDeleted as exc:
            log.info("stow.refused reason=instance_being_deleted")
            raise Refused(STORE_UNAVAILABLE, identity.sop_class_uid, identity.sop_instance_uid) from exc
        except StorageError as exc:
            log.error("stow.failed reason=object_store_unavailable error=%s", exc.__class__.__name__)
            raise Refused(STORE_UNAVAILABLE, identity.sop_class_uid, identity.sop_instance_uid) from exc
        return identity

    def publish(self) -> None:
        """One message per task for the whole request; if the broker is down, the pending markers remain."""
        by_task: dict[str, list[dict[str, object]]] = {}
        for task, payload in self.outcome.events:
            by_task.setdefault(task, []).append(payload)
        size = self._runtime.settings.indexer_batch_size  # a task carries at most this many, as from the SCP
        for task in (INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK):
            payloads = by_task.get(task, [])
            for start in range(0, len(payloads), size):
                try:
                    self._runtime.celery.send_task(task, args=[payloads[start:start + size]], retry=False)
                except Exception as exc:
                    log.warning("stow.publish_failed error=%s (the sweeper will index them)",
                                exc.__class__.__name__)
                    return

    def audit(self, actor: str) -> None:
        """One ``stow`` row per request (counts and failure reasons only, no identifiers); best effort."""
        stored, failed = len(self.outcome.stored), len(self.outcome.failed)
        reasons: dict[str, int] = {}
        for item in self.outcome.failed:
            code = f"0x{item['00081197']['Value'][0]:04X}"
            reasons[code] = reasons.get(code, 0) + 1
        outcome = "failure" if not stored else "partial" if failed else "success"
        try:
            with self._runtime.sessions.begin() as session:
                session.add(AuditEvent(occurred_at=utc_now(), action="stow", outcome=outcome, remote_aet="",
                                       remote_ip=self._reception.remote_ip,
                                       details={"stored": stored, "failed": failed, "failure_reasons": reasons,
                                                "actor": actor}))
                if self.full_limits:
                    session.add(AuditEvent(occurred_at=utc_now(), action="storage_full", outcome="refused",
                                           remote_aet="", remote_ip=self._reception.remote_ip,
                                           details={"service": "stow", "status": 507 if not stored else 202,
                                                    "refused": reasons.get("0xA700", 0),
                                                    "limit": sorted(self.full_limits), "actor": actor}))
        except SQLAlchemyError as exc:
            log.warning("stow.audit_failed error=%s", exc.__class__.__name__)

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {}
        if self._study is not None or len(self.outcome.study_uids) == 1:
            study = self._study or next(iter(self.outcome.study_uids))
            body["00081190"] = {"vr": "UR", "Value": [f"{self._base}/studies/{study}"]}
        if self.outcome.failed:
            body["00081198"] = {"vr": "SQ", "Value": self.outcome.failed}
        if self.outcome.stored:
            body["00081199"] = {"vr": "SQ", "Value": self.outcome.stored}
        status = 409 if not self.outcome.stored else 202 if self.outcome.failed else 200
        if status == 409 and self.full_limits:
            status = 507  # Insufficient Storage: nothing stored because the storage is full
        return JSONResponse(dict(sorted(body.items())), status_code=status, media_type=DICOM_JSON)


def _live_config(runtime: Runtime) -> NodeConfig:
    base = default_config_for(runtime.settings)
    try:
        with runtime.sessions() as session:
            return load_config(session, base)
    except SQLAlchemyError:
        return base  # ingest survives the database: the defaults apply


def _boundary_of(request: Request) -> str:
    media = parse_media_type(request.headers.get("content-type", ""))
    if media.type != "multipart/related":
        raise HTTPException(415, 'expected Content-Type: multipart/related; type="application/dicom"')
    part_type = media.params.get("type", DICOM).lower()
    if part_type != DICOM:
        raise HTTPException(415, 'only type="application/dicom" parts are accepted')
    boundary = media.params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise HTTPException(400, "multipart/related without a boundary")
    return boundary


async def _spool(request: Request, spool_dir: Path, limit: int) -> Path:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the request is larger than {limit} bytes (dicomweb_max_request_bytes)")
    spool_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=spool_dir, prefix="stow-", suffix=".part")
    path = Path(name)
    try:
        size = 0
        with os.fdopen(handle, "wb") as target:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"the request is larger than {limit} bytes (dicomweb_max_request_bytes)")
                target.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _process(runtime: Runtime, path: Path, boundary: str, stow: StowRequest, actor: str) -> JSONResponse:
    if path.stat().st_size == 0:
        raise HTTPException(400, "empty body")
    with open(path, "rb") as source, mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) as body:
        try:
            parts = locate_parts(body, boundary)
        except MalformedMultipart as exc:
            raise HTTPException(400, f"malformed multipart body: {exc}") from exc
        if not parts:
            raise HTTPException(400, "no part in the multipart body")
        for part in parts:
            media = part.headers.get("content-type")
            if media is not None and parse_media_type(media).type != DICOM:
                raise HTTPException(415, 'only application/dicom parts are accepted')
        for part in parts:
            stow.store_part(body[part.start:part.end])
    stow.publish()
    stow.audit(actor)
    log.info("stow.done stored=%d failed=%d", len(stow.outcome.stored), len(stow.outcome.failed))
    return stow.response()


async def _store(request: Request, runtime: Runtime, study: str | None) -> JSONResponse:
    if study is not None:
        require_path_uid(study)
    boundary = _boundary_of(request)
    settings = runtime.settings
    path = await _spool(request, settings.data_dir.resolve() / "spool", settings.dicomweb_max_request_bytes)
    try:
        client = request.client.host if request.client else ""
        reception = Reception(remote_aet="", called_aet=settings.ae_title, remote_ip=client, received_at=utc_now())
        config = await run_in_threadpool(_live_config, runtime)
        stow = await run_in_threadpool(StowRequest, runtime, config, study, reception, dicomweb_base(request),
                                       getattr(request.app.state, "storage_usage", None))  # may read the index
        return await run_in_threadpool(_process, runtime, path, boundary, stow, actor_of(request))
    finally:
        path.unlink(missing_ok=True)


@router.post("/dicomweb/studies", summary="STOW-RS: store instances (multipart/related application/dicom)")
async def store_instances(request: Request, runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    return await _store(request, runtime, None)


@router.post("/dicomweb/studies/{study}", summary="STOW-RS: store instances of one study")
async def store_study_instances(study: str, request: Request, runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    return await _store(request, runtime, study)
