"""Plain C-STOREs and C-ECHOs are served by the DUL thread itself; every other message reaches pynetdicom as it
arrived."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind, Verification

from services.scp.direct_store import DirectStore, DirectStoreServices, EchoRequestReceived, StoreRequestReceived
from services.scp.spooling import ReceivedSpool
from shared.dicom import command_set
from shared.dicom.pdata import fragments
from shared.dicom.pdu_reading import ProtocolViolation
from shared.dicom.store_request import StoreRequest, encode_command
from tests.factory import encode_dataset, make_image, with_file_meta
from tests.node import Node, wait_until
from tests.raw_dicom import A_ABORT, P_DATA_TF, RawConnection

ECHO_COMMAND = bytes.fromhex(
    "00000000 04000000 38000000"
    "00000200 12000000 312e322e3834302e31303030382e312e3100"
    "00000001 02000000 3000"
    "00001001 02000000 0100"
    "00000008 02000000 0101"
)
FIND_COMMAND_FIELD = 0x0020


def item(context_id: int, command: bool, last: bool, payload: bytes) -> bytes:
    control = (0x01 if command else 0x00) | (0x02 if last else 0x00)
    return struct.pack(">LBB", len(payload) + 2, context_id, control) + payload


def store_command(sop_instance_uid: str = "1.2.3.4", message_id: int = 1, sop_class: str = CTImageStorage) -> bytes:
    return encode_command(StoreRequest(sop_class, sop_instance_uid, message_id))


def command(elements: dict[int, bytes]) -> bytes:
    body = b"".join(struct.pack("<HHL", 0, number, len(value)) + value for number, value in sorted(elements.items()))
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


def without_element(encoded: bytes, gone: int) -> bytes:
    elements = command_set.decode(encoded)
    return command({number: value for number, value in elements.items()
                    if number not in (gone, command_set.GROUP_LENGTH)})


class Recorder:
    """The listener's side of the direct path: what was stored, what was answered."""

    def __init__(self, allowed: bool = True) -> None:
        self.stored: list[tuple[str, bytes]] = []
        self.answers: list[tuple[int, Any]] = []
        self.allowed = allowed
        self.happened: list[str] = []  # answers and the work the store left for after them, in order
        self.answer_fails = False

    def store(self, _assoc: Any, command: Any, data_set: bytes, after_answer: list[Any]) -> int:
        self.stored.append((command.sop_instance_uid, data_set))
        after_answer.append(lambda: self.happened.append(f"marker and event of {command.sop_instance_uid}"))
        return 0x0000

    def send_store_response(self, context_id: int, response: Any) -> None:
        self.happened.append(f"answer {response.status:#06x}")
        if self.answer_fails:
            raise OSError("connection reset")
        self.answers.append((context_id, response.status))

    def send_echo_response(self, context_id: int, response: Any) -> None:
        self.answers.append((context_id, response.status))

    def send_msg(self, response: Any, context_id: int) -> None:
        self.answers.append((context_id, response.Status))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def direct_path(recorder: Recorder, tmp_path: Path) -> DirectStore:
    contexts = {1: SimpleNamespace(abstract_syntax=CTImageStorage, transfer_syntax=[ExplicitVRLittleEndian]),
                3: SimpleNamespace(abstract_syntax=Verification, transfer_syntax=[ExplicitVRLittleEndian])}
    assoc = SimpleNamespace(_accepted_cx=contexts, is_established=True,
                            acceptor=SimpleNamespace(accepted_common_extended={}),
                            get_handlers=lambda _event: [],  # no notification handlers bound
                            requestor=SimpleNamespace(address="127.0.0.1"))
    services = DirectStoreServices(recorder, lambda *_: recorder.allowed, lambda _: 0x0124,  # type: ignore[arg-type]
                                   ReceivedSpool(tmp_path))
    return DirectStore(assoc, services, recorder)  # type: ignore[arg-type]


def items_of(pdu: bytes | None) -> list[bytes]:
    assert pdu is not None and pdu[0] == P_DATA_TF
    return [bytes(fragment.item) for fragment in fragments(pdu[6:])]


