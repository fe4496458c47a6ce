"""Property-based fuzzing (hypothesis, bounded) of the parsing a hostile peer reaches: the ingest identification of
a received dataset and the indexer's extraction. Whatever the bytes, each answers with its own refusal (which the
SCP maps to a DIMSE status, the indexer to a dead letter) and never with another exception or a hang.

A case that once failed is kept as an @example (the regression test) so that it runs on every CI run.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from services.indexer.extract import UnindexableObject, extract
from shared.dicom.part10 import encode_part10
from shared.ingest_identify import UnreadableDataset, identify
from shared.uids import InvalidUID
from tests.factory import deeply_nested_dataset, encode_dataset, make_image

SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]
BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


SEEDS = {syntax: encode_dataset(make_image(), syntax) for syntax in SYNTAXES}


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid encoded dataset with bytes overwritten, cut, or inserted."""
    syntax = draw(st.sampled_from(SYNTAXES))
    data = bytearray(SEEDS[syntax])
    for _ in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(["overwrite", "truncate", "insert"]))
        position = draw(st.integers(0, max(0, len(data) - 1)))
        if operation == "overwrite":
            data[position:position + 4] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "truncate":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data), syntax


def _identify_or_refuse(data: bytes, syntax: str) -> None:
    try:
        identity = identify(data, syntax)
    except (UnreadableDataset, InvalidUID):
        return
    assert identity.sop_instance_uid


@BOUNDED
@given(st.binary(max_size=2048), st.sampled_from(SYNTAXES))
@example(b"\xff\xff\xff\xff" * 4, ExplicitVRLittleEndian)  # undefined lengths everywhere
@example(b"\x08\x00\x18\x00UI\xff\xff", ExplicitVRLittleEndian)  # an element longer than the data
def test_identify_refuses_random_bytes_cleanly(data: bytes, syntax: str) -> None:
    _identify_or_refuse(data, syntax)


@BOUNDED
@given(mutated())
def test_identify_refuses_damaged_datasets_cleanly(case: tuple[bytes, str]) -> None:
    _identify_or_refuse(*case)


def test_a_deflate_bomb_is_refused_without_inflating_it_whole() -> None:
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"\x00" * (256 << 20)) + compressor.flush()  # 256 MiB of zeros in ~250 KB
    assert len(bomb) < 1 << 20
    _identify_or_refuse(bomb, DeflatedExplicitVRLittleEndian)


def _extract_or_refuse(data: bytes, syntax: str) -> None:
    part10 = encode_part10(data, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", syntax)
    try:
        record = extract(part10)
    except UnindexableObject:
        return
    assert record.sop_instance_uid


@BOUNDED
@given(mutated())
def test_the_indexer_refuses_damaged_objects_cleanly(case: tuple[bytes, str]) -> None:
    _extract_or_refuse(*case)


def test_deeply_nested_sequences_are_indexed_or_dead_lettered_never_a_crash() -> None:
    for depth in (50, 5000):
        data = deeply_nested_dataset(depth)
        assert identify(data, ExplicitVRLittleEndian).sop_instance_uid
        _extract_or_refuse(data, ExplicitVRLittleEndian)
