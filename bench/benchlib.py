"""Small helpers shared by bench/query.py, bench/retrieve.py and bench/memory.py (processes, ports, timing).

Everything listens on 127.0.0.1. Every process is started in a session of its own and stopped by its pid.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
PACS = REPO / ".venv" / "bin" / "pacs"
SOURCE_CACHE = Path("/tmp/pacs-bench-src")
# How `pacs` is started: the venv's console script on the working tree, or (--commit) the venv's Python on an
# exported tree of one commit, so that a benchmark measures a known version while others edit the checkout.
_pacs_prefix: list[str] = [str(PACS)]
_pacs_env: dict[str, str] = {}
_pacs_cwd: Path = REPO  # `python -m` puts the working directory first on sys.path: it must be the source tree


def add_source_argument(parser: Any) -> None:
    parser.add_argument("--commit", default=None,
                        help="run pacs from this commit (exported with git archive to /tmp/pacs-bench-src) instead "
                             "of the working tree, e.g. --commit HEAD; or from a source folder holding services/")


def configure_source(commit: str | None) -> str:
    """Select what `pacs` runs; returns a label for the report (commit id or 'working tree')."""
    global _pacs_prefix, _pacs_env, _pacs_cwd
    if not commit:
        _pacs_prefix, _pacs_env, _pacs_cwd = [str(PACS)], {}, REPO
        return "working tree"
    if (Path(commit) / "services" / "cli.py").exists():  # a source folder (e.g. an experiment on an export)
        target = Path(commit).resolve()
        _pacs_prefix = [str(REPO / ".venv" / "bin" / "python"), "-m", "services.cli"]
        _pacs_env = {"PYTHONPATH": str(target)}
        _pacs_cwd = target
        sys.path.insert(0, str(target))
        return str(target)
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{commit}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    target = SOURCE_CACHE / sha
    if not (target / "services" / "cli.py").exists():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    _pacs_prefix = [str(REPO / ".venv" / "bin" / "python"), "-m", "services.cli"]
    _pacs_env = {"PYTHONPATH": str(target)}
    _pacs_cwd = target
    sys.path.insert(0, str(target))  # in-process imports (shared.query...) come from the same tree
    return sha[:7]


def pacs_command(*arguments: str) -> list[str]:
    return [*_pacs_prefix, *arguments]


def pacs_env(**extra: str) -> dict[str, str]:
    return dict(os.environ, **_pacs_env, **extra)


def pacs_cwd() -> Path:
    """The working directory for pacs processes (the selected source tree)."""
    return _pacs_cwd


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tcp_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def http(method: str, url: str, body: Any = None, timeout: float = 10.0,
         headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()
    except (OSError, ValueError):
        return 0, b""


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Process:
    """One started program: its own session, output to a log file, stopped by pid (SIGTERM, then SIGKILL)."""

    def __init__(self, name: str, command: Sequence[str], logfile: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.logfile = logfile
        self._log = open(logfile, "wb")
        self.proc = subprocess.Popen(list(command), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=env if env is not None else dict(os.environ), cwd=cwd,
                                     start_new_session=True, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, check: Callable[[], bool], timeout: float = 60.0) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} during start:\n"
                                   f"{tail(self.logfile)}")
            if check():
                return time.perf_counter() - start
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f} s:\n{tail(self.logfile)}")

    def stop(self, grace: float = 20.0) -> int | None:
        rc = self.proc.poll()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.proc.wait(timeout=grace)
            except ProcessLookupError:
                rc = self.proc.poll()
            except subprocess.TimeoutExpired:
                log(f"[{self.name}] did not stop within {grace:.0f} s of SIGTERM; killing it")
                self.proc.kill()
                rc = self.proc.wait(timeout=10)
        # started with start_new_session=True: its process group id is its pid; end leftover children
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            time.sleep(0.2)
        self._log.close()
        return rc


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(item) for item in text.split()]


def cmdline(pid: int) -> list[str]:
    """A process's command line as words (the children of `pacs serve` set theirs as one string: setproctitle)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").replace("\0", " ").split()
    except OSError:
        return []


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its waited-for children, from /proc (OSError once it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc (VmRSS, VmHWM)."""
    values = {"VmRSS": 0, "VmHWM": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return values["VmRSS"], values["VmHWM"]


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 50 values is the 48th smallest)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine() -> str:
    cpus = os.cpu_count()
    try:
        mem = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal")).split()[1]) / 1024 / 1024
    except (OSError, StopIteration, ValueError):
        mem = 0.0
    return f"{cpus} cores, {mem:.0f} GiB RAM"
