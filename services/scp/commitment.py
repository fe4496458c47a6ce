"""Storage Commitment Push Model SCP (PS3.4 Annex J; SOP Class 1.2.840.10008.1.20.1).

A requester sends N-ACTION (action type 1, Request Storage Commitment) with a Transaction UID and the Referenced
SOP Sequence. The node answers the N-ACTION at once (0x0000 when the request is well formed), then, in a worker
thread, checks each referenced instance and sends the N-EVENT-REPORT (event type 1 when every instance is
committed, 2 when some are not, with the Failed SOP Sequence):

- committed: the instance is in the index (so it was read from the object store) and its object is still in
  the object store, with the SOP Class UID the requester names;
- FailureReason 0x0119 (class-instance conflict): held, but under another SOP Class UID;
- FailureReason 0x0112 (no such object instance): not held. An instance acknowledged but not yet indexed (its
  pending marker exists) is waited for, at most ``commitment_wait_seconds`` (live configuration, 30 s). A request
  makes this SCP process hand over at once the events it gathers for indexing (``index_batch_wait_seconds``):
  instances stored on the same association would otherwise wait for more to come.

The report goes on the association of the request while it is still open (no release asked for yet), otherwise
on a new association to the requester's registered modality (host and port from /api/modalities, called with
the node's AE title or the modality's ``local_ae_title``, proposing the SOP class with the SCP role selected).
Only registered modalities whose ``allow`` list has ``store`` may request (others: 0x0124); an action type other
than 1 gets 0x0123, a malformed request 0x0115 (or 0x0120 when an attribute is missing). Reports not yet sent when
the listener stops are lost: the requester asks again after its own timeout, as Annex J expects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.scp.access import AuditBuffer, printable_aet
from shared.db.models import Instance
from shared.dicom.requestor import keep_reactor_off_responses
from shared.live_config import LiveConfig
from shared.node_config import ModalityEntry
from shared.pending import marker_key
from shared.storage import ObjectStore, StorageError
from shared.uids import is_valid_uid

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # the well-known SOP Instance (PS3.4 J.3.5)
REQUEST_STORAGE_COMMITMENT = 1
EVENT_ALL_SUCCESS = 1
EVENT_SOME_FAILURES = 2
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
INVALID_ARGUMENT_VALUE = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123
NOT_AUTHORIZED = 0x0124
RESOURCE_LIMITATION = 0x0213
MAX_REFERENCES = 50_000
POLL_SECONDS = 0.5
IN_CHUNK = 500
WORKERS = 4
REPORT_TIMEOUT_SECONDS = 30
SAME_ASSOCIATION_REPLY_SECONDS = 10  # a requester that is releasing never answers there: use a new association
_PENDING_ATTRIBUTE = "_pacs_commitments"
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


@dataclass
class CommitmentRequest:
    transaction_uid: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    calling_aet: str
    remote_ip: str


@dataclass
class CommitmentResult:
    committed: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # (class, instance, FailureReason)

    @property
    def event_type(self) -> int:
        return EVENT_SOME_FAILURES if self.failed else EVENT_ALL_SUCCESS


class InvalidRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def parse_action_information(information: Dataset | None) -> tuple[str, list[tuple[str, str]]]:
    """Transaction UID and references of an N-ACTION's Action Information; InvalidRequest when malformed."""
    if information is None or "TransactionUID" not in information:
        raise InvalidRequest(MISSING_ATTRIBUTE, "no Transaction UID")
    transaction_uid = str(information.TransactionUID or "")
    if not is_valid_uid(transaction_uid):
        raise InvalidRequest(INVALID_ARGUMENT_VALUE, "Transaction UID is not a UID")
    sequence = information.get("ReferencedSOPSequence")
    if not sequence:
        raise InvalidRequest(MISSING_ATTRIBUTE, "no Referenced SOP Sequence")
    if len(sequence) > MAX_REFERENCES:
        raise InvalidRequest(RESOURCE_LIMITATION, "too many references")
    references = []
    for item in sequence:
        class_uid = str(item.get("ReferencedSOPClassUID", "") or "")
        instance_uid = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if not (is_valid_uid(class_uid) and is_valid_uid(instance_uid)):
            raise InvalidRequest(INVALID_ARGUMENT_VALUE, "a reference without valid SOP Class/Instance UIDs")
        references.append((class_uid, instance_uid))
    return transaction_uid, references


def event_information(transaction_uid: str, result: CommitmentResult) -> Dataset:
    """The Event Information of the N-EVENT-REPORT (PS3.4 J.3.3.1.1)."""
    dataset = Dataset()
    dataset.TransactionUID = transaction_uid
    if result.committed:
        items = []
        for class_uid, instance_uid in result.committed:
            item = Dataset()
            item.ReferencedSOPClassUID = class_uid
            item.ReferencedSOPInstanceUID = instance_uid
            items.append(item)
        dataset.ReferencedSOPSequence = items
    if result.failed:
        failed = []
        for class_uid, instance_uid, reason in result.failed:
            item = Dataset()
            item.ReferencedSOPClassUID = class_uid
            item.ReferencedSOPInstanceUID = instance_uid
            item.FailureReason = reason
            failed.append(item)
        dataset.FailedSOPSequence = failed
    return dataset


