"""The live node configuration (GET/PATCH /api/config) and the modality registry (PUT /api/modalities/{name}).

Both live in the index database (tables ``node_settings`` and ``modalities``) so that every service, in every
process, sees the same values; services read them through shared.live_config.LiveConfig, which polls the
database and caches the last good values. Keys that were never set over REST keep their defaults here
(``check_called_aet`` starts from the ``check_called_aet`` setting of shared.settings.Settings).

A PATCH is validated as a whole: the current values with the patch applied must form a valid NodeConfig,
otherwise nothing is applied and the error names each offending key.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db.models import Modality, NodeSetting
from shared.uids import is_valid_uid

log = logging.getLogger(__name__)

ServiceName = Literal["echo", "store", "find", "move", "get"]
SERVICES: tuple[str, ...] = ("echo", "store", "find", "move", "get")
MAX_ASSOCIATIONS_LIMIT = 1000
MODALITY_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
_HOST_PATTERN = re.compile(r"[A-Za-z0-9._:%-]{1,255}")  # a host name, an IPv4 or an IPv6 address


def valid_ae_title(value: str) -> str:
    """An AE title: 1 to 16 printable ASCII characters, no backslash; surrounding spaces are not significant."""
    stripped = value.strip(" ")
    if not 1 <= len(stripped) <= 16 or not all(" " <= ch <= "~" for ch in stripped) or "\\" in stripped:
        raise ValueError("an AE title has 1 to 16 printable ASCII characters and no backslash")
    return stripped


def _services_in_canonical_order(values: list[str]) -> list[str]:
    chosen = set(values)
    return [service for service in SERVICES if service in chosen]


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class NodeConfig(BaseModel):
    """Every key of the live configuration with its default. Strict: a JSON value of the wrong type is refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    check_called_aet: bool = Field(
        True, description="Refuse associations whose called AE title is not the node's (A-ASSOCIATE-RJ 1/1/7). "
        "Its initial value is the check_called_aet setting.")
    unknown_callers_allowed: list[ServiceName] = Field(
        default_factory=lambda: ["echo", "store"],
        description="Services a calling AE title that is not a registered modality may use. [] refuses "
        "unknown callers at association time (A-ASSOCIATE-RJ 1/1/3); a service not listed is refused per "
        "request (status 0x0124).")
    accept_unknown_sop_classes: bool = Field(
        False, description="Accept C-STORE of SOP classes that are not standard storage SOP classes "
        "(private or unknown UIDs). Off: such a presentation context is rejected (result 3).")
    accepted_transfer_syntaxes: list[str] | None = Field(
        None, min_length=1, description="Transfer syntax UIDs accepted for storage; null = every one the node "
        "supports. A storage context none of whose proposed transfer syntaxes is listed gets result 4 "
        "(transfer syntaxes not supported). Verification is not restricted.")
    max_associations: int = Field(
        64, ge=1, le=MAX_ASSOCIATIONS_LIMIT, description="Concurrent associations the node accepts (all the SCP "
        "processes of `pacs serve` together; each `pacs scp` with a data directory of its own on its own); one more "
        "gets A-ASSOCIATE-RJ 2/3/2 (rejected-transient, local limit exceeded).")
    check_calling_aet_host: bool = Field(
        False, description="A calling AE title that is a registered modality must connect from that modality's "
        "host (its address, or one its host name resolves to); from anywhere else: A-ASSOCIATE-RJ 1/1/3. "
        "Unregistered callers are not affected (see unknown_callers_allowed).")
    allowed_calling_aets: list[str] = Field(
        default_factory=list, description="If not empty, only these calling AE titles may associate "
        "(others: A-ASSOCIATE-RJ 1/1/3).")
    blocked_calling_aets: list[str] = Field(
        default_factory=list, description="Calling AE titles always refused (A-ASSOCIATE-RJ 1/1/3); "
        "blocking wins over every allow rule.")
    ip_allowlist: list[str] = Field(
        default_factory=list, description="If not empty, only callers from these networks (CIDR, e.g. "
        "10.0.0.0/8; a bare address is a /32 or /128) may associate (others: A-ASSOCIATE-RJ 1/1/3).")
    enabled_services: list[ServiceName] = Field(
        default_factory=lambda: list(SERVICES), description="Services the node offers at all; a request for "
        "another is refused (status 0x0124) whoever calls.")
    patient_name_ignore_accents: bool = Field(
        False, description="C-FIND and QIDO-RS compare PatientName without accents as well as without case "
        "(Müller matches MULLER). Off: case-insensitive only.")
    duplicate_policy: Literal["keep_first"] = Field(
        "keep_first", description="Same SOP Instance UID with other content: keep the first object and audit "
        "the conflict (the only policy implemented).")
    storage_layout: Literal["flat", "patient", "study", "series", "date"] = Field(
        "series", description="Folders of new objects (shared.storage.layout): flat; patient (PatientID, "
        "sanitised); study (StudyUID); series (patient/StudyUID/SeriesUID); date (received day, YYYY/MM/DD). "
        "Objects already stored keep their keys.")
    storage_naming: Literal["sop_uid", "instance_number", "timestamp", "sequence"] = Field(
        "sop_uid", description="File name of new objects, always ending in _<SOPInstanceUID>.dcm or "
        "<SOPInstanceUID>.dcm: sop_uid, instance_number (6 digits first), timestamp (received, UTC), sequence "
        "(arrival counter of the receiving process).")
    storage_max_bytes: int | None = Field(
        None, gt=0, description="Most bytes of instances the node holds (indexed plus pending); a new instance "
        "beyond it is refused: C-STORE 0xA700, STOW-RS 507 (null = no limit).")
    storage_max_instances: int | None = Field(
        None, gt=0, description="Most instances the node holds (indexed plus pending); refused beyond it as for "
        "storage_max_bytes (null = no limit).")
    ingest_compression: Literal["none", "jpeg_ls_lossless", "jpeg2000_lossless", "rle_lossless"] = Field(
        "none", description="Compress the pixel data of new instances losslessly before they are stored: "
        "jpeg_ls_lossless, jpeg2000_lossless or rle_lossless (none = store as received). Only native 8/16-bit "
        "monochrome or RGB little-endian pixel data is compressed, and only when the result decodes to exactly the "
        "received pixels and is smaller; retrieval transcodes for peers that do not accept it. Costs CPU on the "
        "ingest path (bench/README.md).")
    retention_days: int | None = Field(
        None, gt=0, le=36500, description="Delete studies older than this many days (null = keep forever); "
        "protected studies are kept. Run by `pacs indexer`; preview with GET /api/retention/preview.")
    retention_basis: Literal["received", "study_date"] = Field(
        "received", description="Age of a study for retention: received (its last instance received) or "
        "study_date (StudyDate; a study received within the last day is kept anyway).")
    storage_recycle: bool = Field(
        False, description="With a storage limit set: `pacs indexer` deletes the oldest unprotected studies (none "
        "that received an instance within the last hour) to keep the node under 90% of its limits, so that "
        "ingest is not refused; at 100% ingest is still refused (nothing left to recycle, or not fast enough).")

    # Events and routing (shared/routing.py, shared/webhooks.py, services/indexer/events.py)
    study_stable_seconds: int = Field(
        60, ge=1, le=86_400, description="A study with no new instance indexed for this long is stable: a "
        "study_stable event (webhooks, auto-forward rules), once, again after new instances.")
    webhook_max_attempts: int = Field(
        10, ge=1, le=100, description="Attempts of one webhook delivery before it is marked failed.")
    webhook_retry_seconds: int = Field(
        10, ge=1, le=3600, description="Wait before the first retry of a webhook delivery; doubled at each "
        "attempt, at most one hour.")
    forward_max_attempts: int = Field(
        5, ge=1, le=100, description="Jobs one auto-forward may run (the first and its retries of the instances "
        "that failed) before it is marked failed.")
    forward_retry_seconds: int = Field(
        60, ge=1, le=86_400, description="Wait before the first retry of an auto-forward; doubled at each "
        "attempt, at most one day.")
    commitment_wait_seconds: int = Field(
        30, ge=0, le=600, description="Storage commitment: how long to wait for referenced instances that are "
        "acknowledged but not yet indexed before reporting them failed.")

    @field_validator("unknown_callers_allowed", "enabled_services")
    @classmethod
    def _canonical_services(cls, value: list[str]) -> list[str]:
        return _services_in_canonical_order(value)

    @field_validator("accepted_transfer_syntaxes")
    @classmethod
    def _transfer_syntax_uids(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for uid in value:
            if not is_valid_uid(uid):
                raise ValueError("every transfer syntax must be a UID (digits and dots, at most 64 characters)")
        return _unique(value)

    @field_validator("allowed_calling_aets", "blocked_calling_aets")
    @classmethod
    def _ae_titles(cls, value: list[str]) -> list[str]:
        return _unique([valid_ae_title(title) for title in value])

    @field_validator("ip_allowlist")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        networks = []
        for text in value:
            try:
                networks.append(str(ipaddress.ip_network(text.strip(), strict=False)))
            except ValueError:
                raise ValueError("every entry must be an IP network in CIDR notation (e.g. 10.0.0.0/8)") from None
        return _unique(networks)


CONFIG_KEYS: tuple[str, ...] = tuple(NodeConfig.model_fields)


def default_config(check_called_aet: bool = True) -> NodeConfig:
    """The configuration before any PATCH: NodeConfig defaults, check_called_aet from the settings."""
    return NodeConfig(check_called_aet=check_called_aet)


def default_config_for(settings: Any) -> NodeConfig:
    """The configuration before any PATCH, with the initial values the settings give (shared.settings.Settings:
    check_called_aet, storage_layout, storage_max_bytes, ingest_compression)."""
    return NodeConfig(check_called_aet=settings.check_called_aet, storage_layout=settings.storage_layout,
                      storage_max_bytes=settings.storage_max_bytes, ingest_compression=settings.ingest_compression)


class ConfigError(ValueError):
    """A PATCH or stored value that does not validate; ``problems`` lists (key, message, type)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message, _ in problems))
        self.problems = problems


def _problems(exc: ValidationError) -> list[tuple[str, str, str]]:
    problems = []
    for error in exc.errors():
        key = str(error["loc"][0]) if error["loc"] else "body"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        problems.append((key, message, error["type"]))
    return problems


def apply_patch(current: NodeConfig, patch: dict[str, Any]) -> NodeConfig:
    """The configuration with ``patch`` applied, validated as a whole; raise ConfigError naming the bad keys."""
    try:
        return NodeConfig.model_validate({**current.model_dump(mode="json"), **patch})
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


def merge_stored(base: NodeConfig, stored: dict[str, Any]) -> NodeConfig:
    """``base`` with the stored values applied; a stored key that is unknown or invalid is skipped (logged)."""
    values = base.model_dump(mode="json")
    for key, value in stored.items():
        candidate = {**values, key: value}
        try:
            NodeConfig.model_validate(candidate)
        except ValidationError:
            log.warning("node_config.stored_value_ignored key=%s", key if key in CONFIG_KEYS else "<unknown>")
            continue
        values = candidate
    return NodeConfig.model_validate(values)


class ModalityFields(BaseModel):
    """The body of PUT /api/modalities/{name}."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    ae_title: str = Field(description="The remote AE title (1 to 16 characters, no backslash).")
    host: str = Field(description="Host name or IP address of the remote AE (for C-MOVE destinations and sends).")
    port: int = Field(ge=1, le=65535, description="DICOM port of the remote AE.")
    allow: list[ServiceName] = Field(
        default_factory=lambda: ["echo", "store"],
        description="Services this AE may use on the node: subset of echo, store, find, move, get.")
    description: str = Field("", max_length=1024, description="Free text.")
    local_ae_title: str | None = Field(
        None, description="Calling AE title the node uses toward this AE (null = the node's own AE title).")
    facility: str = Field(
        "", max_length=64, description="The sending facility (site, department) this AE belongs to; "
        "GET /api/studies?facility= lists the studies its AE titles sent.")

    @field_validator("ae_title")
    @classmethod
    def _remote_ae_title(cls, value: str) -> str:
        return valid_ae_title(value)

    @field_validator("local_ae_title")
    @classmethod
    def _local_ae_title(cls, value: str | None) -> str | None:
        return None if value is None else valid_ae_title(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        if not _HOST_PATTERN.fullmatch(value):
            raise ValueError("a host name or IP address (letters, digits, '.', '-', ':'), at most 255 characters")
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        return _services_in_canonical_order(value)


class ModalityEntry(ModalityFields):
    """A registered modality as the services see it."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not MODALITY_NAME_PATTERN.fullmatch(value):
            raise ValueError("a modality name has 1 to 64 letters, digits, '_' or '-'")
        return value


def validate_modality(name: str, fields: dict[str, Any]) -> ModalityEntry:
    try:
        return ModalityEntry.model_validate({**fields, "name": name})
    except ValidationError as exc:
        raise ConfigError(_problems(exc)) from None


# ---- persistence (one session, the caller's transaction) ----------------------------------------------------

def read_stored_settings(session: Session) -> dict[str, Any]:
    return {row.key: row.value for row in session.scalars(select(NodeSetting))}


def load_config(session: Session, base: NodeConfig) -> NodeConfig:
    return merge_stored(base, read_stored_settings(session))


def store_settings(session: Session, values: dict[str, Any], now: datetime) -> None:
    """Upsert the given keys (already validated, JSON values) into node_settings."""
    existing = {row.key: row for row in session.scalars(select(NodeSetting).where(NodeSetting.key.in_(values)))}
    for key, value in values.items():
        row = existing.get(key)
        if row is None:
            session.add(NodeSetting(key=key, value=value, updated_at=now))
        else:
            row.value = value
            row.updated_at = now


def modality_entry(row: Modality) -> ModalityEntry:
    return ModalityEntry(name=row.name, ae_title=row.ae_title, host=row.host, port=row.port,
                         allow=list(row.allow), description=row.description, local_ae_title=row.local_ae_title,
                         facility=row.facility or "")


def load_modalities(session: Session) -> list[ModalityEntry]:
    entries = []
    for row in session.scalars(select(Modality).order_by(Modality.name)):
        try:
            entries.append(modality_entry(row))
        except ValidationError:
            log.warning("node_config.stored_modality_ignored")
    return entries
