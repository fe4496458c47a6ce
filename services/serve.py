"""`pacs serve`: the whole node as one process group (scp, indexer, mover, api), supervised.

The children run exactly the code of `pacs scp|indexer|mover|api` (one code path); only the URLs differ. A child
that dies is started again; SIGTERM stops them all cleanly, a second SIGTERM/SIGINT at once. The supervisor opens
the DICOM (and TLS) listening socket itself and runs ``scp_processes`` SCP children on it (one per CPU by default):
they share the work of receiving, which one process does under one GIL (services/scp/listening.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from pydantic import SecretStr

from services.forked_children import ForkedProcess, fork_service, preload
from shared.db.migrate import upgrade_to_head
from shared.lifecycle import StopRequest
from shared.pidfile import is_running, pid_file, read_pid_file, remove_pid_file, write_pid_file
from shared.queue import broker_transport_options
from shared.settings import ENV_PREFIX, Settings
from shared.storage import open_object_store

log = logging.getLogger(__name__)

SERVICES = ("scp", "indexer", "mover", "api")
STOP_SECONDS = 15.0  # DESIGN: SIGTERM stops the node cleanly within 15 s
QUICK_DEATH_SECONDS = 3.0
QUICK_DEATHS_BEFORE_GIVING_UP = 3
PR_SET_PDEATHSIG = 1
INDEXER_NICENESS = 10
LISTEN_BACKLOG = 128


def child_arguments(settings: Settings) -> list[str]:
    """The resolved settings as flags, so that a child sees exactly what the parent resolved."""
    arguments: list[str] = []
    for name, value in settings.model_dump(exclude={"config"}).items():
        if value is None or isinstance(value, SecretStr):
            continue  # secrets reach the children through their environment (export_secrets), never argv
        if name == "data_dir":
            value = settings.data_dir.resolve()
        text = str(value).lower() if isinstance(value, bool) else str(value)
        arguments += [f"--{name.replace('_', '-')}", text]
    return arguments


def export_secrets(settings: Settings) -> None:
    """Secret options go to the children in the environment they inherit (not on a command line ps shows)."""
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            os.environ[ENV_PREFIX + name.upper()] = value.get_secret_value()


def _die_with_parent() -> None:
    """In the child, before it runs its service: get SIGTERM if the supervisor dies (Linux), so that no orphan keeps
    the ports."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _background_child() -> None:
    """The indexer yields the CPU to the acknowledging path: it catches up between bursts."""
    _die_with_parent()
    os.nice(INDEXER_NICENESS)


@dataclass
class Child:
    service: str
    arguments: list[str]
    inherited_fds: tuple[int, ...] = ()  # the listening sockets an SCP process takes over
    process: ForkedProcess | None = None
    started_at: float = 0.0
    quick_deaths: int = field(default=0)

    def start(self) -> None:
        """Fork the child (services.forked_children) in a session of its own: a Ctrl-C or a signal to the whole
        group reaches only the supervisor, which stops the children in order (a second signal would make them stop
        at once). They still die with it."""
        prepare = _background_child if self.service == "indexer" else _die_with_parent
        self.process = fork_service([self.service, *self.arguments], self.inherited_fds, prepare)
        self.started_at = time.monotonic()


def _listening_sockets(settings: Settings) -> list[socket.socket]:
    """The DICOM port (and the TLS port), opened once for every SCP process (services/scp/listening.py); OSError
    if one is taken."""
    ports = [settings.dicom_port] + ([settings.tls_port] if settings.tls_port else [])
    family = socket.AF_INET6 if ":" in settings.dicom_host else socket.AF_INET
    listeners: list[socket.socket] = []
    try:
        for port in ports:
            listener = socket.socket(family, socket.SOCK_STREAM)
            listeners.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pynetdicom: TIME_WAIT is no block
            listener.bind((settings.dicom_host, port))
            listener.listen(LISTEN_BACKLOG)
    except OSError:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def _children(settings: Settings, listeners: list[socket.socket]) -> list[Child]:
    arguments = child_arguments(settings)
    scp_arguments = arguments + ["--dicom-listen-fd", str(listeners[0].fileno())]
    if len(listeners) > 1:
        scp_arguments += ["--tls-listen-fd", str(listeners[1].fileno())]
    fds = tuple(listener.fileno() for listener in listeners)
    scps = [Child("scp", scp_arguments, fds) for _ in range(settings.resolved_scp_processes)]
    return scps + [Child(service, arguments) for service in SERVICES if service != "scp"]


