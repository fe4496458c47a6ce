"""Listening sockets taken over from `pacs serve`, which opens the DICOM (and TLS) port once and runs several SCP
processes on it: each accepts from the same socket, so the kernel hands every new connection to a process that is
waiting for one, and a second node started on the same port fails to bind as before (no SO_REUSEPORT, which would
let it share the port silently).

The socket is non-blocking here: all processes wake for a connection and one of them gets it; for the others
``accept`` fails at once (socketserver ignores that) instead of blocking their accept loop until the next one.

Which process gets it is a race, and a process that holds associations can win it: a push of four associations
then went 4 + 0 or 3 + 1 now and then, one process bound by its GIL while the other idled (3,000 small instances:
748 per second against ~1,000 with 2 + 2). So a process waits DEFER_PER_CONNECTION_SECONDS for each connection it
holds before it accepts: one that holds fewer takes the connection first, and a process alone on its socket only
starts an association a few milliseconds later.

The plain listener (not TLS) starts each association from its accept loop, where socketserver would start a thread
whose only work is to create the association and start the association's own thread: nothing on that path reads
from the connection or waits for the peer (the A-ASSOCIATE-RQ is read by the association's DUL thread): two threads
per association instead of three. The TLS listener keeps the thread: its handshake runs there (services.scp.tls).
"""

from __future__ import annotations

import socket
import time
from typing import Any, TypeVar, cast

from pynetdicom.transport import ThreadedAssociationServer

from services.scp.tls import TlsAssociationServer

DEFER_PER_CONNECTION_SECONDS = 0.002
MOST_DEFERRED_CONNECTIONS = 10


class _InheritedListener:
    """Replaces socketserver's bind and listen by the adoption of a listening socket (a file descriptor)."""

    socket: socket.socket
    server_address: Any

    def __init__(self, listen_fd: int, *args: Any, **kwargs: Any) -> None:
        self._listen_fd = listen_fd
        self._connections: list[socket.socket] = []  # accepted here; closed when their association ends
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def server_bind(self) -> None:
        self.socket.close()  # the one socketserver created, never bound
        self.socket = socket.socket(fileno=self._listen_fd)
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """It listens already."""

    def get_request(self) -> tuple[socket.socket, Any]:
        self._connections = [connection for connection in self._connections if connection.fileno() != -1]
        if self._connections:  # let a process that holds fewer take this connection
            time.sleep(min(len(self._connections), MOST_DEFERRED_CONNECTIONS) * DEFER_PER_CONNECTION_SECONDS)
        connection, address = super().get_request()  # type: ignore[misc]
        self._connections.append(connection)
        return connection, address


class _StartedInline:
    """Requests handled in the accept loop's thread (pynetdicom's handler only creates and starts the association)."""

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        self.process_request_thread(request, client_address)  # type: ignore[attr-defined]


class PlainAssociationServer(_StartedInline, ThreadedAssociationServer):
    pass


class InheritedAssociationServer(_InheritedListener, _StartedInline, ThreadedAssociationServer):
    pass


class InheritedTlsAssociationServer(_InheritedListener, TlsAssociationServer):
    pass


_OWN = {ThreadedAssociationServer: PlainAssociationServer, TlsAssociationServer: TlsAssociationServer}
_INHERITED = {ThreadedAssociationServer: InheritedAssociationServer, TlsAssociationServer: InheritedTlsAssociationServer}


Server = TypeVar("Server", bound=ThreadedAssociationServer)


def listening_server(server_class: type[Server], listen_fd: int | None, *arguments: Any, **options: Any) -> Server:
    """A ``server_class`` that binds its port (``listen_fd`` None: `pacs scp`) or takes over ``listen_fd``."""
    if listen_fd is None:
        return cast(Server, _OWN[server_class](*arguments, **options))
    return cast(Server, _INHERITED[server_class](listen_fd, *arguments, **options))

