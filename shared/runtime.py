"""The composition root: one ``build_runtime(settings)`` per process, nothing built at import time."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from shared.db.engine import create_index_engine, create_session_factory
from shared.pending import PendingLedger
from shared.queue import create_celery
from shared.settings import Settings
from shared.storage import ObjectStore, StorageError, open_object_store

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: ObjectStore
    ledger: PendingLedger
    celery: Celery

    def close(self) -> None:
        self.store.close()
        self.engine.dispose()
        self.celery.close()


def build_runtime(settings: Settings) -> Runtime:
    engine = create_index_engine(settings.resolved_database_url)
    store = open_object_store(settings)
    try:
        store.recover()  # what a process that ended uncleanly acknowledged, before this one serves anything
    except StorageError as exc:
        log.warning("runtime.recover_failed error=%s (retried by the store's journal)", exc.__class__.__name__)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=create_session_factory(engine),
        store=store,
        ledger=PendingLedger(store),
        celery=create_celery(settings),
    )


class ProcessRuntime:
    """One runtime per process: a forked worker child builds its own (no shared connections)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._runtime: Runtime | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def __call__(self) -> Runtime:
        with self._lock:
            if self._runtime is None or self._pid != os.getpid():
                self._runtime = build_runtime(self._settings)
                self._pid = os.getpid()
            return self._runtime
