"""Start, restart and stop `pacs serve` as scripts and orchestrators do; nothing acknowledged is ever lost."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.factory import SampleFile, make_image, save, study_set, uncompressed_set
from tests.node import PACS, REPO, Node, Service, port_accepts, wait_until
from tests.peers import dcmtk_env, dcmtk_tool, push_files


def test_a_restart_loses_nothing_and_indexes_what_was_pending(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.service("serve")
    files = study_set(tmp_path / "study", 120)
    try:
        node.wait_ready()
        push_files(node.dicom_port, files)
    finally:
        assert node.services["serve"].stop() == 0  # right after the push: indexing may still be under way
    restarted = Node(tmp_path)
    restarted.dicom_port, restarted.api_port = node.dicom_port, node.api_port
    restarted.env.update({"PACS_DICOM_PORT": str(node.dicom_port), "PACS_API_PORT": str(node.api_port)})
    restarted.service("serve", name="serve-again")
    try:
        restarted.wait_ready()
        status = restarted.wait_indexed(120)
        assert status["queue"]["dead_letter"] == 0
    finally:
        restarted.stop()
        print(node.logs(), restarted.logs())


def start_push(node: Node, files: list[SampleFile], log: Path, rounds: int = 1) -> subprocess.Popen[bytes]:
    """storescu -v pushing ``files`` in order on one association, ``rounds`` times (a file sent again is an
    identical instance: answered Success, nothing stored); its log counts the Success responses."""
    with open(log, "w") as output:
        return subprocess.Popen(
            [dcmtk_tool("storescu"), "-v", "-aec", "PACS", "-xe", "-R", "127.0.0.1", str(node.dicom_port),
             *[str(item.path) for item in files] * rounds],
            stdout=output, stderr=subprocess.STDOUT, env=dcmtk_env())


def acknowledged_in(log: Path) -> int:
    return log.read_text().count("Received Store Response (Success)")


def wait_for_acknowledged(log: Path, timeout: float = 60) -> None:
    """Wait until storescu has had a first instance acknowledged (a loaded machine may take a while)."""
    wait_until(lambda: acknowledged_in(log) > 0, timeout, "a first Success response to storescu", interval=0.01)


def wait_for_log(service: Service, text: str, timeout: float = 30) -> None:
    wait_until(lambda: text in service.log(), timeout, repr(text), interval=0.01)


def test_sigterm_during_a_push_keeps_every_acknowledged_instance(tmp_path: Path) -> None:
    node = Node(tmp_path)
    serve = node.service("serve")
    files = uncompressed_set(tmp_path / "study", 500)
    try:
        node.wait_ready()
        log = tmp_path / "storescu.log"
        push = start_push(node, files, log)
        wait_for_acknowledged(log)  # the push is under way
        started = time.monotonic()
        assert serve.process is not None
        serve.process.send_signal(signal.SIGTERM)
        assert serve.process.wait(timeout=15) == 0
        stopped_in = time.monotonic() - started
        push.wait(timeout=60)
        acknowledged = acknowledged_in(log)
        assert acknowledged > 0
        print(f"stopped in {stopped_in:.2f} s with {acknowledged} of 500 instances acknowledged")
    finally:
        node.stop()

    restarted = Node(tmp_path)
    restarted.service("serve", name="serve-again")
    try:
        restarted.wait_ready()
        status = restarted.wait_indexed(acknowledged)
        assert status["counts"]["instances"] == acknowledged
    finally:
        restarted.stop()
        print(node.logs(), restarted.logs())


def test_pacs_stop_stops_the_node_of_a_data_dir_and_reports_stale_pid_files(tmp_path: Path) -> None:
    node = Node(tmp_path)
    serve = node.service("serve")
    node.wait_ready()
    pid_path = node.data_dir / "pacs.pid"
    assert json.loads(pid_path.read_text())["pid"] == serve.process.pid  # type: ignore[union-attr]

    second = subprocess.run([*PACS, "serve"], cwd=REPO, env=node.env, capture_output=True, text=True, timeout=30)
    assert second.returncode == 1 and "already runs" in second.stderr

    stop = node.run("stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert serve.process is not None and serve.process.wait(timeout=15) == 0
    assert not pid_path.exists()
    assert not port_accepts(node.dicom_port)
    assert node.run("status").returncode == 1

    assert node.run("stop").returncode == 1  # nothing to stop
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pid_path.write_text(json.dumps({"pid": sleeper.pid, "start_ticks": 1}))  # a pid now owned by another process
        stale = node.run("stop")
        assert stale.returncode == 1 and "stale" in stale.stdout
        assert sleeper.poll() is None, "an unrelated process was signalled"
        assert not pid_path.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pacs_status_reports_a_running_node(module_node: Node) -> None:
    status = module_node.run("status")
    assert status.returncode == 0, status.stdout
    assert "C-ECHO ok" in status.stdout and "0 instances" in status.stdout


def test_start_to_ready_on_a_filled_data_dir_is_reported(tmp_path: Path) -> None:
    node = Node(tmp_path)
    node.service("serve")
    files = study_set(tmp_path / "study", 600)
    try:
        node.wait_ready()
        push_files(node.dicom_port, files)
        node.wait_indexed(600, timeout=120)
    finally:
        node.stop()
    node.service("serve", name="serve-filled")
    started = time.monotonic()
    try:
        node.wait_ready(timeout=30)
        ready_in = time.monotonic() - started
        print(f"ready in {ready_in:.2f} s on a data dir holding 600 instances")
        assert node.status()["counts"]["instances"] == 600
    finally:
        node.stop()


def test_a_second_signal_stops_at_once_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    node = Node(tmp_path)
    serve = node.service("serve")
    files = uncompressed_set(tmp_path / "study", 1500)
    try:
        node.wait_ready()
        log = tmp_path / "storescu.log"
        push = start_push(node, files, log, rounds=4)  # long enough to be running at the second signal
        wait_for_acknowledged(log)  # the push is under way
        assert serve.process is not None
        serve.process.send_signal(signal.SIGTERM)  # a clean stop would let the push finish...
        wait_for_log(serve, "scp shared.lifecycle lifecycle.stopping")  # ...once the scp has begun it
        started = time.monotonic()
        serve.process.send_signal(signal.SIGINT)  # ...the second signal does not wait for it
        serve.process.wait(timeout=10)
        stopped_in = time.monotonic() - started
        push.wait(timeout=60)
        acknowledged = acknowledged_in(log)
        print(f"stopped {stopped_in:.2f} s after the second signal; {acknowledged} of 6000 acknowledged")
        assert stopped_in < 5 and 0 < acknowledged < 6000
    finally:
        node.stop()

    with restarted_with_everything_indexed(tmp_path, acknowledged) as restarted:
        for item in files[:acknowledged]:  # storescu sends in order: these got their Success
            assert restarted.get(f"/api/instances/{item.sop_instance_uid}").status_code == 200


@contextmanager
def restarted_with_everything_indexed(workdir: Path, acknowledged: int) -> Iterator[Node]:
    """The node of ``workdir`` started again, once nothing is pending and at least ``acknowledged`` instances are
    indexed (stored but unacknowledged ones, cut before their response, may be there too); stopped afterwards."""
    restarted = Node(workdir)
    restarted.service("serve", name="serve-again")
    try:
        restarted.wait_ready()
        wait_until(lambda: restarted.status()["queue"]["pending"] == 0
                   and restarted.status()["counts"]["instances"] >= acknowledged, 60, "everything indexed")
        yield restarted
    finally:
        restarted.stop()


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the services of `pacs serve` run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def test_a_node_killed_mid_push_of_ct_slices_keeps_every_acknowledged_one_intact(tmp_path: Path) -> None:
    """SIGKILL to every process of the node while 512x512 instances arrive (written around the page cache, with
    their journal records: shared.storage.direct_io): after a restart each acknowledged instance is there, byte for
    byte as sent."""
    study_uid, series_uid = generate_uid(), generate_uid()
    (tmp_path / "study").mkdir()
    files = []
    for number in range(1, 301):
        dataset = make_image(study_uid=study_uid, series_uid=series_uid, instance_number=number, rows=512,
                             columns=512)
        path = save(dataset, tmp_path / "study" / f"{number:04d}.dcm", ExplicitVRLittleEndian)
        files.append(SampleFile(path, ExplicitVRLittleEndian, str(dataset.SOPInstanceUID)))
    node = Node(tmp_path)
    serve = node.service("serve")
    try:
        node.wait_ready()
        log = tmp_path / "storescu.log"
        push = start_push(node, files, log)
        wait_until(lambda: acknowledged_in(log) >= 30, 60, "30 instances acknowledged", interval=0.01)
        assert serve.process is not None
        for pid in descendants(serve.process.pid):
            os.kill(pid, signal.SIGKILL)
        push.wait(timeout=60)
        acknowledged = acknowledged_in(log)
        assert 30 <= acknowledged < len(files)
    finally:
        node.stop()

    with restarted_with_everything_indexed(tmp_path, acknowledged) as restarted:
        for item in files[:acknowledged]:  # storescu sends in order: these got their Success
            stored = restarted.get(f"/api/instances/{item.sop_instance_uid}").json()
            sent = item.path.read_bytes()
            data_set = sent[sent.index(b"DICM") + 4:]
            [path] = (tmp_path / "data" / "objects").rglob(f"{item.sop_instance_uid}.dcm")
            kept = path.read_bytes()
            assert stored["sha256"] == hashlib.sha256(kept).hexdigest() and stored["size"] == len(kept)
            assert kept.endswith(data_set[-(512 * 512 * 2):])  # the pixel data as sent


def test_serve_prints_its_ae_title_port_data_directory_and_dashboard(module_node: Node) -> None:
    banner = module_node.services["serve"].log()
    assert f"DICOM on port {module_node.dicom_port} (AE title PACS)" in banner
    assert f"data directory: {module_node.data_dir.resolve()}" in banner
    assert f"dashboard: http://127.0.0.1:{module_node.api_port}/" in banner
