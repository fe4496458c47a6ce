"""A service's stop request: a signal stops the process cleanly whichever thread the kernel hands it to."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.node import REPO

# The signal goes to another thread than the main one (as the kernel does while the main thread has it blocked,
# e.g. inside pthread_create): that thread only marks it pending for the main thread, which is asleep in wait().
SIGNAL_FROM_ANOTHER_THREAD = textwrap.dedent("""
    import signal, threading, time
    from shared.lifecycle import StopRequest

    stop = StopRequest().install()

    def signal_this_thread() -> None:
        time.sleep(0.3)  # the main thread is in stop.wait() by now
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(30)  # alive, as a service's threads are

    threading.Thread(target=signal_this_thread, daemon=True).start()
    print("stopped" if stop.wait() else "timed out", flush=True)
""")


def test_a_stop_signal_delivered_to_another_thread_stops_the_waiting_main_thread() -> None:
    result = subprocess.run([sys.executable, "-c", SIGNAL_FROM_ANOTHER_THREAD], cwd=REPO, capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "stopped"


def test_wait_with_a_timeout_returns_false_when_no_stop_was_asked() -> None:
    from shared.lifecycle import StopRequest

    assert StopRequest().wait(0.3) is False


def test_wait_returns_true_once_a_stop_was_asked() -> None:
    from shared.lifecycle import StopRequest

    request = StopRequest()
    request.set()
    assert request.wait() is True
    assert request.wait(0.01) is True
