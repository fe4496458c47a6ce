#!/usr/bin/env python3
"""C-STORE ingest benchmark: pacs against dcmtk storescp and Orthanc, measured in the same run.

Usage (from the repository root):

    .venv/bin/python bench/ingest.py [--small N] [--large N] [--runs R]
                                     [--only storescp,orthanc,pacs] [--nagle] [--out results.json]

Sender: dcmtk ``storescu`` (one process per association, every file of its chunk on one association,
``TCP_NODELAY=1`` in its environment; with ``--nagle`` everything is measured once more without it).
Receivers, started fresh for every measurement on free ports of 127.0.0.1 and removed afterwards:
``storescp --fork +B`` (the practical limit), Orthanc (defaults, ``TCP_NODELAY=1``) and ``pacs serve``.
See bench/README.md and /work/shared/PERFORMANCE.md. Needs only the standard library and pydicom.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATOR_VERSION = 1  # bump when the generated files change, to invalidate caches
HOST = "127.0.0.1"
CHUNKS = 4  # files are split into this many directories; C=4 sends one per association
RECEIVERS = ("storescp", "orthanc", "pacs", "pacs-dist")
PACS_RECEIVERS = ("pacs", "pacs-dist")  # they index after acknowledging: both rates are measured
SIZES = {
    # name: (rows, columns)
    "small": (64, 64),     # ~9.6 KB per file
    "large": (512, 512),   # ~526 KB per file
}
SERIES_SIZE = {"small": 50, "large": 50}  # instances per series
SERIES_PER_STUDY = 2
STUDIES_PER_PATIENT = 2


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def loud(msg: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n!!! {msg}\n{bar}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Synthetic study set
# --------------------------------------------------------------------------------------------

def _pixel_bases(rows: int, cols: int, count: int, rng: random.Random) -> list[bytes]:
    """A few 12-bit CT-like pixel buffers (uint16 little endian) to derive every image from."""
    n = rows * cols
    bases = []
    cx, cy, r2 = cols / 2, rows / 2, (min(rows, cols) * 0.42) ** 2
    for _ in range(count):
        noise = array.array("H", os.urandom(2 * n))
        px = array.array("H", bytes(2 * n))
        for y in range(rows):
            dy2 = (y - cy) ** 2
            base = y * cols
            for x in range(cols):
                # air (~0 = -1024 HU) outside a "body" disc, soft tissue (~1064 = +40 HU) inside, plus noise
                v = 1064 if (x - cx) ** 2 + dy2 < r2 else 24
                px[base + x] = (v + (noise[base + x] & 0x7F)) & 0x0FFF
        if sys.byteorder != "little":
            px.byteswap()
        bases.append(px.tobytes())
    return bases


def _write_dataset(path: Path, ds) -> None:
    import pydicom

    try:
        pydicom.dcmwrite(str(path), ds, enforce_file_format=True)  # pydicom >= 3
    except TypeError:
        ds.is_little_endian = True  # pydicom 2.x
        ds.is_implicit_VR = False
        ds.save_as(str(path), write_like_original=False)


def generate(kind: str, count: int, cache_root: Path) -> dict:
    """Generate (or reuse from the cache) `count` CT instances of size `kind`.

    Returns the manifest: {"kind", "count", "bytes", "chunks": [dir, ...]}.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rows, cols = SIZES[kind]
    root = cache_root / f"v{GENERATOR_VERSION}-{kind}-{count}"
    manifest_path = root / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            present = sum(len(os.listdir(d)) for d in manifest["chunks"])
            if present == count and manifest["count"] == count:
                log(f"[data] reusing {count} {kind} instances from {root}")
                return manifest
        except (OSError, ValueError, KeyError):
            pass
    log(f"[data] generating {count} {kind} instances ({rows}x{cols}, 16-bit CT) into {root} ...")
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    chunk_dirs = [root / f"chunk{i}" for i in range(CHUNKS)]
    for d in chunk_dirs:
        d.mkdir(parents=True)

    rng = random.Random(f"{kind}-{count}")
    bases = _pixel_bases(rows, cols, 4, rng)
    npix_bytes = rows * cols * 2
    series_size = SERIES_SIZE[kind]
    per_study = series_size * SERIES_PER_STUDY
    per_patient = per_study * STUDIES_PER_PATIENT
    # contiguous chunks: each association sends whole studies, as a modality would
    bounds = [round(i * count / CHUNKS) for i in range(CHUNKS + 1)]
    first_names = ["ANNA", "BERT", "CARLA", "DIRK", "EVA", "FRANZ", "GRETA", "HANS", "IDA", "JONAS"]
    last_names = ["MUELLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER"]
    total = 0
    patient = study = series = None
    for i in range(count):
        if i % per_patient == 0:
            p = i // per_patient
            patient = {
                "PatientID": f"BENCH{kind[0].upper()}{p:05d}",
                "PatientName": f"{rng.choice(last_names)}^{rng.choice(first_names)}",
                "PatientBirthDate": f"{rng.randint(1930, 2010)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}",
                "PatientSex": rng.choice("MF"),
            }
        if i % per_study == 0:
            s = i // per_study
            day = 1 + s % 28
            study = {
                "StudyInstanceUID": generate_uid(),
                "StudyDate": f"2024{1 + s % 12:02d}{day:02d}",
                "StudyTime": f"{8 + s % 10:02d}{s % 60:02d}00",
                "AccessionNumber": f"ACC{kind[0].upper()}{s:07d}",
                "StudyID": str(s + 1),
                "FrameOfReferenceUID": generate_uid(),
                "series_no": 0,
            }
        if i % series_size == 0:
            study["series_no"] += 1
            series = {
                "SeriesInstanceUID": generate_uid(),
                "SeriesNumber": study["series_no"],
                "SeriesDescription": ["AXIAL 5mm", "AXIAL 1mm BONE", "CORONAL", "SAGITTAL"][
                    (study["series_no"] - 1) % 4],
            }
        inst_no = i % series_size + 1
        sop_uid = generate_uid()

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.InstanceCreationDate = study["StudyDate"]
        ds.InstanceCreationTime = study["StudyTime"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study["StudyDate"]
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = study["StudyTime"]
        ds.AccessionNumber = study["AccessionNumber"]
        ds.Modality = "CT"
        ds.Manufacturer = "BENCH"
        ds.InstitutionName = "Synthetic Hospital"
        ds.ReferringPhysicianName = "REFERRER^RITA"
        ds.StationName = "CT01"
        ds.StudyDescription = "CT THORAX ABDOMEN"
        ds.SeriesDescription = series["SeriesDescription"]
        ds.ManufacturerModelName = "SYNTH-CT 64"
        ds.PatientName = patient["PatientName"]
        ds.PatientID = patient["PatientID"]
        ds.PatientBirthDate = patient["PatientBirthDate"]
        ds.PatientSex = patient["PatientSex"]
        ds.PatientAge = "050Y"
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "5.0"
        ds.KVP = "120"
        ds.DataCollectionDiameter = "500.0"
        ds.SoftwareVersions = "bench-1"
        ds.ReconstructionDiameter = "360.0"
        ds.DistanceSourceToDetector = "1085.6"
        ds.DistanceSourceToPatient = "595.0"
        ds.GantryDetectorTilt = "0.0"
        ds.TableHeight = "160.0"
        ds.RotationDirection = "CW"
        ds.ExposureTime = "500"
        ds.XRayTubeCurrent = "300"
        ds.Exposure = "150"
        ds.FilterType = "BODY FILTER"
        ds.ConvolutionKernel = "STANDARD"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study["StudyInstanceUID"]
        ds.SeriesInstanceUID = series["SeriesInstanceUID"]
        ds.StudyID = study["StudyID"]
        ds.SeriesNumber = series["SeriesNumber"]
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = inst_no
        z = -5.0 * inst_no
        ds.ImagePositionPatient = ["-180.0", "-180.0", f"{z:.1f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.FrameOfReferenceUID = study["FrameOfReferenceUID"]
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{z:.1f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = rows
        ds.Columns = cols
        ds.PixelSpacing = [f"{360.0 / rows:.4f}", f"{360.0 / cols:.4f}"]
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        base = bases[i % len(bases)]
        shift = 2 * rng.randrange(npix_bytes // 2)
        ds.PixelData = base[shift:] + base[:shift]
        ds["PixelData"].VR = "OW"

        chunk = next(c for c in range(CHUNKS) if bounds[c] <= i < bounds[c + 1])
        path = chunk_dirs[chunk] / f"{i:06d}.dcm"
        _write_dataset(path, ds)
        total += path.stat().st_size

    manifest = {
        "kind": kind, "count": count, "bytes": total, "rows": rows, "columns": cols,
        "chunks": [str(d) for d in chunk_dirs],
        "chunk_counts": [bounds[c + 1] - bounds[c] for c in range(CHUNKS)],
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    log(f"[data] {count} files, {total / count / 1000:.1f} KB each, in {time.perf_counter() - t0:.1f} s")
    return manifest


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tcp_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (OSError, ValueError):
        return 0, b""


def echo_ok(port: int, aec: str) -> bool:
    try:
        r = subprocess.run(["echoscu", "-to", "2", "-ta", "2", "-aec", aec, HOST, str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        return r.returncode == 0
    except (subprocess.TimeoutExpired, OSError):
        return False


def stop_process(proc: subprocess.Popen | None, grace: float = 20.0, group: bool = True) -> int | None:
    """SIGTERM the process we started, wait, then SIGKILL it; then its process group (leftover children)."""
    if proc is None:
        return None
    rc = proc.poll()
    if rc is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            loud(f"pid {proc.pid} did not stop within {grace:.0f} s of SIGTERM; killing it")
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            rc = proc.wait(timeout=10)
    if group:  # we started it with start_new_session=True, so its pgid is its pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.2)
    return rc


def tail(path: Path, n: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def count_files(d: Path) -> int:
    n = 0
    for root, _dirs, files in os.walk(d):
        n += sum(1 for f in files if not f.startswith("."))
    return n


# --------------------------------------------------------------------------------------------
# Receivers
# --------------------------------------------------------------------------------------------

def _proc_stats() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, CPU clock ticks of the process and of its children it has waited for)."""
    stats = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        # after the command: state, ppid, ..., utime (12th), stime, cutime, cstime
        stats[int(entry.name)] = (int(fields[1]), sum(int(value) for value in fields[11:15]))
    return stats


def tree_cpu_seconds(roots: list[int]) -> float:
    """CPU seconds (user + system) of the processes ``roots`` and all their descendants, including descendants that
    ended and were waited for (a process's cutime/cstime). Linux /proc."""
    stats = _proc_stats()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's children that ended and were waited for (the storescu processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Receiver:
    name = "?"
    aet = "ANY-SCP"

    def __init__(self, workdir: Path, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-", dir=workdir))
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.startup_s = None
        self.logfile = self.dir / "receiver.log"

    def _spawn(self, cmd: list[str], env: dict) -> None:
        self._log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.dir, start_new_session=True, stdin=subprocess.DEVNULL)

    def _wait_ready(self, check, timeout: float) -> None:
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during start:\n"
                                   f"{tail(self.logfile)}")
            if check():
                self.startup_s = time.perf_counter() - t0
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s:\n{tail(self.logfile)}")

    def start(self) -> None:
        raise NotImplementedError

    def stored_count(self) -> int:
        raise NotImplementedError

    def cpu_seconds(self) -> float:
        """CPU used so far by the receiver's own processes (not PostgreSQL, Redis or an S3 server it talks to)."""
        return tree_cpu_seconds([self.proc.pid]) if self.proc is not None else 0.0

    def stop(self) -> int | None:
        try:
            return stop_process(self.proc)
        finally:
            if getattr(self, "_log", None):
                self._log.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class StoreSCP(Receiver):
    name = "storescp"

    def start(self) -> None:
        self.out = self.dir / "out"
        self.out.mkdir()
        self.port = free_port()
        env = dict(os.environ, TCP_NODELAY="1")
        self._spawn(["storescp", "--fork", "+B", "-od", str(self.out), str(self.port)], env)
        self._wait_ready(lambda: echo_ok(self.port, self.aet), 15)

    def stored_count(self) -> int:
        return count_files(self.out)


class Orthanc(Receiver):
    name = "orthanc"
    aet = "ORTHANC"

    def start(self) -> None:
        self.port, self.http = free_port(), free_port()
        while self.http == self.port:
            self.http = free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(self.dir / "storage"),
            "IndexDirectory": str(self.dir / "index"),
            "DicomAet": "ORTHANC",
            "DicomPort": self.port,
            "HttpPort": self.http,
            "DicomCheckCalledAet": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [],
        }
        cfg = self.dir / "orthanc.json"
        cfg.write_text(json.dumps(config, indent=1))
        env = dict(os.environ, TCP_NODELAY="1")
        self._spawn([self.args.orthanc, str(cfg)], env)
        base = f"http://{HOST}:{self.http}"
        self._wait_ready(lambda: http_get(base + "/system")[0] == 200 and echo_ok(self.port, self.aet), 60)

    def stored_count(self) -> int:
        status, body = http_get(f"http://{HOST}:{self.http}/statistics", timeout=10)
        if status != 200:
            raise RuntimeError(f"orthanc GET /statistics answered {status}")
        return int(json.loads(body)["CountInstances"])


class Pacs(Receiver):
    name = "pacs"
    aet = "PACS"

    def start(self) -> None:
        self.port, self.api = free_port(), free_port()
        while self.api == self.port:
            self.api = free_port()
        data = self.dir / "data"
        cmd = [self.args.pacs, "serve", "--data-dir", str(data), "--dicom-port", str(self.port),
               "--api-port", str(self.api), "--ae-title", self.aet] + shlex.split(self.args.pacs_args)
        env = dict(os.environ)
        env.setdefault("PACS_DICOM_HOST", HOST)  # only loopback (contract: every option has PACS_<NAME>)
        env.setdefault("PACS_API_HOST", HOST)
        self._spawn(cmd, env)
        base = f"http://{HOST}:{self.api}"
        self._wait_ready(lambda: http_get(base + "/healthz")[0] == 200 and tcp_accepts(self.port), 60)
        if not echo_ok(self.port, self.aet):
            loud("pacs: C-ECHO to the DICOM port failed (continuing; C-STORE will tell)")

    def status(self) -> dict | None:
        code, body = http_get(f"http://{HOST}:{self.api}/api/status", timeout=5)
        if code != 200:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return None

    def stored_count(self) -> int:
        st = self.status()
        if st is None:
            raise RuntimeError("pacs GET /api/status failed")
        return int(st["counts"]["instances"])

    def wait_indexed(self, expected: int, t_start: float, timeout: float = 120.0) -> tuple[float | None, dict]:
        """Poll /api/status every 50 ms until counts.instances == expected and queue.pending == 0."""
        deadline = time.perf_counter() + timeout
        last: dict = {}
        while True:
            st = self.status()
            now = time.perf_counter()
            if st is not None:
                last = st
                try:
                    if (int(st["counts"]["instances"]) >= expected
                            and int(st["queue"]["pending"]) == 0):
                        return now - t_start, st
                except (KeyError, TypeError, ValueError):
                    pass
            if now >= deadline:
                return None, last
            time.sleep(0.05)


class PacsDistributed(Pacs):
    """The distributed form on one machine: `pacs scp`, `pacs indexer` and `pacs api` as separate processes on a
    throwaway PostgreSQL database, a Redis database and an S3 endpoint (moto's standalone server, started here;
    a real deployment uses MinIO, see deploy/). The same code as `pacs serve`; only the URLs differ."""

    name = "pacs-dist"
    REDIS_DB = 14

    def start(self) -> None:
        self.port, self.api = free_port(), free_port()
        while self.api == self.port:
            self.api = free_port()
        self.procs: list[subprocess.Popen] = []
        self.database = f"pacs_bench_ingest_{os.getpid()}_{self.port}"
        subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-q", "-c", f'CREATE DATABASE "{self.database}"'],
                       check=True, capture_output=True)
        subprocess.run(["redis-cli", "-h", HOST, "-n", str(self.REDIS_DB), "flushdb"], check=True,
                       capture_output=True)
        s3_port = free_port()
        moto = str(Path(self.args.pacs).parent / "moto_server")
        self._start_one([moto, "-H", HOST, "-p", str(s3_port)], dict(os.environ), "s3")
        self._wait_ready(lambda: http_get(f"http://{HOST}:{s3_port}/")[0] == 200, 30)
        env = dict(os.environ, PACS_DATABASE_URL=f"postgresql+psycopg://postgres@{HOST}:5432/{self.database}",
                   PACS_BROKER_URL=f"redis://{HOST}:6379/{self.REDIS_DB}", PACS_STORAGE_URL="s3://pacs-bench",
                   PACS_S3_ENDPOINT=f"http://{HOST}:{s3_port}", PACS_S3_ACCESS_KEY="bench",
                   PACS_S3_SECRET_KEY="bench-secret", PACS_DATA_DIR=str(self.dir / "data"),
                   PACS_DICOM_HOST=HOST, PACS_DICOM_PORT=str(self.port), PACS_API_HOST=HOST,
                   PACS_API_PORT=str(self.api), PACS_AE_TITLE=self.aet)
        subprocess.run([self.args.pacs, "migrate"], env=env, check=True, capture_output=True, cwd=self.dir)
        for service in ("scp", "indexer", "api"):
            self._start_one([self.args.pacs, service], env, service)
        base = f"http://{HOST}:{self.api}"
        self._wait_ready(lambda: http_get(base + "/healthz")[0] == 200 and tcp_accepts(self.port), 60)

    def _start_one(self, cmd: list[str], env: dict, name: str) -> None:
        log_file = open(self.dir / f"{name}.log", "wb")
        self.procs.append(subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=self.dir,
                                           start_new_session=True, stdin=subprocess.DEVNULL))
        self.proc = self.procs[-1]  # _wait_ready watches the latest one
        log_file.close()

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds([proc.pid for proc in self.procs[1:]])  # the pacs services; not moto (procs[0])

    def stop(self) -> int | None:
        codes = [stop_process(proc) for proc in reversed(self.procs)]
        subprocess.run(["psql", "-h", HOST, "-U", "postgres", "-q", "-c",
                        f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'], capture_output=True)
        subprocess.run(["redis-cli", "-h", HOST, "-n", str(self.REDIS_DB), "flushdb"], capture_output=True)
        return next((code for code in codes[1:] if code not in (0, None)), 0)  # moto's own code is not ours


RECEIVER_CLASSES = {"storescp": StoreSCP, "orthanc": Orthanc, "pacs": Pacs, "pacs-dist": PacsDistributed}
PACS_VERSION: dict = {}


# --------------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------------

@dataclass
class Result:
    receiver: str
    size: str
    conc: int
    nodelay: bool
    run: int
    sent: int
    bytes: int
    ack_s: float | None = None
    indexed_s: float | None = None
    sender_ok: int | None = None
    sender_fail: int | None = None
    receiver_count: int | None = None
    storescu_rc: list = field(default_factory=list)
    startup_s: float | None = None
    stop_s: float | None = None
    receiver_rc: int | None = None
    dead_letter: int | None = None
    receiver_cpu_s: float | None = None  # from the first instance sent to the last acknowledged (pacs: indexed)
    sender_cpu_s: float | None = None  # of the storescu processes
    error: str | None = None
    mismatch: bool = False

    @property
    def key(self) -> tuple:
        return (self.receiver, self.size, self.conc, self.nodelay)


def run_storescu(manifest: dict, conc: int, port: int, aec: str, nodelay: bool, timeout: float,
                 logdir: Path, count_responses: bool) -> tuple[float, list[int], int | None, int]:
    """Push every file; returns (wall seconds, exit codes, successes or None, failures) as storescu logged them."""
    dirs = [d for d, n in zip(manifest["chunks"], manifest["chunk_counts"]) if n > 0]
    groups = [dirs] if conc == 1 else [[d] for d in dirs]
    env = dict(os.environ)
    env.pop("TCP_NODELAY", None)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        cmds = []
        for g, group in enumerate(groups):
            # -nh: carry on after a failed store so every failure is counted. Without -v storescu logs only
            # failures ("E: Store Failed, file: ..."); -v adds one "Received Store Response (<status>)" line per
            # instance (exact count of Successes) but costs the sender 5-20 % CPU, hence only with --count-responses.
            cmds.append(["storescu"] + (["-v"] if count_responses else [])
                        + ["-nh", "-aec", aec, "-to", "10", "+sd", HOST, str(port)] + group)
            logs.append(open(logdir / f"storescu-{g}.log", "wb"))
        t0 = time.perf_counter()
        for cmd, lf in zip(cmds, logs):
            procs.append(subprocess.Popen(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env,
                                          stdin=subprocess.DEVNULL))
        deadline = t0 + timeout
        rcs = []
        for p in procs:
            rcs.append(p.wait(timeout=max(0.1, deadline - time.perf_counter())))
        wall = time.perf_counter() - t0
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"storescu did not finish within {timeout:.0f} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for lf in logs:
            lf.close()
    ok = 0 if count_responses else None
    fail = 0
    for g in range(len(groups)):
        text = (logdir / f"storescu-{g}.log").read_text(errors="replace")
        for line in text.splitlines():
            if "Received Store Response" in line:
                if "(Success)" in line:
                    ok += 1
                else:
                    fail += 1
            elif "Store Failed" in line:
                fail += 1
    return wall, rcs, ok, fail


# Receivers' folders are deleted when the whole run is over, not between measurements: on ext4 without a journal
# (this machine's disk) a new inode is searched past every inode of its group freed in the last 60-360 s, so the
# thousands of files of one receiver, deleted, made file creation 10-40x slower for the receivers measured after it
# (an empty file: 18 us in a quiet folder, 250-800 us after such a deletion).
LEFT_FOR_THE_END: list["Receiver"] = []
PROBES_LEFT_FOR_THE_END: list[Path] = []


def measure(receiver: str, manifest: dict, conc: int, nodelay: bool, run: int, args, workdir: Path) -> Result:
    n, nbytes = manifest["count"], manifest["bytes"]
    res = Result(receiver, manifest["kind"], conc, nodelay, run, n, nbytes)
    rx = RECEIVER_CLASSES[receiver](workdir, args)
    try:
        rx.start()
        res.startup_s = rx.startup_s
        timeout = args.timeout if args.timeout else 60 + 0.1 * n
        receiver_cpu, sender_cpu = rx.cpu_seconds(), children_cpu_seconds()
        wall, rcs, ok, fail = run_storescu(manifest, conc, rx.port, rx.aet, nodelay, timeout, rx.dir,
                                               args.count_responses)
        res.ack_s, res.storescu_rc, res.sender_ok, res.sender_fail = wall, rcs, ok, fail
        res.sender_cpu_s = children_cpu_seconds() - sender_cpu
        if receiver in PACS_RECEIVERS:
            if PACS_VERSION.get("version") is None:
                PACS_VERSION["version"] = (rx.status() or {}).get("version")
            expected = n - fail if ok is None else min(ok, n)
            idx_s, st = rx.wait_indexed(expected, t_start=time.perf_counter() - wall)
            res.indexed_s = idx_s
            try:
                res.dead_letter = int(st["queue"]["dead_letter"])
            except (KeyError, TypeError, ValueError):
                pass
            if idx_s is None:
                res.error = f"not indexed within 120 s (last /api/status: {json.dumps(st)[:300]})"
        res.receiver_cpu_s = rx.cpu_seconds() - receiver_cpu
        res.receiver_count = rx.stored_count()
    except Exception as e:  # noqa: BLE001 - a failed measurement is reported, the run continues
        res.error = f"{type(e).__name__}: {e}"
    finally:
        t_stop = time.perf_counter()
        rc = rx.stop()
        res.stop_s, res.receiver_rc = time.perf_counter() - t_stop, rc
        if receiver in PACS_RECEIVERS and rc not in (0, None):
            log(f"[{receiver}] exit code {rc} after SIGTERM (contract: 0)")
        if receiver in PACS_RECEIVERS and res.stop_s > 15:
            log(f"[{receiver}] took {res.stop_s:.1f} s to stop after SIGTERM (contract: within 15 s)")
        if res.error and args.keep_failed:
            log(f"[{receiver}] kept {rx.dir} for inspection")
        elif args.clean_each:
            rx.cleanup()
        else:
            LEFT_FOR_THE_END.append(rx)
    problems = []
    if res.error:
        problems.append(res.error)
    if res.storescu_rc and any(res.storescu_rc):
        problems.append(f"storescu exit codes {res.storescu_rc}")
    if res.sender_ok is not None and res.sender_ok != n:
        problems.append(f"storescu logged {res.sender_ok} Success / {res.sender_fail} other of {n} sent")
    elif res.sender_fail:
        problems.append(f"storescu logged {res.sender_fail} failed store(s) of {n} sent")
    if res.receiver_count is not None and res.receiver_count != n:
        problems.append(f"receiver holds {res.receiver_count} instances, {n} sent")
    if res.dead_letter:
        problems.append(f"dead_letter = {res.dead_letter}")
    if problems:
        res.mismatch = True
        loud(f"{receiver} {res.size} C={conc} {'nodelay' if nodelay else 'NAGLE'} run {run}: "
             + "; ".join(problems))
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize(results: list[Result]) -> dict:
    """(receiver, size, conc, nodelay) -> {"ack": inst/s, "ack_mbs", "indexed", "indexed_mbs", "runs", "bad"}"""
    groups: dict[tuple, list[Result]] = {}
    for r in results:
        groups.setdefault(r.key, []).append(r)
    out = {}
    for key, rs in groups.items():
        good = [r for r in rs if not r.mismatch]
        ack = median_or_none([r.sent / r.ack_s for r in good if r.ack_s])
        idx = median_or_none([r.sent / r.indexed_s for r in good if r.indexed_s])
        mb = rs[0].bytes / rs[0].sent / 1e6
        out[key] = {
            "ack": ack, "ack_mbs": ack * mb if ack else None,
            "indexed": idx, "indexed_mbs": idx * mb if idx else None,
            "receiver_cpu_ms": median_or_none([r.receiver_cpu_s * 1000 / r.sent for r in good
                                               if r.receiver_cpu_s is not None]),
            "sender_cpu_ms": median_or_none([r.sender_cpu_s * 1000 / r.sent for r in good
                                             if r.sender_cpu_s is not None]),
            "runs": len(rs), "bad": len(rs) - len(good),
        }
    return out


def fmt_cell(rate, mbs, bad=0) -> str:
    if rate is None:
        return "failed" if bad else "–"
    s = f"{rate:,.0f} /s · {mbs:,.1f} MB/s"
    return s + (f" ({bad} bad run{'s' if bad > 1 else ''})" if bad else "")


def report(results: list[Result], sizes: list[str], receivers: list[str], nodelays: list[bool]) -> str:
    summ = summarize(results)
    cols = [(s, c) for s in sizes for c in (1, 4)]
    lines = ["| receiver | " + " | ".join(f"{s} C={c}" for s, c in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for nd in nodelays:
        suffix = "" if nd else " (Nagle client)"
        for rx in receivers:
            metrics = [("ack", "ack_mbs", "")] if rx not in PACS_RECEIVERS else [
                ("ack", "ack_mbs", " ack"), ("indexed", "indexed_mbs", " indexed")]
            for m, mm, label in metrics:
                cells = []
                for s, c in cols:
                    v = summ.get((rx, s, c, nd))
                    cells.append(fmt_cell(v[m], v[mm], v["bad"]) if v else "–")
                lines.append(f"| {rx}{label}{suffix} | " + " | ".join(cells) + " |")

    def rate(rx, s, c, nd, m="ack"):
        v = summ.get((rx, s, c, nd))
        return v[m] if v else None

    ratio_lines = []
    ours = [rx for rx in PACS_RECEIVERS if rx in receivers]
    if ours and ({"orthanc", "storescp"} & set(receivers) or len(nodelays) > 1):
        ratio_lines += ["", "Ratios (instances/s, medians of this run; target from PERFORMANCE.md):", "",
                        "| ratio | " + " | ".join(f"{s} C={c}" for s, c in cols) + " | target |",
                        "|---|" + "---|" * (len(cols) + 1)]
        targets = {("ack", "orthanc"): "≥ 1.5", ("indexed", "orthanc"): "≥ 1.0"}
        for pacs in ours:
            for nd in nodelays:
                suffix = "" if nd else " (Nagle client)"
                for m in ("ack", "indexed"):
                    for anchor in ("orthanc", "storescp"):
                        if anchor not in receivers:
                            continue
                        cells = []
                        for s, c in cols:
                            a, b = rate(pacs, s, c, nd, m), rate(anchor, s, c, nd)
                            cells.append(f"{a / b:.2f}×" if a and b else "–")
                        ratio_lines.append(f"| {pacs} {m} / {anchor}{suffix} | " + " | ".join(cells)
                                           + f" | {targets.get((m, anchor), '') if nd else ''} |")
                if nd and "orthanc" in receivers:
                    cells = [_paired_ratios(results, pacs, s, c) for s, c in cols]
                    ratio_lines.append(f"| {pacs} ack / orthanc, run by run (median) | " + " | ".join(cells)
                                       + " | ≥ 1.5 |")
            if False in nodelays and True in nodelays:
                cells = []
                for s, c in cols:
                    a, b = rate(pacs, s, c, False), rate(pacs, s, c, True)
                    cells.append(f"{a / b:.2f}×" if a and b else "–")
                ratio_lines.append(f"| {pacs} ack Nagle / TCP_NODELAY client | " + " | ".join(cells) + " | ≥ 0.90 |")
    return "\n".join(lines + ratio_lines + cpu_report(summ, cols, receivers, nodelays))


def _paired_ratios(results: list[Result], pacs: str, size: str, conc: int) -> str:
    """pacs's ack rate over Orthanc's, each run against the Orthanc measured minutes before it in the same run (the
    receivers are interleaved), then their median: the machine's speed drifts by up to 2x within a run here, and a
    ratio of the two medians can pair a fast minute of one with a slow minute of the other."""
    def rates(receiver: str) -> dict[int, float]:
        return {r.run: r.sent / r.ack_s for r in results if r.receiver == receiver and r.size == size
                and r.conc == conc and r.nodelay and r.ack_s and not r.mismatch}

    ours, anchor = rates(pacs), rates("orthanc")
    ratios = [ours[run] / anchor[run] for run in sorted(ours) if run in anchor]
    if not ratios:
        return "–"
    return f"{statistics.median(ratios):.2f}× ({' · '.join(f'{ratio:.2f}' for ratio in ratios)})"


def cpu_report(summ: dict, cols: list[tuple[str, int]], receivers: list[str], nodelays: list[bool]) -> list[str]:
    """CPU milliseconds per instance of each receiver's own processes (medians), the sender's beside them, pacs
    against Orthanc, and each receiver against its own senders: on a machine whose speed drifts, steadier comparisons
    than instances/s, and what decides the rate where the cores are the limit (C=4 here)."""
    def cpu(rx: str, s: str, c: int, nd: bool, m: str = "receiver_cpu_ms") -> float | None:
        v = summ.get((rx, s, c, nd))
        return v[m] if v else None

    lines = ["", "CPU per instance, ms (the receiver's own processes; pacs until the last is indexed; storescu's in "
             "parentheses), medians:", "",
             "| receiver | " + " | ".join(f"{s} C={c}" for s, c in cols) + " |", "|---|" + "---|" * len(cols)]
    for nd in nodelays:
        suffix = "" if nd else " (Nagle client)"
        for rx in receivers:
            cells = []
            for s, c in cols:
                own, sender = cpu(rx, s, c, nd), cpu(rx, s, c, nd, "sender_cpu_ms")
                cells.append("–" if own is None else f"{own:.2f} ({sender:.2f})" if sender is not None
                             else f"{own:.2f}")
            lines.append(f"| {rx}{suffix} | " + " | ".join(cells) + " |")
        if "orthanc" in receivers:
            for pacs in (rx for rx in PACS_RECEIVERS if rx in receivers):
                cells = []
                for s, c in cols:
                    a, b = cpu(pacs, s, c, nd), cpu("orthanc", s, c, nd)
                    cells.append(f"{a / b:.2f}×" if a and b else "–")
                lines.append(f"| {pacs} / orthanc{suffix} | " + " | ".join(cells) + " |")
        # The senders' CPU per instance moves with the machine's speed as the receivers' does (session 22: 0.29 to
        # 0.39 ms per small instance between runs of one session): a receiver's CPU over its senders' compares runs.
        for rx in (rx for rx in ("orthanc", *PACS_RECEIVERS) if rx in receivers):
            cells = []
            for s, c in cols:
                own, sender = cpu(rx, s, c, nd), cpu(rx, s, c, nd, "sender_cpu_ms")
                cells.append(f"{own / sender:.1f}" if own and sender else "–")
            lines.append(f"| {rx} / its senders{suffix} | " + " | ".join(cells) + " |")
    return lines


def file_creation_us(workdir: Path, count: int = 300) -> float:
    """Median microseconds to create an empty file in a new folder of ``workdir``. On ext4 without a journal (this
    machine's disk) a new inode is searched past every inode freed in the last minutes: ~20 us on a quiet disk,
    hundreds after thousands of files were deleted (a test run, an earlier benchmark). Every receiver creates files,
    pacs two per instance (its claim and its object), so the figure says how far a run was slowed."""
    folder = Path(tempfile.mkdtemp(prefix="bench-probe-", dir=workdir))
    times = []
    try:
        for number in range(count):
            start = time.perf_counter()
            os.close(os.open(folder / f"{number}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            times.append(time.perf_counter() - start)
    finally:
        PROBES_LEFT_FOR_THE_END.append(folder)  # deleted with the receivers' folders: no freed inodes meanwhile
    return round(statistics.median(times) * 1e6, 1)


def tool_versions(args, receivers) -> dict:
    v = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        import pydicom
        v["pydicom"] = pydicom.__version__
    except ImportError:
        pass
    for key, cmd in (("storescu", ["storescu", "--version"]), ("orthanc", [args.orthanc, "--version"])):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
            v[key] = out.strip().splitlines()[0] if out.strip() else "?"
        except (OSError, subprocess.TimeoutExpired):
            v[key] = None
    if set(PACS_RECEIVERS) & set(receivers):
        v["pacs"] = None  # filled in from GET /api/status "version" by the first pacs measurement
    return v


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=2000, help="64x64 CT instances (~9.6 KB); 0 skips (default 2000)")
    ap.add_argument("--large", type=int, default=1000, help="512x512 CT instances (~526 KB); 0 skips (default 1000)")
    ap.add_argument("--runs", type=int, default=3, help="runs per (receiver, size, C); the median is reported")
    ap.add_argument("--only", default=",".join(RECEIVERS),
                    help="comma-separated receivers (storescp,orthanc,pacs,pacs-dist)")
    ap.add_argument("--conc", default="1,4", help="parallel associations to measure (default 1,4)")
    ap.add_argument("--nagle", action="store_true", help="also measure with a Nagle client (no TCP_NODELAY)")
    ap.add_argument("--out", help="write every raw measurement and the medians to this JSON file")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "pacs-bench-cache"),
                    help="where generated study sets are kept between runs (default /tmp/pacs-bench-cache)")
    ap.add_argument("--clean-each", action="store_true",
                    help="delete each receiver's folder right after its measurement (less disk; on ext4 without a "
                         "journal it slows the file creation of the receivers measured next)")
    ap.add_argument("--workdir", default=tempfile.gettempdir(),
                    help="parent of the receivers' temporary storage (default /tmp; same disk as the anchors)")
    ap.add_argument("--pacs", default=str(REPO / ".venv" / "bin" / "pacs"), help="the pacs executable")
    ap.add_argument("--pacs-args", default="", help="extra arguments appended to `pacs serve`")
    ap.add_argument("--orthanc", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc", help="Orthanc executable")
    ap.add_argument("--timeout", type=float, default=0,
                    help="seconds allowed for one push (default 60 + 0.1 s per instance)")
    ap.add_argument("--count-responses", action="store_true",
                    help="run storescu with -v and count its Success responses (exact, costs the sender 5-20%% CPU)")
    ap.add_argument("--keep-failed", action="store_true", help="keep the storage dir of a failed measurement")
    args = ap.parse_args(argv)

    receivers = [r.strip() for r in args.only.split(",") if r.strip()]
    unknown = set(receivers) - set(RECEIVERS)
    if unknown or not receivers:
        ap.error(f"--only: unknown receiver(s) {sorted(unknown)}; choose from {','.join(RECEIVERS)}")
    concs = [int(c) for c in args.conc.split(",") if c.strip()]
    if any(c not in (1, CHUNKS) for c in concs):
        ap.error(f"--conc: only 1 and {CHUNKS} are supported")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    for tool in ("storescu", "echoscu") + (("storescp",) if "storescp" in receivers else ()):
        if not shutil.which(tool):
            ap.error(f"{tool} (dcmtk) not found on PATH")
    if "orthanc" in receivers and not os.access(args.orthanc, os.X_OK):
        ap.error(f"Orthanc not found at {args.orthanc} (use --orthanc or --only)")
    if set(PACS_RECEIVERS) & set(receivers) and not os.access(args.pacs, os.X_OK):
        ap.error(f"pacs not found at {args.pacs} (run `make install`, pass --pacs, or leave it out of --only)")

    sizes = [s for s, n in (("small", args.small), ("large", args.large)) if n > 0]
    if not sizes:
        ap.error("nothing to send: --small and --large are both 0")
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    manifests = {s: generate(s, getattr(args, s), cache) for s in sizes}
    workdir = Path(args.workdir)
    nodelays = [True, False] if args.nagle else [True]
    versions = tool_versions(args, receivers)
    log(f"[env] {json.dumps(versions)}")
    disk = {"file_creation_us_before": file_creation_us(workdir)}
    log(f"[disk] creating an empty file in {workdir}: {disk['file_creation_us_before']} us (median of 300; ~20 us on "
        "a quiet ext4 here, hundreds in the minutes after thousands of files were deleted)")

    results: list[Result] = []
    t_all = time.perf_counter()
    # interleave receivers inside every run so slow drifts of the machine hit all of them alike
    plan = [(run, nd, s, c, rx) for run in range(1, args.runs + 1) for nd in nodelays
            for s in sizes for c in concs for rx in receivers]
    try:
        for k, (run, nd, s, c, rx) in enumerate(plan, 1):
            r = measure(rx, manifests[s], c, nd, run, args, workdir)
            results.append(r)
            extra = f", indexed {r.sent / r.indexed_s:,.0f}/s" if r.indexed_s else ""
            ack = f"{r.sent / r.ack_s:,.0f}/s" if r.ack_s else "n/a"
            log(f"[{k}/{len(plan)}] run {run} {rx:9s} {s} C={c} {'nodelay' if nd else 'NAGLE'}: "
                f"ack {ack}{extra} (sent {r.sent}, storescu failed {r.sender_fail}"
                f"{'' if r.sender_ok is None else f', ok {r.sender_ok}'}, "
                f"receiver {r.receiver_count}){' MISMATCH' if r.mismatch else ''}")
    except KeyboardInterrupt:
        loud("interrupted: reporting the measurements made so far")
    finally:
        disk["file_creation_us_after"] = file_creation_us(workdir)
        log(f"[disk] creating an empty file at the end: {disk['file_creation_us_after']} us")
        for receiver in LEFT_FOR_THE_END:
            receiver.cleanup()
        for folder in PROBES_LEFT_FOR_THE_END:
            shutil.rmtree(folder, ignore_errors=True)
    log(f"[done] {time.perf_counter() - t_all:.0f} s")
    if not results:
        return 130

    table = report(results, sizes, receivers, nodelays)
    kb = ", ".join(f"{s} {manifests[s]['count']} × {manifests[s]['bytes'] / manifests[s]['count'] / 1000:.1f} KB"
                   for s in sizes)
    print(f"\nIngest, medians of {args.runs} run(s); {kb}; sender storescu"
          f" {'with and without' if args.nagle else 'with'} TCP_NODELAY=1; cells: instances/s · MB/s\n")
    print(table)
    print(f"\nCreating an empty file in {workdir} took {disk['file_creation_us_before']} us before the run and "
          f"{disk['file_creation_us_after']} us after it (median of 300).")
    bad = [r for r in results if r.mismatch]
    if bad:
        print(f"\n{len(bad)} measurement(s) had a mismatch or error and are left out of the medians "
              "(see the messages above and the JSON).")

    if args.out:
        summ = summarize(results)
        doc = {
            "params": {"small": args.small, "large": args.large, "runs": args.runs, "receivers": receivers,
                       "conc": concs, "nagle": args.nagle},
            "data": {s: {k2: v for k2, v in m.items() if k2 != "chunks"} for s, m in manifests.items()},
            "versions": dict(versions, **({"pacs": PACS_VERSION.get("version")}
                                          if set(PACS_RECEIVERS) & set(receivers) else {})),
            "disk": disk,
            "raw": [asdict(r) for r in results],
            "median": [dict(receiver=k2[0], size=k2[1], conc=k2[2], nodelay=k2[3], **v) for k2, v in summ.items()],
            "table_markdown": table,
        }
        Path(args.out).write_text(json.dumps(doc, indent=1))
        log(f"[out] {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
