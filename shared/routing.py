"""Auto-forward rules: which instances or studies go where (REST: /api/routing/rules).

A rule has a trigger (``study_stable``: the whole study, once it is stable; ``instance_stored``: the instances of
each indexing batch as they are indexed), a destination (the name of a registered modality) and conditions, all
of which must hold:

- ``calling_aet``: the calling AE title the instances came from is one of these (a study: any of its instances);
- ``modality``: the series' Modality is one of these (a study: any of its series);
- ``tags``: ``{"<keyword or 8-hex-digit tag>": "<pattern>"}``; each attribute, as stored for the instance (a
  study: its first instance), has a value matching the pattern (``*`` and ``?`` wildcards, case-sensitive as
  DICOM matching; PersonName compared on its alphabetic form). An attribute the instance lacks matches nothing.

Empty lists and an empty ``tags`` impose nothing. What a rule decides becomes a ``forwards`` row (an outbox)
written in the transaction that produced the event; the indexer's event thread turns it into a mover job.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.datadict import tag_for_keyword
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Instance, Series, Study
from shared.db.routing_models import Forward, RoutingRule
from shared.events import utc_now
from shared.jobs import Item
from shared.node_config import MODALITY_NAME_PATTERN, valid_ae_title

Trigger = Literal["study_stable", "instance_stored"]
TRIGGERS: tuple[str, ...] = ("study_stable", "instance_stored")
_HEX_TAG = re.compile(r"[0-9A-Fa-f]{8}")
MAX_TAG_CONDITIONS = 32


def tag_key(name: str) -> str:
    """The DICOM JSON key (8 upper-case hex digits) of a keyword or a tag; ValueError when it is neither."""
    text = name.strip()
    if _HEX_TAG.fullmatch(text):
        return text.upper()
    tag = tag_for_keyword(text)
    if tag is None:
        raise ValueError(f"unknown attribute keyword {text[:64]!r} (a keyword or 8 hexadecimal digits)")
    return f"{tag:08X}"


class Conditions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    calling_aet: list[str] = Field(default_factory=list, description="Calling AE titles (any of); [] = any.")
    modality: list[str] = Field(default_factory=list, description="Modalities (any of), e.g. CT, MR; [] = any.")
    tags: dict[str, str] = Field(default_factory=dict, description="Attribute (keyword or tag) -> pattern with * "
                                 "and ?; every one must match the stored attributes.")

    @field_validator("calling_aet")
    @classmethod
    def _aets(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(valid_ae_title(title) for title in value))

    @field_validator("modality")
    @classmethod
    def _modalities(cls, value: list[str]) -> list[str]:
        for item in value:
            if not 1 <= len(item.strip()) <= 16:
                raise ValueError("a modality has 1 to 16 characters")
        return list(dict.fromkeys(item.strip() for item in value))

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_TAG_CONDITIONS:
            raise ValueError(f"at most {MAX_TAG_CONDITIONS} tag conditions")
        for pattern in value.values():
            if len(pattern) > 1024:
                raise ValueError("a pattern has at most 1024 characters")
        return {tag_key(name): pattern for name, pattern in value.items()}


class RuleFields(BaseModel):
    """The body of PUT /api/routing/rules/{name}."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    destination: str = Field(description="Name of a registered modality (/api/modalities/{name}).")
    trigger: Trigger = Field("study_stable", description="study_stable (default) or instance_stored.")
    conditions: Conditions = Field(default_factory=Conditions)
    enabled: bool = True

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if not MODALITY_NAME_PATTERN.fullmatch(value):
            raise ValueError("a modality name has 1 to 64 letters, digits, '_' or '-'")
        return value


def _values(attributes: dict[str, Any], key: str) -> list[str]:
    element = attributes.get(key)
    if not isinstance(element, dict):
        return []
    values = []
    for value in element.get("Value", []) or []:
        if isinstance(value, dict):
            value = value.get("Alphabetic", "")
        if isinstance(value, (str, int, float)):
            values.append(str(value))
    return values


