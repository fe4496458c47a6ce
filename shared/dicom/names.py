"""The forms a person name is compared in: case-folded (the default), or case-folded without accents.

The indexer stores both forms beside each name; a query folds its value the same way before comparing, so a
UTF-8 query matches a name that arrived in Latin-1 or ISO 2022 (both are Unicode once decoded).
"""

from __future__ import annotations

import unicodedata


def folded(text: str) -> str:
    """Case-insensitive form: composed (NFC) then case-folded."""
    return unicodedata.normalize("NFC", text).casefold()


def accent_free(text: str) -> str:
    """Case- and accent-insensitive form: case-folded, combining accents removed.

    Only the combining diacritical marks (U+0300-U+036F: Latin, Greek, Cyrillic accents) are removed; marks
    that change a letter's identity elsewhere (the kana voicing marks of だ, for one) are kept.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not 0x300 <= ord(ch) <= 0x36F)
    return unicodedata.normalize("NFC", stripped).casefold()