class CommitmentChecker:
    """Which referenced instances are durable and indexed (waiting a bounded time for pending ones)."""

    def __init__(self, sessions: sessionmaker[Session], store: ObjectStore) -> None:
        self._sessions = sessions
        self._store = store

    def _indexed(self, uids: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        with self._sessions() as session:
            for start in range(0, len(uids), IN_CHUNK):
                chunk = uids[start:start + IN_CHUNK]
                for row in session.execute(select(Instance.sop_instance_uid, Instance.sop_class_uid,
                                                  Instance.object_key)
                                           .where(Instance.sop_instance_uid.in_(chunk))):
                    found[row.sop_instance_uid] = (row.sop_class_uid, row.object_key)
        return found

    def _pending(self, uid: str) -> bool:
        try:
            return self._store.stat(marker_key(uid)) is not None
        except StorageError:
            return True  # cannot tell: keep waiting (bounded)

    def check(self, references: list[tuple[str, str]], wait_seconds: float) -> CommitmentResult:
        deadline = time.monotonic() + wait_seconds
        wanted = list(dict.fromkeys(uid for _, uid in references))
        held: dict[str, tuple[str, str]] = {}
        while True:
            missing = [uid for uid in wanted if uid not in held]
            try:
                held.update(self._indexed(missing))
            except SQLAlchemyError as exc:
                log.warning("commitment.index_unavailable error=%s", exc.__class__.__name__)
            missing = [uid for uid in wanted if uid not in held]
            if not missing or time.monotonic() >= deadline:
                break
            waiting = [uid for uid in missing if self._pending(uid)]
            if not waiting:
                try:  # a marker is removed just after its instance is indexed: look once more
                    held.update(self._indexed(missing))
                except SQLAlchemyError:
                    pass
                break
            time.sleep(POLL_SECONDS)
        result = CommitmentResult()
        for class_uid, instance_uid in references:
            stored = held.get(instance_uid)
            if stored is None or not self._durable(stored[1]):
                result.failed.append((class_uid, instance_uid, NO_SUCH_OBJECT_INSTANCE))
            elif stored[0] != class_uid:
                result.failed.append((class_uid, instance_uid, CLASS_INSTANCE_CONFLICT))
            else:
                result.committed.append((class_uid, instance_uid))
        return result

    def _durable(self, object_key: str) -> bool:
        try:
            return self._store.stat(object_key) is not None
        except StorageError:
            return False


class CommitmentService:
    """The N-ACTION handler and the senders of the N-EVENT-REPORT, for one SCP process."""

    def __init__(self, sessions: sessionmaker[Session], store: ObjectStore, live: LiveConfig, node_ae_title: str,
                 audit: AuditBuffer, hurry_indexing: Callable[[], None]) -> None:
        self._checker = CommitmentChecker(sessions, store)
        self._hurry_indexing = hurry_indexing  # the SCP's publisher: send the events it gathers now
        self._live = live
        self._node_ae_title = node_ae_title
        self._audit = audit
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="commitment")
        self._lock = threading.Lock()

    # ---- in the association's reactor thread --------------------------------------------------------------

    def _requester(self, calling: str) -> ModalityEntry | None:
        """The registered modality of this calling AE title that may store, or None."""
        for snapshot in (self._live.current(), self._live.confirmed()):
            entries = [m for m in snapshot.modalities if m.ae_title == calling]
            if entries and snapshot.permits(calling, "store"):
                return next((m for m in entries if "store" in m.allow), entries[0])
        return None

    def handle(self, event: Any) -> tuple[int, Dataset | None]:
        """EVT_N_ACTION: validate, answer; the report follows once the response is sent (``after_request``)."""
        assoc = event.assoc
        request = event.request
        calling = printable_aet(assoc.requestor.ae_title)
        remote_ip = str(assoc.requestor.address)
        if str(request.RequestedSOPClassUID) != StorageCommitmentPushModel:
            return NO_SUCH_ACTION, None
        if self._requester(calling) is None:
            log.warning("commitment.refused reason=not_registered_for_store remote_ip=%s calling_aet=%r",
                        remote_ip, calling)
            self._audit.record("request_refused", "refused", calling, remote_ip,
                               {"service": "storage_commitment", "status": NOT_AUTHORIZED,
                                "reason": "service_not_allowed"})
            return NOT_AUTHORIZED, None
        if request.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
            return NO_SUCH_ACTION, None
        if str(request.RequestedSOPInstanceUID) != STORAGE_COMMITMENT_INSTANCE:
            return INVALID_OBJECT_INSTANCE, None
        try:
            transaction_uid, references = parse_action_information(event.action_information)
        except InvalidRequest as exc:
            log.warning("commitment.invalid_request status=0x%04X reason=%s", exc.status, exc)
            return exc.status, None
        except Exception:  # an Action Information that does not decode
            log.warning("commitment.invalid_request status=0x%04X reason=undecodable", INVALID_ARGUMENT_VALUE)
            return INVALID_ARGUMENT_VALUE, None
        with self._lock:
            pending = getattr(assoc, _PENDING_ATTRIBUTE, None)
            if pending is None:
                pending = []
                setattr(assoc, _PENDING_ATTRIBUTE, pending)
            pending.append(CommitmentRequest(transaction_uid, references, calling, remote_ip))
        log.info("commitment.requested references=%d", len(references))
        return 0x0000, None

    def after_request(self, assoc: Any) -> None:
        """Called once pynetdicom has sent the N-ACTION response: start the requests it accepted."""
        with self._lock:
            pending = getattr(assoc, _PENDING_ATTRIBUTE, None) or []
            setattr(assoc, _PENDING_ATTRIBUTE, [])
        if pending:
            # Instances stored on this (still open) association may wait in the publisher for more to gather
            # (index_batch_wait_seconds): the report waits for them to be indexed, so they go now.
            self._hurry_indexing()
        for request in pending:
            self._pool.submit(self._run, assoc, request)

    # ---- in a worker thread ---------------------------------------------------------------------------------

    def _run(self, assoc: Any, request: CommitmentRequest) -> None:
        try:
            wait = self._live.current().config.commitment_wait_seconds
            result = self._checker.check(request.references, wait)
            information = event_information(request.transaction_uid, result)
            delivery = "same_association" if self._send_same(assoc, information, result.event_type) else ""
            if not delivery:
                delivery = "new_association" if self._send_new(request.calling_aet, information,
                                                               result.event_type) else "undelivered"
        except Exception:
            log.exception("commitment.failed")
            return
        outcome = "success" if not result.failed else ("partial" if result.committed else "failure")
        reasons: dict[str, int] = {}
        for _, _, reason in result.failed:
            reasons[f"0x{reason:04X}"] = reasons.get(f"0x{reason:04X}", 0) + 1
        log.info("commitment.reported event_type=%d committed=%d failed=%d delivery=%s", result.event_type,
                 len(result.committed), len(result.failed), delivery)
        self._audit.record("storage_commitment", outcome if delivery != "undelivered" else "failure",
                           request.calling_aet, request.remote_ip,
                           {"transaction_uid": request.transaction_uid, "referenced": len(request.references),
                            "committed": len(result.committed), "failed": len(result.failed),
                            "failure_reasons": reasons, "event_type": result.event_type, "delivery": delivery})

    def _send_same(self, assoc: Any, information: Dataset, event_type: int) -> bool:
        """On the request's association, while it is open and no release was asked for.

        The requester may start its release just after the check (seen in CI: the report then waited the
        listener's whole 60 s DIMSE timeout for a reply that never came before going to a new association), so
        the reply is awaited SAME_ASSOCIATION_REPLY_SECONDS at most."""
        previous_timeout = assoc.dimse_timeout
        try:
            if not assoc.is_established or assoc.acse.is_release_requested() or assoc.acse.is_aborted():
                return False
            assoc.dimse_timeout = min(previous_timeout or SAME_ASSOCIATION_REPLY_SECONDS,
                                      SAME_ASSOCIATION_REPLY_SECONDS)
            status, _ = assoc.send_n_event_report(information, event_type, StorageCommitmentPushModel,
                                                  STORAGE_COMMITMENT_INSTANCE)
        except Exception as exc:  # the association went away meanwhile
            log.info("commitment.same_association_unusable error=%s", exc.__class__.__name__)
            return False
        finally:
            assoc.dimse_timeout = previous_timeout
        return bool(status) and "Status" in status

    def _send_new(self, calling: str, information: Dataset, event_type: int) -> bool:
        entry = self._requester(calling)
        if entry is None:
            log.warning("commitment.undeliverable reason=requester_not_registered")
            return False
        ae = AE(ae_title=entry.local_ae_title or self._node_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = REPORT_TIMEOUT_SECONDS
        ae.add_requested_context(StorageCommitmentPushModel, TRANSFER_SYNTAXES)
        role = build_role(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        association = ae.associate(entry.host, entry.port, ae_title=entry.ae_title, ext_neg=[role])
        if not association.is_established:
            log.warning("commitment.undeliverable reason=association_failed")
            return False
        keep_reactor_off_responses(association)
        try:
            status, _ = association.send_n_event_report(information, event_type, StorageCommitmentPushModel,
                                                        STORAGE_COMMITMENT_INSTANCE)
        finally:
            if association.is_established:
                association.release()
        return bool(status) and "Status" in status

    def stop(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
