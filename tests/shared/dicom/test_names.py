"""The compared forms of a person name: case-folded, and case-folded without accents."""

from __future__ import annotations

import unicodedata

import pytest

from shared.dicom.names import accent_free, folded


@pytest.mark.parametrize(
    ("name", "expected"),
    [("MÜLLER^Jürgen", "muller^jurgen"), ("Ελληνικά^Δοκιμή", "ελληνικα^δοκιμη"), ("Renée^Zoë", "renee^zoe")],
)
def test_the_accent_free_form_removes_case_and_accents(name: str, expected: str) -> None:
    assert accent_free(name) == expected


def test_the_accent_free_form_keeps_the_kana_voicing_marks() -> None:
    assert accent_free("やまだ^だろう") == "やまだ^だろう"
    assert accent_free("ヤマダ") != accent_free("ヤマタ")  # ダ and タ are different letters


def test_the_folded_form_ignores_case_and_composition_but_keeps_accents() -> None:
    decomposed = unicodedata.normalize("NFD", "Müller")
    assert folded(decomposed) == folded("MÜLLER") == "müller"
    assert folded("Muller") != folded("Müller")
