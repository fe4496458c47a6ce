"""Who may associate and what they may ask for: the live configuration, enforced per association and per request.

At association time (pynetdicom's EVT_REQUESTED notification, before any negotiation) the configuration is read
from the database (LiveConfig.fresh, ~0.2 ms on SQLite; the values in force when the database does not answer), so
that a change made over REST applies to the next association in every SCP process of the node. The policy then
either sends the A-ASSOCIATE-RJ itself (``acse.send_reject``; pynetdicom then skips negotiation because the
association is marked rejected, see ``Association.run_reactor``) or narrows the presentation contexts this
association may accept. The answers (result/source/diagnostic, PS3.8 9.3.4):

- remote address outside a non-empty ``ip_allowlist``: 1/1/3. DICOM has no "address not allowed" diagnostic; the
  caller is refused as a calling AE not recognised, permanently, by the service user.
- called AE title not the node's while ``check_called_aet``: 1/1/7 (called AE title not recognised).
- calling AE title blocked, not in a non-empty ``allowed_calling_aets``, or not a registered modality while
  ``unknown_callers_allowed`` is []: 1/1/3 (calling AE title not recognised).
- more than ``max_associations`` admitted associations at once in the node (services.scp.node_associations):
  2/3/2 (rejected-transient, service provider presentation related, local limit exceeded).

Per request (C-ECHO, C-STORE; the other services check the same rule when they arrive): the service must be in
``enabled_services``, and in the caller's modality ``allow`` list (registered caller) or in
``unknown_callers_allowed`` (unregistered caller). Otherwise the request is refused with status 0x0124
(Refused: Not Authorized, PS3.7 C.4.2) — for C-ECHO too, although PS3.7 lists no failure status for it: a
Verification SCU reports it as a failed echo. These checks read LiveConfig.current(): no database I/O.

Every refusal is logged with a stable key (reason, answer, remote address; the calling AE title only once
validated) and queued for the audit table through a small bounded buffer flushed by a thread, so that an
association never waits on the database; with the database down (or the buffer full) records are dropped and
counted.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, register_uid
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from sqlalchemy import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.scp.node_associations import NodeAssociations
from services.scp.statuses import failure
from shared.db.models import AuditEvent
from shared.events import utc_now
from shared.live_config import ConfigSnapshot, LiveConfig
from shared.node_config import MAX_ASSOCIATIONS_LIMIT
from shared.uids import is_valid_uid

log = logging.getLogger(__name__)

NOT_AUTHORIZED = 0x0124  # Refused: Not Authorized (PS3.7 C.4.2)

# A-ASSOCIATE-RJ (result, source, diagnostic)
REJECT_CALLING_AET = (0x01, 0x01, 0x03)  # rejected-permanent, service-user, calling AE title not recognised
REJECT_CALLED_AET = (0x01, 0x01, 0x07)  # rejected-permanent, service-user, called AE title not recognised
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # rejected-transient, service-provider (presentation), local limit exceeded
REJECT_INTERNAL_ERROR = (0x02, 0x01, 0x01)  # rejected-transient, service-user, no reason given

# pynetdicom's own count of acceptor threads (every connection, admitted or not) stays as a hard backstop,
# above anything max_associations may be set to; the live limit is applied by AccessPolicy.
ASSOCIATION_CEILING = MAX_ASSOCIATIONS_LIMIT + 64
MAX_REGISTERED_UNKNOWN_SOP_CLASSES = 1000
AUDIT_BUFFER_CAPACITY = 1000
AUDIT_FLUSH_SECONDS = 0.5
AUDIT_EARLY_FLUSH_ROWS = AUDIT_BUFFER_CAPACITY // 4  # a burst that would fill the buffer is written before the tick

_ADMITTED = "_pacs_admitted"


def printable_aet(value: object) -> str:
    """An AE title from the wire as it may appear in a log line or the audit table (never raw bytes)."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    text = text.strip(" \x00")
    if len(text) <= 16 and all(" " <= ch <= "~" and ch != "\\" for ch in text):
        return text
    return "<invalid>"


