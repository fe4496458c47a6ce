"""A job run by the mover, on SQLite and PostgreSQL: its end is recorded, and the relays of C-MOVEs waiting on this
data directory are rung, as soon as every sub-operation has its answer (before the association is released); a
cancelled job stops before its next item."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt

from services.mover import runner
from services.mover.runner import run_job
from shared.doorbell import Doorbell
from shared.dicom.part10 import encode_part10
from shared.jobs import Destination, Item, Progress, create_job, progress, progress_doorbells, request_cancel
from shared.runtime import Runtime
from tests.factory import encode_dataset, make_image
from tests.node import free_port


def stored_items(runtime: Runtime, count: int) -> list[Item]:
    items = []
    for _ in range(count):
        dataset = make_image()
        part10 = encode_part10(encode_dataset(dataset, ExplicitVRLittleEndian), dataset.SOPClassUID,
                               dataset.SOPInstanceUID, ExplicitVRLittleEndian)
        key = f"1.2/1.3/{dataset.SOPInstanceUID}.dcm"
        runtime.store.put_new(key, part10, hashlib.sha256(part10).hexdigest())
        items.append(Item(dataset.SOPInstanceUID, dataset.SOPClassUID, ExplicitVRLittleEndian, key))
    return items


class SeenAtRelease:
    """A storage SCP that notes, when the mover releases its association, the job's row and whether a relay's
    doorbell had been rung."""

    def __init__(self, runtime: Runtime, bell: Doorbell) -> None:
        self.runtime, self.bell = runtime, bell
        self.job_id = ""
        self.job: Progress | None = None
        self.rung: bool | None = None
        ae = AE(ae_title="DEST")
        ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        self.port = free_port()
        self.server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, lambda _event: 0x0000), (evt.EVT_RELEASED, self._released)])

    def _released(self, _event: evt.Event) -> None:
        with self.runtime.sessions() as session:
            self.job = progress(session, self.job_id)
        self.rung = self.bell.wait(0)


@pytest.fixture
def relay_bell(runtime: Runtime) -> Iterator[Doorbell]:
    bell = Doorbell(progress_doorbells(runtime.settings.data_dir))
    yield bell
    bell.close()


def test_the_job_is_done_and_the_relays_rung_before_the_association_is_released(
        runtime: Runtime, relay_bell: Doorbell, tmp_path: Path) -> None:
    destination = SeenAtRelease(runtime, relay_bell)
    try:
        with runtime.sessions.begin() as session:
            destination.job_id = create_job(session, "c-move", Destination("DEST", "127.0.0.1", destination.port,
                                                                           "PACS"), "WS", stored_items(runtime, 3))
        run_job(runtime, destination.job_id, tmp_path)
    finally:
        destination.server.shutdown()
    assert destination.job is not None
    assert (destination.job.state, destination.job.completed) == ("done", 3)
    assert destination.rung


def test_a_destination_that_cannot_be_reached_fails_the_job_and_rings_the_relays(
        runtime: Runtime, relay_bell: Doorbell, tmp_path: Path) -> None:
    with runtime.sessions.begin() as session:
        job_id = create_job(session, "c-move", Destination("DEST", "127.0.0.1", free_port(), "PACS"), "WS",
                            stored_items(runtime, 2))
    run_job(runtime, job_id, tmp_path)
    with runtime.sessions() as session:
        job = progress(session, job_id)
    assert job is not None and (job.state, job.failed) == ("failed", 2)
    assert relay_bell.wait(0)


def test_a_cancelled_job_stops_before_its_next_item_and_counts_only_what_was_sent(
        runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """C-CANCEL of a C-MOVE sets the job's cancel flag (services.scp.move); objects read ahead are not sent."""
    monkeypatch.setattr(runner, "CANCEL_CHECK_SECONDS", 0.0)  # the flag is looked at before every item
    received: list[str] = []
    job: list[str] = []

    def store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        if len(received) == 3:
            with runtime.sessions.begin() as session:
                request_cancel(session, job[0])
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        with runtime.sessions.begin() as session:
            job.append(create_job(session, "c-move", Destination("DEST", "127.0.0.1", port, "PACS"), "WS",
                                  stored_items(runtime, 12)))
        run_job(runtime, job[0], tmp_path)
    finally:
        server.shutdown()
    with runtime.sessions() as session:
        state = progress(session, job[0])
    assert state is not None and state.state == "cancelled"
    assert 3 <= state.completed == len(received) < 12  # the request in flight when the flag was set may complete
    assert state.remaining == 12 - len(received) and state.failed == 0
