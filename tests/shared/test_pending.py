"""The pending ledger: one marker per acknowledged, not yet indexed instance, kept in the object store."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from shared.events import InstanceStored, Reception
from shared.pending import PendingLedger, marker_key
from shared.storage.filesystem import FilesystemObjectStore


def stored_event(sop_uid: str | None = None) -> InstanceStored:
    sop_uid = sop_uid or generate_uid()
    study, series = generate_uid(), generate_uid()
    return InstanceStored(
        sop_instance_uid=sop_uid, sop_class_uid=CTImageStorage, study_instance_uid=study,
        series_instance_uid=series, transfer_syntax=ExplicitVRLittleEndian,
        object_key=f"{study}/{series}/{sop_uid}.dcm", size=10, sha256="a" * 64,
        reception=Reception(remote_aet="MODALITY", called_aet="PACS", remote_ip="127.0.0.1",
                            received_at=datetime.now(timezone.utc)),
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "objects"
    folder.mkdir()
    return folder


@pytest.fixture
def ledger(root: Path) -> PendingLedger:
    return PendingLedger(FilesystemObjectStore(root))


def age(root: Path, sop_uid: str, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(root / marker_key(sop_uid), (then, then))


def test_a_recorded_instance_is_pending_until_resolved(ledger: PendingLedger) -> None:
    first, second = stored_event(), stored_event()
    ledger.stage(first).publish()
    ledger.stage(second).publish()
    assert ledger.count() == 2
    ledger.resolve(first.sop_instance_uid)
    assert ledger.count() == 1


def test_recording_the_same_instance_twice_keeps_one_marker(ledger: PendingLedger) -> None:
    event = stored_event()
    ledger.stage(event).publish()
    ledger.stage(event).publish()
    assert ledger.count() == 1


def test_resolving_an_unknown_instance_is_fine(ledger: PendingLedger) -> None:
    ledger.resolve(generate_uid())
    assert ledger.count() == 0


def test_markers_live_under_the_pending_prefix(ledger: PendingLedger, root: Path) -> None:
    event = stored_event()
    ledger.stage(event).publish()
    assert (root / ".pending" / f"{event.sop_instance_uid}.json").is_file()


def test_stale_yields_only_markers_older_than_the_age(ledger: PendingLedger, root: Path) -> None:
    old, young = stored_event(), stored_event()
    ledger.stage(old).publish()
    ledger.stage(young).publish()
    age(root, old.sop_instance_uid, 120)
    assert list(ledger.stale(older_than_seconds=60)) == [old]
    assert ledger.count() == 2  # looking does not resolve


def test_stale_with_zero_age_yields_every_marker(ledger: PendingLedger, root: Path) -> None:
    events = [stored_event() for _ in range(3)]
    for event in events:
        ledger.stage(event).publish()
        age(root, event.sop_instance_uid, 1)
    assert {event.sop_instance_uid for event in ledger.stale(0)} == {event.sop_instance_uid for event in events}


def test_an_unreadable_marker_is_removed_and_not_yielded(ledger: PendingLedger, root: Path) -> None:
    good = stored_event()
    ledger.stage(good).publish()
    age(root, good.sop_instance_uid, 120)
    broken_uid = generate_uid()
    (root / marker_key(broken_uid)).write_bytes(b'{"kind": "instance_stored", "sop_inst')  # torn write
    age(root, broken_uid, 120)

    assert list(ledger.stale(60)) == [good]
    assert not (root / marker_key(broken_uid)).exists()
    assert ledger.count() == 1


def test_an_empty_store_has_nothing_pending(ledger: PendingLedger) -> None:
    assert ledger.count() == 0
    assert list(ledger.stale(0)) == []
