"""The accepted-socket wrapper: readiness by poll(), so connections on descriptors above 1023 keep working."""

from __future__ import annotations

import copy
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification

from services.scp.pdu_guard import PduLimits
from services.scp.sockets import LowLatencyAssociationSocket, SharedContexts


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Occupy the descriptors below 1100, as a node with a thousand open connections and files does."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2048 if hard == resource.RLIM_INFINITY else min(hard, 2048)
    assert wanted >= 1200, f"the descriptor limit ({hard}) is too low for this test"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    fillers = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for descriptor in fillers:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A connected pair: ours (the SCP's side) and the peer's; both closed after the test."""
    ours, peer = socket.socketpair()
    yield ours, peer
    ours.close()
    peer.close()


def wrapped(sock: socket.socket) -> LowLatencyAssociationSocket:
    wrapper = object.__new__(LowLatencyAssociationSocket)  # only what `ready` reads
    wrapper.socket = sock
    wrapper._is_connected = True
    return wrapper


@pytest.mark.usefixtures("high_descriptors")
def test_readiness_is_right_on_descriptors_above_1023(pair: Pair) -> None:
    ours, peer = pair
    assert ours.fileno() > 1023
    connection = wrapped(ours)
    assert connection.ready is False
    peer.sendall(b"\x01")
    assert connection.ready is True


def test_associations_share_the_servers_contexts_instead_of_deep_copying_them() -> None:
    contexts = SharedContexts([build_context(CTImageStorage, [ExplicitVRLittleEndian]), build_context(Verification)])
    copied = copy.deepcopy(contexts)  # what pynetdicom does for every new association
    assert copied == list(contexts) and all(a is b for a, b in zip(copied, contexts))
    copied.append(build_context(MRImageStorage))
    assert len(contexts) == 2  # the list is the association's own; the contexts are read, never written


def reader(sock: socket.socket) -> LowLatencyAssociationSocket:
    connection = wrapped(sock)
    sock.settimeout(10)
    return connection


def test_pdus_sent_back_to_back_are_read_one_after_the_other_from_one_receive(pair: Pair) -> None:
    ours, peer = pair
    connection = reader(ours)
    first, second = b"\x04\x00\x00\x00\x00\x03abc", b"\x04\x00\x00\x00\x00\x02de"
    peer.sendall(first + second)
    assert connection.recv(6) == first[:6] and connection.recv(3) == b"abc"
    assert connection.buffered == len(second)  # already received: no wait on the socket for it
    assert connection.ready is True
    assert connection.recv(6) == second[:6] and connection.recv(2) == b"de"
    assert connection.buffered == 0 and connection.ready is False


def test_a_pdu_arriving_in_pieces_is_read_whole(pair: Pair) -> None:
    ours, peer = pair
    connection = reader(ours)
    body = os.urandom(300_000)
    peer.sendall(b"\x04\x00" + len(body).to_bytes(4, "big") + body[:1000])
    assert connection.recv(6)[2:] == len(body).to_bytes(4, "big")
    sender = threading.Thread(target=peer.sendall, args=(body[1000:],))
    sender.start()
    assert connection.recv(len(body)) == body
    sender.join()


def test_a_pdu_longer_than_one_receive_chunk_is_read_whole_and_the_next_pdu_after_it(pair: Pair) -> None:
    ours, peer = pair
    connection = reader(ours)
    body, after = os.urandom(2_500_000), b"\x04\x00\x00\x00\x00\x02de"  # past 1 MiB: the buffer grows twice
    sender = threading.Thread(target=peer.sendall, args=(b"\x04\x00" + len(body).to_bytes(4, "big") + body
                                                         + after,))
    sender.start()
    assert connection.recv(6)[2:] == len(body).to_bytes(4, "big")
    assert connection.recv(len(body)) == body
    assert connection.recv(6) == after[:6] and connection.recv(2) == b"de"  # nothing of it read with the body
    sender.join()


def test_a_connection_closed_inside_a_long_pdu_gives_what_arrived(pair: Pair) -> None:
    ours, peer = pair
    connection = reader(ours)
    peer.sendall(b"\x04\x00" + (500_000).to_bytes(4, "big") + b"x" * 200_000)
    peer.close()
    assert connection.recv(6)[2:] == (500_000).to_bytes(4, "big")
    assert connection.recv(500_000) == b"x" * 200_000  # short: the reader takes it for a closed connection


@pytest.mark.parametrize("socket_timeout", [None, 10.0], ids=["blocking_socket", "socket_with_a_timeout"])
def test_a_pdu_that_stops_arriving_fails_at_its_deadline(pair: Pair, socket_timeout: float | None) -> None:
    ours, peer = pair
    connection = wrapped(ours)
    ours.settimeout(socket_timeout)
    connection.pdu_limits = PduLimits(max_p_data_length=0, pdu_seconds=0.3)
    peer.sendall(b"\x04\x00" + (200_000).to_bytes(4, "big") + b"x" * 100_000)  # and then nothing
    assert connection.recv(6)[2:] == (200_000).to_bytes(4, "big")
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.recv(200_000)
    assert 0.25 < time.monotonic() - started < 5
    assert ours.gettimeout() == socket_timeout  # left as it was