class AuditBuffer:
    """Audit rows written by a thread: ``record`` never blocks; full buffer or database down = dropped, counted.

    The thread writes what gathered every ``flush_seconds`` (sooner once AUDIT_EARLY_FLUSH_ROWS wait), in one
    multi-row INSERT. Writing each association's rows as they came, through the ORM's unit of work, was a fifth of
    the SCP's CPU while it answered associations back to back (py-spy --gil: 21.5 %), all of it in the GIL that
    the associations need.
    """

    def __init__(self, sessions: sessionmaker[Session], capacity: int = AUDIT_BUFFER_CAPACITY,
                 flush_seconds: float = AUDIT_FLUSH_SECONDS) -> None:
        self._sessions = sessions
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._pending: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0

    def record(self, action: str, outcome: str, remote_aet: str, remote_ip: str, details: dict[str, Any]) -> None:
        row = {"occurred_at": utc_now(), "action": action, "outcome": outcome, "remote_aet": remote_aet[:16],
               "remote_ip": remote_ip[:64], "details": details}
        with self._lock:
            if len(self._pending) >= self._capacity:
                self.dropped += 1
                return
            self._pending.append(row)
            early = len(self._pending) >= AUDIT_EARLY_FLUSH_ROWS
        if early:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="access-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return
        try:
            with self._sessions.begin() as session:
                session.execute(insert(AuditEvent), batch)
        except SQLAlchemyError as exc:
            self.dropped += len(batch)
            log.warning("access.audit_dropped count=%d total_dropped=%d error=%s", len(batch), self.dropped,
                        exc.__class__.__name__)
            return
        self.written += len(batch)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the audit thread must outlive any surprise
                log.exception("access.audit_flush_failed")


STORAGE_SOP_CLASSES = frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


def narrowed_contexts(base: list[PresentationContext], accepted: frozenset[str] | None) -> list[PresentationContext]:
    """The server's contexts with storage SOP classes limited to the accepted transfer syntaxes.

    Verification and any other service (query/retrieve) keep theirs. A storage context may end with no transfer
    syntax at all: every proposal of it then gets result 4 (transfer syntaxes not supported).
    """
    contexts = []
    for template in base:
        if str(template.abstract_syntax) not in STORAGE_SOP_CLASSES or accepted is None:
            contexts.append(template)
            continue
        context = PresentationContext()
        context.abstract_syntax = template.abstract_syntax
        context.transfer_syntax = [uid for uid in template.transfer_syntax if uid in accepted]
        context.scu_role, context.scp_role = template.scu_role, template.scp_role
        contexts.append(context)
    return contexts


