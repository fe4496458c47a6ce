#!/usr/bin/env python3
"""Peak memory (RSS) of the mover while moving 500 and 5,000 instances, and of the SCP receiving ~1 GB at once.

Usage (from the repository root):

    .venv/bin/python bench/memory.py                      # both parts
    .venv/bin/python bench/memory.py --part move          # mover only (500 vs 5,000 small instances)
    .venv/bin/python bench/memory.py --part large --large-mb 1024   # SCP receiving one ~1 GB multi-frame instance

Part "move": one `pacs serve` (embedded default) holds a 500-instance and a 5,000-instance study (64x64 CT,
~10 KB each, the generator of bench/ingest.py). For each study the node is restarted on the same data directory
(so each child's peak is its own), the mover child's RSS is read when idle, the study is moved with `movescu` to a
dcmtk `storescp`, and the mover's peak RSS (VmHWM) is read afterwards. The same is done for C-GET (served by the
SCP child). Memory is flat if the 5,000-instance peak is about the 500-instance peak.

Part "large": one multi-frame instance (Multi-frame Grayscale Word Secondary Capture, 512x512 16-bit frames,
--large-mb MB of pixel data, written in streaming fashion, never held in memory) is sent with `storescu` to a
fresh `pacs serve`; the peak RSS of its SCP child (target < 300 MB) and, once it is indexed, of the indexer child
are reported.

Peaks come from /proc/<pid>/status (VmHWM), current values from VmRSS; 1 MB = 2^20 bytes here.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    HOST,
    Process,
    add_source_argument,
    configure_source,
    free_port,
    log,
    machine,
    rss_kib,
    tcp_accepts,
)  # noqa: E402
from retrieve import CALLER_AET, DEST_AET, Pacs, count_files, empty, env_nodelay, generate_study, push  # noqa: E402


@dataclass
class Sample:
    what: str
    process: str
    idle_mb: float
    peak_mb: float
    seconds: float
    note: str = ""


def mb(kib: int) -> float:
    return kib / 1024


def child_pids(pacs: Pacs, service: str, timeout: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in pacs.children(service) if rss_kib(pid)[0] > 0]
        if pids:
            return pids
        time.sleep(0.2)
    raise RuntimeError(f"no {service} child of pacs serve found")


def settle(pids: list[int], seconds: float = 3.0) -> dict[int, int]:
    """Wait until the processes are idle after start; their RSS then (KiB)."""
    time.sleep(seconds)
    return {pid: rss_kib(pid)[0] for pid in pids}


def busiest(idle: dict[int, int]) -> tuple[int, int]:
    """(idle, peak) RSS in KiB of the process whose peak grew most: the one of several SCP processes that took
    the association."""
    pid = max(idle, key=lambda candidate: rss_kib(candidate)[1] - idle[candidate])
    return idle[pid], rss_kib(pid)[1]


def part_move(workdir: Path, cache: Path, counts: list[int], pacs_args: list[str]) -> list[Sample]:
    studies = {n: generate_study("small", n, cache) for n in counts}
    dest_dir, get_dir = workdir / "dest", workdir / "get"
    dest_dir.mkdir()
    get_dir.mkdir()
    dest_port = free_port()
    storescp = Process("storescp", ["storescp", "+B", "-od", str(dest_dir), str(dest_port)],
                       workdir / "storescp.log", env_nodelay())
    samples: list[Sample] = []
    data_parent = workdir / "node"
    data_parent.mkdir()
    try:
        storescp.wait_ready(lambda: tcp_accepts(dest_port))
        pacs = Pacs(data_parent, pacs_args)
        try:
            pacs.register(dest_port)
            for n, manifest in studies.items():
                log(f"[move] pushing the {n}-instance study ...")
                push(manifest, pacs.port, pacs.aet)
            pacs.wait_indexed(sum(counts))
        finally:
            pacs.stop()
        for n, manifest in studies.items():
            for operation, service, target in (("C-MOVE", "mover", dest_dir), ("C-GET", "scp", get_dir)):
                pacs = Pacs(data_parent, pacs_args)  # restarted on the same folder: each peak is its own
                try:
                    idle_of = settle(child_pids(pacs, service))
                    empty(target)
                    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={manifest['study_uid']}"]
                    if operation == "C-MOVE":
                        command = ["movescu", "-S", "-aet", CALLER_AET, "-aec", pacs.aet, "-aem", DEST_AET] + keys
                    else:
                        command = ["getscu", "-S", "-aet", CALLER_AET, "-aec", pacs.aet, "-od", str(get_dir)] + keys
                    started = time.perf_counter()
                    result = subprocess.run(command + [HOST, str(pacs.port)], env=env_nodelay(),
                                            capture_output=True, text=True, timeout=1800)
                    seconds = time.perf_counter() - started
                    time.sleep(0.3)
                    idle, peak = busiest(idle_of)
                    received = count_files(target)
                    note = "" if result.returncode == 0 and received == n else \
                        f"exit {result.returncode}, received {received}/{n}"
                    samples.append(Sample(f"{operation} of {n:,} instances", f"{service} child", mb(idle),
                                          mb(peak), seconds, note))
                    log(f"[move] {operation} {n}: {service} idle {mb(idle):.0f} MB, peak {mb(peak):.0f} MB, "
                        f"{seconds:.1f} s {note}")
                finally:
                    pacs.stop()
    finally:
        storescp.stop()
    return samples


def write_multiframe(path: Path, megabytes: int) -> int:
    """A multi-frame 16-bit secondary capture of about ``megabytes`` MB, streamed to disk; returns its size."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rows = cols = 512
    frame = rows * cols * 2
    frames = max(1, megabytes * (1 << 20) // frame)
    sop_class = "1.2.840.10008.5.1.4.1.1.7.3"  # Multi-frame Grayscale Word Secondary Capture Image Storage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID = "MEMORY^BENCH", "MEMBENCH1"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20261126", "120000", "OT"
    ds.ConversionType = "WSD"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = "33.3"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    header = BytesIO()
    pydicom.dcmwrite(header, ds, enforce_file_format=True)
    length = frames * frame
    chunk = (os.urandom(frame // 2) * 2)
    with open(path, "wb") as out:
        out.write(header.getvalue())
        out.write(b"\xe0\x7f\x10\x00OW\x00\x00" + length.to_bytes(4, "little"))
        for _ in range(frames):
            out.write(chunk)
    return path.stat().st_size


def part_large(workdir: Path, megabytes: int, pacs_args: list[str]) -> list[Sample]:
    source = workdir / "large" / "multiframe.dcm"
    source.parent.mkdir()
    log(f"[large] writing a ~{megabytes} MB multi-frame instance ...")
    size = write_multiframe(source, megabytes)
    log(f"[large] {size / 1e6:,.0f} MB written")
    samples: list[Sample] = []
    node_parent = workdir / "large-node"
    node_parent.mkdir()
    pacs = Pacs(node_parent, pacs_args)
    try:
        scp_idle_of = settle(child_pids(pacs, "scp"))
        [indexer] = child_pids(pacs, "indexer")
        indexer_idle = rss_kib(indexer)[0]
        started = time.perf_counter()
        result = subprocess.run(["storescu", "-aec", pacs.aet, "-nh", HOST, str(pacs.port), str(source)],
                                env=env_nodelay(), capture_output=True, text=True, timeout=1800)
        seconds = time.perf_counter() - started
        ok = result.returncode == 0 and "Store Failed" not in result.stdout + result.stderr
        scp_idle, scp_peak = busiest(scp_idle_of)
        samples.append(Sample(f"C-STORE of one {size / 1e6:,.0f} MB instance", "scp child", mb(scp_idle),
                              mb(scp_peak), seconds, "" if ok else
                              f"storescu exit {result.returncode}: {(result.stdout + result.stderr)[-300:]}"))
        log(f"[large] scp peak {mb(scp_peak):.0f} MB after {seconds:.1f} s; waiting for the indexer ...")
        started = time.perf_counter()
        try:
            pacs.wait_indexed(1)
            indexed = time.perf_counter() - started
            note = ""
        except RuntimeError as exc:
            indexed, note = time.perf_counter() - started, str(exc)
        alive = rss_kib(indexer)[1] > 0
        samples.append(Sample("indexing that instance", "indexer child", mb(indexer_idle),
                              mb(rss_kib(indexer)[1]) if alive else float("nan"), indexed,
                              note or ("" if alive else "the indexer child was replaced (killed?)")))
    finally:
        pacs.stop()
        source.unlink(missing_ok=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("move", "large", "all"), default="all", help="what to measure")
    parser.add_argument("--counts", default="500,5000", help="study sizes for the move part (default 500,5000)")
    parser.add_argument("--large-mb", type=int, default=1024, help="pixel data of the large instance (default 1024)")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "pacs-bench-cache", "retrieve"))
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="parent of the temporary node folders")
    parser.add_argument("--pacs-args", default="", help="extra arguments for `pacs serve`")
    add_source_argument(parser)
    args = parser.parse_args(argv)
    source = configure_source(args.commit)
    for tool in ("storescu", "storescp", "movescu", "getscu"):
        if not shutil.which(tool):
            parser.error(f"{tool} (dcmtk) not found on PATH")
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bench-memory-", dir=args.workdir))
    samples: list[Sample] = []
    try:
        if args.part in ("move", "all"):
            counts = [int(n) for n in args.counts.split(",") if n.strip()]
            samples += part_move(workdir, Path(args.cache_dir), counts, args.pacs_args.split())
        if args.part in ("large", "all"):
            samples += part_large(workdir, args.large_mb, args.pacs_args.split())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nPeak RSS (VmHWM), `pacs serve` children; {machine()}; "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; pacs from {source}\n")
    print("| operation | process | RSS idle before | peak RSS | growth | seconds | note |")
    print("|---|---|---|---|---|---|---|")
    for s in samples:
        print(f"| {s.what} | {s.process} | {s.idle_mb:.0f} MB | {s.peak_mb:.0f} MB | {s.peak_mb - s.idle_mb:+.0f} MB "
              f"| {s.seconds:.1f} | {s.note} |")
    return 0 if not any(s.note for s in samples) else 1


if __name__ == "__main__":
    sys.exit(main())
