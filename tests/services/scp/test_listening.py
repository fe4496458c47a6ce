"""SCP processes sharing one listening socket (services/scp/listening.py): the one holding fewer connections takes
the next, so a push's associations are spread over the processes rather than piled on one of them."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from services.scp import listening
from services.scp.listening import InheritedAssociationServer
from services.scp.sockets import LowLatencyRequestHandler


class SharedSocket:
    """One listening socket, the servers of SCP processes on it (each on its own descriptor, not serving: the test
    calls them) and every socket the test opens; all closed at the end."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.servers: list[InheritedAssociationServer] = []
        self.sockets: list[socket.socket] = []

    def server(self) -> InheritedAssociationServer:
        ae = AE(ae_title="PACS")
        ae.add_supported_context(Verification)
        server = InheritedAssociationServer(os.dup(self.listener.fileno()), ae, ("127.0.0.1", 0), "PACS",
                                            ae.supported_contexts, request_handler=LowLatencyRequestHandler)
        self.servers.append(server)
        return server

    def connect(self, count: int = 1) -> None:
        self.sockets += [socket.create_connection(self.listener.getsockname()) for _ in range(count)]

    def accept(self, server: InheritedAssociationServer) -> socket.socket:
        connection = server.get_request()[0]
        self.sockets.append(connection)
        return connection

    def close(self) -> None:
        for open_socket in self.sockets:
            open_socket.close()
        for server in self.servers:
            server.server_close()
        self.listener.close()


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[SharedSocket]:
    # The deferral per held connection, widened from milliseconds so that the order of the race does not depend on
    # how soon a busy machine schedules the test's two threads.
    monkeypatch.setattr(listening, "DEFER_PER_CONNECTION_SECONDS", 0.2)
    sockets = SharedSocket()
    yield sockets
    sockets.close()


def race(first: InheritedAssociationServer, second: InheritedAssociationServer) -> str:
    """Both servers try to accept the one pending connection, ``first`` asked first: which one got it."""
    got: dict[str, socket.socket | None] = {}

    def accept(name: str, server: InheritedAssociationServer) -> None:
        try:
            got[name] = server.get_request()[0]
        except BlockingIOError:
            got[name] = None

    contender = threading.Thread(target=accept, args=("first", first))
    contender.start()
    accept("second", second)
    contender.join(timeout=5)
    winners = [name for name, connection in got.items() if connection is not None]
    assert len(winners) == 1, got
    connection = got[winners[0]]
    assert connection is not None
    connection.close()
    return winners[0]


def test_a_server_holding_connections_lets_one_holding_fewer_take_the_next(shared: SharedSocket) -> None:
    busy, idle = shared.server(), shared.server()
    shared.connect(3)
    for _ in range(3):
        shared.accept(busy)
    shared.connect()
    assert race(busy, idle) == "second"  # asked first, the busy server still leaves it to the idle one


def test_connections_whose_association_ended_no_longer_count(shared: SharedSocket) -> None:
    formerly_busy, holding_one = shared.server(), shared.server()
    shared.connect(4)
    ended = [shared.accept(formerly_busy) for _ in range(3)]
    shared.accept(holding_one)
    for connection in ended:
        connection.close()
    shared.connect()
    assert race(holding_one, formerly_busy) == "second"
