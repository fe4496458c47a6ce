"""The audit trail and the metrics of the DICOM listener, observed from pynetdicom's notification events.

Nothing here touches the DIMSE handlers: the trail follows each accepted association through EVT_ACCEPTED,
EVT_DIMSE_RECV (requests and their data set), EVT_DIMSE_SENT (responses) and EVT_RELEASED / EVT_ABORTED /
EVT_CONN_CLOSE (the end), and hands its rows to the listener's AuditBuffer (services.scp.access), which a thread
writes in batches: no association ever waits on the database, and with the database down rows are dropped and
counted.

Rows (``audit_events.action``), never with patient data (no identifiers or names; UIDs of SOP classes only):

- ``association`` when an association ends: called AE title, duration, data set bytes received and sent, the
  number of each operation, outcome ``released`` or ``aborted``;
- ``c_echo``, ``c_find``, ``c_move``, ``c_get``: one per operation, with its final status, duration, the number of
  matches (C-FIND) or the sub-operation counts (C-MOVE, C-GET);
- ``c_store``: one per association that stored anything (not one per instance: a modality sends hundreds per
  second), with the number of instances, their statuses, the data set bytes, and the total and longest duration.
  Which instance came from which AE and address is recorded per instance in the index (``/api/instances``).

The same observations feed ``metrics()``, which the listener publishes in its heartbeat row so that the API's
/metrics can show every replica (services.api.routes.metrics).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import evt
from pynetdicom.pdu_primitives import A_RELEASE

from services.scp.access import AuditBuffer, printable_aet
from services.scp.direct_store import EchoRequestReceived, StoreRequestReceived
from shared.dicom.message_writer import EchoResponseSent, FindResponseSent, StoredObjectSent, StoreResponseSent
from shared.dicom.spooled import SpooledDataset
from shared.events import iso_utc, utc_now

# Upper bounds (seconds) of the C-STORE latency histogram: request fully received to response sent.
STORE_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PENDING = frozenset({0xFF00, 0xFF01})
CANCEL = 0xFE00
WARNINGS = frozenset({0x0001, 0x0107, 0x0116, 0xB000, 0xB006, 0xB007})
# A long association (a modality that keeps it open) gets a c_store row per slice of this many instances or
# seconds, whichever comes first, so that the trail never lags far behind; a short one gets one row at its end.
STORE_SLICE_INSTANCES = 1000
STORE_SLICE_SECONDS = 60.0
_ATTRIBUTE = "_pacs_trail"
_REQUESTS = {"C_ECHO_RQ": "c_echo", "C_STORE_RQ": "c_store", "C_FIND_RQ": "c_find", "C_MOVE_RQ": "c_move",
             "C_GET_RQ": "c_get"}
_RESPONSES = {"C_ECHO_RSP", "C_STORE_RSP", "C_FIND_RSP", "C_MOVE_RSP", "C_GET_RSP"}


def outcome_of(status: int) -> str:
    if status == 0x0000:
        return "success"
    if status == CANCEL:
        return "cancelled"
    if status in WARNINGS:
        return "warning"
    return "failure"


def _data_set_bytes(message: Any) -> int:
    if isinstance(message, (StoredObjectSent, FindResponseSent)):
        return message.data_set_size
    data = getattr(message, "data_set", None)
    if isinstance(data, SpooledDataset):
        return data.size  # without reading a spilled one back
    getbuffer = getattr(data, "getbuffer", None)
    if getbuffer is not None:
        return getbuffer().nbytes
    path = getattr(message, "_data_set_path", None)  # a data set received into, or sent from, a file
    if path is not None:
        path, offset = path if isinstance(path, tuple) else (path, 0)  # sent: (file, offset of the data set)
        try:
            return int(path.stat().st_size) - int(offset)
        except OSError:
            return 0
    return 0


@dataclass
class _Operation:
    kind: str
    started: float
    sop_class: str
    data_bytes: int = 0
    responses: int = 0


@dataclass
class _StoreSlice:
    """The C-STORE operations of an association since its last ``c_store`` row."""

    started: float
    started_at: Any
    statuses: Counter[str] = field(default_factory=Counter)
    data_bytes: int = 0
    seconds: float = 0.0
    longest: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.statuses.values())


@dataclass
class _Association:
    calling: str
    called: str
    remote_ip: str
    started: float
    started_at: Any
    bytes_received: int = 0
    bytes_sent: int = 0
    operations: dict[int, _Operation] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    stores: _StoreSlice = field(default_factory=lambda: _StoreSlice(time.monotonic(), utc_now()))
    releasing: bool = False
    finished: bool = False


class Histogram:
    """A cumulative-free histogram (counts per bucket, +Inf last), its sum and count; merged by the API."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def as_json(self) -> dict[str, Any]:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum, "count": self.count}


