"""Accepted associations that never stall: on Nagle's algorithm, delayed ACKs or pynetdicom's polling.

TCP_NODELAY is set on every accepted socket, and TCP_QUICKACK (which Linux clears after use) before every
receive, so a client that writes a C-STORE in several small pieces gets its ACKs at once (PERFORMANCE.md).
Receives are chunked so that a hostile PDU length never allocates more than is actually received.
"""

from __future__ import annotations

import socket

from pynetdicom.transport import AssociationSocket, RequestHandler

from services.scp.event_driven import make_event_driven
from services.scp.tcp import quickack

_RECV_CHUNK = 1 << 20


class LowLatencyAssociationSocket(AssociationSocket):
    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        received = bytearray()
        while len(received) < nr_bytes:
            quickack(sock)
            chunk = sock.recv(min(nr_bytes - len(received), _RECV_CHUNK))
            if not chunk:
                break
            received += chunk
        return received


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
        make_event_driven(assoc)
        route_requests = getattr(self.server, "route_requests", None)
        if route_requests is not None:
            route_requests(assoc)
        return assoc