class AccessPolicy:
    """The EVT_REQUESTED handler and the per-request guards of one SCP process."""

    def __init__(self, live: LiveConfig, audit: AuditBuffer, node: NodeAssociations) -> None:
        self.live = live
        self.audit = audit
        self._node = node  # the counts of the SCP processes that share the data directory
        self.rejected: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._admission = threading.Lock()
        self._contexts_cache: dict[tuple[frozenset[str] | None, tuple[str, ...]], list[PresentationContext]] = {}
        self._registered_unknown: set[str] = set()

    def start(self) -> None:
        self.audit.start()

    def stop(self) -> None:
        self.audit.stop()

    # ---- association time ---------------------------------------------------------------------------------

    def on_requested(self, event: Any) -> None:
        """EVT_REQUESTED: refuse the association, or admit it with the contexts it may accept."""
        assoc = event.assoc
        try:
            self._decide(assoc)
        except Exception:  # fail closed, transiently: a caller retries, nothing is let through unchecked
            log.exception("access.policy_failed")
            if not assoc.is_rejected and not assoc.is_aborted:
                try:
                    self._reject(assoc, REJECT_INTERNAL_ERROR, "policy_error", "", "")
                except Exception:
                    assoc.abort()  # never fall through to negotiation unchecked

    def _decide(self, assoc: Any) -> None:
        snapshot, read_now = self.live.fresh()
        config = snapshot.config
        request = assoc.requestor.primitive
        calling = printable_aet(request.calling_ae_title)
        called = printable_aet(request.called_ae_title)
        remote_ip = str(assoc.requestor.address)
        if not snapshot.address_allowed(remote_ip):
            # No A-ASSOCIATE-RJ diagnostic says "address not allowed": refused as an unrecognised caller.
            self._reject(assoc, REJECT_CALLING_AET, "ip_not_allowed", calling, remote_ip)
            return
        if config.check_called_aet and called != str(assoc.acceptor.ae_title).strip():
            self._reject(assoc, REJECT_CALLED_AET, "called_aet_not_recognized", calling, remote_ip, called)
            return
        reason = snapshot.calling_aet_refused(calling)
        if reason is not None and not read_now:
            snapshot = self.live.confirmed()  # a modality registered an instant ago is not refused
            reason = snapshot.calling_aet_refused(calling)
        if reason is not None:
            self._reject(assoc, REJECT_CALLING_AET, reason, calling, remote_ip)
            return
        if snapshot.calling_aet_from_wrong_host(calling, remote_ip):
            # DICOM has no "wrong address for this AE title" diagnostic: refused as an unrecognised caller.
            self._reject(assoc, REJECT_CALLING_AET, "calling_aet_wrong_host", calling, remote_ip)
            return
        if not self._admit(assoc, config.max_associations):
            self._reject(assoc, REJECT_LOCAL_LIMIT, "association_limit", calling, remote_ip)
            return
        self._narrow_contexts(assoc, snapshot, request)

    def _admit(self, assoc: Any, limit: int) -> bool:
        """Count this association against the node's limit: the check and the mark are one step for all threads
        (and, through the node's table, for all SCP processes)."""
        with self._admission:
            if not self._node.admit(self.admitted_in(assoc.ae), limit):
                return False
            setattr(assoc, _ADMITTED, True)
            return True

    @staticmethod
    def admitted_in(ae: Any, ended: Any = None) -> int:
        """The associations of this process counted against the limit (``ended`` is ending: not counted)."""
        return sum(
            1 for other in ae.active_associations
            if getattr(other, _ADMITTED, False) and other is not ended
            and not (other.is_released or other.is_aborted or other.is_rejected)
        )

    def on_closed(self, event: Any) -> None:
        """EVT_CONN_CLOSE: the node's other SCP processes see the freed place at once."""
        if getattr(event.assoc, _ADMITTED, False):
            try:
                self.report_to_node(event.assoc.ae, ended=event.assoc)
            except OSError:
                log.exception("access.association_table_failed")

    def report_to_node(self, ae: Any, ended: Any = None) -> None:
        """Write this process's count to the node's table, in turn with admissions (never a count from before an
        admission written after it)."""
        with self._admission:
            self._node.report(self.admitted_in(ae, ended))

    def _narrow_contexts(self, assoc: Any, snapshot: ConfigSnapshot, request: Any) -> None:
        """Give this association the contexts the configuration allows (before negotiation reads them)."""
        accepted = snapshot.accepted_transfer_syntaxes
        unknown_allowed = snapshot.config.accept_unknown_sop_classes
        if accepted is None and not unknown_allowed:
            return  # the server's contexts as they are
        base = assoc.acceptor.supported_contexts
        abstract_syntaxes = tuple(str(cx.abstract_syntax) for cx in base)
        key = (accepted, abstract_syntaxes)
        contexts = self._contexts_cache.get(key)
        if contexts is None:
            contexts = narrowed_contexts(base, accepted)
            if len(self._contexts_cache) > 16:
                self._contexts_cache.clear()
            self._contexts_cache[key] = contexts
        if unknown_allowed:
            contexts = contexts + self._unknown_storage_contexts(request, accepted, set(abstract_syntaxes))
        # Never mutated by pynetdicom (negotiation builds new result contexts), so the cached list is shared.
        assoc.acceptor.supported_contexts = contexts

    def _unknown_storage_contexts(self, request: Any, accepted: frozenset[str] | None,
                                  supported: set[str]) -> list[PresentationContext]:
        """Contexts for proposed abstract syntaxes that are no SOP class pynetdicom knows (private, new)."""
        extra: list[PresentationContext] = []
        seen: set[str] = set()
        for proposed in request.presentation_context_definition_list:
            uid = str(proposed.abstract_syntax)
            if uid in supported or uid in seen or not is_valid_uid(uid):
                continue
            if not self._registered_as_storage(uid):
                continue
            seen.add(uid)
            context = PresentationContext()
            context.abstract_syntax = uid
            context.transfer_syntax = [ts for ts in ALL_TRANSFER_SYNTAXES if accepted is None or ts in accepted]
            extra.append(context)
        return extra

    def _registered_as_storage(self, uid: str) -> bool:
        """Route C-STORE of an unknown SOP class to the storage service (pynetdicom dispatches by UID)."""
        with self._admission:
            if uid in self._registered_unknown:
                return True
            if uid_to_service_class(uid) is not ServiceClass:
                return False  # a known non-storage SOP class (worklist, print, ...): not ours to accept
            if len(self._registered_unknown) >= MAX_REGISTERED_UNKNOWN_SOP_CLASSES:
                log.warning("access.unknown_sop_class_limit limit=%d", MAX_REGISTERED_UNKNOWN_SOP_CLASSES)
                return False
            register_uid(uid, "PacsUnknownStorage_" + uid.replace(".", "_"), StorageServiceClass)
            self._registered_unknown.add(uid)
            return True

    def _reject(self, assoc: Any, answer: tuple[int, int, int], reason: str, calling: str, remote_ip: str,
                called: str | None = None) -> None:
        result, source, diagnostic = answer
        self.rejected[reason] += 1
        log.warning("access.association_rejected reason=%s result=%d source=%d diagnostic=%d remote_ip=%s "
                    "calling_aet=%r", reason, result, source, diagnostic, remote_ip, calling)
        details: dict[str, Any] = {"reason": reason, "result": result, "source": source, "diagnostic": diagnostic}
        if called is not None:
            details["called_aet"] = called
        self.audit.record("association_rejected", "rejected", calling, remote_ip, details)
        assoc.acse.send_reject(result, source, diagnostic)
        # As pynetdicom does after its own rejections: wait until the A-ASSOCIATE-RJ is sent and the peer has
        # closed (or the ARTIM timer expired), so that the socket is not shut before the answer left.
        assoc.kill()

    # ---- request time ---------------------------------------------------------------------------------------

    def permits(self, calling: str, service: str) -> bool:
        """From the values in force; a refusal is confirmed against the database first."""
        return self.live.current().permits(calling, service) or self.live.confirmed().permits(calling, service)

    def guard(self, service: str, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """Wrap a DIMSE handler: refuse with 0x0124 unless the caller may use ``service`` now."""

        def guarded(event: Any) -> Any:
            if self.admits(event.assoc, service):
                return handler(event)
            return refusal(service)

        guarded.__name__ = f"guarded_{service}"
        return guarded

    def guard_generator(self, service: str, handler: Callable[[Any], Iterator[Any]]) -> Callable[[Any], Any]:
        """``guard`` for handlers that yield their responses (C-FIND): a refusal is the one response."""

        def guarded(event: Any) -> Iterator[Any]:
            if self.admits(event.assoc, service):
                yield from handler(event)
            else:
                yield refusal(service), None

        guarded.__name__ = f"guarded_{service}"
        return guarded

    def admits(self, assoc: Any, service: str) -> bool:
        """Whether the caller of ``assoc`` may use ``service`` now; a refusal is counted and audited (the caller
        answers it: the guards with ``refusal``, C-MOVE and C-GET with their own final response)."""
        calling = printable_aet(assoc.requestor.ae_title)
        if self.permits(calling, service):
            return True
        self._record_refusal(assoc, service, calling)
        return False

    def _record_refusal(self, assoc: Any, service: str, calling: str) -> None:
        self.refused[service] += 1
        remote_ip = str(assoc.requestor.address)
        log.warning("access.request_refused service=%s status=0x%04X remote_ip=%s calling_aet=%r",
                    service, NOT_AUTHORIZED, remote_ip, calling)
        self.audit.record("request_refused", "refused", calling, remote_ip,
                          {"service": service, "status": NOT_AUTHORIZED, "reason": "service_not_allowed"})

    def counters(self) -> dict[str, Any]:
        return {"rejected_associations": dict(self.rejected), "refused_requests": dict(self.refused),
                "audit_dropped": self.audit.dropped}


def refusal(service: str) -> Dataset:
    """The answer to a request the caller may not make: 0x0124 with an Error Comment."""
    return failure(NOT_AUTHORIZED, f"{service} not allowed for this calling AE title")
