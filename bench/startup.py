#!/usr/bin/env python3
"""Start to ready: `pacs serve` against Orthanc, on a fresh and on an existing data directory.

Usage (from the repository root):

    .venv/bin/python bench/startup.py [--runs 5] [--only pacs,orthanc] [--commit HEAD]

Each run starts the program on a fresh folder, waits until it is ready (pacs: GET /healthz answers 200 and the DICOM
port accepts; Orthanc: GET /system answers 200 and the DICOM port accepts), stops it with SIGTERM, then does the
same once more on the folder it left (an existing data directory). Reported per case, medians over the runs: seconds
from the start to ready, CPU seconds of the whole process tree until ready (from /proc), seconds from SIGTERM to
exit, and CPU seconds of the whole start-ready-stop (from the children's rusage). The design asks `pacs serve` to be
ready within 5 s on this machine and to stop within 15 s. Needs only the standard library.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import benchlib
from benchlib import HOST, Process

RECEIVERS = ("pacs", "orthanc")


@dataclass
class Start:
    program: str
    folder: str  # "fresh" or "existing"
    ready_s: float
    cpu_until_ready_s: float
    stop_s: float
    cpu_total_s: float


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and its children now (user + system, children reaped by them included)."""
    total = 0.0
    for pid in [root, *benchlib.children_of(root)]:
        try:
            total += benchlib.process_cpu_seconds(pid)
        except OSError:
            continue  # gone meanwhile
    return total


def children_rusage_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_pacs(folder: Path) -> tuple[Process, Callable[[], bool]]:
    port, api = benchlib.free_port(), benchlib.free_port()
    command = benchlib.pacs_command("serve", "--data-dir", str(folder / "data"), "--dicom-port", str(port),
                                    "--api-port", str(api), "--dicom-host", HOST)
    process = Process("pacs", command, folder / "pacs.log", env=benchlib.pacs_env(), cwd=benchlib.pacs_cwd())
    return process, lambda: (benchlib.http("GET", f"http://{HOST}:{api}/healthz", timeout=1)[0] == 200
                             and benchlib.tcp_accepts(port))


def start_orthanc(folder: Path, executable: str) -> tuple[Process, Callable[[], bool]]:
    port, http_port = benchlib.free_port(), benchlib.free_port()
    config = {"Name": "bench", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
              "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http_port, "RemoteAccessAllowed": False,
              "AuthenticationEnabled": False, "Plugins": []}
    (folder / "orthanc.json").write_text(json.dumps(config))
    process = Process("orthanc", [executable, str(folder / "orthanc.json")], folder / "orthanc.log")
    return process, lambda: (benchlib.http("GET", f"http://{HOST}:{http_port}/system", timeout=1)[0] == 200
                             and benchlib.tcp_accepts(port))


def measure(program: str, folder: Path, which: str, args: argparse.Namespace) -> Start:
    cpu_before = children_rusage_seconds()
    started = time.perf_counter()
    process, ready = start_pacs(folder) if program == "pacs" else start_orthanc(folder, args.orthanc)
    try:
        while not ready():
            if process.proc.poll() is not None:
                raise RuntimeError(f"{program} exited during start:\n{benchlib.tail(process.logfile)}")
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"{program} not ready within 60 s:\n{benchlib.tail(process.logfile)}")
            time.sleep(0.02)
        ready_s = time.perf_counter() - started
        cpu_until_ready = tree_cpu_seconds(process.pid)
    finally:
        stopping = time.perf_counter()
        process.stop()
        stop_s = time.perf_counter() - stopping
    return Start(program, which, ready_s, cpu_until_ready, stop_s, children_rusage_seconds() - cpu_before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", default=",".join(RECEIVERS), help="pacs,orthanc (default both)")
    parser.add_argument("--orthanc", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc")
    benchlib.add_source_argument(parser)
    args = parser.parse_args()
    programs = [name.strip() for name in args.only.split(",") if name.strip()]
    source = benchlib.configure_source(args.commit)
    benchlib.log(f"[env] pacs from {source}; {benchlib.machine()}")
    results: list[Start] = []
    with tempfile.TemporaryDirectory(prefix="pacs-bench-startup-") as work:
        for run in range(1, args.runs + 1):
            for program in programs:  # interleaved, so that the machine's drifts hit both alike
                folder = Path(work) / f"{program}-{run}"
                folder.mkdir()
                for which in ("fresh", "existing"):
                    result = measure(program, folder, which, args)
                    results.append(result)
                    benchlib.log(f"[{run}/{args.runs}] {program} {which}: ready {result.ready_s:.2f} s, "
                                 f"CPU until ready {result.cpu_until_ready_s:.2f} s, stop {result.stop_s:.2f} s, "
                                 f"CPU in all {result.cpu_total_s:.2f} s")
    print(f"\nStart to ready, medians of {args.runs} runs (pacs from {source}):\n")
    print("| program | data directory | ready s | CPU until ready s | stop s | CPU start-ready-stop s |")
    print("|---|---|---|---|---|---|")
    for program in programs:
        for which in ("fresh", "existing"):
            chosen = [result for result in results if result.program == program and result.folder == which]
            print(f"| {program} | {which} | {benchlib.median([r.ready_s for r in chosen]):.2f} | "
                  f"{benchlib.median([r.cpu_until_ready_s for r in chosen]):.2f} | "
                  f"{benchlib.median([r.stop_s for r in chosen]):.2f} | "
                  f"{benchlib.median([r.cpu_total_s for r in chosen]):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
