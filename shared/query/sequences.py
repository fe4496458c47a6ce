"""Sequence matching (PS3.4 C.2.2.2.6), on the stored DICOM JSON of an entity.

A sequence key of a query carries one item whose attributes are item keys. The stored sequence matches when at
least one of its items matches every item key (each with the ordinary matching rules, nested sequences
included). A sequence key with no item, or whose item keys are all universal, matches everything. The answer
holds the stored items that matched, each reduced to the requested item keys (present, empty, when the item
has no value); a sequence key with no item key returns the stored sequence whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.datadict import tag_for_keyword

from shared.query.dicomjson import json_element, json_texts, vr_of
from shared.query.matching import parse_matcher


@dataclass(frozen=True)
class SequenceKey:
    """The single item of a sequence key: (keyword, raw value or nested SequenceKey) per item key."""

    item_keys: tuple[tuple[str, Any], ...] = ()

    @property
    def is_universal(self) -> bool:
        return all(_is_universal(value) for _, value in self.item_keys)

    def matches(self, element: dict[str, Any] | None) -> bool:
        """Whether a stored sequence element matches (universal matching needs no value)."""
        if self.is_universal:
            return True
        return any(self._item_matches(item) for item in _items(element))

    def answer(self, element: dict[str, Any] | None) -> dict[str, Any]:
        """The DICOM JSON sequence element to return for a stored element (None: not held)."""
        if not self.item_keys:
            return element if element is not None else {"vr": "SQ"}
        chosen = [item for item in _items(element) if self._item_matches(item)]
        if not chosen:
            return {"vr": "SQ"}
        return {"vr": "SQ", "Value": [self._projected(item) for item in chosen]}

    def _item_matches(self, item: dict[str, Any]) -> bool:
        for keyword, value in self.item_keys:
            stored = json_element(item, keyword)
            if isinstance(value, SequenceKey):
                if not value.matches(stored):
                    return False
                continue
            vr = vr_of(keyword)
            matcher = parse_matcher(value, vr)
            if matcher.kind != "universal" and not any(matcher.matches_text(text, vr) for text in json_texts(stored)):
                return False
        return True

    def _projected(self, item: dict[str, Any]) -> dict[str, Any]:
        projected: dict[str, Any] = {}
        for keyword, value in self.item_keys:
            tag = tag_for_keyword(keyword)
            if tag is None:
                continue
            stored = json_element(item, keyword)
            if isinstance(value, SequenceKey):
                projected[f"{tag:08X}"] = value.answer(stored)
            else:
                projected[f"{tag:08X}"] = stored if stored is not None else {"vr": vr_of(keyword)}
        return projected


def _items(element: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [item for item in (element or {}).get("Value") or [] if isinstance(item, dict)]


def _is_universal(value: Any) -> bool:
    if isinstance(value, SequenceKey):
        return value.is_universal
    return parse_matcher(value, "UN").kind == "universal"
