"""Each service reports that it is alive (and a few figures) into the index, every few seconds."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import ServiceHeartbeat
from shared.events import utc_now

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        service: str,
        sessions: sessionmaker[Session],
        interval_seconds: float,
        details: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.service = service
        self.instance_name = f"{service}@{socket.gethostname()}:{os.getpid()}"
        self._sessions = sessions
        self._interval = interval_seconds
        self._details = details
        self._started_at = utc_now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{service}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def beat(self) -> None:
        with self._sessions.begin() as session:
            row = session.scalar(
                select(ServiceHeartbeat).where(ServiceHeartbeat.instance_name == self.instance_name)
            )
            if row is None:
                row = ServiceHeartbeat(instance_name=self.instance_name, service=self.service,
                                       started_at=self._started_at, last_seen=utc_now(), details={})
                session.add(row)
            row.last_seen = utc_now()
            row.details = self._details()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat()
            except SQLAlchemyError as exc:
                log.debug("heartbeat.failed error=%s", exc.__class__.__name__)
            self._stop.wait(self._interval)
