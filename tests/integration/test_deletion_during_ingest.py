"""A modality keeps re-sending a study while an admin deletes it over REST, end to end: every C-STORE is answered
Success or, while the deletion runs, 0xA701; every one sent after the deletion was answered keeps its instance (in
the store and the index, sizes agreeing); no deletion mark is left. Timing decides which interleavings a run meets:
the one the marks exist for (a re-send answered Success on an object the running deletion then removes) is driven
step by step in tests/shared/test_deletion.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
from pydicom.uid import CTImageStorage, generate_uid

from tests.factory import make_image
from tests.node import Node, wait_until
from tests.peers import StoreClient
from tests.stored import stored_object

ROUNDS_AFTER_DELETION = 2


def test_resends_racing_a_rest_deletion_lose_nothing_acknowledged_after_it(embedded_node: Node,
                                                                         tmp_path: Path) -> None:
    node = embedded_node
    study, series = generate_uid(), generate_uid()
    datasets = [make_image(CTImageStorage, study, series, patient_id="P-RACE", instance_number=n + 1)
                for n in range(40)]
    with StoreClient(node.dicom_port) as client:
        assert {client.store(dataset) for dataset in datasets} == {0x0000}
    node.wait_indexed(40)

    sends: list[tuple[str, float, int]] = []  # (SOP Instance UID, when the C-STORE was sent, status)
    deleted_at: list[float] = []
    stop = threading.Event()

    def resend_until_told() -> None:
        rounds_after = 0
        with StoreClient(node.dicom_port) as client:
            while rounds_after < ROUNDS_AFTER_DELETION and not stop.is_set():
                for dataset in datasets:
                    sent = time.monotonic()
                    sends.append((dataset.SOPInstanceUID, sent, client.store(dataset)))
                if deleted_at:
                    rounds_after += 1

    sender = threading.Thread(target=resend_until_told)
    sender.start()
    try:
        wait_until(lambda: len(sends) >= 20, 30, "re-sends under way", interval=0.01)
        response = httpx.delete(f"{node.api}/api/studies/{study}", timeout=60)
        deleted_at.append(time.monotonic())
        assert response.status_code == 200, response.text
        assert response.json()["deleted"]["instances"] >= 1
    finally:
        sender.join(timeout=120)
        stop.set()
    assert not sender.is_alive()

    assert {status for _, _, status in sends} <= {0x0000, 0xA701}
    kept = {uid for uid, sent, status in sends if status == 0x0000 and sent > deleted_at[0]}
    assert len(kept) == 40  # the rounds after the deletion stored every instance anew
    final = node.wait_indexed(40)
    assert final["counts"]["studies"] == 1
    for uid in kept:
        assert stored_object(node.data_dir, uid).stat().st_size > 0
        info = httpx.get(f"{node.api}/api/instances/{uid}", timeout=10).json()
        assert info["size"] == info["stored_size"]
    assert not list((node.data_dir / "objects" / ".deleting").glob("*"))
