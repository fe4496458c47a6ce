"""REST sends and their jobs: POST /api/modalities/{name}/store, GET /api/jobs/{id}, GET /api/jobs.

A send names studies, series and/or instances by UID. The API resolves them to the instances the index holds
(in order: study, series number, instance number), creates a job (shared.jobs) and hands its id to the mover
through the queue, exactly as a C-MOVE does; the job row is the progress report (GET /api/jobs/{id}).

A send whose UIDs match nothing held still answers 202 with a job: total 0, state "done" (nothing to do, so
nothing failed); ``unmatched`` lists the requested UIDs that matched nothing. Scripts can treat every 202 alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.auth import actor_of
from services.api.dependencies import get_runtime, get_session
from services.api.routes.config import client_ip
from services.api.routes.modalities import ModalityName
from shared.db.models import AuditEvent, Instance, Job, JobItem, Modality, Series, Study
from shared.events import iso_utc, utc_now
from shared.jobs import FINISHED_STATES, Destination, Item, create_job, fail_unfinished
from shared.node_config import modality_entry
from shared.queue import RUN_JOB_TASK
from shared.runtime import Runtime
from shared.uids import is_valid_uid

router = APIRouter(tags=["jobs"])

SEND_KEYS = ("studies", "series", "instances")
MAX_UIDS_PER_KEY = 10_000
IN_CHUNK = 500  # UIDs per IN (...) clause: well under SQLite's bound-parameter limit
JOB_STATES = ("queued", "running", *FINISHED_STATES)
MAX_PAGE = 500
_HEX = frozenset("0123456789abcdef")

SEND_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {
        "type": "object", "additionalProperties": False,
        "properties": {key: {"type": "array", "items": {"type": "string", "maxLength": 64},
                             "maxItems": MAX_UIDS_PER_KEY} for key in SEND_KEYS},
        "description": "StudyInstanceUIDs, SeriesInstanceUIDs and SOPInstanceUIDs to send; at least one UID.",
    },
    "example": {"studies": ["1.2.840.113619.2.55.3.604688119.969.1268071029.320"]},
}}}}


def _unavailable(what: str, exc: Exception) -> HTTPException:
    return HTTPException(503, f"{what} unavailable ({exc.__class__.__name__})")


def _problem(key: str, message: str, kind: str, index: int | None = None) -> dict[str, Any]:
    loc: list[str | int] = ["body", key] if index is None else ["body", key, index]
    return {"loc": loc, "key": key, "msg": f"{key}: {message}", "type": kind}


def _validated_send(body: Any) -> dict[str, list[str]]:
    """The three UID lists (deduplicated, in the order given), or 422 naming each bad key (never echoing a value)."""
    if not isinstance(body, dict):
        raise HTTPException(422, [_problem("body", "a JSON object with studies, series and/or instances",
                                           "object_type")])
    problems = [_problem(str(key), "unknown key (studies, series or instances)", "extra_forbidden")
                for key in body if key not in SEND_KEYS]
    wanted: dict[str, list[str]] = {}
    for key in SEND_KEYS:
        values = body.get(key, [])
        if values is None:
            values = []
        if not isinstance(values, list):
            problems.append(_problem(key, "must be a list of UIDs", "list_type"))
            continue
        if len(values) > MAX_UIDS_PER_KEY:
            problems.append(_problem(key, f"at most {MAX_UIDS_PER_KEY} UIDs per request", "too_long"))
            continue
        for index, value in enumerate(values):
            if not is_valid_uid(value):
                problems.append(_problem(key, f"item {index} is not a valid UID (digits and dots, 1 to 64 "
                                              "characters)", "uid", index))
        wanted[key] = list(dict.fromkeys(value for value in values if isinstance(value, str)))  # {} is unhashable
    if not problems and not any(wanted.values()):
        problems.append(_problem("body", "name at least one UID in studies, series or instances", "missing"))
    if problems:
        raise HTTPException(422, problems)
    return wanted


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), IN_CHUNK):
        yield values[start:start + IN_CHUNK]


def _instances_statement() -> Select[Any]:
    return (select(Instance.pk, Instance.sop_instance_uid, Instance.sop_class_uid, Instance.transfer_syntax,
                   Instance.object_key, Instance.instance_number, Series.pk.label("series_pk"),
                   Series.series_number, Series.series_instance_uid, Study.pk.label("study_pk"),
                   Study.study_instance_uid)
            .join(Series, Instance.series_fk == Series.pk)
            .join(Study, Series.study_fk == Study.pk))


def _sort_key(row: Any) -> tuple[Any, ...]:
    # NULL numbers last on every database (SQLite and PostgreSQL order NULLs differently).
    return (row.study_pk, row.series_number is None, row.series_number or 0, row.series_pk,
            row.instance_number is None, row.instance_number or 0, row.pk)


def resolve_send(session: Session, wanted: dict[str, list[str]]) -> tuple[list[Item], dict[str, list[str]]]:
    """The held instances the send names, each once, in sending order; and the requested UIDs that matched none."""
    columns = {"studies": Study.study_instance_uid, "series": Series.series_instance_uid,
               "instances": Instance.sop_instance_uid}
    found: dict[int, Any] = {}
    unmatched: dict[str, list[str]] = {}
    for key, column in columns.items():
        seen: set[str] = set()
        for chunk in _chunks(wanted.get(key, [])):
            for row in session.execute(_instances_statement().where(column.in_(chunk))):
                found[row.pk] = row
                seen.add({"studies": row.study_instance_uid, "series": row.series_instance_uid,
                          "instances": row.sop_instance_uid}[key])
        unmatched[key] = [uid for uid in wanted.get(key, []) if uid not in seen]
    rows = sorted(found.values(), key=_sort_key)
    return [Item(row.sop_instance_uid, row.sop_class_uid, row.transfer_syntax, row.object_key)
            for row in rows], unmatched


@router.post(
    "/api/modalities/{name}/store",
    status_code=202,
    summary="Send studies, series and/or instances to a registered modality (C-STORE by the mover); returns a job",
    description="Body: {\"studies\": [...], \"series\": [...], \"instances\": [...]} (UIDs; at least one). "
    "202 with {job_id, state, total, unmatched} and Location: /api/jobs/{id}; follow the job there. "
    "Nothing held matches: 202 with a job of total 0 in state \"done\". 404 unknown modality, 422 naming each bad "
    "key, 503 when the index or the queue is unavailable (the job is then marked failed).",
    openapi_extra=SEND_SCHEMA,
)
def send_to_modality(
    request: Request,
    response: Response,
    body: Any = Body(..., include_in_schema=False),
    name: str = ModalityName,
    runtime: Runtime = Depends(get_runtime),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    wanted = _validated_send(body)
    try:
        with session.begin():
            row = session.get(Modality, name)
            if row is None:
                raise HTTPException(404, "no modality with that name")
            entry = modality_entry(row)
            destination = Destination(entry.ae_title, entry.host, entry.port,
                                      entry.local_ae_title or runtime.settings.ae_title)
            items, unmatched = resolve_send(session, wanted)
            job_id = create_job(session, "rest-store", destination, actor_of(request)[:64], items)
            if not items:  # nothing to send: the job is done at once, the mover never sees it
                now = utc_now()
                session.execute(update(Job).where(Job.id == job_id).values(state="done", updated_at=now,
                                                                           finished_at=now))
            session.add(AuditEvent(
                occurred_at=utc_now(), action="rest_send", outcome="success", remote_aet="",
                remote_ip=client_ip(request),
                details={"job_id": job_id, "modality": name, "destination": {
                    "ae_title": destination.ae_title, "host": destination.host, "port": destination.port},
                    "calling_ae_title": destination.calling_ae_title, "requested": wanted,
                    "total": len(items), "actor": actor_of(request)},
            ))
    except SQLAlchemyError as exc:
        raise _unavailable("index database", exc) from exc
    state = "done" if not items else "queued"
    if items:
        try:
            runtime.celery.send_task(RUN_JOB_TASK, args=[job_id], retry=False)
        except Exception as exc:  # the broker refused or could not be reached
            reason = "the job could not be queued"
            try:
                with session.begin():
                    fail_unfinished(session, job_id, reason)
                    session.add(AuditEvent(
                        occurred_at=utc_now(), action="rest_send", outcome="failure", remote_aet="",
                        remote_ip=client_ip(request), details={"job_id": job_id, "modality": name,
                                                               "reason": reason, "actor": actor_of(request)},
                    ))
            except SQLAlchemyError:
                pass  # the job stays queued and unrun; it is reported as such, and the caller gets 503 anyway
            raise _unavailable("queue", exc) from exc
    response.headers["Location"] = f"/api/jobs/{job_id}"
    return {"job_id": job_id, "state": state, "total": len(items), "unmatched": unmatched}


def _job_id(value: str) -> str:
    job_id = value.lower()
    if len(job_id) != 32 or not set(job_id) <= _HEX:
        raise HTTPException(422, "a job id is 32 hexadecimal characters")
    return job_id


def _summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "destination": {"ae_title": job.destination_ae_title, "host": job.destination_host,
                        "port": job.destination_port},
        "calling_ae_title": job.calling_ae_title,
        "requested_by": job.requested_by,
        "total": job.total,
        "completed": job.completed,
        "failed": job.failed,
        "warning": job.warning,
        "remaining": max(0, job.total - job.completed - job.failed - job.warning),
        "error": job.error,
        "created_at": iso_utc(job.created_at),
        "updated_at": iso_utc(job.updated_at),
        "finished_at": iso_utc(job.finished_at) if job.finished_at else None,
    }


@router.get("/api/jobs/{job_id}", summary="One job: state, counters, failed instances (404 unknown, 422 malformed id)")
def get_job(job_id: str = Path(max_length=64), session: Session = Depends(get_session)) -> dict[str, Any]:
    job_id = _job_id(job_id)
    try:
        job = session.get(Job, job_id)
        if job is None:
            raise HTTPException(404, "no job with that id")
        failed = list(session.scalars(select(JobItem.sop_instance_uid).where(
            JobItem.job_id == job_id, JobItem.state == "failed").order_by(JobItem.position))) if job.failed else []
    except SQLAlchemyError as exc:
        raise _unavailable("index database", exc) from exc
    return {**_summary(job), "failed_instances": failed}


@router.get("/api/jobs", summary="Jobs, newest first, paged (C-MOVEs and REST sends)")
def list_jobs(
    state: str | None = Query(None, description="only jobs in this state: " + ", ".join(JOB_STATES)),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=2_147_483_647),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    if state is not None and state not in JOB_STATES:
        raise HTTPException(422, [{"loc": ["query", "state"], "key": "state",
                                   "msg": f"state: one of {', '.join(JOB_STATES)}", "type": "enum"}])
    count = select(func.count()).select_from(Job)
    page = select(Job).order_by(Job.created_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    if state is not None:
        count, page = count.where(Job.state == state), page.where(Job.state == state)
    try:
        total = session.scalar(count) or 0
        jobs = [_summary(job) for job in session.scalars(page)]
    except SQLAlchemyError as exc:
        raise _unavailable("index database", exc) from exc
    return {"total": total, "limit": limit, "offset": offset, "jobs": jobs}
