"""The pending ledger: one small marker per acknowledged, not yet indexed instance, kept in the object store.

The SCP writes the marker before the object is made durable, so that it is durable with it (in a local folder its
journal record is; the file is named once the C-STORE is answered), and names it before the instance's event is
handed to the queue; the indexer removes it once the instance is indexed. The sweeper re-publishes markers that
stayed too long (a lost event, a broker restarted empty, a killed worker), so its work follows what is pending,
never the size of the archive.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from pydantic import ValidationError

from shared.events import InstanceStored
from shared.storage import ObjectNotFound, ObjectStore
from shared.storage.base import StagedHint

log = logging.getLogger(__name__)

PENDING_PREFIX = ".pending/"


def marker_key(sop_instance_uid: str) -> str:
    return f"{PENDING_PREFIX}{sop_instance_uid}.json"


class PendingLedger:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def stage(self, event: InstanceStored) -> StagedHint:
        """The marker of ``event`` (ObjectStore.stage_hint): durable with the object's put, named once ``publish``
        is called, before the event is handed to the queue."""
        return self._store.stage_hint(marker_key(event.sop_instance_uid), event.model_dump_json().encode())

    def resolve(self, sop_instance_uid: str) -> None:
        self._store.delete_hint(marker_key(sop_instance_uid))

    def count(self) -> int:
        return self._store.count(PENDING_PREFIX)

    def stale(self, older_than_seconds: float) -> Iterator[InstanceStored]:
        """Events of markers older than the given age; unreadable markers are logged and removed."""
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_seconds)
        for info in self._store.list(PENDING_PREFIX):
            if info.modified > cutoff:
                continue
            try:
                yield InstanceStored.model_validate_json(self._store.get(info.key))
            except ObjectNotFound:
                continue
            except (ValidationError, ValueError):
                log.error("pending.marker_unreadable key=%s", info.key)
                self._store.delete(info.key)
