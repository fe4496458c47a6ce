"""Presentation context negotiation that honours the requestor's order of transfer syntaxes.

pynetdicom's acceptor takes, for each proposed context, the first transfer syntax of *its own* list that the peer
proposed: with our list (pynetdicom's, Implicit VR Little Endian first) a modality proposing JPEG-LS, Explicit VR
and Implicit VR in one context was made to send Implicit VR (it decompresses, private elements lose their VR), and
a C-GET whose requestor prefers Explicit VR got every stored Explicit VR instance transcoded to Implicit VR before
it was sent back. Now the requestor's own order decides: among the syntaxes of a context that we accept, the first
it proposed is chosen (usually its native encoding). Which contexts are accepted, their roles and every refusal
are pynetdicom's decision, unchanged.
"""

from __future__ import annotations

from typing import Any

import pynetdicom.acse
from pynetdicom.presentation import negotiate_as_acceptor

ACCEPTED = 0x00


def negotiate_in_requestor_order(rq_contexts: Any, ac_contexts: Any, roles: Any = None) -> Any:
    results, reply_roles = negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
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


def install() -> None:
    """Used by every acceptor association of this process (idempotent)."""
    pynetdicom.acse.negotiate_as_acceptor = negotiate_in_requestor_order  # type: ignore[assignment]
