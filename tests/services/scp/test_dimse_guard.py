"""An A-ASSOCIATE-RQ is turned into its primitive where it is decoded (a failure there is an invalid PDU), the
state machine is handed that primitive instead of building it a second time, and a request received before in the
same bytes is not decoded again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ

from services.scp import dimse_guard
from services.scp.dimse_guard import guard_association_requests
from tests.raw_dicom import storescu_like_associate_rq


def guarded_decoder() -> Any:
    def decode(bytestream: bytearray) -> tuple[A_ASSOCIATE_RQ, str]:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(bytes(bytestream))
        return pdu, "Evt6"

    assoc = SimpleNamespace(dul=SimpleNamespace(_decode_pdu=decode), get_handlers=lambda _event: [])
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


def test_a_request_received_before_in_the_same_bytes_is_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    decodings: list[bytes] = []
    decode = A_ASSOCIATE_RQ.decode
    monkeypatch.setattr(A_ASSOCIATE_RQ, "decode",
                        lambda pdu, encoded: decodings.append(encoded) or decode(pdu, encoded))
    monkeypatch.setattr(dimse_guard, "_decoded_requests", dimse_guard._DecodedRequests())
    request = storescu_like_associate_rq("PACS", 5)
    first, _ = guarded_decoder()(bytearray(request))
    again, event = guarded_decoder()(bytearray(request))
    assert len(decodings) == 1 and event == "Evt6" and again is not first
    assert contexts_of(again.to_primitive()) == contexts_of(first.to_primitive())
    assert again.to_primitive() is not first.to_primitive()  # each association builds its own primitive
    other, _ = guarded_decoder()(bytearray(storescu_like_associate_rq("OTHER", 5)))
    assert len(decodings) == 2 and other.called_ae_title == "OTHER"


def contexts_of(primitive: Any) -> list[tuple[int, str, list[str]]]:
    return [(context.context_id, context.abstract_syntax, context.transfer_syntax)
            for context in primitive.presentation_context_definition_list]
