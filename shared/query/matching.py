"""PS3.4 C.2.2.2 attribute matching, turned into SQL conditions on one column.

Kinds of matching: universal (empty value: no condition), single value, list of UIDs, wildcard (* and ?),
and range (date, time, datetime; open ends allowed). Person names compare case-insensitively on a folded
column. A lone ``*`` matches everything, empty values included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, true
from sqlalchemy.sql.elements import ColumnElement as Column

RANGE_VRS = {"DA", "TM", "DT"}
NUMERIC_VRS = {"IS", "US", "UL", "SS", "SL"}
_TIME_UPPER_PAD = "235959.999999"
_DATETIME_UPPER_PAD = "99991231235959.999999"


class InvalidMatchingKey(ValueError):
    """A matching value that cannot be understood (e.g. a malformed range)."""


@dataclass(frozen=True)
class Matcher:
    """How one key of a query identifier matches: the SQL condition on a column, or nothing."""

    kind: str  # universal | single | list | wildcard | range
    values: tuple[str, ...] = ()

    def condition(self, column: Column[Any], vr: str) -> ColumnElement[bool]:
        if self.kind == "universal":
            return true()
        if self.kind == "list":
            return column.in_(self.values)
        if self.kind == "wildcard":
            return column.like(_like_pattern(self.values[0]), escape="\\")
        if self.kind == "range":
            low, high = self.values
            parts = []
            if low:
                parts.append(column >= low)
            if high:
                parts.append(column <= _upper_bound(high, vr))
            parts.append(column != "")
            return and_(*parts)
        value: Any = self.values[0]
        if vr in NUMERIC_VRS:
            try:
                value = int(value)
            except ValueError as exc:
                raise InvalidMatchingKey(f"{vr} value is not a number") from exc
        return column == value


    def matches_text(self, text: str, vr: str) -> bool:
        """The same matching on a value held outside the index columns (stored DICOM JSON)."""
        if self.kind == "universal":
            return True
        if self.kind == "list":
            return text in self.values
        if self.kind == "wildcard":
            return _wildcard_regex(self.values[0]).fullmatch(text) is not None
        if self.kind == "range":
            low, high = self.values
            return bool(text) and (not low or text >= low) and (not high or text <= _upper_bound(high, vr))
        if vr in NUMERIC_VRS:
            try:
                return int(float(text)) == int(self.values[0])
            except ValueError:
                return False
        return text == self.values[0]


def _wildcard_regex(value: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in value),
                      re.DOTALL)


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _upper_bound(value: str, vr: str) -> str:
    """Make a range's upper end inclusive of everything it names (10 → 10:59:59.999999)."""
    if vr == "TM":
        return value + _TIME_UPPER_PAD[len(value):] if len(value) < len(_TIME_UPPER_PAD) else value
    if vr == "DT":
        return value + _DATETIME_UPPER_PAD[len(value):] if len(value) < len(_DATETIME_UPPER_PAD) else value
    return value


def parse_matcher(raw: Any, vr: str) -> Matcher:
    """The matcher for one key's value as found in the query identifier (already decoded to text)."""
    if raw is None:
        return Matcher("universal")
    if isinstance(raw, (list, tuple)):
        values = [str(item).strip() for item in raw if str(item).strip()]
        if not values:
            return Matcher("universal")
        if vr == "UI":
            return Matcher("list", tuple(values))
        raw = "\\".join(values)
    text = str(raw).strip()
    if not text or text == "*":
        return Matcher("universal")
    if vr == "UI" and "\\" in text:
        return Matcher("list", tuple(part.strip() for part in text.split("\\") if part.strip()))
    if vr in RANGE_VRS and "-" in text:
        low, _, high = text.partition("-")
        low, high = low.strip(), high.strip()
        if not low and not high:
            raise InvalidMatchingKey("a range needs at least one end")
        return Matcher("range", (low, high))
    if vr not in ("UI", "DA", "TM", "DT") and vr not in NUMERIC_VRS and ("*" in text or "?" in text):
        return Matcher("wildcard", (text,))
    return Matcher("single", (text,))
