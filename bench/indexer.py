#!/usr/bin/env python3
"""Indexer cost: CPU ms per instance of the real indexing function on SQLite and PostgreSQL, and (--serve) of the
indexer process of ``pacs serve`` while storescu pushes. See bench/README.md.

Usage (from the repository root):

    .venv/bin/python bench/indexer.py                                   # 1000 small + 300 large, 3 runs, both databases
    .venv/bin/python bench/indexer.py --small 500 --large 0 --runs 1    # quick check
    .venv/bin/python bench/indexer.py --commit d780efa                  # the indexer of another commit (a baseline)
    .venv/bin/python bench/indexer.py --small 0 --large 0 --serve 1000  # end to end, pacs serve's indexer child

For each (size, database, run):
1. Data: the synthetic CT instances of bench/ingest.py (64x64 "small", 512x512 "large"; cached under
   /tmp/pacs-bench-cache), the files storescu sends there.
2. A new folder with an object store and an index: SQLite in the folder, or a throwaway PostgreSQL database
   ``pacs_bench_idx<random>`` on 127.0.0.1:5432 (dropped afterwards); migrated to head.
3. Every file is stored the way the SCP stores it: its data set goes through ``shared.ingest.Ingest`` (claim,
   pending marker, durable object), which hands its ``InstanceStored`` events to a list instead of the queue.
4. Timed: ``services.indexer.indexing.index_events`` over those events in batches of ``indexer_batch_size`` (what
   one indexing task carries at most; --batch for another size), in this process. CPU is ``time.process_time``
   (this process only: PostgreSQL's own CPU is not in it), wall time ``time.perf_counter``.
A warm-up (20 instances per size and database, not reported) comes first. Reported: medians over the runs.

Needs: .venv with the project installed; PostgreSQL on 127.0.0.1:5432 (trust auth for postgres) unless
``--databases sqlite``; dcmtk's storescu for --serve. Performance is never a timed assertion in a test.
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import benchlib  # noqa: E402
from ingest import generate, run_storescu  # noqa: E402

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASES = ("sqlite", "postgresql")
WARM_UP_INSTANCES = 20


@dataclass
class Measurement:
    size: str
    database: str
    run: int
    instances: int
    indexed: int
    cpu_seconds: float
    wall_seconds: float

    @property
    def cpu_ms_per_instance(self) -> float:
        return 1000 * self.cpu_seconds / self.instances

    @property
    def instances_per_second(self) -> float:
        return self.instances / self.wall_seconds


def _files(manifest: dict[str, Any]) -> list[Path]:
    return sorted(path for chunk in manifest["chunks"] for path in Path(chunk).iterdir())


def _data_set_and_syntax(path: Path) -> tuple[bytes, str]:
    """The data set after the File Meta, and its transfer syntax (what an SCP receives over the wire)."""
    from pydicom.filereader import read_file_meta_info

    from shared.dicom.part10 import skip_file_meta

    with path.open("rb") as stream:
        skip_file_meta(stream)
        data_set = stream.read()
    return data_set, str(read_file_meta_info(path).TransferSyntaxUID)


class _PostgresDatabase:
    """A throwaway database, dropped by drop()."""

    def __init__(self, name: str) -> None:
        import psycopg

        self.name = name
        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def _store_like_the_scp(runtime: Any, files: list[Path]) -> list[Any]:
    from shared.events import InstanceStored, Reception, utc_now
    from shared.ingest import Ingest
    from shared.ingest_identify import identify
    from shared.queue import INDEX_INSTANCES_TASK

    published: list[dict[str, Any]] = []

    def submit(task: str, payload: dict[str, Any]) -> None:
        if task == INDEX_INSTANCES_TASK:
            published.append(payload)

    ingest = Ingest(runtime.store, runtime.ledger, submit)
    for path in files:
        data_set, syntax = _data_set_and_syntax(path)
        reception = Reception(remote_aet="STORESCU", called_aet="PACS", remote_ip="127.0.0.1", received_at=utc_now())
        ingest.store_instance(identify(data_set, syntax), syntax, data_set, reception)
    # as the indexing task receives them: validated from their JSON form
    return [InstanceStored.model_validate(payload) for payload in published]


def measure(size: str, database: str, run: int, files: list[Path], workdir: Path,
            batch_size: int | None = None) -> Measurement:
    from services.indexer.indexing import index_events
    from shared.db.migrate import upgrade_to_head
    from shared.runtime import build_runtime
    from shared.settings import load_settings

    folder = Path(tempfile.mkdtemp(prefix="pacs-bench-idx-", dir=workdir))
    postgres = _PostgresDatabase(f"pacs_bench_idx{uuid.uuid4().hex[:10]}") if database == "postgresql" else None
    runtime = None
    try:
        settings = load_settings(data_dir=folder, database_url=postgres.url if postgres else None)
        upgrade_to_head(settings.resolved_database_url)
        runtime = build_runtime(settings)
        events = _store_like_the_scp(runtime, files)
        batch = batch_size or settings.indexer_batch_size
        indexed = 0
        gc.collect()
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for start in range(0, len(events), batch):
            indexed += index_events(runtime, events[start:start + batch]).indexed
        cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
        if indexed != len(events) or runtime.ledger.count() != 0:
            raise RuntimeError(f"indexed {indexed} of {len(events)}; {runtime.ledger.count()} markers left")
        return Measurement(size, database, run, len(events), indexed, cpu, wall)
    finally:
        if runtime is not None:
            runtime.close()
        if postgres is not None:
            postgres.drop()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class ServeMeasurement:
    run: int
    instances: int
    indexer_cpu_seconds: float
    seconds_until_indexed: float

    @property
    def cpu_ms_per_instance(self) -> float:
        return 1000 * self.indexer_cpu_seconds / self.instances


def _indexer_pid(serve_pid: int) -> int:
    for pid in benchlib.children_of(serve_pid):
        command = benchlib.cmdline(pid)
        if "services.cli" in command and "indexer" in command:
            return pid
    raise RuntimeError("no indexer child under pacs serve")


def measure_serve(run: int, manifest: dict[str, Any], workdir: Path) -> ServeMeasurement:
    """pacs serve receives the instances from one storescu (TCP_NODELAY=1); the indexer child's CPU from just before
    the push until every instance is indexed (GET /api/status: counts.instances, queue.pending 0)."""
    folder = Path(tempfile.mkdtemp(prefix="pacs-bench-idx-serve-", dir=workdir))
    port, api = benchlib.free_port(), benchlib.free_port()
    env = benchlib.pacs_env(PACS_DICOM_HOST=benchlib.HOST, PACS_API_HOST=benchlib.HOST, PACS_LOG_LEVEL="WARNING")
    node = benchlib.Process("pacs serve", benchlib.pacs_command(
        "serve", "--data-dir", str(folder / "data"), "--dicom-port", str(port), "--api-port", str(api),
        "--ae-title", "PACS"), folder / "serve.log", env=env, cwd=benchlib.pacs_cwd())
    status_url = f"http://{benchlib.HOST}:{api}/api/status"
    try:
        node.wait_ready(lambda: benchlib.http("GET", status_url)[0] == 200 and benchlib.tcp_accepts(port))
        time.sleep(2)  # let the children finish starting
        indexer = _indexer_pid(node.pid)
        cpu_start, wall_start = benchlib.process_cpu_seconds(indexer), time.perf_counter()
        _, exit_codes, _, failures = run_storescu(manifest, 1, port, "PACS", True, 60 + 0.1 * manifest["count"],
                                                  folder, False)
        if failures or any(exit_codes):
            raise RuntimeError(f"storescu failed ({failures} failed stores, exit codes {exit_codes})")
        deadline = time.perf_counter() + 300
        while True:
            code, body = benchlib.http("GET", status_url)
            status = json.loads(body) if code == 200 else {}
            if (status.get("counts", {}).get("instances") == manifest["count"]
                    and status.get("queue", {}).get("pending") == 0):
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not indexed within 300 s: {status}")
            time.sleep(0.05)
        cpu = benchlib.process_cpu_seconds(indexer) - cpu_start
        return ServeMeasurement(run, manifest["count"], cpu, time.perf_counter() - wall_start)
    finally:
        node.stop()
        shutil.rmtree(folder, ignore_errors=True)


def report(measurements: list[Measurement]) -> str:
    rows = ["| size | database | runs | CPU ms/instance (median, min–max) | instances/s (median) |",
            "|---|---|---|---|---|"]
    keys = sorted({(m.size, m.database) for m in measurements}, key=lambda k: (k[0] != "small", DATABASES.index(k[1])))
    for size, database in keys:
        group = [m for m in measurements if (m.size, m.database) == (size, database)]
        cpu = [m.cpu_ms_per_instance for m in group]
        rate = [m.instances_per_second for m in group]
        rows.append(f"| {size} | {database} | {len(group)} | {statistics.median(cpu):.3f} "
                    f"({min(cpu):.3f}–{max(cpu):.3f}) | {statistics.median(rate):,.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1000, help="64x64 CT instances (~9.8 KB; 0 skips them)")
    parser.add_argument("--large", type=int, default=300, help="512x512 CT instances (~526 KB; 0 skips them)")
    parser.add_argument("--runs", type=int, default=3, help="measurements per (size, database)")
    parser.add_argument("--databases", default=",".join(DATABASES), help="from sqlite,postgresql")
    parser.add_argument("--batch", type=int, default=None,
                        help="instances per index_events call (default: indexer_batch_size, 200); pacs serve hands "
                             "the indexer what arrived within index_batch_wait_seconds (0.1 s), ~10-50 "
                             "instances while a push runs")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/pacs-bench-cache"))
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--serve", type=int, default=0, metavar="N",
                        help="also end to end: N small instances pushed by storescu to pacs serve, the indexer "
                             "child's CPU until they are indexed (needs dcmtk)")
    parser.add_argument("--out", type=Path, help="write every measurement as JSON")
    benchlib.add_source_argument(parser)
    args = parser.parse_args(argv)
    source = benchlib.configure_source(args.commit)
    databases = [name for name in args.databases.split(",") if name]
    unknown = set(databases) - set(DATABASES)
    if unknown:
        parser.error(f"unknown database(s): {', '.join(sorted(unknown))}")

    data = {size: _files(generate(size, count, args.cache_dir))
            for size, count in (("small", args.small), ("large", args.large)) if count > 0}
    for size, files in data.items():  # warm-up (imports, caches, connections), not reported
        for database in databases:
            measure(size, database, 0, files[:WARM_UP_INSTANCES], args.workdir, args.batch)
    measurements: list[Measurement] = []
    for run in range(1, args.runs + 1):
        for size, files in data.items():
            for database in databases:  # interleaved: a drift of the machine hits every cell alike
                result = measure(size, database, run, files, args.workdir, args.batch)
                benchlib.log(f"[run {run}] {size} {database}: {result.cpu_ms_per_instance:.3f} CPU ms/instance, "
                             f"{result.instances_per_second:,.0f} instances/s")
                measurements.append(result)
    served: list[ServeMeasurement] = []
    if args.serve:
        manifest = generate("small", args.serve, args.cache_dir)
        for run in range(1, args.runs + 1):
            result = measure_serve(run, manifest, args.workdir)
            benchlib.log(f"[run {run}] pacs serve: indexer {result.cpu_ms_per_instance:.3f} CPU ms/instance, "
                         f"indexed after {result.seconds_until_indexed:.2f} s")
            served.append(result)
    table = report(measurements)
    if served:
        cpu = [m.cpu_ms_per_instance for m in served]
        rate = [m.instances / m.seconds_until_indexed for m in served]
        table += (f"\n\npacs serve, {args.serve} small instances from storescu: indexer process "
                  f"{statistics.median(cpu):.3f} CPU ms/instance ({min(cpu):.3f}–{max(cpu):.3f}), "
                  f"{statistics.median(rate):,.0f} instances/s until indexed (median of {len(served)})")
    batch = f"batches of {args.batch}" if args.batch else "batches of indexer_batch_size"
    print(f"indexer: {source}; {batch}; {benchlib.machine()}\n\n{table}")
    if args.out:
        args.out.write_text(json.dumps({"source": source, "table": table,
                                        "measurements": [asdict(m) for m in measurements],
                                        "serve": [asdict(m) for m in served]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
