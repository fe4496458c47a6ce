"""SCP processes sharing one listening socket (services/scp/listening.py): the one holding fewer connections takes
the next, so a push's associations are spread over the processes rather than piled on one of them. The plain
listener starts each association from its accept loop, without a thread of its own."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from services.scp import listening
from services.scp.listening import InheritedAssociationServer, listening_server
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


@pytest.mark.parametrize("inherited", [False, True], ids=["own_port", "socket_of_pacs_serve"])
def test_the_plain_listener_starts_each_association_from_its_accept_loop(inherited: bool) -> None:
    """socketserver would start a thread per connection only to create the association and start its thread."""
    listener = socket.create_server(("127.0.0.1", 0)) if inherited else None
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    server = listening_server(ThreadedAssociationServer, os.dup(listener.fileno()) if listener else None, ae,
                              ("127.0.0.1", 0), "PACS", ae.supported_contexts,
                              request_handler=LowLatencyRequestHandler)
    handled_in: list[threading.Thread] = []
    handle = server.process_request_thread

    def recorded(request: socket.socket, client_address: object) -> None:
        handled_in.append(threading.current_thread())
        handle(request, client_address)

    server.process_request_thread = recorded  # type: ignore[method-assign]
    ae._servers.append(server)  # as services.scp.server does (pynetdicom's shutdown takes it out)
    accept_loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="accept-loop")
    accept_loop.start()
    try:
        caller = AE(ae_title="CALLER")
        caller.add_requested_context(Verification)
        association = caller.associate("127.0.0.1", server.server_address[1], ae_title="PACS")
        assert association.is_established
        assert association.send_c_echo().Status == 0x0000
        association.release()
    finally:
        server.shutdown()
        accept_loop.join(timeout=5)
        if listener is not None:
            listener.close()
    assert handled_in == [accept_loop]
