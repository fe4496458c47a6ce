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

from services.scp.listening import InheritedAssociationServer
from services.scp.sockets import LowLatencyRequestHandler


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    yield listener
    listener.close()


def server_on(listener: socket.socket) -> InheritedAssociationServer:
    """One SCP process's server on its own descriptor of the shared socket (not serving: the test calls it)."""
    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    return InheritedAssociationServer(os.dup(listener.fileno()), ae, ("127.0.0.1", 0), "PACS", ae.supported_contexts,
                                      request_handler=LowLatencyRequestHandler)


def connect(listener: socket.socket) -> socket.socket:
    return socket.create_connection(listener.getsockname())


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


def test_a_server_holding_connections_lets_one_holding_fewer_take_the_next(listening: socket.socket) -> None:
    busy, idle = server_on(listening), server_on(listening)
    clients = [connect(listening) for _ in range(3)]
    held = [busy.get_request()[0] for _ in range(3)]
    clients.append(connect(listening))
    assert race(busy, idle) == "second"  # asked first, the busy server still leaves it to the idle one
    for open_socket in [*held, *clients]:
        open_socket.close()
    busy.server_close()
    idle.server_close()


def test_connections_whose_association_ended_no_longer_count(listening: socket.socket) -> None:
    formerly_busy, holding_one = server_on(listening), server_on(listening)
    clients = [connect(listening) for _ in range(4)]
    ended = [formerly_busy.get_request()[0] for _ in range(3)]
    still_open = holding_one.get_request()[0]
    for connection in ended:
        connection.close()
    clients.append(connect(listening))
    assert race(holding_one, formerly_busy) == "second"
    for open_socket in [still_open, *clients]:
        open_socket.close()
    formerly_busy.server_close()
    holding_one.server_close()
