"""C-STORE responses read by the DUL thread without pynetdicom's decoding: the mover's sub-operations (a requestor
association) and C-GET's (the SCP's association, services.scp.direct_store).

For each C-STORE it sends, a sender waits for the response on ``dimse.get_msg``. pynetdicom decodes that response
into PDU and primitive objects, a state-machine event and a pydicom Dataset for its command set before it queues
it (~0.2 ms per instance, a third of the mover's CPU per small instance). A plain response — one PDU carrying the
whole command set, no data set, only the elements of PS3.7 9.3.1.2 that carry no error detail — is decoded by hand
here and queued as the same C_STORE primitive. Anything else (a response with an Error Comment, a fragmented
command, any other message) reaches pynetdicom as it arrived.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from shared.dicom import command_set
from shared.dicom.pdata import MalformedPData, fragments, p_data_tf
from shared.dicom.pdu_reading import read_p_data_first
from shared.dicom.store_request import C_STORE_RSP, StoreResponse
from shared.uids import is_valid_uid

MESSAGE_ID_BEING_RESPONDED_TO = 0x0120
STATUS = 0x0900
_PLAIN_RESPONSE_ELEMENTS = frozenset({
    command_set.GROUP_LENGTH, command_set.AFFECTED_SOP_CLASS_UID, command_set.COMMAND_FIELD,
    MESSAGE_ID_BEING_RESPONDED_TO, command_set.COMMAND_DATA_SET_TYPE, STATUS, command_set.AFFECTED_SOP_INSTANCE_UID,
})


class StoreResponseReceived:
    """What EVT_DIMSE_RECV reports for a response read here (no pynetdicom message is built)."""

    data_set = None

    def __init__(self, response: StoreResponse) -> None:
        self.response = response


def plain_store_response(encoded: bytes) -> StoreResponse | None:
    """The C-STORE response of a command set, if it is a plain one; None for anything else."""
    try:
        elements = command_set.decode(encoded)
        if not elements.keys() <= _PLAIN_RESPONSE_ELEMENTS:
            return None
        if command_set.unsigned_short(elements, command_set.COMMAND_FIELD) != C_STORE_RSP:
            return None
        if command_set.unsigned_short(elements, command_set.COMMAND_DATA_SET_TYPE) != command_set.NO_DATA_SET:
            return None
        message_id = command_set.unsigned_short(elements, MESSAGE_ID_BEING_RESPONDED_TO)
        status = command_set.unsigned_short(elements, STATUS)
        sop_class = command_set.text(elements, command_set.AFFECTED_SOP_CLASS_UID) or ""
        sop_instance = command_set.text(elements, command_set.AFFECTED_SOP_INSTANCE_UID) or ""
    except command_set.MalformedCommand:
        return None
    if message_id is None or status is None:
        return None
    if any(uid and not is_valid_uid(uid) for uid in (sop_class, sop_instance)):
        return None
    return StoreResponse(sop_class, sop_instance, message_id, status)


def plain_store_response_in(body: bytes | bytearray) -> tuple[int, StoreResponse] | None:
    """(presentation context ID, response) when a P-DATA-TF body is one whole plain C-STORE response."""
    try:
        items = fragments(body)
    except MalformedPData:
        return None
    if len(items) != 1 or not items[0].is_command or not items[0].is_last:
        return None
    response = plain_store_response(bytes(items[0].data))
    return None if response is None else (items[0].context_id, response)


def deliver(assoc: Any, context_id: int, response: StoreResponse) -> None:
    """Queue the response for whoever waits on ``dimse.get_msg``, as pynetdicom would have."""
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = response.message_id_being_responded_to
    if response.sop_class_uid:
        primitive.AffectedSOPClassUID = response.sop_class_uid
    if response.sop_instance_uid:
        primitive.AffectedSOPInstanceUID = response.sop_instance_uid
    primitive.Status = response.status
    evt.trigger(assoc, evt.EVT_DIMSE_RECV, {"message": StoreResponseReceived(response)})
    assoc.dimse.msg_queue.put((context_id, primitive))


class ResponseReader:
    """The P-DATA-TF handler of a requestor association that sends C-STOREs."""

    def __init__(self, assoc: Any) -> None:
        self._assoc = assoc

    def on_p_data(self, body: bytearray) -> bytes | None:
        if self._assoc.dimse.message is None:  # pynetdicom is not in the middle of a message
            found = plain_store_response_in(body)
            if found is not None:
                deliver(self._assoc, *found)
                return None
        return p_data_tf([body])

    def on_other_pdu(self) -> None:
        """Nothing of its own is ever half read."""


def read_store_responses_directly(assoc: Any) -> None:
    """For a requestor association, before it sends its first request."""
    read_p_data_first(assoc, ResponseReader(assoc))
