"""The children of `pacs serve`, forked from the supervisor after it imported their code once.

Each child used to be a new interpreter (``python -m services.cli <service>``) that imported its libraries again:
about 2 s of CPU per child on the benchmark machine (pydicom, SQLAlchemy, Celery, pynetdicom, FastAPI), five
children per node, so a node took 7-8 s from start to ready there (the design allows 5) and 12-14 s of CPU. The
supervisor now imports the services' code once (``preload``) and forks each child from that state, while it runs
no thread but its main one (numpy's import starts OpenBLAS's worker pool, native threads that OpenBLAS's own fork
handler stops and restarts): the child runs exactly what ``python -m services.cli <service> <arguments>`` runs
(``services.cli.main``), in a session of its own, with the signal handlers a new interpreter has, the listening
sockets it is given and no other descriptor of the supervisor's, and the same command line in ``ps``
(setproctitle). A child that dies is forked again from the same state.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from setproctitle import setproctitle

SERVICE_MODULES = ("services.scp.main", "services.indexer.main", "services.mover.main", "services.api.main")
_WAIT_STEP_SECONDS = 0.02
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_EXIT_OF_A_CHILD_THAT_RAISED = 70  # EX_SOFTWARE: what a child ends with when its code raised before _leave


def preload() -> None:
    """Import every service's code in the supervisor (no import starts a Python thread or opens a descriptor), and
    freeze what exists (shared.collector): a child's cycle collections then never walk, and so never copy, the
    memory it shares with the supervisor."""
    for module in SERVICE_MODULES:
        importlib.import_module(module)
    gc.collect()
    gc.freeze()


class ForkedProcess:
    """The part of ``subprocess.Popen``'s interface the supervisor uses, for a child forked without exec."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 0  # reaped elsewhere: it is gone either way
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(_WAIT_STEP_SECONDS)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def fork_service(arguments: Sequence[str], keep_fds: Sequence[int], prepare: Callable[[], None]) -> ForkedProcess:
    """Fork a child that runs ``services.cli.main(arguments)`` with standard input, output and error and
    ``keep_fds`` (as ``subprocess.Popen(close_fds=True, pass_fds=keep_fds)`` would leave it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    # A stop signal that reaches the child before it has a new interpreter's handlers waits for them (blocked):
    # the supervisor's handler would take it for the supervisor and lose it.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return ForkedProcess(pid)
    code = _EXIT_OF_A_CHILD_THAT_RAISED
    try:
        os.setsid()  # own session: a Ctrl-C to the supervisor's group does not reach it (see services.serve)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a new interpreter; the service installs its own
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _close_fds_except(keep_fds)
        prepare()
        command = [sys.executable, "-m", "services.cli", *arguments]
        setproctitle(" ".join(command))
        sys.argv = [os.path.join(os.path.dirname(__file__), "cli.py"), *arguments]  # as `-m` sets it
        from services.cli import main

        code = main(list(arguments))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _close_fds_except(keep_fds: Sequence[int]) -> None:
    """Close every descriptor above standard error but ``keep_fds``: the supervisor's other listening socket, and
    whatever its own caller let it inherit. (In the supervisor no Python object but the listening sockets owns a
    descriptor when it forks, and those stay referenced by its frames: none closes a reused number later.)"""
    low = 3
    for fd in sorted(fd for fd in keep_fds if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))
