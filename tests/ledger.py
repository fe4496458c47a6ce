"""The ledger check (issue #6): every instance sent is recorded with the hash of its dataset bytes and the status
it got; once the faults have cleared, every instance that got Success must be in the object store byte-identical,
indexed exactly once, found by C-FIND and retrieved by C-MOVE, within 60 s.
"""

from __future__ import annotations

import hashlib
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import create_engine, text

from shared.dicom.requestor import keep_reactor_off_responses
from shared.settings import load_settings
from tests.destinations import StoreScp
from tests.factory import encode_dataset, with_file_meta
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool

SUCCESS = 0x0000
CHECKER = "LEDGER"
CHECK_SECONDS = 60


@dataclass
class Entry:
    sop_instance_uid: str
    study_instance_uid: str
    sha256: str  # of the dataset bytes as sent (Explicit VR Little Endian)
    status: int | None = None  # the final C-STORE status; None: no answer (association lost) after every try
    attempts: int = 0


@dataclass
class Ledger:
    entries: dict[str, Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, dataset: Dataset) -> Entry:
        digest = hashlib.sha256(encode_dataset(dataset, ExplicitVRLittleEndian)).hexdigest()
        entry = Entry(dataset.SOPInstanceUID, dataset.StudyInstanceUID, digest)
        with self._lock:
            self.entries[entry.sop_instance_uid] = entry
        return entry

    def acknowledged(self) -> list[Entry]:
        with self._lock:  # the pushers add entries meanwhile
            entries = list(self.entries.values())
        return [entry for entry in entries if entry.status == SUCCESS]

    def studies(self) -> set[str]:
        return {entry.study_instance_uid for entry in self.acknowledged()}


class Pusher(threading.Thread):
    """One modality pushing its datasets on one association, reconnecting (and re-sending the instance that got
    no answer) whenever the association is lost, as a modality's retry queue would."""

    def __init__(self, port: int, datasets: list[Dataset], ledger: Ledger, calling_aet: str,
                 reconnect_seconds: float = 60, tries: int = 5) -> None:
        super().__init__(daemon=True, name=f"pusher-{calling_aet}")
        self.port, self.datasets, self.ledger = port, datasets, ledger
        self.reconnect_seconds, self.tries = reconnect_seconds, tries
        self.ae = AE(ae_title=calling_aet)
        self.ae.add_requested_context(datasets[0].SOPClassUID, ExplicitVRLittleEndian)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        self.reconnects = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            association = None
            for dataset in self.datasets:
                entry = self.ledger.expect(with_file_meta(dataset, ExplicitVRLittleEndian))
                while entry.attempts < self.tries and entry.status != SUCCESS:
                    if association is None or not association.is_established:
                        association = self._associate()
                    entry.attempts += 1
                    answer = association.send_c_store(dataset)
                    entry.status = int(answer.Status) if "Status" in answer else None
                    if entry.status is None:
                        self.reconnects += 1
            if association is not None and association.is_established:
                association.release()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _associate(self):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + self.reconnect_seconds
        while time.monotonic() < deadline:
            association = self.ae.associate("127.0.0.1", self.port, ae_title="PACS")
            if association.is_established:
                keep_reactor_off_responses(association)
                return association
            time.sleep(0.2)
        raise AssertionError("the node did not accept an association again within the reconnect time")


def register_checker(node: Node, destination: StoreScp) -> None:
    for name, body in (("ledger", {"ae_title": CHECKER, "host": "127.0.0.1", "port": 104,
                                   "allow": ["echo", "find", "move"]}),
                       ("ledger-destination", {"ae_title": destination.ae_title, "host": "127.0.0.1",
                                               "port": destination.port, "allow": ["store"]})):
        response = httpx.put(f"{node.api}/api/modalities/{name}", json=body, timeout=10)
        assert response.status_code in (200, 201), response.text


def indexed_copies(node: Node) -> dict[str, int]:
    """SOP Instance UID → number of index rows, read straight from the node's index database."""
    settings = load_settings(data_dir=node.data_dir, database_url=node.env.get("PACS_DATABASE_URL"))
    engine = create_engine(settings.resolved_database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT sop_instance_uid, count(*) FROM instances GROUP BY sop_instance_uid"))
            return {str(uid): int(count) for uid, count in rows}
    finally:
        engine.dispose()


def found_by_c_find(node: Node, study_uid: str, workdir: Path) -> set[str]:
    out = workdir / f"find-{study_uid}"
    out.mkdir(parents=True, exist_ok=True)
    command = [dcmtk_tool("findscu"), "-S", "-aet", CHECKER, "-aec", node.ae_title, "-X", "-od", str(out),
               "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study_uid}", "-k", "SOPInstanceUID",
               "127.0.0.1", str(node.dicom_port)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=dcmtk_env())
    assert result.returncode == 0, result.stdout + result.stderr
    return {str(pydicom.dcmread(path).SOPInstanceUID) for path in out.glob("rsp*.dcm")}


def moved_by_c_move(node: Node, study_uid: str, destination: StoreScp) -> None:
    command = [dcmtk_tool("movescu"), "-v", "-S", "-aet", CHECKER, "-aec", node.ae_title, "-aem", destination.ae_title,
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", "127.0.0.1",
               str(node.dicom_port)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=dcmtk_env())
    assert result.returncode == 0 and "Final Move Response (Success)" in result.stdout + result.stderr, \
        result.stdout[-2000:] + result.stderr[-2000:]


def check_ledger(ledger: Ledger, node: Node, destination: StoreScp, workdir: Path,
                 report: Callable[[str], None] = print) -> None:
    """Every acknowledged instance: indexed exactly once (within 60 s), found by C-FIND, moved byte-identical."""
    acknowledged = {entry.sop_instance_uid: entry for entry in ledger.acknowledged()}
    started = time.monotonic()

    def all_indexed() -> dict[str, int] | None:
        copies = indexed_copies(node)
        return copies if all(uid in copies for uid in acknowledged) else None

    copies = wait_until(all_indexed, CHECK_SECONDS, "every acknowledged instance indexed", interval=0.5)
    duplicated = {uid: count for uid, count in copies.items() if count != 1}
    assert not duplicated, f"indexed more than once: {len(duplicated)}"

    register_checker(node, destination)
    for study in sorted(ledger.studies()):
        expected = {uid for uid, entry in acknowledged.items() if entry.study_instance_uid == study}
        missing = expected - found_by_c_find(node, study, workdir)
        assert not missing, f"{len(missing)} acknowledged instances not found by C-FIND"
        moved_by_c_move(node, study, destination)
    received = {uid: hashlib.sha256(data).hexdigest() for uid, data in destination.received().items()}
    lost = [uid for uid in acknowledged if uid not in received]
    altered = [uid for uid, entry in acknowledged.items() if uid in received and received[uid] != entry.sha256]
    elapsed = time.monotonic() - started
    report(f"ledger: sent={len(ledger.entries)} acknowledged={len(acknowledged)} lost={len(lost)} "
           f"altered={len(altered)} check_seconds={elapsed:.1f}")
    assert not lost and not altered
