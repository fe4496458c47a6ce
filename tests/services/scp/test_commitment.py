"""Storage Commitment Push Model SCP, driven with pynetdicom as the requester against `pacs serve`.

The requester is an AE that also runs as an SCP (its own listener) to receive the N-EVENT-REPORT when the node
sends it on a new association. dcmtk ships no storage commitment SCU, so pynetdicom is the only real client here.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

from tests.factory import SampleFile, make_image, save, with_file_meta
from tests.node import Node, free_port, wait_until
from tests.peers import push_files

REQUESTER = "MODALITY"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"


class Requester:
    """A storage commitment SCU that also listens for N-EVENT-REPORTs on associations the node opens."""

    def __init__(self, ae_title: str = REQUESTER) -> None:
        self.reports: queue.Queue[tuple[int, Dataset, str]] = queue.Queue()
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        self.ae.add_requested_context(StorageCommitmentPushModel)
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
        self.port = free_port()
        self.handlers = [(evt.EVT_N_EVENT_REPORT, self._on_report)]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=self.handlers)

    def _on_report(self, event: Any) -> tuple[int, None]:
        calling = event.assoc.requestor.ae_title if event.assoc.is_acceptor else ""
        self.reports.put((int(event.event_type), event.event_information, str(calling).strip()))
        return 0x0000, None

    def request(self, node: Node, references: list[tuple[str, str]], release_at_once: bool = False,
                transaction_uid: str | None = None, action_type: int = 1) -> tuple[int, str]:
        """Send one N-ACTION; return its status and the Transaction UID."""
        transaction_uid = transaction_uid or generate_uid()
        information = Dataset()
        information.TransactionUID = transaction_uid
        items = []
        for class_uid, instance_uid in references:
            item = Dataset()
            item.ReferencedSOPClassUID = class_uid
            item.ReferencedSOPInstanceUID = instance_uid
            items.append(item)
        information.ReferencedSOPSequence = items
        association = self.ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title,
                                        evt_handlers=self.handlers)
        assert association.is_established
        try:
            status, _ = association.send_n_action(information, action_type, StorageCommitmentPushModel,
                                                  WELL_KNOWN_INSTANCE)
            if not release_at_once and int(status.Status) == 0:
                self._wait_on(association)
        finally:
            if association.is_established:
                association.release()
        return int(status.Status), transaction_uid

    def _wait_on(self, association: Any) -> None:
        """Keep the association open until a report arrived (it is served by the association's reactor)."""
        wait_until(lambda: not self.reports.empty(), 60, "the N-EVENT-REPORT on the same association")

    def report(self, timeout: float = 60) -> tuple[int, Dataset, str]:
        return self.reports.get(timeout=timeout)

    def stop(self) -> None:
        self.server.shutdown()


def register(node: Node, name: str, ae_title: str, port: int, allow: list[str]) -> None:
    response = httpx.put(f"{node.api}/api/modalities/{name}", timeout=10,
                         json={"ae_title": ae_title, "host": "127.0.0.1", "port": port, "allow": allow})
    assert response.status_code in (200, 201), response.text


@pytest.fixture
def requester() -> Iterator[Requester]:
    peer = Requester()
    yield peer
    peer.stop()


def stored_images(node: Node, tmp_path: Path, count: int) -> list[tuple[str, str]]:
    study, series = generate_uid(), generate_uid()
    datasets = [make_image(CTImageStorage, study, series, patient_id="P-COMMIT", instance_number=n + 1)
                for n in range(count)]
    files = [SampleFile(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    push_files(node.dicom_port, files, calling_aet=REQUESTER)
    return [(CTImageStorage, ds.SOPInstanceUID) for ds in datasets]


def references_of(report: Dataset) -> tuple[set[str], dict[str, int]]:
    committed = {item.ReferencedSOPInstanceUID for item in report.get("ReferencedSOPSequence", [])}
    failed = {item.ReferencedSOPInstanceUID: int(item.FailureReason) for item in report.get("FailedSOPSequence", [])}
    return committed, failed


def test_failures_are_listed_with_reasons_on_the_same_association(
    embedded_node: Node, requester: Requester, tmp_path: Path
) -> None:
    register(embedded_node, "modality", REQUESTER, requester.port, ["echo", "store"])
    stored = stored_images(embedded_node, tmp_path, 3)
    embedded_node.wait_indexed(3)
    unknown = (CTImageStorage, generate_uid())
    wrong_class = (MRImageStorage, stored[0][1])
    status, transaction = requester.request(embedded_node, [*stored, unknown, wrong_class])
    assert status == 0x0000
    event_type, report, _ = requester.report()
    assert event_type == 2
    assert report.TransactionUID == transaction
    committed, failed = references_of(report)
    assert committed == {uid for _, uid in stored}
    assert failed == {unknown[1]: 0x0112, stored[0][1]: 0x0119}


def test_all_committed_on_a_new_association_when_the_requester_released(
    embedded_node: Node, requester: Requester, tmp_path: Path
) -> None:
    register(embedded_node, "modality", REQUESTER, requester.port, ["echo", "store"])
    stored = stored_images(embedded_node, tmp_path, 5)  # asked at once: some may still wait to be indexed
    status, transaction = requester.request(embedded_node, stored, release_at_once=True)
    assert status == 0x0000
    event_type, report, calling = requester.report()
    assert (event_type, report.TransactionUID, calling) == (1, transaction, embedded_node.ae_title)
    committed, failed = references_of(report)
    assert committed == {uid for _, uid in stored} and failed == {}

    def audited() -> list[dict[str, Any]]:
        events = httpx.get(f"{embedded_node.api}/api/audit", params={"action": "storage_commitment"},
                           timeout=10).json()["events"]
        return [row for row in events if row["details"].get("delivery") == "new_association"]

    rows = wait_until(audited, 10, "the storage_commitment audit row")
    assert rows[0]["details"]["committed"] == 5 and rows[0]["remote_aet"] == REQUESTER


def test_instances_stored_on_the_requesting_association_are_not_kept_waiting_to_be_indexed(
    requester: Requester, tmp_path: Path
) -> None:
    """The SCP gathers stored instances for indexing for up to index_batch_wait_seconds (10 s here, with no pause short
    enough to send them earlier) unless their association ends; a commitment request on that same association sends them
    at once, so the report can commit them (waiting for them at most commitment_wait_seconds, 3 s here, would otherwise
    report them as missing)."""
    node = Node(tmp_path, {"PACS_INDEX_BATCH_WAIT_SECONDS": "10", "PACS_INDEX_BATCH_QUIET_SECONDS": "10",
                           "PACS_SWEEP_GRACE_SECONDS": "120"})
    node.service("serve")
    with node.running():
        register(node, "modality", REQUESTER, requester.port, ["echo", "store"])
        assert httpx.patch(f"{node.api}/api/config", json={"commitment_wait_seconds": 3},
                           timeout=10).status_code == 200
        requester.ae.add_requested_context(CTImageStorage)
        association = requester.ae.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title,
                                             evt_handlers=requester.handlers)
        assert association.is_established
        try:
            study, series = generate_uid(), generate_uid()
            images = [make_image(CTImageStorage, study, series, patient_id="P-COMMIT-OPEN", instance_number=n + 1)
                      for n in range(3)]
            for image in images:
                assert association.send_c_store(with_file_meta(image, ExplicitVRLittleEndian)).Status == 0x0000
            information = Dataset()
            information.TransactionUID = transaction = generate_uid()
            information.ReferencedSOPSequence = [Dataset() for _ in images]
            for item, image in zip(information.ReferencedSOPSequence, images):
                item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, image.SOPInstanceUID
            status, _ = association.send_n_action(information, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
            assert int(status.Status) == 0x0000
            event_type, report, _ = requester.report(timeout=60)
        finally:
            association.release()
    assert (event_type, report.TransactionUID) == (1, transaction)
    committed, failed = references_of(report)
    assert committed == {image.SOPInstanceUID for image in images} and failed == {}


def test_only_registered_modalities_allowed_to_store_may_request(
    embedded_node: Node, requester: Requester, tmp_path: Path
) -> None:
    stored = stored_images(embedded_node, tmp_path, 1)
    embedded_node.wait_indexed(1)
    assert requester.request(embedded_node, stored)[0] == 0x0124  # unknown caller (even though it may store)
    register(embedded_node, "modality", REQUESTER, requester.port, ["echo", "find"])
    assert requester.request(embedded_node, stored)[0] == 0x0124  # registered, without store
    register(embedded_node, "modality", REQUESTER, requester.port, ["echo", "store"])
    assert requester.request(embedded_node, stored, action_type=2)[0] == 0x0123  # no such action
    assert requester.reports.empty()
