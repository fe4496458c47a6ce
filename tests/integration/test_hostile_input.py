"""Malformed and hostile traffic: the node aborts or answers with a proper status, never hangs or crashes, keeps
its memory bounded, stores nothing partial, and the next association works (issue #6, "Bad input and abuse")."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF as P_DATA_TF_PDU

from shared.ingest_identify import identify
from tests.factory import deeply_nested_dataset, encode_dataset, make_image, with_file_meta
from tests.node import Node, child_commands, wait_until
from tests.peers import StoreClient, echoscu, send_raw_c_store
from tests.raw_dicom import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_RELEASE_RQ,
    IMPLICIT_LITTLE_ENDIAN,
    P_DATA_TF,
    VERIFICATION,
    RawConnection,
    associate_rq,
    p_data,
)

MAX_PDU = 65536
IDLE_TIMEOUT = 3
ASSOCIATION_LIMIT = 6


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("hostile"), {"PACS_MAX_PDU_SIZE": str(MAX_PDU),
                                                     "PACS_ASSOCIATION_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT)})
    node.service("serve")
    try:
        node.wait_ready()
        yield node
    finally:
        node.stop()
        print(node.logs()[-5000:])


@pytest.fixture
def healthy_afterwards(node: Node) -> Iterator[None]:
    """After each hostile exchange the listener is alive, a modality can echo, and memory is bounded."""
    yield
    result = echoscu(node.dicom_port, node.ae_title)
    assert result.returncode == 0, result.stdout + result.stderr
    assert scp_rss_bytes(node) < 400 * 1024 * 1024


def scp_rss_bytes(node: Node) -> int:
    """Resident memory of the serve supervisor's scp child, from /proc."""
    serve = node.services["serve"].process.pid  # type: ignore[union-attr]
    for pid, command in child_commands(serve).items():
        if b"scp" in command:
            status = Path(f"/proc/{pid}/status").read_text()
            return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
    raise AssertionError("no scp child process")


pytestmark = pytest.mark.usefixtures("healthy_afterwards")


def test_an_unknown_pdu_type_is_answered_with_an_abort(node: Node) -> None:
    connection = RawConnection(node.dicom_port)
    connection.send(b"\x09\x00\x00\x00\x00\x04abcd")
    answer = connection.read_pdu(IDLE_TIMEOUT + 5)  # A-ABORT (PS3.8 AA-1), at the latest once the rest of
    assert answer is None or answer[0] == A_ABORT  # the bytes fails to form a PDU within the idle timeout


def test_a_pdu_announcing_4_gib_is_refused_at_once_without_waiting_for_it(node: Node) -> None:
    connection = RawConnection(node.dicom_port)
    connection.send(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF) + b"\x00" * 1000)
    assert connection.read_pdu(5) == (A_ABORT, b"\x00\x00\x02\x06")  # service provider, invalid PDU parameter
    assert connection.closed_by_node(5)


def test_a_p_data_pdu_larger_than_the_advertised_maximum_is_aborted(node: Node) -> None:
    connection = RawConnection(node.dicom_port)
    assert connection.associate(node.ae_title) == A_ASSOCIATE_AC
    connection.send(struct.pack(">BBL", P_DATA_TF, 0, MAX_PDU + 1) + b"\x00" * 100)
    assert connection.read_pdu(5) == (A_ABORT, b"\x00\x00\x02\x06")
    assert connection.closed_by_node(5)


@pytest.mark.parametrize("sent", [4, 40], ids=["inside-the-header", "inside-the-body"])
def test_a_truncated_pdu_is_dropped_after_the_idle_timeout(node: Node, sent: int) -> None:
    connection = RawConnection(node.dicom_port)
    connection.send(associate_rq(node.ae_title)[:sent])
    assert connection.closed_by_node(IDLE_TIMEOUT + 10)


def test_a_slow_drip_association_request_cannot_hold_a_connection_forever(node: Node) -> None:
    connection = RawConnection(node.dicom_port)
    request = associate_rq(node.ae_title)
    started = time.monotonic()
    closed = False
    for byte in request[:-1]:  # one byte every 0.5 s: never idle, never complete
        try:
            connection.send(bytes([byte]))
        except OSError:
            closed = True
            break
        time.sleep(0.5)
        if time.monotonic() - started > 4 * IDLE_TIMEOUT + 10:
            break
    assert closed or connection.closed_by_node(2), "the node still waits for the dripping request"
    assert time.monotonic() - started < 4 * IDLE_TIMEOUT + 10


def test_an_idle_connection_that_never_speaks_is_closed(node: Node) -> None:
    connection = RawConnection(node.dicom_port)
    assert connection.closed_by_node(IDLE_TIMEOUT + 10)  # the wait for an association request is bounded by it too


