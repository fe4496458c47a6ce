"""The Celery application every service builds: its result backend is resolved once, at start, for all threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from celery.app import backends

from shared.queue import create_celery
from shared.settings import Settings


def test_a_new_thread_sending_a_task_does_not_resolve_the_result_backend_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_celery(Settings(data_dir=tmp_path / "data", broker_url=None))
    resolved: list[Any] = []
    resolve = backends.by_url
    monkeypatch.setattr(backends, "by_url", lambda *args, **kwargs: resolved.append(args) or resolve(*args, **kwargs))
    in_thread: list[Any] = []
    thread = threading.Thread(target=lambda: in_thread.append(app.backend))  # what send_task reads
    thread.start()
    thread.join()
    assert in_thread == [app.backend] and resolved == []  # resolving reads every package's entry points (~8 ms)
