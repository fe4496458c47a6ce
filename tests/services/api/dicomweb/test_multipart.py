"""multipart/related bodies and Accept negotiation of DICOMweb (pure functions, no node)."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from services.api.dicomweb.multipart import (
    MalformedMultipart,
    Part,
    locate_parts,
    parse_accept,
    parse_media_type,
    write_multipart,
)
from services.api.dicomweb.negotiation import NotAcceptable, plan_frames, plan_instances


def test_written_parts_are_located_again_byte_for_byte() -> None:
    payloads = [b"first", b"\r\n--not-the-boundary\r\n", b"", bytes(range(256)) * 10]
    body = b"".join(write_multipart((Part("application/dicom", [p[:3], p[3:]]) for p in payloads), "b0undary"))
    parts = locate_parts(body, "b0undary")
    assert [body[part.start:part.end] for part in parts] == payloads
    assert all(part.content_type.type == "application/dicom" for part in parts)


def test_a_body_with_a_leading_crlf_and_no_final_crlf_is_read_as_dicomweb_client_writes_it() -> None:
    body = b"\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\nAAA\r\n--xyz\r\nContent-Type: application/dicom\r\n\r\nBB\r\n--xyz--"
    assert [body[p.start:p.end] for p in locate_parts(body, "xyz")] == [b"AAA", b"BB"]


@pytest.mark.parametrize("body", [b"no delimiter at all", b"--xyz\r\nContent-Type: a/b\r\n\r\nunterminated part"])
def test_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedMultipart):
        locate_parts(body, "xyz")


def test_media_type_parameters_are_unquoted_and_case_insensitive() -> None:
    media = parse_media_type('Multipart/Related; TYPE="application/dicom"; boundary="a;b"; transfer-syntax=*')
    assert media.type == "multipart/related"
    assert media.params == {"type": "application/dicom", "boundary": "a;b", "transfer-syntax": "*"}


def test_accept_ranges_are_ordered_by_quality_and_q0_is_dropped() -> None:
    accept = parse_accept('application/json;q=0.5, multipart/related; type="application/dicom", text/html;q=0')
    assert [media.type for media in accept] == ["multipart/related", "application/json"]
    assert [media.type for media in parse_accept(None)] == ["*/*"]


def test_instances_are_sent_as_stored_unless_a_syntax_is_named() -> None:
    as_stored = plan_instances(parse_accept('multipart/related; type="application/dicom"'), False)
    assert as_stored.multipart and as_stored.syntaxes is None and as_stored.sends_as_stored(RLELossless)
    anything = plan_instances(parse_accept("*/*"), False)
    assert anything.syntaxes is None
    explicit = plan_instances(parse_accept(
        f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'), False)
    assert explicit.sends_as_stored(ExplicitVRLittleEndian) and not explicit.sends_as_stored(RLELossless)
    assert explicit.can_send(RLELossless)  # decoded to Explicit VR Little Endian
    jpeg_only = plan_instances(parse_accept(
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEGBaseline8Bit}'), False)
    assert not jpeg_only.can_send(RLELossless)


def test_a_bare_application_dicom_is_accepted_for_one_instance_only() -> None:
    single = plan_instances(parse_accept("application/dicom"), True)
    assert not single.multipart
    with pytest.raises(NotAcceptable):
        plan_instances(parse_accept("application/dicom"), False)
    with pytest.raises(NotAcceptable):
        plan_instances(parse_accept("application/zip"), False)


def test_frames_negotiation() -> None:
    def plan(accept: str, syntax: str) -> tuple[bool, str]:
        chosen = plan_frames(parse_accept(accept), syntax)
        return chosen.decode, chosen.content_type

    any_type = 'multipart/related; type="*/*"'
    assert plan(any_type, JPEGBaseline8Bit) == (False, f"image/jpeg; transfer-syntax={JPEGBaseline8Bit}")
    assert plan(any_type, ExplicitVRLittleEndian) == (
        False, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    ohif = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    assert plan(ohif, RLELossless) == (False, f"application/octet-stream; transfer-syntax={RLELossless}")
    uncompressed = "multipart/related; type=application/octet-stream"
    assert plan(uncompressed, RLELossless) == (
        True, f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}")
    with pytest.raises(NotAcceptable):
        plan('multipart/related; type="image/jp2"', JPEGBaseline8Bit)
    with pytest.raises(NotAcceptable):
        plan("image/jpeg", JPEGBaseline8Bit)