def tags_match(tags: dict[str, str], attributes: dict[str, Any]) -> bool:
    return all(any(fnmatch.fnmatchcase(value, pattern) for value in _values(attributes, key))
               for key, pattern in tags.items())


@dataclass(frozen=True)
class Subject:
    """What a rule looks at: the calling AE titles, the modalities and the stored attributes."""

    calling_aets: frozenset[str]
    modalities: frozenset[str]
    attributes: dict[str, Any]


def matches(conditions: Conditions, subject: Subject) -> bool:
    if conditions.calling_aet and not subject.calling_aets & set(conditions.calling_aet):
        return False
    if conditions.modality and not subject.modalities & set(conditions.modality):
        return False
    return tags_match(conditions.tags, subject.attributes)


@dataclass(frozen=True)
class ActiveRule:
    id: str
    name: str
    conditions: Conditions


def active_rules(session: Session, trigger: str) -> list[ActiveRule]:
    rules = []
    for row in session.scalars(select(RoutingRule).where(RoutingRule.enabled.is_(True),
                                                          RoutingRule.trigger == trigger)):
        try:
            rules.append(ActiveRule(row.id, row.name, Conditions.model_validate(row.conditions)))
        except ValueError:
            continue  # validated when saved; a row edited by hand is skipped
    return rules


def add_forward(session: Session, rule_id: str, study_instance_uid: str, sop_instance_uids: list[str] | None) -> None:
    now = utc_now()
    session.add(Forward(rule_id=rule_id, study_instance_uid=study_instance_uid, sop_instance_uids=sop_instance_uids,
                        state="pending", attempts=0, next_attempt_at=now, claimed_until=None, job_id=None,
                        last_error="", created_at=now, updated_at=now))


def study_subject(session: Session, study_pk: int) -> Subject:
    """A study as rules see it: calling AE titles and modalities of all its instances, its first instance's tags."""
    aets = session.scalars(select(Instance.remote_aet).join(Series, Instance.series_fk == Series.pk)
                           .where(Series.study_fk == study_pk).distinct())
    modalities = session.scalars(select(Series.modality).where(Series.study_fk == study_pk).distinct())
    first = session.scalar(select(Instance.attributes).join(Series, Instance.series_fk == Series.pk)
                           .where(Series.study_fk == study_pk).order_by(Instance.pk).limit(1))
    return Subject(frozenset(aets), frozenset(modalities), first or {})


def forward_items(session: Session, study_instance_uid: str, sop_instance_uids: Iterable[str] | None) -> list[Item]:
    """The held instances to send, in sending order (series number, instance number)."""
    statement = (select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.transfer_syntax,
                        Instance.object_key, Instance.instance_number, Instance.pk, Series.series_number,
                        Series.pk.label("series_pk"))
                 .join(Series, Instance.series_fk == Series.pk).join(Study, Series.study_fk == Study.pk)
                 .where(Study.study_instance_uid == study_instance_uid))
    if sop_instance_uids is None:
        rows = list(session.execute(statement))
    else:
        wanted = list(dict.fromkeys(sop_instance_uids))
        rows = []
        for start in range(0, len(wanted), 500):  # well under SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            rows += list(session.execute(statement.where(Instance.sop_instance_uid.in_(chunk))))
    rows.sort(key=lambda row: (row.series_number is None, row.series_number or 0, row.series_pk,
                               row.instance_number is None, row.instance_number or 0, row.pk))
    return [Item(row.sop_instance_uid, row.sop_class_uid, row.transfer_syntax, row.object_key) for row in rows]


def retry_delay_seconds(base: int, attempts: int, ceiling: int) -> int:
    """Exponential backoff: base, 2*base, 4*base, ... at most ``ceiling``."""
    return int(min(ceiling, base * (2 ** max(0, attempts - 1))))
