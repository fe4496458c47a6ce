"""Start the product as users do: `pacs serve` or one `pacs <service>` per process, then drive it from outside."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
PACS = [sys.executable, "-m", "services.cli"]


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, and one this test process has not handed out before: the kernel can give
    the same free port to two calls in a row (CI once started a node whose DICOM and API ports were the same)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def port_listens(port: int) -> bool:
    """Whether a socket listens on ``port`` (so that connections to it are accepted), read from the kernel's tables
    without connecting: a connection closed before its A-ASSOCIATE-RQ keeps one of the SCP's association threads
    waiting (up to 30 s), and a stop of the SCP waits a second for such connections."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: TCP_LISTEN
                return True
    return False


def child_commands(pid: int) -> dict[int, list[bytes]]:
    """pid → command line (as words) of each child of process ``pid`` (the children of `pacs serve` set theirs as one
    string: services.forked_children)."""
    found = {}
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            found[int(child)] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue  # gone meanwhile
    return found


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # a probe that fails counts as "not yet"
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")


class Service:
    """One `pacs` process with its own log file."""

    def __init__(self, command: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.command = command
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Service":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([*PACS, self.command, *self.args], cwd=REPO, env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Node:
    """A running node: its ports, its API and its processes."""

    def __init__(self, workdir: Path, env_overrides: dict[str, str] | None = None, ae_title: str = "PACS") -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.dicom_port = free_port()
        self.api_port = free_port()
        self.ae_title = ae_title
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("PACS_")}
        self.env.update({
            "PACS_DATA_DIR": str(self.data_dir),
            "PACS_DICOM_PORT": str(self.dicom_port),
            "PACS_API_PORT": str(self.api_port),
            "PACS_AE_TITLE": ae_title,
            "PACS_SWEEP_INTERVAL_SECONDS": "1",
            "PACS_SWEEP_GRACE_SECONDS": "3",
            "PACS_HEARTBEAT_INTERVAL_SECONDS": "1",
        })
        self.env.update(env_overrides or {})
        self.services: dict[str, Service] = {}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def service(self, command: str, name: str | None = None, extra_env: dict[str, str] | None = None,
                args: list[str] | None = None) -> Service:
        name = name or command
        env = dict(self.env, **(extra_env or {}))
        service = Service(command, args or [], env, self.workdir / f"{name}.log")
        self.services[name] = service
        return service.start()

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PACS, command], cwd=REPO, env=self.env, capture_output=True, text=True,
                              timeout=120)

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(lambda: httpx.get(f"{self.api}/healthz", timeout=2).status_code == 200, timeout, "API /healthz")
        wait_until(lambda: port_listens(self.dicom_port), timeout, "the DICOM port")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.api}{path}", timeout=10)

    def status(self) -> dict[str, Any]:
        response = self.get("/api/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def settled_status(self, timeout: float = 60) -> dict[str, Any]:
        """The status once everything acknowledged so far is indexed (or dead-lettered): a base that tests sharing
        a node count their own instances from."""
        def settled() -> dict[str, Any] | None:
            body = self.status()
            return body if body["queue"]["pending"] == 0 else None

        result: dict[str, Any] = wait_until(settled, timeout, "nothing pending", interval=0.1)
        return result

    def wait_indexed(self, instances: int, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body = self.status()
            ok = body["counts"]["instances"] == instances and body["queue"]["pending"] == 0
            return body if ok else None

        result: dict[str, Any] = wait_until(done, timeout, f"{instances} instances indexed", interval=0.25)
        return result

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()

    @contextmanager
    def running(self) -> Iterator["Node"]:
        """The node once it is ready; stopped afterwards, its logs printed (pytest shows them when a test fails)."""
        try:
            self.wait_ready()
            yield self
        finally:
            self.stop()
            print(self.logs())

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{service.log()}" for name, service in self.services.items())