class AssociationTrail:
    """Per-association bookkeeping for the audit rows and the listener's metrics (thread-safe)."""

    def __init__(self, audit: AuditBuffer) -> None:
        self.audit = audit
        self._lock = threading.Lock()
        self.current = 0
        self.associations = Counter[str]()  # accepted, released, aborted
        self.operations = Counter[str]()  # "c_store:success", ...
        self.bytes_received = 0
        self.bytes_sent = 0
        self.store_latency = Histogram(STORE_LATENCY_BUCKETS)

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_DIMSE_RECV, self.on_dimse_received),
            (evt.EVT_DIMSE_SENT, self.on_dimse_sent),
            (evt.EVT_ACSE_SENT, self.on_acse_sent),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_closed),
        ]

    # ---- events ------------------------------------------------------------------------------------------

    def _state_of(self, assoc: Any) -> _Association:
        """The association's bookkeeping, created by whichever event comes first.

        pynetdicom sends the A-ASSOCIATE-AC and only then fires EVT_ACCEPTED in the association thread, while its
        DUL thread already decodes the peer's first request and fires EVT_DIMSE_RECV: on a loaded machine the
        request can come first, and its operation must still be counted.
        """
        with self._lock:
            state: _Association | None = getattr(assoc, _ATTRIBUTE, None)
            if state is None:
                primitive = assoc.requestor.primitive
                state = _Association(
                    calling=printable_aet(assoc.requestor.ae_title),
                    called=printable_aet(primitive.called_ae_title) if primitive is not None else "",
                    remote_ip=str(assoc.requestor.address), started=time.monotonic(), started_at=utc_now())
                setattr(assoc, _ATTRIBUTE, state)
                self.current += 1
                self.associations["accepted"] += 1
            return state

    def on_accepted(self, event: Any) -> None:
        self._state_of(event.assoc)

    def on_dimse_received(self, event: Any) -> None:
        state = self._state_of(event.assoc)
        message = event.message
        if isinstance(message, (StoreRequestReceived, EchoRequestReceived)):  # read by services.scp.direct_store
            kind: str | None = message.kind
            size, message_id, sop_class = message.data_set_size, message.message_id, message.sop_class_uid
        else:
            size = _data_set_bytes(message)
            kind = _REQUESTS.get(type(message).__name__)
            if kind is not None:
                command = message.command_set
                sop_class = str(getattr(command, "AffectedSOPClassUID", "") or "")
                message_id = int(command.MessageID)
        with self._lock:
            state.bytes_received += size
            self.bytes_received += size
            if kind is None:
                return  # C-CANCEL, or the C-STORE responses of our own C-GET sub-operations
            state.operations[message_id] = _Operation(kind, time.monotonic(), sop_class, size)

    def on_dimse_sent(self, event: Any) -> None:
        state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        if state is None:
            return
        message = event.message
        size = _data_set_bytes(message)
        with self._lock:
            state.bytes_sent += size
            self.bytes_sent += size
        if isinstance(message, (StoreResponseSent, FindResponseSent, EchoResponseSent)):
            status, message_id = message.response.status, message.response.message_id_being_responded_to
        elif type(message).__name__ in _RESPONSES:
            command = message.command_set
            status = int(getattr(command, "Status", 0xC000))
            message_id = int(getattr(command, "MessageIDBeingRespondedTo", -1))
        else:
            return  # the C-STORE requests of C-GET sub-operations
        with self._lock:
            operation = state.operations.get(message_id)
            if operation is None:
                return
            if status in PENDING:
                operation.responses += 1
                return
            del state.operations[message_id]
            elapsed = time.monotonic() - operation.started
            outcome = outcome_of(status)
            state.counts[operation.kind] += 1
            self.operations[f"{operation.kind}:{outcome}"] += 1
            if operation.kind == "c_store":
                stores = state.stores
                stores.statuses[f"0x{status:04X}"] += 1
                stores.data_bytes += operation.data_bytes
                stores.seconds += elapsed
                stores.longest = max(stores.longest, elapsed)
                self.store_latency.observe(elapsed)
                if stores.count < STORE_SLICE_INSTANCES and time.monotonic() - stores.started < STORE_SLICE_SECONDS:
                    return
                state.stores = _StoreSlice(time.monotonic(), utc_now())  # a long association: a row per slice
        if operation.kind == "c_store":
            self._record_stores(state, stores)
            return
        details: dict[str, Any] = {"operation": operation.kind, "status": f"0x{status:04X}",
                                   "duration_ms": round(elapsed * 1000, 1), "sop_class_uid": operation.sop_class,
                                   "called_aet": state.called}
        if operation.kind == "c_find":
            details["matches"] = operation.responses
        elif operation.kind in ("c_move", "c_get"):
            for name in ("Completed", "Failed", "Warning"):
                value = getattr(command, f"NumberOf{name}Suboperations", None)
                if value is not None:
                    details[name.lower()] = int(value)
        self.audit.record(operation.kind, outcome, state.calling, state.remote_ip, details)

    def on_acse_sent(self, event: Any) -> None:
        """Our A-RELEASE (the answer to the peer's request) is queued: the association ends released, even if the
        peer closes the connection before the association thread reports the release (EVT_CONN_CLOSE first)."""
        state: _Association | None = getattr(event.assoc, _ATTRIBUTE, None)
        if state is not None and isinstance(event.primitive, A_RELEASE):
            state.releasing = True

    def on_released(self, event: Any) -> None:
        self._finish(event.assoc, "released")

    def on_aborted(self, event: Any) -> None:
        self._finish(event.assoc, "aborted")

    def on_closed(self, event: Any) -> None:
        """The fallback end: pynetdicom reports neither a release nor an abort when the connection just ends."""
        assoc = event.assoc
        state: _Association | None = getattr(assoc, _ATTRIBUTE, None)
        released = assoc.is_released or (state is not None and state.releasing)
        self._finish(assoc, "released" if released else "aborted")

    # ---- the end of an association -----------------------------------------------------------------------

    def _finish(self, assoc: Any, outcome: str) -> None:
        state: _Association | None = getattr(assoc, _ATTRIBUTE, None)
        if state is None:
            return
        with self._lock:
            if state.finished:
                return
            state.finished = True
            self.current -= 1
            self.associations[outcome] += 1
            unanswered = Counter(operation.kind for operation in state.operations.values())
        duration = time.monotonic() - state.started
        details: dict[str, Any] = {
            "called_aet": state.called, "started_at": iso_utc(state.started_at),
            "duration_ms": round(duration * 1000, 1), "bytes_received": state.bytes_received,
            "bytes_sent": state.bytes_sent, "operations": dict(state.counts),
        }
        if unanswered:
            details["unanswered"] = dict(unanswered)
        self.audit.record("association", outcome, state.calling, state.remote_ip, details)
        if state.stores.count:
            self._record_stores(state, state.stores)

    def _record_stores(self, state: _Association, stores: _StoreSlice) -> None:
        stored = stores.count
        failures = sum(n for status, n in stores.statuses.items() if outcome_of(int(status, 16)) == "failure")
        outcome = "success" if not failures else "failure" if failures == stored else "partial"
        self.audit.record("c_store", outcome, state.calling, state.remote_ip, {
            "operation": "c_store", "called_aet": state.called, "instances": stored,
            "statuses": dict(stores.statuses), "bytes": stores.data_bytes,
            "duration_ms": round(stores.seconds * 1000, 1), "longest_ms": round(stores.longest * 1000, 1),
            "started_at": iso_utc(stores.started_at)})

    # ---- published in the heartbeat -----------------------------------------------------------------------

    def metrics(self) -> dict[str, Any]:
        with self._lock:
            return {
                "associations_current": self.current,
                "associations": dict(self.associations),
                "operations": dict(self.operations),
                "bytes_received": self.bytes_received,
                "bytes_sent": self.bytes_sent,
                "store_latency_seconds": self.store_latency.as_json(),
                "audit_written": self.audit.written,
                "audit_dropped": self.audit.dropped,
            }
