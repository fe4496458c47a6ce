"""The mover under faults, in the distributed form (PostgreSQL, Redis, each service its own process):

- a C-MOVE whose job runs longer than the Redis broker's visibility timeout, with two movers: Redis hands the
  unacknowledged job to the other mover while the first still sends; the second delivery finds the job leased and
  does nothing. The destination receives every instance exactly once;
- a C-MOVE while no mover runs: its sub-operations are reported failed once the job stalls, a mover started later
  does not send that job, and the re-issued C-MOVE completes.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE, evt

from tests.conftest import workers_consuming
from tests.destinations import StoreScp
from tests.factory import make_image
from tests.integration.test_move import movescu, register
from tests.node import Node, free_port, wait_until
from tests.peers import StoreClient

VISIBILITY_SECONDS = 2
INSTANCES = 24
SECONDS_PER_INSTANCE = 0.25  # the whole job: about 6 s, three times the visibility timeout


class SlowDestination:
    """A storage SCP that takes SECONDS_PER_INSTANCE per C-STORE and records every SOP Instance UID it gets."""

    def __init__(self, ae_title: str = "SLOWDEST") -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.received: list[str] = []
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(CTImageStorage)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event: Any) -> int:
        time.sleep(SECONDS_PER_INSTANCE)
        with self._lock:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


@contextmanager
def distributed(tmp_path: Path, postgres_url: str, redis_url: str, movers: int,
                env: dict[str, str]) -> Iterator[Node]:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url, "PACS_BROKER_URL": redis_url, **env})
    assert node.run("migrate").returncode == 0
    for service in ("scp", "indexer", "api"):
        node.service(service)
    for number in range(movers):
        node.service("mover", name=f"mover{number + 1}")
    with node.running():
        # Every worker consumes before the test begins: a mover still starting could not take a redelivered job.
        wait_until(lambda: workers_consuming(redis_url) >= 1 + movers, 60, "the indexer and the movers consuming")
        yield node


def stored_study(node: Node, count: int) -> tuple[str, list[str]]:
    study, series = generate_uid(), generate_uid()
    datasets = [make_image(CTImageStorage, study, series, patient_id="P-MOVER", instance_number=n + 1)
                for n in range(count)]
    with StoreClient(node.dicom_port) as client:
        assert {client.store(dataset) for dataset in datasets} == {0x0000}
    node.wait_indexed(count)
    register(node, "workstation", "WORKSTATION", 104, ["echo", "find", "move"])
    return study, [dataset.SOPInstanceUID for dataset in datasets]


def test_a_job_longer_than_the_visibility_timeout_sends_each_instance_once(
        tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    with distributed(tmp_path, postgres_url, redis_url, movers=2,
                     env={"PACS_BROKER_VISIBILITY_TIMEOUT_SECONDS": str(VISIBILITY_SECONDS)}) as node:
        study, sop_uids = stored_study(node, INSTANCES)
        destination = SlowDestination()
        try:
            register(node, "slow", destination.ae_title, destination.port, ["store"])
            started = time.monotonic()
            result = movescu(node, destination.ae_title, {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})
            took = time.monotonic() - started
        finally:
            destination.stop()
        logs = node.services["mover1"].log() + node.services["mover2"].log()
    output = result.stdout + result.stderr
    assert "Received Final Move Response (Success)" in output, output
    assert took > 2 * VISIBILITY_SECONDS  # the job did outlast the visibility timeout
    assert sorted(destination.received) == sorted(sop_uids)  # each instance once
    assert "mover.job_not_claimed" in logs  # Redis did hand the job out a second time, and it was declined


def test_a_move_while_no_mover_runs_reports_failures_and_a_reissue_completes(
        tmp_path: Path, postgres_url: str, redis_url: str) -> None:
    with distributed(tmp_path, postgres_url, redis_url, movers=0, env={"PACS_MOVE_STALL_SECONDS": "3"}) as node:
        study, sop_uids = stored_study(node, 6)
        destination = StoreScp(tmp_path / "dest")
        try:
            register(node, "destination", destination.ae_title, destination.port, ["store"])
            keys = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}
            failed = movescu(node, destination.ae_title, keys)
            stalled = node.get(f"/api/jobs/{node.get('/api/jobs').json()['jobs'][0]['id']}").json()
            mover = node.service("mover")
            # The mover takes the stalled job's message and declines it: it must not send that job.
            wait_until(lambda: "mover.job_not_claimed" in mover.log(), 30, "the mover to decline the stalled job")
            assert destination.received() == {}
            again = movescu(node, destination.ae_title, keys)
            received = destination.received()
        finally:
            destination.stop()
    failed_output = failed.stdout + failed.stderr
    assert re.search(r"Final Move Response \(Refused: OutOfResourcesSubOperations\)", failed_output), failed_output
    assert (stalled["state"], stalled["failed"], stalled["completed"]) == ("failed", 6, 0)
    assert sorted(stalled["failed_instances"]) == sorted(sop_uids)
    assert "Received Final Move Response (Success)" in again.stdout + again.stderr, again.stdout + again.stderr
    assert sorted(received) == sorted(sop_uids)
