"""C-STORE: make the instance durable in the object store, then answer; indexing happens elsewhere.

Order of work for a new instance: identify (UIDs only) → pending marker → durable object → Success → event.
A marker whose object never got written is cleaned by the sweeper; an object always has its marker until
it is indexed. Errors become DIMSE statuses only here.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from services.scp import statuses
from services.scp.identify import InstanceIdentity, UnreadableDataset, identify
from services.scp.publisher import EventPublisher
from shared.dicom.part10 import encode_part10
from shared.events import DuplicateReceived, InstanceStored, Reception, utc_now
from shared.pending import PendingLedger
from shared.queue import INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK
from shared.storage import ObjectStore, PutOutcome, StorageError, StorageFull
from shared.storage.layout import instance_key
from shared.uids import InvalidUID

log = logging.getLogger(__name__)


@dataclass
class StoreCounters:
    stored: int = 0
    identical: int = 0
    conflicts: int = 0
    failed: int = 0
    bytes_stored: int = 0


def reception_of(event: Any) -> Reception:
    requestor = event.assoc.requestor
    return Reception(
        remote_aet=str(requestor.ae_title).strip(),
        called_aet=str(event.assoc.acceptor.ae_title).strip(),
        remote_ip=str(requestor.address),
        received_at=utc_now(),
    )


class StoreService:
    def __init__(self, store: ObjectStore, ledger: PendingLedger, publisher: EventPublisher) -> None:
        self._store = store
        self._ledger = ledger
        self._publisher = publisher
        self.counters = StoreCounters()

    def handle(self, event: Any) -> int | Dataset:
        """The EVT_C_STORE handler."""
        request = event.request
        transfer_syntax = str(event.context.transfer_syntax)
        dataset: bytes = request.DataSet.getvalue()
        try:
            identity = identify(dataset, transfer_syntax)
        except UnreadableDataset as exc:
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=%s", statuses.CANNOT_UNDERSTAND, exc)
            return statuses.failure(statuses.CANNOT_UNDERSTAND, str(exc))
        except InvalidUID as exc:
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=%s", statuses.INVALID_IDENTITY, exc)
            return statuses.failure(statuses.INVALID_IDENTITY, str(exc))
        if (identity.sop_class_uid != str(request.AffectedSOPClassUID).rstrip("\x00 ")
                or identity.sop_instance_uid != str(request.AffectedSOPInstanceUID).rstrip("\x00 ")):
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=command_dataset_mismatch",
                     statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)
            return statuses.failure(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                           "SOP Class/Instance UID of dataset and command differ")
        try:
            return self._store_instance(identity, transfer_syntax, dataset, reception_of(event))
        except StorageFull as exc:
            self.counters.failed += 1
            log.error("store.failed status=0x%04X reason=%s", statuses.OUT_OF_RESOURCES_FULL, exc)
            return statuses.failure(statuses.OUT_OF_RESOURCES_FULL, "object store full")
        except StorageError as exc:
            self.counters.failed += 1
            log.error("store.failed status=0x%04X reason=%s", statuses.OUT_OF_RESOURCES_UNAVAILABLE, exc)
            return statuses.failure(statuses.OUT_OF_RESOURCES_UNAVAILABLE, "object store unavailable")

    def _store_instance(
        self, identity: InstanceIdentity, transfer_syntax: str, dataset: bytes, reception: Reception
    ) -> int | Dataset:
        key = instance_key(identity.study_instance_uid, identity.series_instance_uid, identity.sop_instance_uid)
        part10 = encode_part10(dataset, identity.sop_class_uid, identity.sop_instance_uid, transfer_syntax)
        sha256 = hashlib.sha256(part10).hexdigest()
        already_stored = self._store.stat(key) is not None
        stored_event = InstanceStored(
            sop_instance_uid=identity.sop_instance_uid,
            sop_class_uid=identity.sop_class_uid,
            study_instance_uid=identity.study_instance_uid,
            series_instance_uid=identity.series_instance_uid,
            transfer_syntax=transfer_syntax,
            object_key=key,
            size=len(part10),
            sha256=sha256,
            reception=reception,
        )
        if not already_stored:
            self._ledger.record(stored_event)
        try:
            result = self._store.put_new(key, part10, sha256)
        except StorageError:
            if not already_stored:
                self._forget_marker(identity.sop_instance_uid)
            raise
        if result.outcome is PutOutcome.CREATED:
            self.counters.stored += 1
            self.counters.bytes_stored += len(part10)
            self._publisher.submit(INDEX_INSTANCES_TASK, stored_event.model_dump(mode="json"))
            return statuses.SUCCESS
        if result.outcome is PutOutcome.IDENTICAL:
            self.counters.identical += 1
            return statuses.SUCCESS
        # Same SOP Instance UID, other content: the first is kept (objects are immutable), the conflict audited.
        self.counters.conflicts += 1
        log.warning("store.duplicate_conflict kept=first")
        duplicate = DuplicateReceived(
            sop_instance_uid=identity.sop_instance_uid,
            object_key=key,
            stored_sha256=result.stored_sha256,
            received_sha256=sha256,
            reception=reception,
        )
        self._publisher.submit(RECORD_DUPLICATE_TASK, duplicate.model_dump(mode="json"))
        return statuses.SUCCESS

    def _forget_marker(self, sop_instance_uid: str) -> None:
        try:
            self._ledger.resolve(sop_instance_uid)
        except StorageError:
            pass  # the sweeper removes markers whose object never appeared
