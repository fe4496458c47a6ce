"""The event threads of `pacs indexer`: study-stable detection and auto-forwards in one thread, webhook deliveries
in another (a slow receiver never delays a forward). Both poll the database every 0.5 s, keep going through
database outages (logged once per outage) and read the live configuration for their times and attempts.
Delivered or failed webhook deliveries and finished forwards are deleted 30 days after they were made.
Nothing here runs on the ingest path: C-STORE and indexing only write outbox rows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.indexer.forwarder import Forwarder
from services.indexer.stable import StabilityDetector
from services.indexer.webhook_sender import WebhookSender
from shared.db.routing_models import Forward, WebhookDelivery
from shared.events import utc_now
from shared.live_config import LiveConfig
from shared.node_config import default_config
from shared.runtime import Runtime

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
PRUNE_EVERY_SECONDS = 3600.0
LOG_RETENTION = timedelta(days=30)  # delivered/failed deliveries and finished forwards are kept this long


def prune_logs(sessions: sessionmaker[Session], now: datetime) -> None:
    """Delete delivery-log rows and forwards that finished more than LOG_RETENTION ago (pending ones stay)."""
    cutoff = now - LOG_RETENTION
    with sessions.begin() as session:
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.state != "pending",
                                                      WebhookDelivery.created_at < cutoff))
        session.execute(delete(Forward).where(Forward.state.in_(("done", "failed")), Forward.updated_at < cutoff))


class _Loop:
    def __init__(self, name: str, body: Callable[[], None], on_error: Callable[[], None] = lambda: None) -> None:
        self._name = name
        self._body = body
        self._on_error = on_error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            try:
                self._body()
                if self._failing:
                    log.info("events.database_back loop=%s", self._name)
                self._failing = False
            except SQLAlchemyError as exc:
                self._on_error()
                if not self._failing:
                    log.warning("events.database_unavailable loop=%s error=%s", self._name, exc.__class__.__name__)
                self._failing = True
            except Exception:  # the loop must outlive any surprise
                self._on_error()
                log.exception("events.loop_failed loop=%s", self._name)


class EventThreads:
    def __init__(self, runtime: Runtime, publish_job: Callable[[str], None]) -> None:
        # No cache file: the listener owns it; without the database there is nothing to do here anyway.
        self._live = LiveConfig(default_config(runtime.settings.check_called_aet), runtime.sessions, None)
        self._detector = StabilityDetector(runtime.sessions)
        self._forwarder = Forwarder(runtime.sessions, runtime.settings.ae_title, publish_job)
        self._webhooks = WebhookSender(runtime.sessions)
        self._sessions = runtime.sessions
        self._pruned_at = 0.0
        self._loops = [_Loop("events", self._routing_pass, self._detector.lost_track),
                       _Loop("webhooks", self._webhook_pass)]

    def _routing_pass(self) -> None:
        config = self._live.current().config
        self._detector.run_pass(config.study_stable_seconds)
        self._forwarder.run_pass(config)

    def _webhook_pass(self) -> None:
        self._webhooks.run_pass(self._live.current().config)
        if time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS:
            prune_logs(self._sessions, utc_now())
            self._pruned_at = time.monotonic()

    def start(self) -> None:
        self._live.start()
        for loop in self._loops:
            loop.start()

    def stop(self) -> None:
        for loop in self._loops:
            loop.stop()
        self._webhooks.stop()
        self._live.stop()