def test_a_store_is_answered_and_nothing_reaches_pynetdicom(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    assert direct.on_p_data(bytearray(item(1, True, True, store_command()))) is None
    assert direct.on_p_data(bytearray(item(1, False, False, b"half ") + item(1, False, True, b"two"))) is None
    assert recorder.stored == [("1.2.3.4", b"half two")]
    assert recorder.answers == [(1, 0x0000)]


def test_what_a_store_leaves_for_after_its_answer_runs_after_the_answer(recorder: Recorder,
                                                                         tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    direct.on_p_data(bytearray(item(1, True, True, store_command()) + item(1, False, True, b"data")))
    assert recorder.happened == ["answer 0x0000", "marker and event of 1.2.3.4"]


def test_what_a_store_leaves_for_after_its_answer_runs_when_the_answer_cannot_be_sent(recorder: Recorder,
                                                                                      tmp_path: Path) -> None:
    recorder.answer_fails = True
    direct = direct_path(recorder, tmp_path)
    with pytest.raises(OSError):
        direct.on_p_data(bytearray(item(1, True, True, store_command()) + item(1, False, True, b"data")))
    assert recorder.happened == ["answer 0x0000", "marker and event of 1.2.3.4"]


def test_command_and_data_set_may_share_one_pdu(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    command = store_command()
    body = item(1, True, False, command[:10]) + item(1, True, True, command[10:]) + item(1, False, True, b"data")
    assert direct.on_p_data(bytearray(body)) is None
    assert recorder.stored == [("1.2.3.4", b"data")]


def test_an_echo_is_answered_and_nothing_reaches_pynetdicom(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    assert direct.on_p_data(bytearray(item(3, True, True, ECHO_COMMAND))) is None
    assert recorder.answers == [(3, 0x0000)]
    store = item(1, True, True, store_command())
    assert direct.on_p_data(bytearray(store + item(1, False, True, b"x"))) is None  # the path is still ours
    assert recorder.stored == [("1.2.3.4", b"x")]


def test_an_echo_on_a_storage_context_reaches_pynetdicom_as_received(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    echo = item(1, True, True, ECHO_COMMAND)
    assert items_of(direct.on_p_data(bytearray(echo))) == [echo]
    assert recorder.answers == []


def test_a_caller_not_allowed_to_echo_is_refused_with_0124(tmp_path: Path) -> None:
    recorder = Recorder(allowed=False)
    direct = direct_path(recorder, tmp_path)
    assert direct.on_p_data(bytearray(item(3, True, True, ECHO_COMMAND))) is None
    assert recorder.answers == [(3, 0x0124)]


def test_a_message_with_a_data_set_passes_whole_until_its_last_fragment(recorder: Recorder,
                                                                         tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    find = command({command_set.AFFECTED_SOP_CLASS_UID: b"1.2.840.10008.5.1.4.1.2.2.1\x00",
                    command_set.COMMAND_FIELD: struct.pack("<H", FIND_COMMAND_FIELD),
                    command_set.MESSAGE_ID: b"\x01\x00", command_set.PRIORITY: b"\x00\x00",
                    command_set.COMMAND_DATA_SET_TYPE: b"\x00\x00"})  # a C-FIND-RQ with its identifier
    pieces = [item(1, True, True, find), item(1, False, False, b"id 1"), item(1, False, True, b"id 2")]
    assert items_of(direct.on_p_data(bytearray(pieces[0]))) == [pieces[0]]
    assert items_of(direct.on_p_data(bytearray(pieces[1] + pieces[2]))) == pieces[1:]
    assert direct.on_p_data(bytearray(item(1, True, True, store_command()) + item(1, False, True, b"y"))) is None
    assert recorder.stored == [("1.2.3.4", b"y")]


@pytest.mark.parametrize("command", [
    store_command(sop_class="1.2.840.10008.5.1.4.1.1.4"),  # an MR store on the CT context
    without_element(store_command(), command_set.PRIORITY),
    without_element(store_command(), command_set.MESSAGE_ID),
    store_command(sop_instance_uid="1.2.x"),
    store_command() + struct.pack("<HHL", 0, 0x1030, 6) + b"MOVER ",  # a C-MOVE sub-operation
], ids=["other SOP class", "no priority", "no message id", "invalid instance UID", "move originator"])
def test_a_store_that_is_not_plain_is_left_to_pynetdicom(recorder: Recorder, tmp_path: Path,
                                                         command: bytes) -> None:
    direct = direct_path(recorder, tmp_path)
    pieces = [item(1, True, True, command), item(1, False, True, b"data")]
    assert items_of(direct.on_p_data(bytearray(b"".join(pieces)))) == pieces
    assert recorder.stored == []


def test_after_a_malformed_command_pynetdicom_has_the_association(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    garbage = item(1, True, True, b"\x00\x00\x00\x01\x02")
    assert items_of(direct.on_p_data(bytearray(garbage))) == [garbage]
    store = [item(1, True, True, store_command()), item(1, False, True, b"z")]
    assert items_of(direct.on_p_data(bytearray(b"".join(store)))) == store
    assert direct.disabled and recorder.stored == []


def test_a_data_set_fragment_without_a_command_is_left_to_pynetdicom(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    stray = item(1, False, True, b"data")
    assert items_of(direct.on_p_data(bytearray(stray))) == [stray]
    assert direct.disabled


def test_another_message_inside_a_data_set_is_a_protocol_violation(recorder: Recorder, tmp_path: Path) -> None:
    direct = direct_path(recorder, tmp_path)
    direct.on_p_data(bytearray(item(1, True, True, store_command()) + item(1, False, False, b"part")))
    with pytest.raises(ProtocolViolation):
        direct.on_p_data(bytearray(item(3, True, True, ECHO_COMMAND)))
    assert recorder.stored == [] and recorder.answers == []


def test_a_caller_not_allowed_to_store_is_refused_with_0124(tmp_path: Path) -> None:
    recorder = Recorder(allowed=False)
    direct = direct_path(recorder, tmp_path)
    direct.on_p_data(bytearray(item(1, True, True, store_command(message_id=9)) + item(1, False, True, b"d")))
    assert recorder.stored == [] and recorder.answers == [(1, 0x0124)]


def test_the_audit_trail_is_told_of_each_request(recorder: Recorder, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[StoreRequestReceived | EchoRequestReceived] = []
    monkeypatch.setattr("services.scp.direct_store.evt.trigger",
                        lambda _assoc, _event, values: seen.append(values["message"]))
    direct = direct_path(recorder, tmp_path)
    direct.on_p_data(bytearray(item(1, True, True, store_command(message_id=5)) + item(1, False, True, b"abcd")))
    direct.on_p_data(bytearray(item(3, True, True, ECHO_COMMAND)))
    assert [(m.kind, m.message_id, m.sop_class_uid, m.data_set_size) for m in seen] == [
        ("c_store", 5, CTImageStorage, 4), ("c_echo", 1, Verification, 0)]


# ---- over the network, against a running node ------------------------------------------------------------------

@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("direct"))
    node.service("serve")
    with node.running():
        yield node


def raw_association(node: Node) -> RawConnection:
    connection = RawConnection(node.dicom_port)
    answer = connection.associate(node.ae_title, calling_aet="RAWSCU",
                                  contexts=((CTImageStorage, ExplicitVRLittleEndian),))
    assert answer == 0x02  # A-ASSOCIATE-AC
    return connection


def status_of(response: tuple[int, bytes] | None) -> int:
    assert response is not None and response[0] == P_DATA_TF
    (fragment,) = fragments(response[1])
    return command_set.unsigned_short(command_set.decode(bytes(fragment.data)), 0x0900)  # type: ignore[return-value]


def test_a_data_set_in_many_small_pdus_is_stored_as_sent(node: Node) -> None:
    dataset = make_image()
    encoded = encode_dataset(dataset, ExplicitVRLittleEndian)
    connection = raw_association(node)
    try:
        pdus = [item(1, True, True, store_command(dataset.SOPInstanceUID))]
        pdus += [item(1, False, start + 100 >= len(encoded), encoded[start:start + 100])
                 for start in range(0, len(encoded), 100)]
        for pdv in pdus:
            connection.send(b"\x04\x00" + struct.pack(">L", len(pdv)) + pdv)
        assert status_of(connection.read_pdu()) == 0x0000
    finally:
        connection.close()
    node.wait_indexed(1)
    stored = node.get(f"/api/instances/{dataset.SOPInstanceUID}").json()
    assert stored["size"] == stored["stored_size"]


def test_another_message_inside_a_data_set_aborts_and_stores_nothing(node: Node) -> None:
    dataset = make_image()
    encoded = encode_dataset(dataset, ExplicitVRLittleEndian)
    connection = raw_association(node)
    try:
        for pdv in (item(1, True, True, store_command(dataset.SOPInstanceUID)), item(1, False, False, encoded[:50]),
                    item(1, True, True, store_command("1.2.3.4.5"))):
            connection.send(b"\x04\x00" + struct.pack(">L", len(pdv)) + pdv)
        answer = connection.read_pdu()
        assert answer is not None and answer[0] == A_ABORT
    finally:
        connection.close()
    assert node.get(f"/api/instances/{dataset.SOPInstanceUID}").status_code == 404
    with_pynetdicom = AE(ae_title="AFTER")
    with_pynetdicom.add_requested_context(Verification)
    assoc = with_pynetdicom.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_stores_echoes_and_finds_share_an_association(node: Node) -> None:
    scu = AE(ae_title="MIXED")
    scu.add_requested_context(Verification)
    scu.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    scu.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = scu.associate("127.0.0.1", node.dicom_port, ae_title=node.ae_title)
    assert assoc.is_established
    images = [with_file_meta(make_image(), ExplicitVRLittleEndian) for _ in range(3)]
    statuses = []
    try:
        statuses.append(int(assoc.send_c_store(images[0]).Status))
        statuses.append(int(assoc.send_c_echo().Status))
        statuses.append(int(assoc.send_c_store(images[1]).Status))
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        finds = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        statuses.append([int(status.Status) for status, _ in finds][-1])
        statuses.append(int(assoc.send_c_store(images[2]).Status))
    finally:
        assoc.release()
    assert statuses == [0x0000, 0x0000, 0x0000, 0x0124, 0x0000]  # an unregistered caller may not query
    for image in images:
        wait_until(lambda: node.get(f"/api/instances/{image.SOPInstanceUID}").status_code == 200, 30,
                   "the instance indexed")
