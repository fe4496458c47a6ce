"""A peer's A-RELEASE-RQ is answered by the DUL thread that read it when the association has nothing outstanding,
and after the responses of whatever the peer asked before it otherwise (shared/dicom/early_release.py, installed
on every association the listener accepts)."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from services.scp.sockets import LowLatencyRequestHandler
from shared.dicom.command_encoding import command_set, element, uid, us
from tests.raw_dicom import A_ASSOCIATE_AC, A_RELEASE_RQ, P_DATA_TF, RawConnection, p_data

A_RELEASE_RP = 0x06


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


def _echo_rq(message_id: int) -> bytes:
    command = command_set([element(0x0002, uid(Verification)), element(0x0100, us(0x0030)),
                           element(0x0110, us(message_id)), element(0x0800, us(0x0101))])
    return p_data(1, command=True, last=True, payload=command)


RELEASE_RQ = struct.pack(">BBI", A_RELEASE_RQ, 0, 4) + bytes(4)


def _next_pdu_type(connection: RawConnection) -> int:
    pdu = connection.read_pdu()
    assert pdu is not None, "the listener closed the connection"
    return pdu[0]


def _associate(listener: ThreadedAssociationServer) -> RawConnection:
    connection = RawConnection(listener.server_address[1])
    assert connection.associate("PACS", calling_aet="TESTSCU") == A_ASSOCIATE_AC
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
    with closing(_associate(listener)) as connection:  # no request: nothing can be outstanding, whatever the timing
        connection.send(RELEASE_RQ)
        assert _next_pdu_type(connection) == A_RELEASE_RP
    assert observed.release_answered_by_dul == [True]
    assert _ends(observed, 1) == ["released"]


def test_a_request_still_being_served_is_answered_before_the_release(server: Any) -> None:
    listener, observed = server
    observed.echo_may_answer.clear()
    with closing(_associate(listener)) as connection:
        connection.send(_echo_rq(1))
        assert observed.echo_started.wait(10)
        connection.send(RELEASE_RQ)  # without waiting for the echo's response
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
        with closing(_associate(listener)) as connection:
            connection.send(_echo_rq(message_id))
            assert _next_pdu_type(connection) == P_DATA_TF
            connection.send(RELEASE_RQ)
            assert _next_pdu_type(connection) == A_RELEASE_RP
    assert _ends(observed, 30) == ["released"] * 30
    assert len(observed.release_answered_by_dul) == 30
