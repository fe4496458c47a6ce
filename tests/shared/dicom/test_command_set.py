"""Command sets decoded without pydicom: every element's raw value, or a refusal for anything not plain."""

from __future__ import annotations

import struct

import pytest

from shared.dicom import command_set
from shared.dicom.store_request import StoreRequest, encode_command


def test_a_c_store_request_reads_back_as_encoded() -> None:
    elements = command_set.decode(encode_command(StoreRequest("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 7)))
    assert command_set.unsigned_short(elements, command_set.COMMAND_FIELD) == 0x0001
    assert command_set.unsigned_short(elements, command_set.MESSAGE_ID) == 7
    assert command_set.unsigned_short(elements, command_set.PRIORITY) == 0
    assert command_set.text(elements, command_set.AFFECTED_SOP_CLASS_UID) == "1.2.840.10008.5.1.4.1.1.2"
    assert command_set.text(elements, command_set.AFFECTED_SOP_INSTANCE_UID) == "1.2.3.4"
    assert command_set.unsigned_short(elements, command_set.MOVE_ORIGINATOR_MESSAGE_ID) is None


def element(number: int, value: bytes, group: int = 0x0000) -> bytes:
    return struct.pack("<HHL", group, number, len(value)) + value


@pytest.mark.parametrize("encoded", [
    element(0x0100, b"\x01\x00") + element(0x0002, b"1.2\x00"),  # not in ascending order
    element(0x0100, b"\x01\x00", group=0x0008),  # not group 0000
    element(0x0100, b"\x01\x00")[:-1],  # a value cut short
    b"\x00\x00\x00",  # a header cut short
])
def test_anything_but_an_ascending_run_of_group_0000_elements_is_refused(encoded: bytes) -> None:
    with pytest.raises(command_set.MalformedCommand):
        command_set.decode(encoded)


def test_values_of_the_wrong_shape_are_refused() -> None:
    elements = command_set.decode(element(0x0002, b"1.2\xff") + element(0x0100, b"\x01\x00\x00\x00"))
    with pytest.raises(command_set.MalformedCommand):
        command_set.unsigned_short(elements, command_set.COMMAND_FIELD)
    with pytest.raises(command_set.MalformedCommand):
        command_set.text(elements, command_set.AFFECTED_SOP_CLASS_UID)
