"""Accepted associations that never stall: on Nagle's algorithm, delayed ACKs or pynetdicom's polling.

TCP_NODELAY is set on every accepted socket, and TCP_QUICKACK (which Linux clears after use) before every
receive, so a client that writes a C-STORE in several small pieces gets its ACKs at once (PERFORMANCE.md).
Receives are chunked so that a hostile PDU length never allocates more than is actually received, and each PDU
passes the bounds of services.scp.pdu_guard (length, time to arrive). A short read asks the kernel for up to
READ_AHEAD bytes and keeps what follows the PDU for the next one: a small C-STORE (command and data set PDUs sent
back to back) costs one receive instead of four, and the socket's timeout is changed only for the rare PDU whose
time to arrive runs out before the idle timeout would.

Data that is there already costs two system calls. The DUL thread's wait (shared.dicom.event_driven) has just seen
the socket readable, so ``ready`` believes it instead of polling once more, and a blocking socket is first read with
MSG_DONTWAIT after the quick-ACK: no timeout set and restored (two ioctl calls) and no poll inside Python's timed
receive. Only a receive that finds nothing falls back to the deadline path. One C-STORE of a small instance went
from eight system calls to four on its way in.
"""

from __future__ import annotations

import select
import socket
import ssl
import time

from pynetdicom.transport import AssociationSocket, RequestHandler

from services.scp.dimse_guard import guard_association_requests, guard_dimse_decoding
from services.scp.direct_store import DirectStore
from services.scp.pdu_guard import PduLimits, check_header
from services.scp.spooling import spool_received_datasets
from shared.dicom.early_release import answer_release_in_dul_thread
from shared.dicom.event_driven import make_event_driven
from shared.dicom.message_writer import write_messages_directly
from shared.dicom.pdu_reading import read_p_data_first
from shared.dicom.tcp import quickack

_RECV_CHUNK = 1 << 20
READ_AHEAD = 1 << 16
_DEADLINE_SLACK_SECONDS = 1.0  # a PDU may take this much longer than its limit before its timeout is narrowed


