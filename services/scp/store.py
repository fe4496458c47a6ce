"""C-STORE: make the instance durable in the object store, then answer; indexing happens elsewhere.

Order of work for a new instance: identify (UIDs only) → pending marker journaled → durable object → Success →
marker named → event (the core is shared.ingest, which STOW-RS uses too). Errors become DIMSE statuses only here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from services.scp import statuses
from services.scp.publisher import EventPublisher
from shared.events import Reception, utc_now
from shared.ingest import Ingest, IngestOutcome, StoragePolicy
from shared.dicom.spooled import SpooledDataset
from shared.ingest_identify import InstanceIdentity, UnreadableDataset, identify, identify_head
from shared.pending import PendingLedger
from shared.storage import ObjectStore, StorageError, StorageFull
from shared.storage.claims import InstanceBeingDeleted
from shared.storage_usage import StorageLimitReached, StorageUsage
from shared.uids import InvalidUID

# (action, outcome, remote AE, remote IP, details): an audit row, written off the C-STORE path (scp.access.AuditBuffer)
AuditRecord = Callable[[str, str, str, str, dict[str, Any]], None]
FULL_AUDIT_SECONDS = 10.0  # one storage_full row per caller per this many seconds; the others are counted in it

log = logging.getLogger(__name__)


@dataclass
class StoreCounters:
    stored: int = 0
    identical: int = 0
    conflicts: int = 0
    failed: int = 0
    bytes_stored: int = 0


def reception_of(assoc: Any) -> Reception:
    requestor = assoc.requestor
    return Reception(
        remote_aet=str(requestor.ae_title).strip(),
        called_aet=str(assoc.acceptor.ae_title).strip(),
        remote_ip=str(requestor.address),
        received_at=utc_now(),
    )


@dataclass(frozen=True)
class StoreCommand:
    """What the C-STORE request's command set says the data set is."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str  # of the presentation context it arrived on


class FullAudit:
    """``storage_full`` audit rows: the first refusal of a caller (per limit) at once, then at most one row per
    FULL_AUDIT_SECONDS carrying the number of refusals left out since the previous row."""

    def __init__(self, record: AuditRecord | None) -> None:
        self._record = record
        self._last: dict[tuple[str, str, str], tuple[float, int]] = {}

    def refused(self, remote_aet: str, remote_ip: str, exc: StorageFull) -> None:
        if self._record is None:
            return
        limit = exc.limit if isinstance(exc, StorageLimitReached) else "object_store"
        caller = (remote_aet, remote_ip, limit)
        now = time.monotonic()
        last, suppressed = self._last.get(caller, (-FULL_AUDIT_SECONDS, 0))
        if now - last < FULL_AUDIT_SECONDS:
            self._last[caller] = (last, suppressed + 1)
            return
        if len(self._last) > 10_000:
            self._last.clear()
        self._last[caller] = (now, 0)
        self._record("storage_full", "refused", remote_aet, remote_ip,
                     {"service": "c_store", "status": "0xA700", "limit": limit, "earlier_refusals": suppressed})


class StoreService:
    def __init__(self, store: ObjectStore, ledger: PendingLedger, publisher: EventPublisher,
                 policy: Callable[[], StoragePolicy] = StoragePolicy, usage: StorageUsage | None = None,
                 audit: AuditRecord | None = None) -> None:
        self._ingest = Ingest(store, ledger, publisher.submit, policy, usage)
        self._full_audit = FullAudit(audit)
        self.counters = StoreCounters()

    def handle(self, event: Any) -> int | Dataset:
        """The EVT_C_STORE handler, for requests that pynetdicom assembled (services.scp.direct_store takes the
        plain ones off its path)."""
        request = event.request
        command = StoreCommand(str(request.AffectedSOPClassUID).rstrip("\x00 "),
                               str(request.AffectedSOPInstanceUID).rstrip("\x00 "),
                               str(event.context.transfer_syntax))
        received = request.DataSet
        try:
            # A large data set stays in its spool file (services.scp.spooling); a small one is read into bytes.
            spilled = isinstance(received, SpooledDataset) and received.spilled
            return self.store(event.assoc, command, received if spilled else received.getvalue())
        finally:
            received.close()  # a spool file is removed with it

    def store(self, assoc: Any, command: StoreCommand, dataset: bytes | SpooledDataset,
              after_answer: list[Callable[[], None]] | None = None) -> int | Dataset:
        """Store one received data set; the answer is the C-STORE response status (a Dataset when it carries an
        Error Comment). With ``after_answer``, what need not delay the answer (naming the pending marker, handing
        the event to the queue: shared.ingest) is appended to it for the caller to run once it answered."""
        transfer_syntax = command.transfer_syntax
        try:
            identity = (identify(dataset, transfer_syntax) if isinstance(dataset, bytes)
                        else identify_head(dataset.head, dataset.size, transfer_syntax))
        except UnreadableDataset as exc:
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=%s", statuses.CANNOT_UNDERSTAND, exc)
            return statuses.failure(statuses.CANNOT_UNDERSTAND, str(exc))
        except InvalidUID as exc:
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=%s", statuses.INVALID_IDENTITY, exc)
            return statuses.failure(statuses.INVALID_IDENTITY, str(exc))
        if (identity.sop_class_uid != command.sop_class_uid
                or identity.sop_instance_uid != command.sop_instance_uid):
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=command_dataset_mismatch",
                     statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)
            return statuses.failure(statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                           "SOP Class/Instance UID of dataset and command differ")
        reception = reception_of(assoc)
        try:
            return self._store_instance(identity, transfer_syntax, dataset, reception, after_answer)
        except StorageFull as exc:
            self.counters.failed += 1
            log.error("store.failed status=0x%04X reason=%s", statuses.OUT_OF_RESOURCES_FULL, exc)
            self._full_audit.refused(reception.remote_aet, reception.remote_ip, exc)
            return statuses.failure(statuses.OUT_OF_RESOURCES_FULL, "object store full")
        except InstanceBeingDeleted:
            self.counters.failed += 1
            log.info("store.refused status=0x%04X reason=instance_being_deleted", statuses.OUT_OF_RESOURCES_UNAVAILABLE)
            return statuses.failure(statuses.OUT_OF_RESOURCES_UNAVAILABLE,
                                    "this instance is being deleted; send it again later")
        except StorageError as exc:
            self.counters.failed += 1
            log.error("store.failed status=0x%04X reason=%s", statuses.OUT_OF_RESOURCES_UNAVAILABLE, exc)
            return statuses.failure(statuses.OUT_OF_RESOURCES_UNAVAILABLE, "object store unavailable")

    def _store_instance(
        self, identity: InstanceIdentity, transfer_syntax: str, dataset: bytes | SpooledDataset, reception: Reception,
        after_answer: list[Callable[[], None]] | None,
    ) -> int | Dataset:
        if after_answer is None:
            ingested = self._ingest.store_instance(identity, transfer_syntax, dataset, reception)
        else:
            ingested, finish = self._ingest.store_instance_first(identity, transfer_syntax, dataset, reception)
            after_answer.append(finish)
        if ingested.outcome is IngestOutcome.STORED:
            self.counters.stored += 1
            self.counters.bytes_stored += ingested.size
        elif ingested.outcome is IngestOutcome.IDENTICAL:
            self.counters.identical += 1
        else:
            self.counters.conflicts += 1
        return statuses.SUCCESS
