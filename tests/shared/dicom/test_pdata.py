"""P-DATA-TF bodies split into their PDV items, or refused as malformed."""

from __future__ import annotations

import struct

import pytest

from shared.dicom.pdata import MalformedPData, fragments, p_data_tf


def item(context_id: int, control: int, payload: bytes) -> bytes:
    return struct.pack(">LBB", len(payload) + 2, context_id, control) + payload


def test_every_item_is_read_in_order_with_its_context_and_control() -> None:
    body = item(1, 0x03, b"command") + item(1, 0x00, b"data 1") + item(1, 0x02, b"data 2")
    read = fragments(body)
    assert [(f.context_id, f.is_command, f.is_last, bytes(f.data)) for f in read] == [
        (1, True, True, b"command"), (1, False, False, b"data 1"), (1, False, True, b"data 2")]
    assert b"".join(bytes(f.item) for f in read) == body


def test_items_are_handed_on_as_a_pdu_unchanged() -> None:
    items = [item(3, 0x01, b"a"), item(3, 0x03, b"bc")]
    assert p_data_tf(items) == b"\x04\x00" + struct.pack(">L", 15) + b"".join(items)


@pytest.mark.parametrize("body", [
    b"",  # no item
    b"\x00\x00\x00",  # an item header cut short
    struct.pack(">LBB", 1, 1, 3),  # an item length below the context ID and control header
    struct.pack(">LBB", 50, 1, 3) + b"short",  # an item longer than the PDU
    item(1, 0x07, b"x"),  # reserved control bits
])
def test_a_malformed_body_is_refused(body: bytes) -> None:
    with pytest.raises(MalformedPData):
        fragments(body)
