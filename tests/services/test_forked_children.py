"""What the supervisor asks of a forked child (services.forked_children.ForkedProcess), as of subprocess.Popen."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from services.forked_children import ForkedProcess


def forked(exit_code: int, after_seconds: float) -> ForkedProcess:
    pid = os.fork()
    if pid == 0:
        time.sleep(after_seconds)
        os._exit(exit_code)
    return ForkedProcess(pid)


def test_a_running_child_polls_none_and_a_wait_past_its_timeout_raises() -> None:
    child = forked(3, after_seconds=30)
    try:
        assert child.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.1)
    finally:
        child.kill()
    assert child.wait(timeout=10) == -signal.SIGKILL


def test_an_exited_child_reports_its_exit_code_and_takes_signals_without_error() -> None:
    child = forked(3, after_seconds=0)
    assert child.wait(timeout=10) == 3
    assert child.poll() == 3
    child.send_signal(signal.SIGTERM)  # gone: nothing to signal, nothing raised
    child.kill()
    assert child.returncode == 3