@pytest.mark.parametrize("body", [
    b"\x00\x01\x00\x00" + b"\xff" * 64,  # protocol version then garbage items
    b"\x00\x01\x00\x00" + b"PACS".ljust(16) + b"HOSTILE".ljust(16) + b"\x00" * 32 + b"\x10\x00\xff\xff",
    b"",
], ids=["garbage-items", "item-longer-than-the-pdu", "empty"])
def test_a_malformed_association_request_is_refused_or_aborted(node: Node, body: bytes) -> None:
    connection = RawConnection(node.dicom_port)
    connection.send(struct.pack(">BBL", 0x01, 0, len(body)) + body)
    answer = connection.read_pdu(10)
    assert answer is None or answer[0] in (A_ASSOCIATE_RJ, A_ABORT)
    assert connection.closed_by_node(10)


def without_first_abstract_syntax(pdu: bytes) -> bytes:
    """An A-ASSOCIATE-RQ whose first presentation context item (0x20) lost its abstract syntax sub-item (0x30)."""
    item = pdu.index(b"\x20\x00", 6 + 68)  # past the PDU header and the fixed fields: the items start with 0x10
    item_length = struct.unpack(">H", pdu[item + 2:item + 4])[0]
    sub_item = item + 8  # context id, reserved bytes
    assert pdu[sub_item] == 0x30
    cut = 4 + struct.unpack(">H", pdu[sub_item + 2:sub_item + 4])[0]
    body = (pdu[6:item + 2] + struct.pack(">H", item_length - cut) + pdu[item + 4:sub_item]
            + pdu[sub_item + cut:])
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def test_a_context_without_abstract_syntax_is_refused_and_the_others_accepted(node: Node) -> None:
    connection = RawConnection(node.dicom_port)
    connection.send(without_first_abstract_syntax(associate_rq(node.ae_title, contexts=(
        (CTImageStorage, ExplicitVRLittleEndian), (VERIFICATION, IMPLICIT_LITTLE_ENDIAN)))))
    answer = connection.read_pdu(10)
    assert answer is not None and answer[0] == A_ASSOCIATE_AC
    results = {answer[1][index + 4]: answer[1][index + 6]  # context id → result of each context item (0x21)
               for index in range(68, len(answer[1]) - 8) if answer[1][index:index + 2] == b"\x21\x00"}
    assert results == {1: 3, 3: 0}  # abstract syntax not supported; accepted
    connection.send(struct.pack(">BBL", A_RELEASE_RQ, 0, 4) + bytes(4))
    assert connection.read_pdu(10) is not None
    connection.close()
    assert "Traceback" not in node.logs()


def test_an_even_presentation_context_id_is_aborted(node: Node) -> None:
    """PS3.8 9.3.2.2: presentation context IDs are odd. pynetdicom decodes an even one but refuses it when it builds
    the request's primitive, which ended the association thread and left the requester waiting."""
    pdu = bytearray(associate_rq(node.ae_title))
    item = pdu.index(b"\x20\x00", 6 + 68)
    pdu[item + 4] = 2
    connection = RawConnection(node.dicom_port)
    connection.send(bytes(pdu))
    answer = connection.read_pdu(10)
    assert answer is not None and answer[0] in (A_ASSOCIATE_RJ, A_ABORT)
    assert connection.closed_by_node(10)
    assert "Traceback" not in node.logs()


@pytest.mark.parametrize("command", [b"\xde\xad\xbe\xef" * 8, b"", b"\x00\x00\x00\x00\x04\x00\x00\x00\xff\xff"],
                         ids=["garbage", "empty", "bad-group-length"])
def test_a_corrupt_dimse_command_is_answered_or_aborted(node: Node, command: bytes) -> None:
    connection = RawConnection(node.dicom_port)
    assert connection.associate(node.ae_title) == A_ASSOCIATE_AC
    connection.send(p_data(1, command=True, last=True, payload=command))
    answer = connection.read_pdu(10)
    assert answer is None or answer[0] in (A_ABORT, P_DATA_TF, A_RELEASE_RQ)
    connection.close()


