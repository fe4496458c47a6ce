"""A peer's A-RELEASE-RQ is answered by the DUL thread that read it when the association has nothing outstanding,
and after the responses of whatever the peer asked before it otherwise (shared/dicom/early_release.py, installed
on every association the listener accepts)."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from services.scp.sockets import LowLatencyRequestHandler

VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = b"1.2.840.10008.1.2"
A_ASSOCIATE_AC, P_DATA_TF, A_RELEASE_RP, A_ABORT = 0x02, 0x04, 0x06, 0x07


@dataclass
class Observed:
    release_answered_by_dul: list[bool] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)
    echo_may_answer: threading.Event = field(default_factory=threading.Event)
    echo_started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


@pytest.fixture
def server() -> Iterator[tuple[ThreadedAssociationServer, Observed]]:
    observed = Observed()
    observed.echo_may_answer.set()

    def on_echo(event: Any) -> int:
        observed.echo_started.set()
        observed.echo_may_answer.wait(10)
        return 0x0000

    def on_acse_sent(event: Any) -> None:
        if isinstance(event.primitive, A_RELEASE) and event.primitive.result is not None:
            with observed.lock:
                observed.release_answered_by_dul.append(threading.current_thread() is event.assoc.dul)

    def on_end(outcome: str) -> Any:
        def record(event: Any) -> None:
            with observed.lock:
                observed.ends.append(outcome)
        return record

    ae = AE(ae_title="PACS")
    ae.add_supported_context(Verification)
    handlers = [(evt.EVT_C_ECHO, on_echo), (evt.EVT_ACSE_SENT, on_acse_sent),
                (evt.EVT_RELEASED, on_end("released")), (evt.EVT_ABORTED, on_end("aborted"))]
    listener = ThreadedAssociationServer(ae, ("127.0.0.1", 0), "PACS", ae.supported_contexts,
                                         evt_handlers=handlers, request_handler=LowLatencyRequestHandler)
    ae._servers.append(listener)  # as AE.start_server registers it (shutdown removes it)
    threading.Thread(target=listener.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield listener, observed
    listener.shutdown()


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _associate_rq() -> bytes:
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_VR_LITTLE_ENDIAN))
    user_information = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.1"))
    body = (struct.pack(">HH", 1, 0) + b"PACS".ljust(16) + b"TESTSCU".ljust(16) + bytes(32)
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + context + user_information)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _echo_rq(message_id: int) -> bytes:
    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0x0000, tag, len(value)) + value

    elements = (element(0x0002, VERIFICATION + b"\x00") + element(0x0100, struct.pack("<H", 0x0030))
                + element(0x0110, struct.pack("<H", message_id)) + element(0x0800, struct.pack("<H", 0x0101)))
    command = element(0x0000, struct.pack("<I", len(elements))) + elements
    pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


RELEASE_RQ = struct.pack(">BBI", 0x05, 0, 4) + bytes(4)


def _next_pdu_type(connection: socket.socket) -> int:
    header = _read(connection, 6)
    _read(connection, struct.unpack(">I", header[2:])[0])
    return header[0]


def _read(connection: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = connection.recv(length - len(data))
        if not chunk:
            raise ConnectionError("the server closed the connection")
        data += chunk
    return data


def _associate(listener: ThreadedAssociationServer) -> socket.socket:
    connection = socket.create_connection(listener.server_address[:2], timeout=10)
    connection.sendall(_associate_rq())
    assert _next_pdu_type(connection) == A_ASSOCIATE_AC
    return connection


def _ends(observed: Observed, count: int) -> list[str]:
    for _ in range(200):
        with observed.lock:
            if len(observed.ends) >= count:
                return list(observed.ends)
        threading.Event().wait(0.025)
    return list(observed.ends)


def test_an_idle_association_s_release_is_answered_by_the_thread_that_read_it(server: Any) -> None:
    listener, observed = server
    with _associate(listener) as connection:  # no request: nothing can be outstanding, whatever the timing
        connection.sendall(RELEASE_RQ)
        assert _next_pdu_type(connection) == A_RELEASE_RP
    assert observed.release_answered_by_dul == [True]
    assert _ends(observed, 1) == ["released"]


def test_a_request_still_being_served_is_answered_before_the_release(server: Any) -> None:
    listener, observed = server
    observed.echo_may_answer.clear()
    with _associate(listener) as connection:
        connection.sendall(_echo_rq(1))
        assert observed.echo_started.wait(10)
        connection.sendall(RELEASE_RQ)  # without waiting for the echo's response
        threading.Event().wait(0.2)  # the release request is read while the echo is served
        observed.echo_may_answer.set()
        assert [_next_pdu_type(connection), _next_pdu_type(connection)] == [P_DATA_TF, A_RELEASE_RP]
    assert observed.release_answered_by_dul == [False]
    assert _ends(observed, 1) == ["released"]


def test_every_association_of_a_series_ends_released_with_one_answer_each(server: Any) -> None:
    """After an echo the association thread may still be finishing it when the request arrives (then it answers):
    either way one answer, and the association ends released."""
    listener, observed = server
    for message_id in range(1, 31):
        with _associate(listener) as connection:
            connection.sendall(_echo_rq(message_id))
            assert _next_pdu_type(connection) == P_DATA_TF
            connection.sendall(RELEASE_RQ)
            assert _next_pdu_type(connection) == A_RELEASE_RP
    assert _ends(observed, 30) == ["released"] * 30
    assert len(observed.release_answered_by_dul) == 30
