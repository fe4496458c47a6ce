"""UIDs from the wire: digits and dots, at most 64 characters; nothing else reaches a key or path."""

from __future__ import annotations

import pytest

from shared.uids import InvalidUID, is_strict_uid, is_valid_uid, require_uid

VALID = ["1", "0", "1.2.840.10008.5.1.4.1.1.2", "2.25." + "9" * 59, "1.2.0.3"]
INVALID = ["../../x", "1.2." + "3" * 61, "", "1.2.a", "1.2.3.", ".1.2", "1..2", "1.2 3", "1/2", "1\\2",
           "１.２", None, 12345]


@pytest.mark.parametrize("uid", VALID)
def test_digits_and_dots_up_to_64_characters_are_valid(uid: str) -> None:
    assert is_valid_uid(uid) and is_strict_uid(uid)


def test_64_characters_is_the_limit() -> None:
    assert is_valid_uid("1." + "2" * 62)
    assert not is_valid_uid("1." + "2" * 63)


@pytest.mark.parametrize("value", INVALID)
def test_anything_else_is_invalid(value: object) -> None:
    assert not is_valid_uid(value)
    assert not is_strict_uid(value)


def test_leading_zeros_are_accepted_but_not_strict() -> None:
    assert is_valid_uid("1.2.03.4")
    assert not is_strict_uid("1.2.03.4")


def test_require_uid_returns_the_uid_without_dicom_padding() -> None:
    assert require_uid("1.2.3\x00", "SOP Instance UID") == "1.2.3"
    assert require_uid("1.2.3 ", "SOP Instance UID") == "1.2.3"
    assert require_uid(b"1.2.3\x00", "SOP Instance UID") == "1.2.3"


@pytest.mark.parametrize("value", ["../../etc/passwd", "1.2.SECRET-PATIENT-NAME", "x" * 100, ""])
def test_require_uid_names_what_is_wrong_but_never_echoes_the_value(value: str) -> None:
    with pytest.raises(InvalidUID) as raised:
        require_uid(value, "Study Instance UID")
    message = str(raised.value)
    assert "Study Instance UID" in message
    if value:
        assert value not in message
    assert "passwd" not in message and "SECRET" not in message


def test_require_uid_refuses_a_missing_value() -> None:
    with pytest.raises(InvalidUID):
        require_uid(None, "Series Instance UID")


def test_invalid_uid_is_a_value_error() -> None:
    assert issubclass(InvalidUID, ValueError)