def test_an_association_aborted_mid_dataset_stores_nothing(node: Node) -> None:
    dataset = make_image(CTImageStorage, rows=256, columns=256)
    encoded = encode_dataset(dataset, ExplicitVRLittleEndian)
    connection = RawConnection(node.dicom_port)
    assert connection.associate(node.ae_title, contexts=((CTImageStorage, ExplicitVRLittleEndian),)) == \
        A_ASSOCIATE_AC
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = CTImageStorage, dataset.SOPInstanceUID
    request.DataSet = BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    pdus = []
    for primitive in message.encode_msg(1, 16384):
        pdu = P_DATA_TF_PDU()
        pdu.from_primitive(primitive)
        pdus.append(bytes(pdu.encode()))
    assert len(pdus) > 3
    for pdu in pdus[: len(pdus) // 2]:  # the command and half of the dataset
        connection.send(pdu)
    connection.send(struct.pack(">BBL", A_ABORT, 0, 4) + b"\x00\x00\x00\x00")
    connection.close()
    time.sleep(1)
    objects = node.data_dir / "objects"
    assert not [path for path in objects.rglob("*") if dataset.SOPInstanceUID in path.name]
    assert not [path for path in objects.rglob("*") if path.is_file() and path.parent.name in ("tmp", ".tmp")]
    status = httpx.get(f"{node.api}/api/instances/{dataset.SOPInstanceUID}", timeout=10)
    assert status.status_code == 404


def test_a_deeply_nested_dataset_is_stored_then_dead_lettered_and_the_queue_keeps_flowing(node: Node) -> None:
    hostile = deeply_nested_dataset(5000)
    identity = identify(hostile, ExplicitVRLittleEndian)
    normal = make_image(CTImageStorage)
    before = node.status()
    with StoreClient(node.dicom_port) as client:
        assert send_raw_c_store(client.association, CTImageStorage, identity.sop_instance_uid, hostile) == 0x0000
        assert client.store(normal) == 0x0000
    wait_until(lambda: httpx.get(f"{node.api}/api/instances/{normal.SOPInstanceUID}", timeout=10).status_code == 200,
               60, "the instance sent after the nested one indexed")
    status = wait_until(lambda: (body := node.status())["queue"]["pending"] == 0 and body, 60, "an empty queue")
    indexed = httpx.get(f"{node.api}/api/instances/{identity.sop_instance_uid}", timeout=10).status_code == 200
    assert indexed or status["queue"]["dead_letter"] == before["queue"]["dead_letter"] + 1


def test_an_association_flood_is_limited_and_an_allowed_modality_still_stores(node: Node) -> None:
    # One PATCH is applied as a whole: once the marker AE title is refused, the limit is in force too.
    changed = httpx.patch(f"{node.api}/api/config", json={"max_associations": ASSOCIATION_LIMIT,
                                                          "blocked_calling_aets": ["MARKER"]}, timeout=10)
    assert changed.status_code == 200, changed.text
    wait_until(lambda: echoscu(node.dicom_port, node.ae_title, calling_aet="MARKER").returncode != 0, 10,
               "the PATCH in force")
    connections = [RawConnection(node.dicom_port) for _ in range(3 * ASSOCIATION_LIMIT)]
    try:
        answers = [connection.associate(node.ae_title) for connection in connections]
        assert answers.count(A_ASSOCIATE_AC) == ASSOCIATION_LIMIT
        assert answers.count(A_ASSOCIATE_RJ) == 2 * ASSOCIATION_LIMIT
    finally:
        for connection in connections:
            connection.close()
    wait_until(lambda: echoscu(node.dicom_port, node.ae_title).returncode == 0, 15, "a free association slot")
    restored = httpx.patch(f"{node.api}/api/config", json={"max_associations": 64, "blocked_calling_aets": []},
                           timeout=10)
    assert restored.status_code == 200


def test_sigterm_stops_the_node_cleanly_while_hostile_connections_hang(tmp_path: Path) -> None:
    node = Node(tmp_path, {"PACS_SHUTDOWN_GRACE_SECONDS": "2"})
    serve = node.service("serve")
    try:
        node.wait_ready()
        mid_pdu = RawConnection(node.dicom_port)
        mid_pdu.send(associate_rq(node.ae_title)[:40])
        aborted = RawConnection(node.dicom_port)
        aborted.send(b"\x09\x00\x00\x00\x00\x04abcd")
        established = RawConnection(node.dicom_port)
        assert established.associate(node.ae_title) == A_ASSOCIATE_AC
        started = time.monotonic()
        assert serve.stop(timeout=30) == 0
        assert time.monotonic() - started < 15  # DESIGN: within 15 s (2 s of grace, then every connection dropped)
        assert "child_killed" not in node.logs()
    finally:
        node.stop()


def test_a_file_whose_preamble_carries_an_executable_header_is_stored_with_a_zeroed_preamble(node: Node) -> None:
    dataset = with_file_meta(make_image(CTImageStorage), ExplicitVRLittleEndian)
    dataset.preamble = b"MZ\x90\x00" + b"\xcc" * 124  # a Windows executable's header, as in DICOM/PE polyglots
    DICOMwebClient(url=f"{node.api}/dicomweb").store_instances([dataset])
    url = (f"{node.api}/dicomweb/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
           f"/instances/{dataset.SOPInstanceUID}")
    accept = {"Accept": 'multipart/related; type="application/dicom"'}
    stored = wait_until(lambda: (answer := httpx.get(url, headers=accept, timeout=30)).status_code == 200 and answer,
                        60, "the stored instance, once indexed")
    part10 = stored.content[stored.content.index(b"\r\n\r\n") + 4:]
    assert part10[:128] == b"\0" * 128 and part10[128:132] == b"DICM"
