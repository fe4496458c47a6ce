"""The UIDs of pynetdicom's PDUs and primitives converted once per value, not once per use.

dcmtk's storescu, sending one file, proposes 128 presentation contexts with three transfer syntaxes each, as many
modalities propose dozens. pynetdicom turns every UID of such an A-ASSOCIATE-RQ into a pydicom UID several times
(from the item's bytes, into the primitive's presentation context, again for the A-ASSOCIATE-AC) and runs pydicom's
and its own regular expressions over it each time: decoding the request took 10.6 ms and encoding the answer
1.8 ms here (in process, 200 rounds), mostly in UID construction and validation, while the same few hundred UIDs
come back in every association. A modality that opens one association per image paid it for every image.

Here a conversion whose value is a conformant UID (which every check accepts and none warns about) is remembered
per value: ``set_uid`` returns the UID it made before for the same text or bytes and the same options, and
``PresentationContext.add_transfer_syntax`` appends the remembered UID of a conformant transfer syntax (or private
UID) without checking it again. Anything else (empty, non-conformant, not a transfer syntax, of another type) goes
through pynetdicom's own code every time, with its errors and warnings. pynetdicom is pinned (pyproject.toml); the
patched names are the ones its modules imported.
"""

from __future__ import annotations

from typing import Any

import pynetdicom.ae
import pynetdicom.dimse_primitives
import pynetdicom.pdu_items
import pynetdicom.pdu_primitives
import pynetdicom.presentation
import pynetdicom.utils
from pydicom import config as pydicom_config
from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext

MAX_REMEMBERED = 4096  # distinct values: far more than any node meets; past it, new values are converted as before

_pynetdicom_set_uid = pynetdicom.utils.set_uid
_pynetdicom_add_transfer_syntax = PresentationContext.add_transfer_syntax
_uids: dict[tuple[str | bytes, bool, bool], UID] = {}
_transfer_syntaxes: dict[str | bytes, UID] = {}
_MODULES_USING_SET_UID = (pynetdicom.ae, pynetdicom.dimse_primitives, pynetdicom.pdu_items, pynetdicom.pdu_primitives,
                          pynetdicom.presentation)


def set_uid(value: Any, name: str, allow_empty: bool = True, allow_none: bool = True,
            validate: bool = True) -> UID | None:
    """pynetdicom's ``set_uid``, remembering the conformant UIDs it returns."""
    if value.__class__ not in (str, bytes, UID):
        return _pynetdicom_set_uid(value, name, allow_empty, allow_none, validate)
    key = (value, allow_empty, validate)
    known = _uids.get(key)
    if known is not None:
        return known
    uid = _pynetdicom_set_uid(value, name, allow_empty, allow_none, validate)
    if uid and uid.is_valid and len(_uids) < MAX_REMEMBERED:
        _uids[key] = uid
    return uid


def add_transfer_syntax(context: PresentationContext, syntax: Any) -> None:
    """``PresentationContext.add_transfer_syntax`` for a transfer syntax seen before and found clean."""
    known = _transfer_syntaxes.get(syntax) if syntax.__class__ in (str, bytes, UID) else None
    if known is None:
        _pynetdicom_add_transfer_syntax(context, syntax)
        _remember_if_clean(syntax)
        return
    if known not in context._transfer_syntax:
        context._transfer_syntax.append(known)


def _remember_if_clean(syntax: str | bytes) -> None:
    if syntax.__class__ not in (str, bytes, UID) or len(_transfer_syntaxes) >= MAX_REMEMBERED:
        return
    try:
        text = syntax.decode("ascii") if isinstance(syntax, bytes) else syntax
        uid = UID(text, validation_mode=pydicom_config.IGNORE)  # pynetdicom's own call has warned already
    except (UnicodeDecodeError, ValueError):
        return
    if uid and uid.is_valid and (uid.is_private or uid.is_transfer_syntax):
        _transfer_syntaxes[syntax] = uid


def install() -> None:
    """Route pynetdicom's UID conversions through the memo (idempotent)."""
    for module in _MODULES_USING_SET_UID:
        module.set_uid = set_uid  # type: ignore[attr-defined]
    PresentationContext.add_transfer_syntax = add_transfer_syntax  # type: ignore[method-assign]
