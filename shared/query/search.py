"""Run a query at one level: SQL for indexed keys, stored DICOM JSON for the others, computed keys on top.

Used by C-FIND and QIDO-RS. The result is one dict per matching entity: keyword → value, where a value
is text, a number, a list (multi-valued) or a DICOM JSON element (for keys answered from stored attributes).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, func, select
from sqlalchemy.orm import Session

from shared.db.models import Instance, Patient, Series, Study
from shared.dicom.names import accent_free, folded
from shared.query.dicomjson import json_element, json_texts, vr_of
from shared.query.levels import LEVELS, Key, keys_up_to
from shared.query.matching import Matcher, parse_matcher
from shared.query.sequences import SequenceKey


class TooManyMatches(Exception):
    """More entities match than the configured limit allows to return."""


@dataclass
class Query:
    level: str
    values: dict[str, Any]  # keyword → requested value (None or "" for universal matching)
    limit: int = 10_000
    requested: list[str] = field(default_factory=list)  # keywords to return (in order)
    ignore_accents: bool = False  # PatientName compares without accents too (live config)


def _listed(raw: Any) -> list[str]:
    items = raw if isinstance(raw, (list, tuple)) else str(raw or "").split("\\")
    return [str(item).strip() for item in items if str(item).strip() not in ("", "*")]


def _join_to_level(level: str) -> Select[Any]:
    if level == "PATIENT":
        return select(Patient.pk).select_from(Patient)
    if level == "STUDY":
        return select(Study.pk).select_from(Study).join(Patient, Study.patient_fk == Patient.pk)
    if level == "SERIES":
        return (select(Series.pk).select_from(Series).join(Study, Series.study_fk == Study.pk)
                .join(Patient, Study.patient_fk == Patient.pk))
    return (select(Instance.pk).select_from(Instance).join(Series, Instance.series_fk == Series.pk)
            .join(Study, Series.study_fk == Study.pk).join(Patient, Instance.patient_fk == Patient.pk))


def _key_condition(key: Key, raw: Any, ignore_accents: bool) -> ColumnElement[bool] | None:
    """The SQL condition of an indexed key (None for universal matching); names compare in a folded form."""
    column = key.matched
    if key.fold:
        fold = folded
        if ignore_accents and key.accent_free_column is not None:
            column, fold = key.accent_free_column, accent_free
        raw = [fold(str(item)) for item in raw] if isinstance(raw, (list, tuple)) else \
            fold(raw) if isinstance(raw, str) else raw
    matcher = parse_matcher(raw, key.vr)
    return None if matcher.kind == "universal" else matcher.condition(column, key.vr)


JsonMatcher = Matcher | SequenceKey


def matching_statement(level: str, values: dict[str, Any], ignore_accents: bool = False,
                       ) -> tuple[Select[Any], dict[str, JsonMatcher]]:
    """The pks of the entities of ``level`` that the indexed keys match, and the matchers left for the
    keys outside the index (matched on stored attributes). A value may be a SequenceKey (sequence matching).
    ``ignore_accents``: PatientName compares without case and accents (otherwise without case only)."""
    level_spec = LEVELS[level]
    indexed = keys_up_to(level)
    statement = _join_to_level(level)
    json_matchers: dict[str, JsonMatcher] = {}
    for keyword, raw in values.items():
        if isinstance(raw, SequenceKey):
            if not raw.is_universal:
                json_matchers[keyword] = raw
        elif keyword in indexed:
            condition = _key_condition(indexed[keyword], raw, ignore_accents)
            if condition is not None:
                statement = statement.where(condition)
        elif keyword == "ModalitiesInStudy" and level == "STUDY":
            wanted = _listed(raw)  # list matching: a study matches if it has any of these modalities
            if wanted:
                statement = statement.where(exists().where(and_(Series.study_fk == Study.pk,
                                                                 Series.modality.in_(wanted))))
        elif keyword not in level_spec.computed_keys and keyword != "QueryRetrieveLevel":
            matcher = parse_matcher(raw, vr_of(keyword))
            if matcher.kind != "universal":
                json_matchers[keyword] = matcher
    return statement, json_matchers


def run_query(session: Session, query: Query) -> list[dict[str, Any]]:
    level = LEVELS[query.level]
    indexed = keys_up_to(query.level)
    statement, json_matchers = matching_statement(query.level, query.values, query.ignore_accents)
    fetch = None if json_matchers else query.limit + 1
    pks = list(session.scalars(statement.order_by(level.table.pk).limit(fetch)))
    rows = _rows(session, query.level, pks)
    needs_json = json_matchers or any(
        keyword not in indexed and keyword not in level.computed_keys for keyword in query.requested)
    if needs_json:
        documents = _representative_documents(session, query.level, pks)
        for row in rows:
            row["_attributes"] = documents.get(row["_pk"], {})
        rows = [row for row in rows if all(_json_matches(row["_attributes"], keyword, matcher)
                                           for keyword, matcher in json_matchers.items())]
    if len(rows) > query.limit:
        raise TooManyMatches(f"more than {query.limit} matches")
    _add_computed(session, query.level, rows, set(query.requested) & level.computed_keys)
    return rows


def _rows(session: Session, level: str, pks: list[int]) -> list[dict[str, Any]]:
    if not pks:
        return []
    keys = keys_up_to(level)
    columns = [key.column.label(key.keyword) for key in keys.values()]
    statement = _join_to_level(level).add_columns(*columns)
    table = LEVELS[level].table
    rows: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(pks, 5000):
        for row in session.execute(statement.where(table.pk.in_(chunk))):
            mapping = dict(row._mapping)
            mapping["_pk"] = mapping.pop("pk")
            rows[mapping["_pk"]] = mapping
    return [rows[pk] for pk in pks if pk in rows]


def _chunks(items: list[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _representative_documents(session: Session, level: str, pks: list[int]) -> dict[int, dict[str, Any]]:
    """For each entity, the stored attributes of its first instance (the instance itself at IMAGE level)."""
    if not pks:
        return {}
    owner = {
        "PATIENT": Instance.patient_fk,
        "STUDY": Series.study_fk,
        "SERIES": Instance.series_fk,
        "IMAGE": Instance.pk,
    }[level]
    first = select(owner.label("owner"), func.min(Instance.pk).label("instance_pk")).select_from(Instance)
    if level == "STUDY":
        first = first.join(Series, Instance.series_fk == Series.pk)
    documents: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(pks, 5000):
        firsts = first.where(owner.in_(chunk)).group_by(owner).subquery()
        statement = select(firsts.c.owner, Instance.attributes).join(Instance, Instance.pk == firsts.c.instance_pk)
        for owner_pk, attributes in session.execute(statement):
            documents[owner_pk] = attributes or {}
    return documents


def _json_matches(attributes: dict[str, Any], keyword: str, matcher: Matcher | SequenceKey) -> bool:
    element = json_element(attributes, keyword)
    if isinstance(matcher, SequenceKey):
        return matcher.matches(element)
    vr = vr_of(keyword)
    return any(matcher.matches_text(text, vr) for text in json_texts(element))


# Computed keys of the study level that one statement over its series gives (_study_series_summary).
_FROM_STUDY_SERIES = {"NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ModalitiesInStudy"}


def _add_computed(session: Session, level: str, rows: list[dict[str, Any]], wanted: set[str]) -> None:
    if not rows or not wanted:
        return
    pks = [row["_pk"] for row in rows]
    values: dict[str, dict[int, Any]] = defaultdict(dict)
    if level == "PATIENT":
        if "NumberOfPatientRelatedStudies" in wanted:
            values["NumberOfPatientRelatedStudies"] = _counts(
                session, select(Study.patient_fk, func.count(Study.pk)).group_by(Study.patient_fk), Study.patient_fk, pks)
        if "NumberOfPatientRelatedSeries" in wanted:
            values["NumberOfPatientRelatedSeries"] = _counts(session, select(Study.patient_fk, func.count(Series.pk))
                .join(Series, Series.study_fk == Study.pk).group_by(Study.patient_fk), Study.patient_fk, pks)
        if "NumberOfPatientRelatedInstances" in wanted:
            values["NumberOfPatientRelatedInstances"] = _counts(session, select(
                Instance.patient_fk, func.count(Instance.pk)).group_by(Instance.patient_fk), Instance.patient_fk, pks)
    elif level == "STUDY":
        summarised = wanted & _FROM_STUDY_SERIES
        if summarised:
            summary = _study_series_summary(session, pks)
            for keyword in summarised:
                values[keyword] = {study_pk: study[keyword] for study_pk, study in summary.items()}
        if "SOPClassesInStudy" in wanted:
            values["SOPClassesInStudy"] = _distinct(session, select(Series.study_fk, Instance.sop_class_uid)
                .join(Instance, Instance.series_fk == Series.pk).distinct(), Series.study_fk, pks)
    elif level == "SERIES" and "NumberOfSeriesRelatedInstances" in wanted:
        values["NumberOfSeriesRelatedInstances"] = _counts(session, select(
            Instance.series_fk, func.count(Instance.pk)).group_by(Instance.series_fk), Instance.series_fk, pks)
    for row in rows:
        for keyword, by_pk in values.items():
            row[keyword] = by_pk.get(row["_pk"], [] if keyword in ("ModalitiesInStudy", "SOPClassesInStudy") else 0)


def _study_series_summary(session: Session, pks: list[int]) -> dict[int, dict[str, Any]]:
    """Per study: NumberOfStudyRelatedSeries, NumberOfStudyRelatedInstances and ModalitiesInStudy, from one
    statement (a row per series, with its instance count) rather than one per key."""
    statement = (select(Series.study_fk, Series.modality, func.count(Instance.pk))
                 .outerjoin(Instance, Instance.series_fk == Series.pk)
                 .group_by(Series.pk, Series.study_fk, Series.modality))
    series: dict[int, list[tuple[str | None, int]]] = defaultdict(list)
    for chunk in _chunks(pks, 5000):
        for study_pk, modality, instances in session.execute(statement.where(Series.study_fk.in_(chunk))):
            series[study_pk].append((modality, int(instances)))
    return {study_pk: {"NumberOfStudyRelatedSeries": len(rows),
                       "NumberOfStudyRelatedInstances": sum(instances for _, instances in rows),
                       "ModalitiesInStudy": sorted({modality for modality, _ in rows if modality})}
            for study_pk, rows in series.items()}


def _counts(session: Session, statement: Select[Any], owner: Any, pks: list[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for chunk in _chunks(pks, 5000):
        counts.update({owner_pk: int(count) for owner_pk, count in session.execute(statement.where(owner.in_(chunk)))})
    return counts


def _distinct(session: Session, statement: Select[Any], owner: Any, pks: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = defaultdict(list)
    for chunk in _chunks(pks, 5000):
        for owner_pk, value in session.execute(statement.where(owner.in_(chunk))):
            if value:
                found[owner_pk].append(value)
    return {owner_pk: sorted(values) for owner_pk, values in found.items()}
