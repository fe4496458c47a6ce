"""What C-MOVE and C-GET share: decoding the request, the response counters, the final status (PS3.4 C.4.2/C.4.3).

Final statuses: 0x0000 all sub-operations completed; 0xB000 finished with failures or warnings (the Failed SOP
Instance UID List is given); 0xA702 every sub-operation failed; 0xFE00 cancelled (C-CANCEL).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dsutils import decode, encode

from services.scp.find import requested_values
from shared.jobs import Progress

log = logging.getLogger(__name__)

PENDING, SUCCESS, CANCELLED = 0xFF00, 0x0000, 0xFE00
WARNING_SUBOPERATIONS_FAILED = 0xB000
ALL_SUBOPERATIONS_FAILED = 0xA702
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
NOT_AUTHORIZED = 0x0124


@dataclass(frozen=True)
class RetrieveRequest:
    answer: "Responder"
    level: str
    values: dict[str, Any]
    calling_aet: str


def open_request(assoc: Any, request: C_MOVE | C_GET, context_id: int, service: str,
                 admits: Callable[[Any, str], bool], models: dict[str, tuple[str, ...]]) -> RetrieveRequest | None:
    """Check the caller (``admits`` counts and audits a refusal) and decode the identifier; on refusal the final
    response is sent here and None returned."""
    context = next(cx for cx in assoc.accepted_contexts if cx.context_id == context_id)
    answer = Responder(assoc, request, context_id, context.transfer_syntax[0])
    calling = str(assoc.requestor.ae_title).strip()
    if not admits(assoc, service):
        answer.final(NOT_AUTHORIZED)
        return None
    try:
        level, values = decode_request(context, request, models.get(str(context.abstract_syntax), ()))
    except BadRequest:
        answer.final(IDENTIFIER_DOES_NOT_MATCH)
        return None
    return RetrieveRequest(answer, level, values, calling)


class BadRequest(Exception):
    """The identifier cannot be decoded, or names a level the information model does not have."""


def decode_request(context: Any, request: C_MOVE | C_GET, levels: tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    """(QueryRetrieveLevel, keyword → value) of a retrieve request; BadRequest when unusable."""
    syntax = context.transfer_syntax[0]
    try:
        identifier = decode(request.Identifier, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
        level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
        values, _ = requested_values(identifier)
    except Exception as exc:
        raise BadRequest("identifier cannot be decoded") from exc
    if level not in levels:
        raise BadRequest("query level not in this information model")
    return level, values


def final_status(done: Progress) -> int:
    if done.state == "cancelled":
        return CANCELLED
    if done.failed and not done.completed and not done.warning:
        return ALL_SUBOPERATIONS_FAILED
    if done.failed or done.warning:
        return WARNING_SUBOPERATIONS_FAILED
    return SUCCESS


class Responder:
    """Builds and sends the responses (C-MOVE or C-GET) of one request."""

    def __init__(self, assoc: Any, request: C_MOVE | C_GET, context_id: int, transfer_syntax: Any) -> None:
        self._assoc = assoc
        self._request = request
        self._context_id = context_id
        self._syntax = transfer_syntax

    def _response(self, status: int, counts: Progress | None) -> C_MOVE | C_GET:
        response = C_GET() if isinstance(self._request, C_GET) else C_MOVE()
        response.MessageIDBeingRespondedTo = self._request.MessageID
        response.AffectedSOPClassUID = self._request.AffectedSOPClassUID
        response.Status = status
        if counts is not None:
            if status == PENDING or status == CANCELLED:
                response.NumberOfRemainingSuboperations = counts.remaining
            response.NumberOfCompletedSuboperations = counts.completed
            response.NumberOfFailedSuboperations = counts.failed
            response.NumberOfWarningSuboperations = counts.warning
            if counts.failed_uids and status != PENDING:
                failed = Dataset()
                failed.FailedSOPInstanceUIDList = counts.failed_uids
                encoded = encode(failed, self._syntax.is_implicit_VR, self._syntax.is_little_endian,
                                 self._syntax.is_deflated)
                response.Identifier = BytesIO(encoded)
        return response

    def pending(self, counts: Progress) -> None:
        self._assoc.dimse.send_msg(self._response(PENDING, counts), self._context_id)

    def final(self, status: int, counts: Progress | None = None) -> None:
        self._assoc.dimse.send_msg(self._response(status, counts), self._context_id)
