"""pynetdicom's UID conversions remembered per value (shared/dicom/uid_memo.py): the same conformant UID object for
the same value, and everything else still checked by pynetdicom every time, with its errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext

from shared.dicom import uid_memo
from tests.raw_dicom import storescu_like_associate_rq


@pytest.fixture(autouse=True)
def memo() -> Iterator[None]:
    uid_memo.install()
    yield


def decoded(encoded: bytes) -> A_ASSOCIATE:
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(encoded)
    return pdu.to_primitive()


def contexts_of(primitive: A_ASSOCIATE) -> list[tuple[int, str, list[str]]]:
    return [(context.context_id, context.abstract_syntax, context.transfer_syntax)
            for context in primitive.presentation_context_definition_list]


def test_a_request_decodes_to_what_pynetdicom_alone_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = storescu_like_associate_rq("PACS", 128)
    with monkeypatch.context() as without_memo:
        for module in uid_memo._MODULES_USING_SET_UID:
            without_memo.setattr(module, "set_uid", uid_memo._pynetdicom_set_uid)
        without_memo.setattr(PresentationContext, "add_transfer_syntax", uid_memo._pynetdicom_add_transfer_syntax)
        expected = contexts_of(decoded(encoded))
    assert len(expected) > 100
    assert contexts_of(decoded(encoded)) == expected
    assert contexts_of(decoded(encoded)) == expected  # the second time from what was remembered


def test_a_conformant_uid_is_converted_once() -> None:
    first = uid_memo.set_uid(CTImageStorage.encode(), "abstract_syntax")
    assert first == CTImageStorage and uid_memo.set_uid(CTImageStorage.encode(), "abstract_syntax") is first


def test_an_invalid_uid_is_refused_every_time() -> None:
    too_long = "1." + "2" * 70
    for _ in range(2):
        with pytest.raises(ValueError):
            uid_memo.set_uid(too_long, "abstract_syntax")


def test_an_empty_uid_where_none_may_be_empty_is_refused_every_time() -> None:
    for _ in range(2):
        with pytest.raises(ValueError):
            uid_memo.set_uid("", "abstract_syntax", allow_empty=False)


def test_a_non_conformant_uid_is_warned_about_every_time(caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(2):
        assert uid_memo.set_uid("1.02.3", "abstract_syntax") == "1.02.3"
    assert sum("Non-conformant" in record.getMessage() for record in caplog.records) == 2


def test_a_transfer_syntax_is_not_added_twice_and_a_strange_one_is_still_warned_about(
        caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(2):
        context = PresentationContext()
        for syntax in (ExplicitVRLittleEndian, ExplicitVRLittleEndian, CTImageStorage):  # a SOP class, not a syntax
            context.add_transfer_syntax(syntax)
        assert context.transfer_syntax == [ExplicitVRLittleEndian, CTImageStorage]
    assert sum("not a transfer syntax" in record.getMessage() for record in caplog.records) == 2