def _print_banner(settings: Settings) -> None:
    api_host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host
    tls = f", DICOM TLS on port {settings.tls_port}" if settings.tls_port else ""
    print(
        f"PACS node {settings.ae_title!r}: DICOM on port {settings.dicom_port}{tls} "
        f"(AE title {settings.ae_title})\n"
        f"  data directory: {settings.data_dir.resolve()}\n"
        f"  dashboard: http://{api_host}:{settings.api_port}/\n"
        f"  API: http://{api_host}:{settings.api_port}/api/status  (OpenAPI: http://{api_host}:{settings.api_port}/docs)",
        flush=True,
    )


def _stop_children(children: list[Child], grace_seconds: float) -> None:
    for child in children:
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("serve.child_killed service=%s", child.service)
            child.process.kill()
            child.process.wait()


def api_startup_refusal(settings: Settings) -> str | None:
    from services.api.auth import startup_refusal
    from shared.db.engine import create_index_engine, create_session_factory

    engine = create_index_engine(settings.resolved_database_url)
    try:
        return startup_refusal(settings, create_session_factory(engine))
    finally:
        engine.dispose()


def run_serve(settings: Settings) -> int:
    stop = StopRequest().install()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    running = read_pid_file(settings.data_dir)
    if running is not None and is_running(running):
        print(f"pacs: a node (pid {running.pid}) already runs on {settings.data_dir.resolve()}", file=sys.stderr)
        return 1
    if running is not None or pid_file(settings.data_dir).exists():
        log.warning("serve.stale_pid_file_replaced")
    write_pid_file(settings.data_dir)
    try:
        return _supervise(settings, stop)
    finally:
        remove_pid_file(settings.data_dir)


def tls_refusal(settings: Settings) -> str | None:
    """Checked before any child starts: a bad TLS certificate must not send the scp child into a restart loop."""
    if settings.tls_port is None:
        return None  # no TLS listener, nothing to check (services.scp.tls loads the whole SCP: 0.6 s of the start)
    from services.scp.tls import TlsConfigurationError, server_context

    try:
        server_context(settings)
    except TlsConfigurationError as exc:
        return f"invalid configuration: DICOM TLS: {exc}"
    return None


def _supervise(settings: Settings, stop: StopRequest) -> int:
    refused = tls_refusal(settings)
    if refused is not None:
        print(f"pacs: {refused}", file=sys.stderr)
        return 2
    upgrade_to_head(settings.resolved_database_url)
    refusal = api_startup_refusal(settings)
    if refusal is not None:
        print(f"pacs: {refusal}", file=sys.stderr)
        return 1
    export_secrets(settings)
    open_object_store(settings).ping()  # creates the local object folder on a first run
    broker_transport_options(settings)  # creates the embedded queue folders when that broker is used
    try:
        listeners = _listening_sockets(settings)
    except OSError as exc:
        print(f"pacs: cannot listen on {settings.dicom_host} port {settings.dicom_port}"
              f"{f' or {settings.tls_port}' if settings.tls_port else ''}: {exc.strerror}", file=sys.stderr)
        return 1
    preload()
    children = _children(settings, listeners)
    for child in children:
        child.start()
    _print_banner(settings)
    exit_code = 0
    while not stop.wait(0.2):
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            quick = time.monotonic() - child.started_at < QUICK_DEATH_SECONDS
            child.quick_deaths = child.quick_deaths + 1 if quick else 0
            log.error("serve.child_exited service=%s code=%s", child.service, code)
            if child.quick_deaths >= QUICK_DEATHS_BEFORE_GIVING_UP:
                log.error("serve.giving_up service=%s (it exits right after starting)", child.service)
                exit_code = 1
                stop.set()
                break
            child.start()
    # The children get the stop window the design allows (1 s is left for the supervisor's own exit), at least
    # their grace and 3 s: after its grace the scp drops the connections still open (1 s) and flushes its events
    # (up to 2 s), which a loaded machine stretches (a test run saw an scp killed 5 s after a SIGTERM, grace 2 s).
    _stop_children(children, max(settings.shutdown_grace_seconds + 3, STOP_SECONDS - 1))
    for listener in listeners:
        listener.close()
    return exit_code
