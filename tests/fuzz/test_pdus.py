"""Property-based fuzzing (hypothesis, bounded) of the node's PDU handling, over the network: damaged association
requests and damaged P-DATA after a good association. Whatever arrives, the listener stays up, answers the next
modality, and logs no traceback; a known crasher is kept as an @example."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.node import Node
from tests.peers import echoscu
from tests.raw_dicom import A_ASSOCIATE_AC, RawConnection, associate_rq, p_data

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("fuzz"), {"PACS_ASSOCIATION_IDLE_TIMEOUT_SECONDS": "2",
                                                  "PACS_MAX_PDU_SIZE": "65536"})
    node.service("serve")
    try:
        node.wait_ready()
        yield node
        assert echoscu(node.dicom_port, node.ae_title).returncode == 0
        assert "Traceback" not in node.logs()
    finally:
        node.stop()


def _mutate(data: bytes, edits: list[tuple[int, bytes]], cut: int | None) -> bytes:
    mutated = bytearray(data)
    for position, replacement in edits:
        index = position % max(1, len(mutated))
        mutated[index:index + len(replacement)] = replacement
    return bytes(mutated[:cut] if cut is not None else mutated)


def _exchange(port: int, payloads: list[bytes]) -> None:
    """Send, read whatever comes back for a moment, hang up (the node must not care how we leave)."""
    connection = RawConnection(port, timeout=5)
    try:
        for payload in payloads:
            connection.send(payload)
        connection.read_pdu(0.3)
    except (OSError, TimeoutError, socket.timeout):
        pass
    finally:
        connection.close()


EDITS = st.lists(st.tuples(st.integers(0, 400), st.binary(min_size=1, max_size=6)), max_size=6)


@BOUNDED
@given(EDITS, st.one_of(st.none(), st.integers(0, 400)))
@example([(2, b"\xff\xff\xff\xff")], None)  # a 4 GiB length
@example([(0, b"\x09")], None)  # an unknown PDU type
@example([(10, b"\x00\x00")], None)  # protocol version 0
def test_damaged_association_requests(node: Node, edits: list[tuple[int, bytes]], cut: int | None) -> None:
    _exchange(node.dicom_port, [_mutate(associate_rq(node.ae_title, calling_aet="FUZZ"), edits, cut)])


GOOD_ECHO_COMMAND = bytes.fromhex(
    "00000000 04000000 38000000"  # (0000,0000) UL 56: group length (implicit VR little endian)
    "00000200 12000000 312e322e3834302e31303030382e312e3100"  # (0000,0002) Affected SOP Class UID
    "00000001 02000000 3000"  # (0000,0100) Command Field C-ECHO-RQ
    "00001001 02000000 0100"  # (0000,0110) Message ID 1
    "00000008 02000000 0101"  # (0000,0800) no data set
)


@BOUNDED
@given(EDITS, st.one_of(st.none(), st.integers(0, 80)), st.integers(0, 3))
@example([(0, b"\xff\xff\xff\xff")], None, 3)
@example([(38, b"\x00\x00\x00\x09")], None, 3)  # no Command Field: killed pynetdicom's DUL thread (now aborted)
def test_damaged_dimse_commands_after_a_good_association(
        node: Node, edits: list[tuple[int, bytes]], cut: int | None, flags: int) -> None:
    connection = RawConnection(node.dicom_port, timeout=5)
    try:
        assert connection.associate(node.ae_title, calling_aet="FUZZ") == A_ASSOCIATE_AC
        payload = _mutate(GOOD_ECHO_COMMAND, edits, cut)
        pdv = struct.pack(">LB", len(payload) + 2, 1) + bytes([flags | 0x01]) + payload
        connection.send(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
        connection.read_pdu(0.3)
    except (OSError, TimeoutError, socket.timeout):
        pass
    finally:
        connection.close()


def test_the_good_echo_command_is_answered(node: Node) -> None:
    """The seed of the fuzzing above is a valid C-ECHO: the node answers it (so mutations start from real input)."""
    connection = RawConnection(node.dicom_port)
    assert connection.associate(node.ae_title, calling_aet="FUZZ") == A_ASSOCIATE_AC
    connection.send(p_data(1, command=True, last=True, payload=GOOD_ECHO_COMMAND))
    answer = connection.read_pdu(5)
    assert answer is not None and answer[0] == 0x04
    connection.close()


def test_logs_are_clean(node: Node, tmp_path: Path) -> None:
    assert "Traceback" not in node.logs()
