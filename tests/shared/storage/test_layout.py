"""Object keys of each storage layout and naming; hostile PatientIDs become safe, distinct folder names."""

from __future__ import annotations

import hashlib

from datetime import datetime, timezone

import pytest

from shared.storage.base import validate_key
from shared.storage.layout import KeyFacts, layout_key, legacy_instance_key, patient_component

STUDY, SERIES, SOP = "1.2.3", "1.2.3.4", "1.2.3.4.5"
RECEIVED = datetime(2026, 11, 26, 23, 59, 58, 123456, tzinfo=timezone.utc)


PID1 = "p-" + hashlib.sha256(b"PID-1").hexdigest()[:20]


def facts(patient_id: str | None = "PID-1", instance_number: int | None = 7) -> KeyFacts:
    return KeyFacts(STUDY, SERIES, SOP, patient_id, instance_number, RECEIVED)


@pytest.mark.parametrize(("layout", "expected"), [
    ("flat", f"{SOP}.dcm"),
    ("patient", f"{PID1}/{SOP}.dcm"),
    ("study", f"{STUDY}/{SOP}.dcm"),
    ("series", f"{PID1}/{STUDY}/{SERIES}/{SOP}.dcm"),
    ("date", f"2026/11/26/{SOP}.dcm"),
])
def test_each_layout_names_its_folders(layout: str, expected: str) -> None:
    assert layout_key(layout, "sop_uid", facts()) == expected


def test_the_date_is_the_utc_day_of_reception() -> None:
    late_in_berlin = KeyFacts(STUDY, SERIES, SOP, "P", 1, datetime.fromisoformat("2026-11-27T00:30:00+01:00"))
    assert layout_key("date", "sop_uid", late_in_berlin) == f"2026/11/26/{SOP}.dcm"


@pytest.mark.parametrize(("naming", "prefix"), [
    ("sop_uid", ""),
    ("instance_number", "000007_"),
    ("timestamp", "20261126T235958123456Z_"),
    ("sequence", "##########_"),
])
def test_each_naming_ends_with_the_sop_instance_uid_and_dcm(naming: str, prefix: str) -> None:
    name = layout_key("flat", naming, facts())
    assert name.endswith(f"{SOP}.dcm") and len(name) == len(prefix) + len(SOP) + 4
    assert all(want in ("#", got) and (want != "#" or got.isdigit()) for want, got in zip(prefix, name))


def test_sequence_names_grow_and_a_missing_instance_number_is_zero() -> None:
    first = layout_key("flat", "sequence", facts())
    second = layout_key("flat", "sequence", facts())
    assert first < second
    assert layout_key("flat", "instance_number", facts(instance_number=None)).startswith("000000_")


HOSTILE = ["../../etc/passwd", "..", ".", "a b", "A/B", "A\\B", "Müller", "患者", " ", "-x", ".hidden",
           "x" * 64 + "y", "\x00\x01", "%2e%2e", ".pending", ".claims", "_none", "NUL:"]


@pytest.mark.parametrize("patient_id", HOSTILE)
def test_a_hostile_patient_id_becomes_one_safe_component(patient_id: str) -> None:
    component = patient_component(patient_id)
    assert "/" not in component and "\\" not in component and component not in (".", "..")
    assert not component.startswith(".")
    key = layout_key("series", "sop_uid", facts(patient_id))
    assert validate_key(key) == key
    assert key.split("/")[0] == component and key.count("/") == 3


def test_distinct_patient_ids_never_share_a_folder() -> None:
    candidates = HOSTILE + ["a-b", "a_b", "a.b", "A-B", "PID-1", "", None, "a?b", "a*b", "a b ", "ab"]
    components = {patient_component(value) for value in candidates}
    distinct = {(value or "").strip() for value in candidates}
    assert len(components) == len(distinct)


def test_the_patient_folder_is_a_pseudonym_never_the_patient_id() -> None:
    assert patient_component("PAT_001") == "p-" + hashlib.sha256(b"PAT_001").hexdigest()[:20]
    assert patient_component(" PAT_001 ") == patient_component("PAT_001")  # padding is not significant
    assert all(patient_id.strip() not in patient_component(patient_id) for patient_id in HOSTILE if patient_id.strip())
    assert patient_component("") == patient_component(None) == "_none"


def test_the_legacy_key_is_study_series_sop() -> None:
    assert legacy_instance_key(STUDY, SERIES, SOP) == f"{STUDY}/{SERIES}/{SOP}.dcm"


def test_unknown_layouts_and_namings_are_refused() -> None:
    with pytest.raises(ValueError):
        layout_key("bypatient", "sop_uid", facts())
    with pytest.raises(ValueError):
        layout_key("flat", "random", facts())


def test_pacs_storage_layout_and_max_bytes_are_the_initial_live_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.node_config import default_config_for
    from shared.settings import load_settings

    monkeypatch.setenv("PACS_STORAGE_LAYOUT", "date")
    monkeypatch.setenv("PACS_STORAGE_MAX_BYTES", "1000000")
    config = default_config_for(load_settings())
    assert (config.storage_layout, config.storage_max_bytes, config.storage_naming) == ("date", 1_000_000, "sop_uid")
    monkeypatch.setenv("PACS_STORAGE_MAX_BYTES", "")  # as the deployment files write "no limit"
    monkeypatch.delenv("PACS_STORAGE_LAYOUT")
    config = default_config_for(load_settings())
    assert (config.storage_layout, config.storage_max_bytes) == ("series", None)
