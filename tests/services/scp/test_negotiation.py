"""The transfer syntax of an accepted context is the requestor's first choice among those the node accepts."""

from __future__ import annotations

from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import PresentationContext

from services.scp.negotiation import negotiate_in_requestor_order


def context(context_id: int | None, abstract: str, syntaxes: list[str]) -> PresentationContext:
    built = PresentationContext()
    if context_id is not None:
        built.context_id = context_id
    built.abstract_syntax = abstract
    built.transfer_syntax = syntaxes
    return built


def chosen(proposed: list[PresentationContext], ours: list[PresentationContext]) -> dict[int, tuple[int, str]]:
    results, _roles = negotiate_in_requestor_order(proposed, ours)
    return {int(result.context_id): (int(result.result), str(result.transfer_syntax[0])) for result in results}


def test_the_requestors_first_accepted_syntax_wins_over_our_list_order() -> None:
    ours = [context(None, CTImageStorage, list(ALL_TRANSFER_SYNTAXES))]  # Implicit VR first, as pynetdicom lists
    assert chosen([context(1, CTImageStorage, [JPEGLSLossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
                   context(3, CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]),
                   context(5, CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])], ours) == {
        1: (0, JPEGLSLossless), 3: (0, ExplicitVRLittleEndian), 5: (0, ImplicitVRLittleEndian)}


def test_syntaxes_the_node_does_not_accept_are_skipped_and_refusals_are_unchanged() -> None:
    ours = [context(None, CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])]  # a narrowed list
    assert chosen([context(1, CTImageStorage, [JPEGLSLossless, ExplicitVRLittleEndian]),
                   context(3, CTImageStorage, [JPEGLSLossless]),
                   context(5, MRImageStorage, [ExplicitVRLittleEndian])], ours) == {
        1: (0, ExplicitVRLittleEndian), 3: (4, JPEGLSLossless), 5: (3, ExplicitVRLittleEndian)}


def test_a_context_without_abstract_syntax_or_transfer_syntax_is_refused_and_the_others_negotiated() -> None:
    ours = [context(None, CTImageStorage, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])]
    no_abstract_syntax = PresentationContext()
    no_abstract_syntax.context_id = 1
    no_abstract_syntax.transfer_syntax = [ExplicitVRLittleEndian]
    assert chosen([no_abstract_syntax, context(3, CTImageStorage, []), context(5, CTImageStorage,
                                                                            [ExplicitVRLittleEndian])], ours) == {
        1: (3, ImplicitVRLittleEndian), 3: (4, ImplicitVRLittleEndian), 5: (0, ExplicitVRLittleEndian)}
