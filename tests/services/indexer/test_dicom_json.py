"""The lean reader gives what pydicom gives: the same DICOM JSON attributes (``Dataset.to_json_dict``), the same
text of them (``json.dumps``, what the index stores) and the same record columns (``Dataset.get``) for generated
data sets of every VR, in every uncompressed transfer syntax and in the character sets sites use; what it leaves to
pydicom still ends in the same record."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.charset import convert_encodings, encode_string
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from services.indexer.extract import extract
from services.indexer.lean_errors import LeftToPydicom
from services.indexer.lean_record import read_lean
from services.indexer.pydicom_record import read_with_pydicom
from tests.services.indexer.encoded_data_sets import SYNTAXES, Element, Item, identifying, part10_object, text

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOUNDED_DAMAGED = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Specific Character Set value (None: absent) -> characters its text is made of
ASCII = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "\\")
CHARACTER_SETS: dict[str | None, str] = {
    None: ASCII,
    "ISO_IR 100": ASCII + "ÄÖÜäöüßéèçñÅøÆ",
    "ISO_IR 126": ASCII + "ΑΒΓΔΕαβγδεληνικάώ",
    "ISO_IR 144": ASCII + "АБВГДабвгдЖжЯя",
    "\\ISO 2022 IR 87": ASCII + "山田太郎やまだたろう",
    "\\ISO 2022 IR 149": ASCII + "홍길동김철수",
    "GB18030": ASCII + "中文王小明脗乗",
    "ISO_IR 192": ASCII + "Müller山田홍길동Ελληνικά中文",
}

TAGS_BY_VR = {
    "AE": [0x00080054, 0x00400001], "AS": [0x00101010], "AT": [0x00209165, 0x00209167], "CS": [0x00080008, 0x00080064],
    "DA": [0x00080012, 0x00080021], "DS": [0x00180050, 0x00280030], "DT": [0x0008002A], "FD": [0x00081163],
    "FL": [0x0018605A], "IS": [0x00081160, 0x00200012], "LO": [0x00080070, 0x00102000], "LT": [0x00204000],
    "OB": [0x00420011], "OD": [0x00660022], "OF": [0x00640009], "OL": [0x00660040], "OV": [0x00720081],
    "OW": [0x00660103], "PN": [0x00081050, 0x0008009C], "SH": [0x00081010, 0x00181210], "SL": [0x00186020],
    "SS": [0x00189219], "ST": [0x00080081], "SV": [0x00720082], "TM": [0x00080013], "UC": [0x00189908],
    "UI": [0x00080058, 0x00200052], "UL": [0x00081161], "UR": [0x0008010E], "US": [0x00280010, 0x00189066],
    "UT": [0x0008030E], "UV": [0x0008040C],
}
SEQUENCE_TAGS = [0x00081115, 0x00081140, 0x00400275]
US_OR_SS_TAGS = [0x00280106, 0x00280107, 0x00280120, 0x00281101]  # after Pixel Representation; resolved by it
RECORD_TEXT_TAGS = {0x00100010: "PN", 0x00100020: "LO", 0x00080050: "SH", 0x00081030: "LO", 0x00080090: "PN",
                    0x00080060: "CS", 0x00080020: "DA", 0x00200011: "IS", 0x00200013: "IS"}
UNKNOWN_PUBLIC_TAG = 0x00089998  # no dictionary entry: Implicit VR strict reading refuses it
KNOWN_CREATOR = "SIEMENS CSA HEADER"  # (0029,xx08) CS, (0029,xx10) OB in pydicom's private dictionary
NUMBER_FORMATS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "UV": "Q", "SV": "q", "FL": "f", "FD": "d"}


def test_the_tag_tables_have_the_dictionary_vrs() -> None:
    for vr, tags in TAGS_BY_VR.items():
        assert all(dictionary_VR(tag) == vr for tag in tags), vr
    assert all(dictionary_VR(tag) == "SQ" for tag in SEQUENCE_TAGS)
    assert all(dictionary_VR(tag) == "US or SS" for tag in US_OR_SS_TAGS)
    assert private_dictionary_VR(0x00291008, KNOWN_CREATOR) == "CS"


def _encoded_text(draw: st.DrawFn, charset: str | None, max_size: int) -> bytes:
    value = draw(st.text(CHARACTER_SETS[charset], max_size=max_size))
    return encode_string(value, convert_encodings(charset or ""))


def _texts(draw: st.DrawFn, charset: str | None, max_size: int, person_name: bool = False) -> bytes:
    """One or more values in the character set, sometimes too long, sometimes bytes it may not decode."""
    if draw(st.integers(0, 15)) == 0:
        return draw(st.binary(max_size=24))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        groups = draw(st.integers(1, 4)) if person_name else 1
        parts.append(b"=".join(_encoded_text(draw, charset, max_size) for _ in range(groups)))
    value = b"\\".join(parts)
    return value + (b" " if len(value) % 2 and draw(st.booleans()) else b"")


def _numbers_text(draw: st.DrawFn, decimal: bool) -> bytes:
    def one() -> str:
        if decimal:
            return draw(st.sampled_from(["1.5", "-0.25", "1e3", " 2.0", "abc", "1.2.3", "1.23456789012345678", "",
                                         "nan", "+.5", "7"]))
        return draw(st.sampled_from(["12", "-7", " 3 ", "1.5", "1.0", "abc", "9999999999999", "", "+4", "0007"]))
    return "\\".join(one() for _ in range(draw(st.integers(1, 3)))).encode()


@st.composite
def values(draw: st.DrawFn, vr: str, charset: str | None, little: bool) -> bytes:
    """An encoded value for ``vr``: usually plausible, sometimes refused by pydicom's strict reading."""
    if draw(st.integers(0, 12)) == 0:
        return b""
    if vr in ("SH", "LO", "UC", "PN"):
        return _texts(draw, charset, {"SH": 20, "LO": 70, "UC": 40, "PN": 70}[vr], person_name=vr == "PN")
    if vr in ("ST", "LT", "UT"):
        return _encoded_text(draw, charset, 40) + draw(st.sampled_from([b"", b"\r\n", b"\\x", b" "]))
    if vr in ("CS", "AS", "DA", "DT", "TM", "AE", "UR"):
        chars = st.sampled_from(list("ABCXYZ019 _.-+"))
        return "\\".join(draw(st.text(chars, max_size=12)) for _ in range(draw(st.integers(1, 3)))).encode()
    if vr == "UI":
        uid = draw(st.sampled_from(["1.2.3", "1.2.840.10008.1.2", "2.25.1", "", "1.02"]))
        return (uid + draw(st.sampled_from(["", "\x00", "\\1.2.4"]))).encode()
    if vr in ("IS", "DS"):
        return _numbers_text(draw, vr == "DS")
    if vr == "AT":
        return draw(st.binary(min_size=0, max_size=13))
    if vr in NUMBER_FORMATS:
        code = NUMBER_FORMATS[vr]
        if draw(st.integers(0, 10)) == 0:
            return draw(st.binary(max_size=9))  # any length, a multiple of the size or not
        count = draw(st.integers(1, 3))
        if code in "fd":
            numbers = draw(st.lists(st.floats(width=32 if code == "f" else 64), min_size=count, max_size=count))
        else:
            size = struct.calcsize("<" + code) * 8
            low, high = (-(2 ** (size - 1)), 2 ** (size - 1) - 1) if code.islower() else (0, 2**size - 1)
            numbers = draw(st.lists(st.integers(low, high), min_size=count, max_size=count))
        return struct.pack(("<" if little else ">") + f"{count}{code}", *numbers)
    size = draw(st.sampled_from([1, 2, 7, 64, 767, 768, 769, 1500]))  # binary: around the inline limit
    return bytes(draw(st.integers(0, 255)) for _ in range(min(size, 3))) * (size // 3) + b"\x01" * (size % 3)


@st.composite
def elements(draw: st.DrawFn, charset: str | None, little: bool, depth: int) -> list[Element]:
    """A data set's elements (unsorted, one per tag): any VR, private elements, sequences nested ``depth`` more."""
    chosen: dict[int, Element] = {}
    for vr in draw(st.lists(st.sampled_from(sorted(TAGS_BY_VR)), max_size=8)):
        tag = draw(st.sampled_from(TAGS_BY_VR[vr]))
        chosen[tag] = Element(tag, vr, draw(values(vr, charset, little)))
    if draw(st.booleans()):  # private elements: a creator the private dictionary knows, one it does not
        creator = draw(st.sampled_from([KNOWN_CREATOR, "ACME 1.1"]))
        chosen[0x00290010] = text(0x00290010, "LO", creator)
        vr = "CS" if creator == KNOWN_CREATOR else draw(st.sampled_from(["CS", "UN", "LO", "OB"]))
        chosen[0x00291008] = Element(0x00291008, vr, draw(values("CS" if vr == "UN" else vr, charset, little)))
        chosen[0x00291110] = Element(0x00291110, "UN", draw(values("OB", charset, little)))  # no creator: UN
    if draw(st.integers(0, 5)) == 0:
        chosen[UNKNOWN_PUBLIC_TAG] = Element(UNKNOWN_PUBLIC_TAG, "LO", draw(values("LO", charset, little)))
    if depth > 0:
        for tag in draw(st.lists(st.sampled_from(SEQUENCE_TAGS), max_size=2, unique=True)):
            items = [Item(draw(elements(charset, little, depth - 1)), draw(st.booleans()))
                     for _ in range(draw(st.integers(0, 3)))]
            chosen[tag] = Element(tag, "SQ", items, undefined_length=draw(st.booleans()))
    return list(chosen.values())


@st.composite
def objects(draw: st.DrawFn) -> bytes:
    """A Part-10 object with a character set, the record's elements, and anything else at the top level."""
    syntax = draw(st.sampled_from(SYNTAXES))
    little = syntax != ExplicitVRBigEndian
    charset = draw(st.sampled_from(list(CHARACTER_SETS)))
    top = {element.tag: element for element in draw(elements(charset, little, depth=2))}
    if charset is not None:
        top[0x00080005] = text(0x00080005, "CS", charset)
    for tag, vr in RECORD_TEXT_TAGS.items():
        if draw(st.integers(0, 4)):
            top[tag] = Element(tag, vr, draw(values(vr, charset, little)))
    if draw(st.booleans()):  # Pixel Representation, and the values whose VR it decides in Implicit VR
        top[0x00280103] = Element(0x00280103, "US", draw(st.sampled_from([b"", b"\x00\x00", b"\x01\x00"])))
        for tag in draw(st.lists(st.sampled_from(US_OR_SS_TAGS), max_size=2, unique=True)):
            vr = draw(st.sampled_from(["US", "SS"]))
            top[tag] = Element(tag, vr, draw(values(vr, charset, little)))
    for element in identifying():
        top[element.tag] = element
    return part10_object(list(top.values()), syntax)


def _outcome(read: Any, data: bytes) -> tuple[str, str]:
    """What a reader gives, as comparable text (NaN compares equal to NaN): its result, or its error's kind."""
    try:
        return "read", json.dumps(read(data), sort_keys=True, default=str)
    except LeftToPydicom:
        raise
    except Exception as exc:
        return "error", exc.__class__.__name__


@BOUNDED
@given(objects())
def test_the_lean_reader_equals_pydicom_on_generated_objects(data: bytes) -> None:
    assert _outcome(read_lean, data) == _outcome(read_with_pydicom, data)


@st.composite
def damaged_objects(draw: st.DrawFn) -> bytes:
    """A generated object with bytes of its data set overwritten, cut or inserted."""
    data = bytearray(draw(objects()))
    data_set_start = 144 + int.from_bytes(data[140:144], "little")
    for _ in range(draw(st.integers(1, 4))):
        position = len(data) - 1 - draw(st.integers(0, max(0, len(data) - 1 - data_set_start)))
        operation = draw(st.sampled_from(["overwrite", "truncate", "insert"]))
        if operation == "overwrite":
            data[position:position + 4] = draw(st.binary(min_size=1, max_size=4))
        elif operation == "truncate":
            del data[position:]
        else:
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


@BOUNDED_DAMAGED
@given(damaged_objects())
def test_what_the_lean_reader_reads_of_a_damaged_object_pydicom_reads_alike(data: bytes) -> None:
    """The lean reader may leave a damaged object to pydicom (the indexer then reads it with pydicom); when it does
    read one, pydicom reads the same."""
    try:
        lean = json.dumps(read_lean(data), sort_keys=True, default=str)
    except Exception:
        return
    assert lean == json.dumps(read_with_pydicom(data), sort_keys=True, default=str)


def _object(*extra: Element, syntax: str = ExplicitVRLittleEndian, charset: str | None = None) -> bytes:
    top = [*identifying(), *extra]
    if charset is not None:
        top.append(text(0x00080005, "CS", charset))
    return part10_object(top, syntax)


def _assert_lean_equals_pydicom(data: bytes) -> dict[str, Any]:
    lean = read_lean(data)
    assert json.dumps(lean, sort_keys=True) == json.dumps(read_with_pydicom(data), sort_keys=True)
    assert lean.attributes_json == json.dumps(lean.attributes)  # the text the index stores, as json.dumps writes it
    return lean.attributes


@pytest.mark.parametrize(("charset", "name", "encoding_terms"), [
    ("ISO_IR 100", "Müller^Jürgen", "ISO_IR 100"),
    ("ISO_IR 126", "Διονυσιος", "ISO_IR 126"),
    ("\\ISO 2022 IR 87", "Yamada^Tarou=山田^太郎=やまだ^たろう", "\\ISO 2022 IR 87"),
    ("\\ISO 2022 IR 149", "Hong^Gildong=洪^吉洞=홍^길동", "\\ISO 2022 IR 149"),
    ("GB18030", "Wang^XiaoDong=王^小东=", "GB18030"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東=", "ISO_IR 192"),
])
def test_person_names_in_each_character_set(charset: str, name: str, encoding_terms: str) -> None:
    encoded = encode_string(name, convert_encodings(encoding_terms))
    attributes = _assert_lean_equals_pydicom(_object(Element(0x00100010, "PN", encoded), charset=charset))
    assert attributes["00100010"]["Value"][0]["Alphabetic"] == name.split("=")[0]


def test_text_that_does_not_decode_is_left_out_of_the_attributes_but_kept_in_the_record() -> None:
    data = _object(Element(0x00100010, "PN", b"M\xfcller"), charset="ISO_IR 192")
    read = read_lean(data)
    attributes, columns = read.attributes, read.columns
    assert "00100010" not in attributes and columns["patient_name"] == "M\ufffdller"
    _assert_lean_equals_pydicom(data)


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_every_transfer_syntax_with_nested_sequences(syntax: str) -> None:
    inner = Item([text(0x00081150, "UI", "1.2.3"), Element(0x00081160, "IS", b"1\\2 ")], undefined_length=True)
    sequence = Element(0x00081115, "SQ", [Item([Element(0x00081140, "SQ", [inner, Item()])]), Item()],
                       undefined_length=True)
    attributes = _assert_lean_equals_pydicom(_object(sequence, Element(0x00081163, "FD", bytes(16)), syntax=syntax))
    assert attributes["00081115"]["Value"][0]["00081140"]["Value"][0]["00081160"]["Value"] == [1, 2]


def test_an_invalid_value_inside_a_sequence_leaves_the_whole_sequence_out() -> None:
    item = Item([Element(0x00180050, "DS", b"1.23456789012345678")])
    attributes = _assert_lean_equals_pydicom(_object(Element(0x00081115, "SQ", [item]), text(0x00080070, "LO", "X")))
    assert "00081115" not in attributes and attributes["00080070"]["Value"] == ["X"]


@pytest.mark.parametrize("representation", [None, b"\x00\x00", b"\x01\x00", b""])
def test_implicit_vr_us_or_ss_follows_the_pixel_representation(representation: bytes | None) -> None:
    extra = [Element(0x00280106, "US", b"\xff\xff"), Element(0x00281101, "US", b"\xff\xff\x00\x00\x10\x00")]
    if representation is not None:
        extra.append(Element(0x00280103, "US", representation))
    _assert_lean_equals_pydicom(_object(*extra, syntax=ImplicitVRLittleEndian))


@pytest.mark.parametrize("creator", [KNOWN_CREATOR, "ACME 1.1", ""])
def test_implicit_vr_private_elements_take_the_private_dictionary_vr(creator: str) -> None:
    _assert_lean_equals_pydicom(_object(text(0x00290010, "LO", creator), text(0x00291008, "CS", "IMAGE NUM 4"),
                                        Element(0x00291010, "OB", b"\x01\x02"), syntax=ImplicitVRLittleEndian))


@pytest.mark.parametrize("length", [0, 2, 4, 6, 8, 12])
def test_attribute_tags_of_every_length(length: int) -> None:
    _assert_lean_equals_pydicom(_object(Element(0x00209165, "AT", bytes(range(length)))))


@pytest.mark.parametrize(("tag", "vr", "value"), [
    (0x0072006D, "UN", b"\x01\x02"),  # a public tag whose dictionary VR is UN
    (0x00080070, "UN", b"ACME"),  # UN for a known public tag: read with its dictionary VR (LO)
    (0x00280106, "UN", b"\x01\x00"),  # ... 'US or SS' from the dictionary
    (0x00089998, "UN", b"\x01\x02"),  # an unknown public tag
])
def test_explicit_vr_un_is_read_as_pydicom_reads_it(tag: int, vr: str, value: bytes) -> None:
    _assert_lean_equals_pydicom(_object(Element(tag, vr, value)))


def _same_record_either_way(data: bytes) -> None:
    with pytest.raises(LeftToPydicom):
        read_lean(data)
    assert extract(data).attributes_json == read_with_pydicom(data).attributes_json


def test_elements_out_of_order_are_left_to_pydicom() -> None:
    elements = [*identifying(), text(0x00080070, "LO", "ACME"), text(0x00080060, "CS", "CT")]
    _same_record_either_way(part10_object(elements, ExplicitVRLittleEndian, sort=False))


def test_a_character_set_inside_an_item_is_left_to_pydicom() -> None:
    item = Item([text(0x00080005, "CS", "ISO_IR 100"), Element(0x00081150, "UI", b"1.2\x00")])
    _same_record_either_way(_object(Element(0x00081115, "SQ", [item])))


def test_an_implicit_vr_item_in_an_explicit_vr_object_is_left_to_pydicom() -> None:
    implicit_item = struct.pack("<HHL", 0xFFFE, 0xE000, 12) + struct.pack("<HHL", 0x0008, 0x1150, 4) + b"1.2\x00"
    sequence = Element(0x00081115, "OB", implicit_item)  # written as raw bytes below, then relabelled SQ
    data = _object(sequence).replace(b"\x08\x00\x15\x11OB", b"\x08\x00\x15\x11SQ")
    _same_record_either_way(data)


def test_ambiguous_vr_inside_a_sequence_is_left_to_pydicom() -> None:
    item = Item([Element(0x00280103, "US", b"\x01\x00"), Element(0x00280106, "US", b"\xff\xff")])
    _same_record_either_way(_object(Element(0x00081115, "SQ", [item]), syntax=ImplicitVRLittleEndian))
