#!/usr/bin/env python3
"""C-MOVE and C-GET of one study to dcmtk storescp: pacs against Orthanc, measured in the same run.

Usage (from the repository root):

    .venv/bin/python bench/retrieve.py                  # one 500-instance CT study (512x512), 3 runs
    .venv/bin/python bench/retrieve.py --instances 100 --runs 1   # quick check
    .venv/bin/python bench/retrieve.py --only pacs --profile       # py-spy the mover and SCP during the runs

What it does:
1. Generates one study of --instances CT instances, 512x512 16-bit (~526 KB each; the generator of
   bench/ingest.py, 5 series of 100), cached under /tmp/pacs-bench-cache/retrieve.
2. Starts `pacs serve` (embedded default: SQLite, local folder, embedded queue) and Orthanc (Debian package,
   defaults, TCP_NODELAY=1), pushes the study to both with storescu and waits until it is indexed.
3. Starts one dcmtk `storescp +B` (TCP_NODELAY=1) as the move destination, registered in both nodes
   (pacs: PUT /api/modalities; Orthanc: DicomModalities) together with the caller BENCHQR.
4. Per run, interleaved: pacs C-MOVE, Orthanc C-MOVE, pacs C-GET, Orthanc C-GET. Each is the whole `movescu`
   (or `getscu -od DIR`) process, TCP_NODELAY=1; afterwards the destination must hold every instance (the
   directory is emptied between runs). Medians of the runs, instances/s and MB/s, and pacs/Orthanc.

Needs: dcmtk (storescu, storescp, movescu, getscu, echoscu), Orthanc (/usr/sbin/Orthanc), pydicom.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ingest  # noqa: E402  (the study generator of the ingest benchmark)
from benchlib import (  # noqa: E402
    HOST,
    Process,
    add_source_argument,
    children_of,
    cmdline,
    configure_source,
    free_port,
    http,
    log,
    machine,
    median,
    pacs_command,
    pacs_cwd,
    pacs_env,
    tcp_accepts,
)

CALLER_AET = "BENCHQR"
DEST_AET = "STORESCP"


def generate_study(kind: str, count: int, cache: Path, per_series: int = 100) -> dict[str, Any]:
    """One study of ``count`` instances (series of ``per_series``), with bench/ingest.py's generator."""
    ingest.SERIES_SIZE = dict(ingest.SERIES_SIZE, **{kind: min(per_series, count)})
    ingest.SERIES_PER_STUDY = max(1, -(-count // min(per_series, count)))
    ingest.STUDIES_PER_PATIENT = 1
    manifest = ingest.generate(kind, count, cache)
    first = next(Path(d) for d in manifest["chunks"] if os.listdir(d))
    import pydicom

    sample = pydicom.dcmread(next(first.iterdir()), stop_before_pixels=True)
    manifest["study_uid"] = str(sample.StudyInstanceUID)
    return manifest


def env_nodelay() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")


def push(manifest: dict[str, Any], port: int, aec: str) -> None:
    result = subprocess.run(["storescu", "-aec", aec, "-nh", "+sd", HOST, str(port)] + manifest["chunks"],
                            env=env_nodelay(), capture_output=True, text=True, timeout=900)
    if result.returncode != 0 or "Store Failed" in result.stdout + result.stderr:
        raise RuntimeError(f"storescu to {aec} failed: {(result.stdout + result.stderr)[-1500:]}")


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def count_files(directory: Path) -> int:
    return sum(1 for entry in directory.iterdir() if entry.is_file() and not entry.name.startswith("."))


def empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_file():
            entry.unlink()


class Pacs:
    name = "pacs"
    aet = "PACS"

    def __init__(self, workdir: Path, extra: list[str]) -> None:
        self.dir = workdir / "pacs"
        self.dir.mkdir(exist_ok=True)  # an existing node folder is started again with what it holds
        self.port, self.api = free_port(), free_port()
        env = pacs_env(PACS_DICOM_HOST=HOST, PACS_API_HOST=HOST)
        self.process = Process("pacs serve", pacs_command("serve", "--data-dir", str(self.dir / "data"),
                                                          "--dicom-port", str(self.port), "--api-port", str(self.api),
                                                          "--ae-title", self.aet, *extra), self.dir / "serve.log", env,
                               cwd=pacs_cwd())
        self.process.wait_ready(lambda: http("GET", f"http://{HOST}:{self.api}/healthz", timeout=2)[0] == 200
                                and tcp_accepts(self.port))

    def register(self, dest_port: int) -> None:
        for name, body in (("bench-dest", {"ae_title": DEST_AET, "host": HOST, "port": dest_port, "allow": []}),
                           ("bench-qr", {"ae_title": CALLER_AET, "host": HOST, "port": 104,
                                         "allow": ["find", "move", "get"]})):
            status, answer = http("PUT", f"http://{HOST}:{self.api}/api/modalities/{name}", body)
            if status not in (200, 201):
                raise RuntimeError(f"PUT /api/modalities/{name}: {status} {answer[:300]!r}")
        time.sleep(1.0)

    def count(self) -> tuple[int, int]:
        status, body = http("GET", f"http://{HOST}:{self.api}/api/status")
        if status != 200:
            return -1, -1
        doc = json.loads(body)
        return int(doc["counts"]["instances"]), int(doc["queue"]["pending"])

    def wait_indexed(self, expected: int) -> None:
        wait_until(lambda: self.count() == (expected, 0), 600, "pacs to index the study")

    def child(self, service: str) -> int | None:
        found = self.children(service)
        return found[0] if found else None

    def children(self, service: str) -> list[int]:
        """The pids of the service's processes (`pacs serve` runs one SCP process per CPU)."""
        return [pid for pid in children_of(self.process.pid)
                if "services.cli" in (args := cmdline(pid)) and service in args]

    def stop(self) -> None:
        self.process.stop()


class Orthanc:
    name = "orthanc"
    aet = "ORTHANC"

    def __init__(self, workdir: Path, executable: str, dest_port: int) -> None:
        self.dir = workdir / "orthanc"
        self.dir.mkdir()
        self.port, self.http = free_port(), free_port()
        config = {
            "Name": "bench", "StorageDirectory": str(self.dir / "storage"), "IndexDirectory": str(self.dir / "index"),
            "DicomAet": self.aet, "DicomPort": self.port, "HttpPort": self.http, "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": [],
            "DicomModalities": {"storescp": [DEST_AET, HOST, dest_port], "benchqr": [CALLER_AET, HOST, 104]},
        }
        (self.dir / "orthanc.json").write_text(json.dumps(config, indent=1))
        self.process = Process("orthanc", [executable, str(self.dir / "orthanc.json")], self.dir / "orthanc.log",
                               env_nodelay(), cwd=self.dir)
        self.process.wait_ready(lambda: http("GET", f"http://{HOST}:{self.http}/system", timeout=2)[0] == 200
                                and tcp_accepts(self.port))

    def count(self) -> int:
        status, body = http("GET", f"http://{HOST}:{self.http}/statistics")
        return int(json.loads(body)["CountInstances"]) if status == 200 else -1

    def wait_indexed(self, expected: int) -> None:
        wait_until(lambda: self.count() == expected, 120, "Orthanc to hold the study")

    def version(self) -> str:
        status, body = http("GET", f"http://{HOST}:{self.http}/system")
        return str(json.loads(body).get("Version")) if status == 200 else "?"

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Run:
    node: str
    operation: str
    run: int
    seconds: float
    received: int
    ok: bool
    note: str = ""


def retrieve(operation: str, node_port: int, node_aet: str, study_uid: str, get_dir: Path) -> tuple[float, str]:
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}"]
    if operation == "C-MOVE":
        command = ["movescu", "-S", "-aet", CALLER_AET, "-aec", node_aet, "-aem", DEST_AET] + keys
    else:
        command = ["getscu", "-S", "-aet", CALLER_AET, "-aec", node_aet, "-od", str(get_dir)] + keys
    command += [HOST, str(node_port)]
    started = time.perf_counter()
    result = subprocess.run(command, env=env_nodelay(), capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - started
    text = result.stdout + result.stderr
    note = "" if result.returncode == 0 else f"exit {result.returncode}: {text[-500:]}"
    return seconds, note


@dataclass
class Profiler:
    """py-spy record of some pids while the runs go on (collapsed stacks, idle threads included)."""

    outdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, label: str, pid: int | None) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if pid is None or not os.access(spy, os.X_OK):
            log(f"[profile] cannot profile {label} (pid {pid}, py-spy {spy})")
            return
        target = self.outdir / f"{label}.txt"
        self.processes.append(subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "200", "--threads", "--idle", "--format", "raw",
                                                "--output", str(target)], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL))
        log(f"[profile] py-spy on {label} (pid {pid}) → {target}")

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(2)  # SIGINT: py-spy writes the flame graph
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=500, help="instances in the study (default 500)")
    parser.add_argument("--size", choices=("large", "small"), default="large",
                        help="large = 512x512 (~526 KB), small = 64x64 (~10 KB); default large")
    parser.add_argument("--runs", type=int, default=3, help="runs per (node, operation); median (default 3)")
    parser.add_argument("--only", default="pacs,orthanc", help="nodes to measure (pacs,orthanc)")
    parser.add_argument("--operations", default="C-MOVE,C-GET", help="C-MOVE,C-GET (default both)")
    parser.add_argument("--orthanc", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc", help="Orthanc binary")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "pacs-bench-cache", "retrieve"))
    parser.add_argument("--pacs-args", default="", help="extra arguments for `pacs serve`")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy record the pacs mover and scp children during the runs (collapsed stacks, idle included, in --profile-dir)")
    parser.add_argument("--profile-dir", default=os.path.join(tempfile.gettempdir(), "pacs-bench-profiles"))
    parser.add_argument("--out", help="write the raw measurements as JSON")
    parser.add_argument("--storescp-args", default="", help="extra arguments for the destination storescp (e.g. -v)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, node data) at the end")
    add_source_argument(parser)
    args = parser.parse_args(argv)
    source = configure_source(args.commit)

    nodes = [n.strip() for n in args.only.split(",") if n.strip()]
    operations = [o.strip().upper() for o in args.operations.split(",") if o.strip()]
    if set(nodes) - {"pacs", "orthanc"} or set(operations) - {"C-MOVE", "C-GET"}:
        parser.error("--only takes pacs,orthanc; --operations takes C-MOVE,C-GET")
    for tool in ("storescu", "storescp", "movescu", "getscu"):
        if not shutil.which(tool):
            parser.error(f"{tool} (dcmtk) not found on PATH")

    manifest = generate_study(args.size, args.instances, Path(args.cache_dir))
    count, nbytes = manifest["count"], manifest["bytes"]
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bench-retrieve-"))
    dest_dir, get_dir = workdir / "dest", workdir / "get"
    dest_dir.mkdir()
    get_dir.mkdir()
    dest_port = free_port()
    started: list[Any] = []
    runs: list[Run] = []
    profiler = Profiler(Path(args.profile_dir))
    versions: dict[str, str] = {}
    try:
        storescp = Process("storescp", ["storescp", *args.storescp_args.split(), "+B", "-od", str(dest_dir),
                                        str(dest_port)],
                           workdir / "storescp.log", env_nodelay())
        started.append(storescp)
        storescp.wait_ready(lambda: tcp_accepts(dest_port))
        servers: dict[str, Any] = {}
        if "pacs" in nodes:
            pacs = Pacs(workdir, args.pacs_args.split())
            started.append(pacs)
            pacs.register(dest_port)
            log(f"[pacs] pushing {count} instances ...")
            push(manifest, pacs.port, pacs.aet)
            pacs.wait_indexed(count)
            servers["pacs"] = pacs
        if "orthanc" in nodes:
            orthanc = Orthanc(workdir, args.orthanc, dest_port)
            started.append(orthanc)
            log(f"[orthanc] pushing {count} instances ...")
            push(manifest, orthanc.port, orthanc.aet)
            orthanc.wait_indexed(count)
            servers["orthanc"] = orthanc
            versions["orthanc"] = orthanc.version()
        if args.profile and "pacs" in servers:
            Path(args.profile_dir).mkdir(parents=True, exist_ok=True)
            profiler.start("pacs-mover", servers["pacs"].child("mover"))
            profiler.start("pacs-scp", servers["pacs"].child("scp"))
        for run in range(1, args.runs + 1):
            for operation in operations:
                for name, server in servers.items():
                    target = dest_dir if operation == "C-MOVE" else get_dir
                    empty(target)
                    seconds, note = retrieve(operation, server.port, server.aet, manifest["study_uid"], get_dir)
                    time.sleep(0.3)  # storescp closes the last file
                    received = count_files(target)
                    ok = not note and received == count
                    runs.append(Run(name, operation, run, seconds, received, ok, note))
                    log(f"[run {run}] {name:7s} {operation}: {seconds:.2f} s, {count / seconds:,.0f} instances/s, "
                        f"{nbytes / seconds / 1e6:,.1f} MB/s, received {received}/{count}"
                        + ("" if ok else f"  !!! {note or 'missing instances'}"))
    finally:
        profiler.stop()
        for item in reversed(started):
            item.stop()
        if args.keep:
            log(f"[keep] {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nRetrieve of one {count}-instance study ({nbytes / count / 1000:.0f} KB each, {nbytes / 1e6:.0f} MB) to "
          f"dcmtk storescp; whole movescu/getscu process; medians of {args.runs}; {machine()}; "
          f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; Orthanc {versions.get('orthanc', '-')}; "
          f"pacs from {source}\n")
    print("| node | operation | median s | instances/s | MB/s | bad runs |")
    print("|---|---|---|---|---|---|")
    medians: dict[tuple[str, str], float] = {}
    for operation in operations:
        for name in nodes:
            good = [r.seconds for r in runs if r.node == name and r.operation == operation and r.ok]
            bad = sum(1 for r in runs if r.node == name and r.operation == operation and not r.ok)
            if good:
                seconds = median(good)
                medians[(name, operation)] = seconds
                print(f"| {name} | {operation} | {seconds:.2f} | {count / seconds:,.0f} | {nbytes / seconds / 1e6:,.1f} "
                      f"| {bad} |")
            else:
                print(f"| {name} | {operation} | failed | | | {bad} |")
    if {"pacs", "orthanc"} <= set(nodes):
        print("\n| ratio pacs / Orthanc (instances/s) | " + " | ".join(operations) + " |")
        print("|---|" + "---|" * len(operations))
        cells = []
        for operation in operations:
            a, b = medians.get(("pacs", operation)), medians.get(("orthanc", operation))
            cells.append(f"{b / a:.2f}×" if a and b else "–")
        print("| pacs / Orthanc | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps({"count": count, "bytes": nbytes, "runs": [r.__dict__ for r in runs],
                                              "versions": versions}, indent=1))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
