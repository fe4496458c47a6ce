"""GET /api/studies: the studies held, most recently updated first, paged, searchable as the dashboard needs.

Search keys match as C-FIND does (shared.query: wildcards ``*``/``?``, case-insensitive names, date ranges
``20240101-20241231``, a list of modalities), plus the AE title that sent their instances (``sending_aet``: the
calling AE title recorded with each instance).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from sqlalchemy import distinct, exists, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.dependencies import get_session
from shared.db.models import Instance, Modality, Patient, Series, Study
from shared.events import iso_utc
from shared.query.matching import InvalidMatchingKey
from shared.query.search import matching_statement

router = APIRouter(tags=["studies"])

MAX_PAGE = 500


def _unprocessable(key: str, message: str) -> HTTPException:
    return HTTPException(422, [{"loc": ["query", key], "key": key, "type": "value_error", "msg": f"{key}: {message}"}])


@router.get("/api/studies", summary="Studies, most recently updated first, paged; search by patient, date, modality "
                                    "or sending AE title")
def list_studies(
    patient_name: str | None = Query(None, max_length=200, description="C-FIND matching: DOE*, case-insensitive"),
    patient_id: str | None = Query(None, max_length=64, description="C-FIND matching (wildcards allowed)"),
    study_date: str | None = Query(None, max_length=17, description="YYYYMMDD or a range YYYYMMDD-YYYYMMDD"),
    modality: str | None = Query(None, max_length=100, description="studies with a series of this modality "
                                                                   "(comma-separated: any of them)"),
    sending_aet: str | None = Query(None, max_length=16, description="studies with an instance sent by this "
                                                                     "calling AE title"),
    remote_aet: str | None = Query(None, max_length=16, description="the same as sending_aet"),
    facility: str | None = Query(None, max_length=64, description="studies with an instance sent by an AE title "
                                 "of a modality registered with this facility"),
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offset: int = Query(0, ge=0, le=2_147_483_647),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, keyword, raw in (("patient_name", "PatientName", patient_name), ("patient_id", "PatientID", patient_id),
                              ("study_date", "StudyDate", study_date)):
        if raw is not None and raw.strip():
            values[keyword] = raw.strip()
    if modality is not None and modality.strip():
        values["ModalitiesInStudy"] = [item.strip().upper() for item in modality.split(",") if item.strip()]
    try:
        matching, _ = matching_statement("STUDY", values)  # every key here is indexed: nothing left to match later
    except InvalidMatchingKey as exc:
        key = "study_date" if "StudyDate" in str(exc) or "range" in str(exc).lower() else "patient_name"
        raise _unprocessable(key, str(exc)) from None
    sender = (sending_aet or remote_aet or "").strip()
    if sender:
        matching = matching.where(exists().where(Series.study_fk == Study.pk, Instance.series_fk == Series.pk,
                                                 Instance.remote_aet == sender))
    if facility is not None and facility.strip():
        senders_of_facility = select(Modality.ae_title).where(Modality.facility == facility.strip())
        matching = matching.where(exists().where(Series.study_fk == Study.pk, Instance.series_fk == Series.pk,
                                                 Instance.remote_aet.in_(senders_of_facility)))
    wanted = matching.subquery()
    page = (select(Study, Patient).join(Patient, Study.patient_fk == Patient.pk).where(Study.pk.in_(select(wanted)))
            .order_by(Study.last_update.desc(), Study.pk.desc()).limit(limit).offset(offset))
    try:
        total = session.scalar(select(func.count()).select_from(wanted)) or 0
        rows = session.execute(page).all()
        pks = [study.pk for study, _ in rows]
        counts: dict[int, tuple[int, int]] = {}
        modalities: dict[int, set[str]] = {}
        senders: dict[int, set[str]] = {}
        if pks:
            for fk, series, instances in session.execute(
                    select(Series.study_fk, func.count(distinct(Series.pk)), func.count(Instance.pk))
                    .select_from(Series).outerjoin(Instance, Instance.series_fk == Series.pk)
                    .where(Series.study_fk.in_(pks)).group_by(Series.study_fk)):
                counts[fk] = (series, instances)
            for fk, value in session.execute(select(Series.study_fk, Series.modality)
                                             .where(Series.study_fk.in_(pks)).distinct()):
                if value:
                    modalities.setdefault(fk, set()).add(value)
            for fk, aet in session.execute(
                    select(Series.study_fk, Instance.remote_aet).join(Instance, Instance.series_fk == Series.pk)
                    .where(Series.study_fk.in_(pks)).distinct()):
                if aet:
                    senders.setdefault(fk, set()).add(aet)
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"index database unavailable ({exc.__class__.__name__})") from exc
    studies = []
    for study, patient in rows:
        series_count, instance_count = counts.get(study.pk, (0, 0))
        studies.append({
            "study_instance_uid": study.study_instance_uid, "study_date": study.study_date,
            "study_time": study.study_time, "accession_number": study.accession_number,
            "study_description": study.study_description, "patient_id": patient.patient_id,
            "patient_name": patient.patient_name, "modalities": sorted(modalities.get(study.pk, ())),
            "series": series_count, "instances": instance_count,
            "sending_aets": sorted(senders.get(study.pk, ())), "last_update": iso_utc(study.last_update),
        })
    return {"total": total, "limit": limit, "offset": offset, "studies": studies}
