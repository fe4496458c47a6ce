"""An A-ASSOCIATE-RQ is turned into its primitive where it is decoded (a failure there is an invalid PDU), and the
state machine is handed that primitive instead of building it a second time."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ

from services.scp.dimse_guard import guard_association_requests
from tests.raw_dicom import storescu_like_associate_rq


def guarded_decoder() -> Any:
    def decode(bytestream: bytearray) -> tuple[A_ASSOCIATE_RQ, str]:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(bytes(bytestream))
        return pdu, "Evt6"

    assoc = SimpleNamespace(dul=SimpleNamespace(_decode_pdu=decode))
    guard_association_requests(assoc)
    return assoc.dul._decode_pdu


def test_the_state_machine_gets_the_primitive_built_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[Any] = []
    to_primitive = A_ASSOCIATE_RQ.to_primitive
    monkeypatch.setattr(A_ASSOCIATE_RQ, "to_primitive", lambda pdu: built.append(to_primitive(pdu)) or built[-1])
    pdu, event = guarded_decoder()(bytearray(storescu_like_associate_rq("PACS", 3)))
    assert event == "Evt6" and len(built) == 1
    handed_over = pdu.to_primitive()  # what the state machine does (AE-6)
    assert handed_over is built[0] and len(built) == 1
    assert [context.context_id for context in handed_over.presentation_context_definition_list] == [1, 3, 5]
    assert pdu.to_primitive() is not handed_over and len(built) == 2  # any later call builds anew


def test_a_request_its_primitive_refuses_fails_where_it_is_decoded() -> None:
    encoded = bytearray(storescu_like_associate_rq("PACS", 1))
    application_context = 74  # after the PDU header, version, AE titles and reserved bytes (PS3.8 9.3.2)
    first_context = application_context + 4 + int.from_bytes(encoded[application_context + 2:application_context + 4])
    assert encoded[first_context] == 0x20  # a presentation context item; its ID follows its 4-byte header
    encoded[first_context + 4] = 2  # an even ID: pynetdicom refuses it when it builds the primitive
    with pytest.raises(ValueError):
        guarded_decoder()(encoded)
