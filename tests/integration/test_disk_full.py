"""The object store's disk fills up during a push: C-STORE answers 0xA700 (Refused: Out of Resources), nothing
partial stays behind, every instance acknowledged before is intact, and ingest resumes once space is freed."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.factory import encode_dataset, make_image
from tests.node import Node
from tests.peers import StoreClient

OUT_OF_RESOURCES = 0xA700


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (the tests run as root, as CI does)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"this test needs to mount a small tmpfs (root): {mounted.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_answers_a700_keeps_nothing_partial_and_recovers(tmp_path: Path, small_disk: Path) -> None:
    objects = small_disk / "objects"
    node = Node(tmp_path, {"PACS_STORAGE_URL": objects.as_uri()})
    node.service("serve")
    filler = small_disk / "filler"
    try:
        node.wait_ready()
        objects.mkdir(exist_ok=True)
        filler.write_bytes(b"\0" * (3 * 1024 * 1024 + 512 * 1024))  # about 500 KB left
        study, series = generate_uid(), generate_uid()
        datasets = [make_image(CTImageStorage, study, series, instance_number=n + 1, rows=256, columns=256)
                    for n in range(12)]  # 131 KB each: the disk fills after a few
        with StoreClient(node.dicom_port) as client:
            statuses = [client.store(dataset) for dataset in datasets]
        assert set(statuses) <= {0x0000, OUT_OF_RESOURCES}, [hex(status) for status in statuses]
        assert OUT_OF_RESOURCES in statuses and 0x0000 in statuses

        leftovers = [path.name for path in objects.rglob("*") if path.is_file() and path.name.startswith(".tmp")]
        assert leftovers == []
        stored = {path.name: path.read_bytes() for path in objects.rglob("*.dcm")}
        for dataset, status in zip(datasets, statuses):
            kept = [data for name, data in stored.items() if name.startswith(dataset.SOPInstanceUID)]
            if status == 0x0000:
                [data] = kept
                assert data.endswith(encode_dataset(dataset, ExplicitVRLittleEndian))  # complete, byte for byte
            else:
                assert kept == []  # refused: no partial object

        filler.unlink()
        with StoreClient(node.dicom_port) as client:
            assert client.store(make_image(CTImageStorage, rows=256, columns=256)) == 0x0000
        node.wait_indexed(statuses.count(0x0000) + 1)
    finally:
        node.stop()
        print(node.logs()[-3000:])
