"""Plain C-STORE (and C-ECHO) requests read, stored and answered by the association's DUL thread, off pynetdicom's
DIMSE path.

Through pynetdicom a C-STORE costs ~0.5 ms of CPU before our handler runs and after it returns (py-spy, small
instances): every P-DATA-TF PDU becomes PDU and primitive objects and a state-machine event, the command set a
pydicom Dataset, the message a C_STORE primitive handed to the association thread (a GIL hand-off), then an
event object for the handler. Here the DUL thread parses the PDV items itself (shared.dicom.pdata), decodes the
command set (shared.dicom.command_set), gathers the data set (spooled to disk above ReceivedSpool.above_bytes),
asks the access policy, stores the instance (services.scp.store) and writes the response (shared.dicom.
message_writer), with the same statuses, audit trail and metrics as pynetdicom's path.

The responses to C-GET's C-STORE sub-operations are taken the same way (shared.dicom.direct_responses), and so is
a plain C-ECHO on a Verification context: asked of the access policy and answered from this thread (pynetdicom's
path, through the association thread and two pydicom encodings of the response, was ~1.1–1.5 ms of an echo).

Only a request that is plainly a C-STORE-RQ we serve takes this path: established association, a complete valid
command set on an accepted context whose abstract syntax is the request's storage SOP class, Message ID,
Priority and UIDs present and valid (for a C-ECHO-RQ: no data set, a Verification context, its Message ID). Every
other message (C-FIND, C-MOVE, C-GET, N-ACTION, C-CANCEL, a C-STORE or C-ECHO with anything unusual) and every
PDU other than P-DATA-TF reaches pynetdicom unchanged, which answers it as before. Anything this reader does not
fully understand (a malformed item, a data set fragment without a command, fragments of one message on several
contexts) hands the bytes to pynetdicom and leaves the rest of the association to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.service_class import StorageServiceClass, VerificationServiceClass
from pynetdicom.sop_class import uid_to_service_class

from services.scp.spooling import ReceivedSpool
from services.scp.store import StoreCommand, StoreService
from shared.dicom import command_set
from shared.dicom.direct_responses import deliver, plain_store_response
from shared.dicom.echo_response import C_ECHO_RQ, VERIFICATION, EchoResponse
from shared.dicom.message_writer import MessageWriter
from shared.dicom.pdata import Fragment, MalformedPData, fragments, p_data_tf
from shared.dicom.pdu_reading import ProtocolViolation
from shared.dicom.spooled import SpooledDataset
from shared.dicom.store_request import C_STORE_RQ, C_STORE_RSP, StoreResponse
from shared.uids import is_valid_uid

log = logging.getLogger(__name__)

HANDLER_FAILURE = 0xC211  # what pynetdicom answers when a C-STORE handler raises
ECHO_HANDLER_FAILURE = 0x0110  # what pynetdicom answers when a C-ECHO handler raises (Processing Failure)


class StoreRequestReceived:
    """What EVT_DIMSE_RECV reports for a C-STORE request taken by this path (no pynetdicom message is built)."""

    kind = "c_store"

    def __init__(self, message_id: int, sop_class_uid: str, data_set_size: int) -> None:
        self.message_id = message_id
        self.sop_class_uid = sop_class_uid
        self.data_set_size = data_set_size


class EchoRequestReceived:
    """What EVT_DIMSE_RECV reports for a C-ECHO request taken by this path."""

    kind = "c_echo"
    data_set_size = 0

    def __init__(self, message_id: int, sop_class_uid: str) -> None:
        self.message_id = message_id
        self.sop_class_uid = sop_class_uid


@dataclass
class _Receiving:
    """A C-STORE request whose command was read: its data set arriving."""

    context_id: int
    message_id: int
    command: StoreCommand
    data_set: SpooledDataset


@dataclass(frozen=True)
class DirectStoreServices:
    """What the direct path needs of the listener (one per SCP process)."""

    store: StoreService
    admits: Any  # AccessPolicy.admits(assoc, service) -> bool; counts and audits a refusal
    refusal: Any  # service -> the failure answer of a refused request
    spool: ReceivedSpool


class DirectStore:
    """The P-DATA-TF router of one association: takes plain C-STOREs, hands everything else to pynetdicom."""

    def __init__(self, assoc: Any, services: DirectStoreServices, writer: MessageWriter) -> None:
        self._assoc = assoc
        self._services = services
        self._writer = writer
        self._storage_classes: dict[str, bool] = {}
        self._command_items: list[memoryview] = []  # the undecided message's items, as received
        self._command = bytearray()
        self._receiving: _Receiving | None = None
        self._passing = False  # forwarding a message's data set to pynetdicom until its last fragment
        self.disabled = False  # pynetdicom has the association from now on

    def on_p_data(self, body: bytearray) -> bytes | None:
        """Take what belongs to direct C-STOREs; return a P-DATA-TF PDU of the rest for pynetdicom (or None)."""
        if self.disabled:
            return p_data_tf([body])
        try:
            items = fragments(body)
        except MalformedPData:
            return self._give_up([body])
        forward: list[bytes | memoryview] = []
        for index, fragment in enumerate(items):
            if self._receiving is not None:
                if fragment.is_command or fragment.context_id != self._receiving.context_id:
                    self.on_other_pdu()
                    self.disabled = True
                    log.warning("scp.direct_store_protocol_violation remote=%s",
                                getattr(self._assoc.requestor, "address", "?"))
                    raise ProtocolViolation("a fragment of another message inside a C-STORE data set")
                self._receiving.data_set.write(fragment.data)
                if fragment.is_last:
                    self._complete(self._receiving)
                    self._receiving = None
            elif self._passing:
                forward.append(fragment.item)
                if fragment.is_last and not fragment.is_command:
                    self._passing = False
            elif not self._take_command_fragment(fragment):
                return self._give_up([*self._command_items, *(fragment.item for fragment in items[index:])],
                                     forward)
            elif fragment.is_last:
                forward += self._decide(fragment.context_id)
                if self.disabled:
                    return p_data_tf([*forward, *(fragment.item for fragment in items[index + 1:])])
        return p_data_tf(forward) if forward else None

    def on_other_pdu(self) -> None:
        """Drop a partly received request (the association ends, or the peer broke the protocol)."""
        if self._receiving is not None:
            self._receiving.data_set.close()
            self._receiving = None

    # ---- deciding who serves a message ---------------------------------------------------------------------

    def _take_command_fragment(self, fragment: Fragment) -> bool:
        if not fragment.is_command:
            return False  # a data set fragment before any command
        if self._command_items and _context_of(self._command_items[0]) != fragment.context_id:
            return False
        self._command_items.append(fragment.item)
        self._command += fragment.data
        return True

    def _decide(self, context_id: int) -> list[bytes | memoryview]:
        """The command is complete: receive its data set here, or return its items for pynetdicom."""
        items, self._command_items = self._command_items, []
        encoded, self._command = bytes(self._command), bytearray()
        try:
            elements = command_set.decode(encoded)
            field = command_set.unsigned_short(elements, command_set.COMMAND_FIELD)
            data_set_type = command_set.unsigned_short(elements, command_set.COMMAND_DATA_SET_TYPE)
            if field is None or data_set_type is None:
                raise command_set.MalformedCommand("no Command Field or Command Data Set Type")
            receiving = self._store_request(context_id, elements) if field == C_STORE_RQ else None
            echo = (self._echo_request(context_id, elements)
                    if field == C_ECHO_RQ and data_set_type == command_set.NO_DATA_SET else None)
        except command_set.MalformedCommand:
            self.disabled = True  # pynetdicom decides what such a message deserves
            return items
        if receiving is not None and data_set_type != command_set.NO_DATA_SET:
            self._receiving = receiving
            return []
        if echo is not None:
            self._answer_echo(context_id, echo)
            return []
        if field == C_STORE_RSP and len(items) == 1:  # a response to one of C-GET's sub-operations
            response = plain_store_response(encoded)
            if response is not None:
                deliver(self._assoc, context_id, response)
                return []
        self._passing = data_set_type != command_set.NO_DATA_SET
        return items

    def _store_request(self, context_id: int, elements: dict[int, bytes]) -> _Receiving | None:
        """The request as this path serves it, or None if pynetdicom should see it."""
        assoc = self._assoc
        context = assoc._accepted_cx.get(context_id)
        if context is None or not assoc.is_established or assoc.acceptor.accepted_common_extended:
            return None
        sop_class = command_set.text(elements, command_set.AFFECTED_SOP_CLASS_UID)
        sop_instance = command_set.text(elements, command_set.AFFECTED_SOP_INSTANCE_UID)
        message_id = command_set.unsigned_short(elements, command_set.MESSAGE_ID)
        priority = command_set.unsigned_short(elements, command_set.PRIORITY)
        if message_id is None or priority is None or not is_valid_uid(sop_instance):
            return None
        if sop_class != str(context.abstract_syntax) or not self._is_storage(sop_class):
            return None
        if command_set.MOVE_ORIGINATOR_AE_TITLE in elements or command_set.MOVE_ORIGINATOR_MESSAGE_ID in elements:
            return None  # sub-operations of someone's C-MOVE: rare, left to pynetdicom's validation
        spool = self._services.spool
        return _Receiving(context_id, message_id,
                          StoreCommand(str(sop_class), str(sop_instance), str(context.transfer_syntax[0])),
                          SpooledDataset(spool.folder, spool.above_bytes))

    def _echo_request(self, context_id: int, elements: dict[int, bytes]) -> EchoRequestReceived | None:
        """The C-ECHO request as this path serves it, or None if pynetdicom should see it."""
        assoc = self._assoc
        context = assoc._accepted_cx.get(context_id)
        if context is None or not assoc.is_established or str(context.abstract_syntax) != VERIFICATION:
            return None
        message_id = command_set.unsigned_short(elements, command_set.MESSAGE_ID)
        if message_id is None or command_set.text(elements, command_set.AFFECTED_SOP_CLASS_UID) != VERIFICATION:
            return None
        return EchoRequestReceived(message_id, VERIFICATION)

    def _is_storage(self, sop_class: str | None) -> bool:
        if sop_class is None or not is_valid_uid(sop_class):
            return False
        known = self._storage_classes.get(sop_class)
        if known is None:
            known = self._storage_classes[sop_class] = uid_to_service_class(sop_class) is StorageServiceClass
        return known

    def _give_up(self, rest: list[bytes | memoryview], forward: list[bytes | memoryview] | None = None) -> bytes:
        self.disabled = True
        self._command_items, self._command = [], bytearray()
        return p_data_tf([*(forward or []), *rest])

    # ---- serving a request -----------------------------------------------------------------------------------

    def _complete(self, receiving: _Receiving) -> None:
        assoc = self._assoc
        command = receiving.command
        data_set = receiving.data_set
        evt.trigger(assoc, evt.EVT_DIMSE_RECV,
                    {"message": StoreRequestReceived(receiving.message_id, command.sop_class_uid, data_set.size)})
        services = self._services
        after_answer: list[Callable[[], None]] = []
        try:
            if not services.admits(assoc, "store"):
                status: int | Dataset = services.refusal("store")
            else:
                status = services.store.store(assoc, command, data_set if data_set.spilled else data_set.getvalue(),
                                              after_answer)
        except Exception:
            log.exception("store.handler_failed")
            status = HANDLER_FAILURE
        finally:
            data_set.close()
        try:
            self._respond(receiving, status)
        finally:
            _run_after_answer(after_answer)

    def _respond(self, receiving: _Receiving, status: int | Dataset) -> None:
        command = receiving.command
        if isinstance(status, int) and status == 0x0000:
            self._writer.send_store_response(receiving.context_id, StoreResponse(
                command.sop_class_uid, command.sop_instance_uid, receiving.message_id, 0x0000))
            return
        response = C_STORE()
        response.MessageIDBeingRespondedTo = receiving.message_id
        response.AffectedSOPClassUID = command.sop_class_uid
        response.AffectedSOPInstanceUID = command.sop_instance_uid
        response = StorageServiceClass(self._assoc).validate_status(status, response)
        self._writer.send_msg(response, receiving.context_id)

    def _answer_echo(self, context_id: int, request: EchoRequestReceived) -> None:
        assoc = self._assoc
        evt.trigger(assoc, evt.EVT_DIMSE_RECV, {"message": request})
        try:
            status: int | Dataset = 0x0000 if self._services.admits(assoc, "echo") else self._services.refusal("echo")
        except Exception:
            log.exception("echo.handler_failed")
            status = ECHO_HANDLER_FAILURE
        if isinstance(status, int):
            self._writer.send_echo_response(context_id, EchoResponse(request.sop_class_uid, request.message_id,
                                                                     status))
            return
        response = C_ECHO()
        response.MessageIDBeingRespondedTo = request.message_id
        response.AffectedSOPClassUID = request.sop_class_uid
        response = VerificationServiceClass(assoc).validate_status(status, response)
        self._writer.send_msg(response, context_id)


def _run_after_answer(work: list[Callable[[], None]]) -> None:
    """The instance is durable whatever became of its answer: its marker is named and its event handed over in any
    case. A failure is logged (a marker that could not be named still has its event)."""
    for finish in work:
        try:
            finish()
        except Exception as exc:
            log.error("store.after_answer_failed error=%s", exc.__class__.__name__)


def _context_of(item: memoryview) -> int:
    return int(item[4])
