"""Presentation context negotiation that honours the requestor's order of transfer syntaxes.

pynetdicom's acceptor takes, for each proposed context, the first transfer syntax of *its own* list that the peer
proposed: with our list (pynetdicom's, Implicit VR Little Endian first) a modality proposing JPEG-LS, Explicit VR
and Implicit VR in one context was made to send Implicit VR (it decompresses, private elements lose their VR), and
a C-GET whose requestor prefers Explicit VR got every stored Explicit VR instance transcoded to Implicit VR before
it was sent back. Now the requestor's own order decides: among the syntaxes of a context that we accept, the first
it proposed is chosen (usually its native encoding). Which contexts are accepted, their roles and every refusal
are pynetdicom's decision, unchanged.

A proposed context without an abstract syntax or without any transfer syntax (a malformed A-ASSOCIATE-RQ: PS3.8
9.3.2.2 asks for one abstract syntax and at least one transfer syntax) killed pynetdicom's association thread with a
TypeError or an IndexError, leaving the connection unanswered; such a context is now refused (abstract syntax not
supported, 3, or transfer syntaxes not supported, 4) and the others are negotiated as usual.
"""

from __future__ import annotations

from typing import Any

import pynetdicom.acse
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

ACCEPTED = 0x00
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04


def negotiate_in_requestor_order(rq_contexts: Any, ac_contexts: Any, roles: Any = None) -> Any:
    malformed = [context for context in rq_contexts if context.abstract_syntax is None or not context.transfer_syntax]
    if malformed:
        rq_contexts = [context for context in rq_contexts if context not in malformed]
    results, reply_roles = negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
    if malformed:
        results = sorted([*results, *map(_refused, malformed)], key=lambda result: int(result.context_id))
    ours = {context.abstract_syntax: context.transfer_syntax for context in ac_contexts}
    proposed = {context.context_id: context for context in rq_contexts}
    for result in results:
        if result.result != ACCEPTED:
            continue
        supported = ours[result.abstract_syntax]
        preferred = next((syntax for syntax in proposed[result.context_id].transfer_syntax if syntax in supported),
                         None)
        if preferred is not None and preferred != result.transfer_syntax[0]:
            result.transfer_syntax = [preferred]
    return results, reply_roles


def _refused(proposed: PresentationContext) -> PresentationContext:
    result = PresentationContext()
    result.context_id = proposed.context_id
    no_abstract_syntax = proposed.abstract_syntax is None
    result.result = ABSTRACT_SYNTAX_NOT_SUPPORTED if no_abstract_syntax else TRANSFER_SYNTAXES_NOT_SUPPORTED
    result.transfer_syntax = [ImplicitVRLittleEndian]  # "not significant" in a refusal (PS3.8 9.3.3.2), but present
    return result


def install() -> None:
    """Used by every acceptor association of this process (idempotent)."""
    pynetdicom.acse.negotiate_as_acceptor = negotiate_in_requestor_order  # type: ignore[assignment]
