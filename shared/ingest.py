"""The ingest core shared by C-STORE (services/scp/store.py) and STOW-RS (services/api/dicomweb/stow.py).

Order of work for a new instance: optional lossless compression (the live ``ingest_compression``,
shared.dicom.compression; not for a data set the SCP spooled to disk, shared.dicom.spooled, which is streamed)
→ claim (the key of its SOP Instance UID, shared.storage.claims) → storage limits (shared.storage_usage)
→ pending marker journaled → durable object → (the caller answers Success) → object named (a local store writes a
journaled object's file only then: shared.storage.filesystem.stage_new) → marker named → event.
A marker whose object never got written is cleaned by the sweeper; an object always has its marker until it is
indexed. The key follows the live ``storage_layout`` and ``storage_naming`` (shared.storage.layout); a SOP Instance
UID seen before keeps the key of its claim, so duplicates are detected whatever the layout. The same SOP Instance
UID with other content keeps the first object and hands a duplicate event to the indexer, which audits the
conflict. Storage failures are raised (shared.storage.StorageError and StorageFull; InstanceBeingDeleted when
the SOP Instance UID's claim is marked by a deletion in progress, shared.deletion): each caller turns them into
its protocol's answer.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.dicom.compression import SYNTAX_OF, compress
from shared.dicom.part10 import PREAMBLE, encode_file_meta, encode_part10
from shared.dicom.spooled import SpooledDataset
from shared.digest import size_and_sha256
from shared.events import DuplicateReceived, InstanceStored, Reception
from shared.ingest_identify import InstanceIdentity
from shared.pending import PendingLedger
from shared.queue import INDEX_INSTANCES_TASK, RECORD_DUPLICATE_TASK
from shared.storage import ObjectStore, PutOutcome, PutResult, StorageError
from shared.storage.base import ObjectData, PartedData, StagedHint, StagedPut, StreamedData, chunks_of
from shared.storage.claims import ClaimRegistry
from shared.storage.layout import KeyFacts, layout_key, legacy_instance_key
from shared.storage_usage import StorageUsage

log = logging.getLogger(__name__)

Submit = Callable[[str, dict[str, object]], None]  # (task name, event payload): hands an event to the queue


class IngestOutcome(enum.Enum):
    STORED = "stored"  # a new object
    IDENTICAL = "identical"  # the same bytes were already stored: nothing changed
    CONFLICT = "conflict"  # the SOP Instance UID was stored with other content: the first is kept, audited


@dataclass(frozen=True)
class Ingested:
    outcome: IngestOutcome
    object_key: str
    size: int  # of the Part-10 object as built from what was received


@dataclass(frozen=True)
class StoragePolicy:
    """The live storage keys that ingest applies (shared.node_config.NodeConfig)."""

    layout: str = "series"
    naming: str = "sop_uid"
    max_bytes: int | None = None
    max_instances: int | None = None
    compression: str = "none"

    @classmethod
    def of(cls, config: Any) -> "StoragePolicy":
        return cls(config.storage_layout, config.storage_naming, config.storage_max_bytes,
                   config.storage_max_instances, config.ingest_compression)


class Ingest:
    def __init__(self, store: ObjectStore, ledger: PendingLedger, submit: Submit,
                 policy: Callable[[], StoragePolicy] = StoragePolicy, usage: StorageUsage | None = None) -> None:
        self._store = store
        self._ledger = ledger
        self._submit = submit
        self._claims = ClaimRegistry(store)
        self._policy = policy
        self._usage = usage

    def store_instance(
        self, identity: InstanceIdentity, transfer_syntax: str, dataset: bytes | SpooledDataset, reception: Reception
    ) -> Ingested:
        """Make one instance durable (the dataset bytes as received or losslessly compressed, our File Meta; a data
        set spooled to disk is stored as received, streamed from its file and never held in memory whole), name its
        pending marker and hand its event to the queue; raise StorageError (StorageFull, or
        shared.storage_usage.StorageLimitReached when a configured limit is reached)."""
        ingested, finish = self.store_instance_first(identity, transfer_syntax, dataset, reception)
        finish()
        return ingested

    def store_instance_first(
        self, identity: InstanceIdentity, transfer_syntax: str, dataset: bytes | SpooledDataset, reception: Reception
    ) -> tuple[Ingested, Callable[[], None]]:
        """``store_instance`` up to the durable object; the returned ``finish`` (call it once, whatever happens after,
        best after answering: the C-STORE response need not wait for it) names the object and the pending marker,
        which are durable already, and then hands the event to the queue. Measured on the benchmark machine: naming
        the marker was ~0.1 ms of a ~1.2 ms round trip of one association's small instances; writing a 526 KB
        object's file ~0.8 ms of a ~5 ms one."""
        policy = self._policy()
        if isinstance(dataset, SpooledDataset) and not dataset.spilled:
            dataset = dataset.getvalue()  # small enough to have stayed in memory
        received = (dataset, transfer_syntax) if isinstance(dataset, bytes) else None
        if received is not None:
            compressed = compress(received[0], transfer_syntax, policy.compression)
            if compressed is not None:
                dataset, transfer_syntax = compressed.dataset, compressed.transfer_syntax
        facts = KeyFacts(identity.study_instance_uid, identity.series_instance_uid, identity.sop_instance_uid,
                         identity.patient_id, identity.instance_number, reception.received_at)
        legacy = legacy_instance_key(identity.study_instance_uid, identity.series_instance_uid,
                                     identity.sop_instance_uid)
        claim = self._claims.resolve(identity.sop_instance_uid, layout_key(policy.layout, policy.naming, facts),
                                     legacy)
        key = claim.key
        part10 = _part10_of(dataset, identity, transfer_syntax)
        size, sha256 = size_and_sha256(chunks_of(part10))
        already_stored = not claim.created and self._store.stat(key) is not None
        if not already_stored and self._usage is not None:
            try:
                self._usage.admit(size, policy.max_bytes, policy.max_instances)
            except StorageError:
                if claim.created:
                    self._release_claim(identity.sop_instance_uid)
                raise
        stored_event = InstanceStored(
            sop_instance_uid=identity.sop_instance_uid,
            sop_class_uid=identity.sop_class_uid,
            study_instance_uid=identity.study_instance_uid,
            series_instance_uid=identity.series_instance_uid,
            transfer_syntax=transfer_syntax,
            object_key=key,
            size=size,
            sha256=sha256,
            reception=reception,
        )
        marker = None if already_stored else self._ledger.stage(stored_event)
        try:
            staged = self._store.stage_new(key, part10, sha256)
        except BaseException:
            if marker is not None:
                marker.drop()  # no object: no marker
            raise
        decided: dict[PutResult, IngestOutcome] = {}  # a conflict's outcome costs a re-encoding: decided once

        def outcome_of(result: PutResult) -> IngestOutcome:
            if result not in decided:
                decided[result] = self._outcome(identity, transfer_syntax, received, result)
            return decided[result]

        finish = self._finisher(stored_event, staged, marker, outcome_of)
        try:
            outcome = outcome_of(staged.result)
            if outcome is IngestOutcome.STORED and self._usage is not None:
                self._usage.added(size)
        except BaseException:
            finish()  # the object is durable: named, and its marker leads the sweeper to it
            raise
        return Ingested(outcome, key, size), finish

    def _outcome(self, identity: InstanceIdentity, transfer_syntax: str, received: tuple[bytes, str] | None,
                 result: PutResult) -> IngestOutcome:
        if result.outcome is PutOutcome.CREATED:
            return IngestOutcome.STORED
        if result.outcome is PutOutcome.IDENTICAL or (received is not None and self._stored_otherwise_encoded(
                identity, received, transfer_syntax, result.stored_sha256)):  # re-sent after a compression change
            return IngestOutcome.IDENTICAL
        return IngestOutcome.CONFLICT  # other content under the SOP Instance UID: the first is kept, audited

    def _finisher(self, stored_event: InstanceStored, staged: StagedPut, marker: StagedHint | None,
                  outcome_of: Callable[[PutResult], IngestOutcome]) -> Callable[[], None]:
        """The object named (ObjectStore.stage_new), then the marker (a marker left by a send whose object was there
        already stays, as it did: the sweeper hands it to the indexer, which removes it), then the event submitted:
        the indexer removes the marker only after it exists. An object that cannot be named leaves its marker to the
        store too, which names both later (a local store's journal replay): no event then."""
        def finish() -> None:
            try:
                result = staged.publish()
            except BaseException:
                if marker is not None:
                    marker.drop()
                raise
            try:
                if marker is not None:
                    marker.publish()
            finally:  # a marker that could not be named leaves the event as the way to the index
                self._hand_over(outcome_of(result), stored_event, result)

        return finish

    def _hand_over(self, outcome: IngestOutcome, stored_event: InstanceStored, result: PutResult) -> None:
        if outcome is IngestOutcome.STORED:
            stamped = stored_event.model_copy(update={"object_stamp": result.stamp})  # the marker has none
            self._submit(INDEX_INSTANCES_TASK, stamped.model_dump(mode="json"))
        elif outcome is IngestOutcome.CONFLICT:
            log.warning("store.duplicate_conflict kept=first")
            duplicate = DuplicateReceived(
                sop_instance_uid=stored_event.sop_instance_uid,
                object_key=stored_event.object_key,
                stored_sha256=result.stored_sha256,
                received_sha256=stored_event.sha256,
                reception=stored_event.reception,
            )
            self._submit(RECORD_DUPLICATE_TASK, duplicate.model_dump(mode="json"))

    @staticmethod
    def _stored_otherwise_encoded(identity: InstanceIdentity, received: tuple[bytes, str], stored_syntax: str,
                                  stored_sha256: str) -> bool:
        """Whether the object kept for this SOP Instance UID is the received instance under another encoding this
        node makes (as received, or compressed by another ``ingest_compression`` value than the current one): an
        identical re-send after the setting changed, not a conflict. Tried only on a conflict (rare)."""
        dataset, syntax = received
        encodings: list[tuple[bytes, str]] = [received] if stored_syntax != syntax else []
        for method, method_syntax in SYNTAX_OF.items():
            if method_syntax != stored_syntax:
                other = compress(dataset, syntax, method)
                if other is not None:
                    encodings.append((other.dataset, other.transfer_syntax))
        return any(hashlib.sha256(encode_part10(candidate, identity.sop_class_uid, identity.sop_instance_uid,
                                                candidate_syntax)).hexdigest() == stored_sha256
                   for candidate, candidate_syntax in encodings)

    def _release_claim(self, sop_instance_uid: str) -> None:
        try:
            self._claims.release(sop_instance_uid)
        except StorageError:
            pass  # a claim without an object: the next send of this instance writes to its key


def _part10_of(dataset: bytes | SpooledDataset, identity: InstanceIdentity, transfer_syntax: str) -> ObjectData:
    """The object: zeroed preamble, our File Meta, the data set; streamed from its spool file when it has one."""
    header = PREAMBLE + encode_file_meta(identity.sop_class_uid, identity.sop_instance_uid, transfer_syntax)
    if isinstance(dataset, bytes):
        return PartedData((header, dataset))  # not joined: a copy of the data set saved
    return StreamedData(len(header) + dataset.size, lambda: itertools.chain((header,), dataset.chunks()))