class LowLatencyAssociationSocket(AssociationSocket):
    """pynetdicom reads each PDU as recv(6) (the header) then recv(length) (the body); both pass here."""

    pdu_limits = PduLimits(max_p_data_length=0, pdu_seconds=60.0)  # replaced per listener
    _reading_body = False
    _read_ahead = b""  # received beyond the PDU asked for
    _seen_readable = False  # the DUL thread's wait saw data (or the end) on the socket, and nothing read it since

    @property
    def buffered(self) -> int:
        """Bytes already received and not yet read (shared.dicom.event_driven must not wait for the socket)."""
        return len(self._read_ahead)

    @property
    def ready(self) -> bool:
        """Whether data (or the end of the connection) waits to be read. pynetdicom asks select(), which refuses
        descriptors above 1023 and so declares every later connection closed; poll() has no such limit."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if self._read_ahead or self._seen_readable:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True  # decrypted bytes buffered in the TLS layer, invisible to poll()
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLPRI)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False

    def saw_readable(self) -> None:
        """Called by the DUL thread's wait when poll() reported the socket readable: ``ready`` is True until the
        next receive."""
        self._seen_readable = True

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        deadline = time.monotonic() + self.pdu_limits.pdu_seconds  # reads start only once data is there
        if self._reading_body:
            self._reading_body = False
            return self._receive(sock, nr_bytes, deadline)
        header = self._receive(sock, nr_bytes, deadline)
        self._reading_body = check_header(bytes(header), self.pdu_limits, sock)
        return header

    def _receive(self, sock: socket.socket, nr_bytes: int, deadline: float) -> bytearray:
        received = bytearray(self._read_ahead[:nr_bytes])
        self._read_ahead = self._read_ahead[nr_bytes:]
        self._seen_readable = False
        if len(received) < nr_bytes and nr_bytes - len(received) < READ_AHEAD:
            self._receive_waiting(sock, nr_bytes, received)
        if len(received) == nr_bytes:
            return received
        idle_timeout = sock.gettimeout()
        try:
            while len(received) < nr_bytes:
                self._prepare(sock, deadline, idle_timeout)
                missing = nr_bytes - len(received)
                if missing >= READ_AHEAD:
                    return self._receive_long(sock, nr_bytes, received, deadline, idle_timeout)
                chunk = sock.recv(READ_AHEAD)
                if not chunk:
                    break
                if len(chunk) > missing:
                    self._read_ahead = chunk[missing:]
                    chunk = chunk[:missing]
                received += chunk
        finally:
            if sock.gettimeout() != idle_timeout:  # narrowed to the PDU's deadline on the way
                sock.settimeout(idle_timeout)
        return received

    def _receive_waiting(self, sock: socket.socket, nr_bytes: int, received: bytearray) -> None:
        """What a blocking (not TLS) socket holds already, without waiting: up to READ_AHEAD bytes, those beyond
        ``nr_bytes`` kept for the next PDU. The end of the connection is found again by the deadline path's receive.
        Quick-ACK mode is set first, as before every receive (it also sends an ACK the kernel delayed)."""
        if sock.gettimeout() is not None or isinstance(sock, ssl.SSLSocket):
            return
        quickack(sock)
        try:
            chunk = sock.recv(READ_AHEAD, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        missing = nr_bytes - len(received)
        if len(chunk) > missing:
            self._read_ahead = chunk[missing:]
            chunk = chunk[:missing]
        received += chunk

    def _receive_long(self, sock: socket.socket, nr_bytes: int, start: bytearray, deadline: float,
                      idle_timeout: float | None) -> bytearray:
        """A long PDU body, received straight into its buffer (no chunk objects joined: one copy fewer). The buffer
        grows a chunk at a time, so a hostile length allocates no more than what arrives plus one chunk."""
        body = bytearray(min(nr_bytes, max(len(start), _RECV_CHUNK)))
        body[:len(start)] = start
        filled = len(start)
        while filled < nr_bytes:
            if filled == len(body):
                body.extend(bytes(min(nr_bytes - filled, _RECV_CHUNK)))  # only PDUs above _RECV_CHUNK
            with memoryview(body) as view, view[filled:] as free:
                count = sock.recv_into(free)
            if not count:
                break
            filled += count
            if filled < nr_bytes:
                self._prepare(sock, deadline, idle_timeout)
        del body[filled:]
        return body

    @staticmethod
    def _prepare(sock: socket.socket, deadline: float, idle_timeout: float | None) -> None:
        """Before a receive: fail past the PDU's deadline, narrow the timeout to it if it comes before the idle
        timeout (``_receive`` restores it), ask for quick ACKs."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("a PDU took longer to arrive than the node waits")
        if idle_timeout is None or remaining < idle_timeout - _DEADLINE_SLACK_SECONDS:
            sock.settimeout(remaining if idle_timeout is None else min(idle_timeout, remaining))
        quickack(sock)


class SharedContexts(list):  # type: ignore[type-arg]
    """A server's supported presentation contexts, shared by its associations instead of deep-copied for each.

    pynetdicom deep-copies the server's contexts into every new association (``RequestHandler._create_association``):
    for our few hundred storage contexts that was about half of each association's set-up (a bare echoscu process:
    51.9 ms median before, 24.5 ms after, 30 runs each, idle machine). Negotiation only reads them (it builds new
    result contexts), and the narrowed lists of services.scp.access are shared the same way.
    """

    def __deepcopy__(self, memo: dict[int, object]) -> list:  # type: ignore[type-arg]
        return list(self)


class LowLatencyRequestHandler(RequestHandler):
    def _create_association(self):  # type: ignore[no-untyped-def]
        try:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        quickack(self.request)
        assoc = super()._create_association()
        # Same object, our receive path: the socket was already initialised by pynetdicom.
        assoc.dul.socket.__class__ = LowLatencyAssociationSocket
        limits = getattr(self.server, "pdu_limits", None)
        if limits is not None:
            assoc.dul.socket.pdu_limits = limits
        make_event_driven(assoc)
        writer = write_messages_directly(assoc)
        guard_dimse_decoding(assoc)
        guard_association_requests(assoc)
        direct = getattr(self.server, "direct_store", None)
        if direct is not None and writer is not None:  # not on TLS: pynetdicom keeps those (see message_writer)
            read_p_data_first(assoc, DirectStore(assoc, direct, writer))
        spool = getattr(self.server, "received_spool", None)
        if spool is not None:
            spool_received_datasets(assoc, spool)
        route_requests = getattr(self.server, "route_requests", None)
        if route_requests is not None:
            route_requests(assoc)
        answer_release_in_dul_thread(assoc)  # wraps the request routing: install after it
        return assoc
