"""C-STORE SCU to a destination AE, streaming stored objects; transcodes only when the destination requires it.

For every (SOP class, stored transfer syntax) the association proposes the stored syntax, and the uncompressed
syntaxes as fallbacks. An object whose stored syntax was accepted is sent as stored, read in chunks from a file
(memory stays flat whatever the size). Otherwise it is decoded and sent uncompressed; if it cannot be decoded
the sub-operation fails (it is never reported as completed when nothing arrived).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pydicom
from pynetdicom import AE, _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import build_context

from services.mover.prepared import Framer, Prepared
from services.mover.read_ahead import Loaded, ReadAhead
from shared.dicom import uid_memo
from shared.dicom.direct_responses import read_store_responses_directly
from shared.dicom.event_driven import event_driven_requestors
from shared.dicom.message_writer import MessageWriter, write_messages_directly, writer_of
from shared.dicom.own_responses import NoResponse, read_by_pynetdicom, read_own_responses, response_channel_of
from shared.dicom.part10 import skip_file_meta
from shared.dicom.requestor import rejection_of, send_without_waiting_for_the_reactor
from shared.dicom.store_request import StoreRequest
from shared.dicom.transcode import UNCOMPRESSED, to_uncompressed
from shared.jobs import Destination, Item
from shared.storage import ObjectStore, StorageError
from shared.storage.filesystem import FilesystemObjectStore

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128
MESSAGE_ID = 1  # one request at a time on the mover's association
Key = TypeVar("Key")
SUCCESS_STATUSES = {0x0000}
WARNING_STATUSES = {0x0001, 0x0107, 0x0116} | set(range(0xB000, 0xC000))


class SendOutcome:
    COMPLETED = "completed"
    WARNING = "warning"
    FAILED = "failed"


ASSOCIATION_LOST = (SendOutcome.FAILED, "association with the destination lost")


class DestinationUnreachable(Exception):
    """No association with the destination could be established."""


def _nodelay(event: Any) -> None:
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def contexts_for(items: Iterable[Item]) -> list[Any]:
    """Per SOP class and stored syntax a context with that syntax alone (so a destination that accepts it at all
    gets the object as stored), and per SOP class one with the uncompressed syntaxes; at most 128 in all."""
    stored: dict[tuple[str, str], None] = {}
    for item in items:
        stored[(item.sop_class_uid, item.transfer_syntax)] = None
    exact = [build_context(sop_class, [syntax]) for sop_class, syntax in stored]
    fallback = [build_context(sop_class, list(UNCOMPRESSED)) for sop_class in dict.fromkeys(c for c, _ in stored)]
    return (exact + fallback)[:MAX_CONTEXTS]


@contextmanager
def _local_file(store: ObjectStore, key: str, spool_dir: Path) -> Iterator[Path]:
    """The object as a file: the stored file itself, or a streamed copy for remote stores."""
    if isinstance(store, FilesystemObjectStore):
        yield store.root / key
        return
    handle, name = tempfile.mkstemp(dir=spool_dir, suffix=".dcm")
    try:
        with os.fdopen(handle, "wb") as target, store.open(key) as source:
            shutil.copyfileobj(source, target, 1 << 20)
        yield Path(name)
    finally:
        os.unlink(name)


Accepted = dict[str, dict[str, int]]  # SOP class → transfer syntax → presentation context ID


def accepted_syntaxes(association: Any, as_scu_only: bool = False) -> Accepted:
    """SOP class → the transfer syntaxes we may send it in on this association, with their context IDs."""
    accepted: Accepted = {}
    for context in association.accepted_contexts:
        if as_scu_only and not context.as_scu:
            continue
        syntaxes = accepted.setdefault(str(context.abstract_syntax), {})
        syntaxes.setdefault(str(context.transfer_syntax[0]), int(context.context_id))
    return accepted


def status_of_response(association: Any, message_id: int) -> int | None:
    """The status of the C-STORE response to ``message_id``; None (and the association aborted) without one."""
    channel = response_channel_of(association)
    if channel is None or not channel.holding:
        return _status_awaited_from_pynetdicom(association, message_id)
    try:
        status = channel.store_status(message_id)
    except NoResponse:
        log.warning("mover.no_store_response")
        channel.give_back()
        association.abort()
        return None
    if status is None:  # another message than a plain response: pynetdicom has it
        status = _status_awaited_from_pynetdicom(association, message_id)
        channel.resume()
    return status


def _status_awaited_from_pynetdicom(association: Any, message_id: int) -> int | None:
    _context_id, response = association.dimse.get_msg(block=True)
    if not isinstance(response, C_STORE) or response.MessageIDBeingRespondedTo != message_id \
            or response.Status is None:
        log.warning("mover.no_store_response")
        association.abort()
        return None
    return int(response.Status)


def _send_as_stored(association: Any, writer: MessageWriter, context_id: int, store: ObjectStore, item: Item,
                    message_id: int) -> int | None:
    """The stored object, streamed from the store after its File Meta; its response status."""
    request = StoreRequest(item.sop_class_uid, item.sop_instance_uid, message_id)
    with store.open(item.object_key) as stream:
        skip_file_meta(stream)
        writer.send_stored_object(context_id, request, stream)
    return status_of_response(association, message_id)


def _send_with_pynetdicom(association: Any, syntaxes: dict[str, int], store: ObjectStore, item: Item,
                          spool_dir: Path, message_id: int) -> int | None | str:
    """pynetdicom's send_c_store: an object to transcode, or any object on a TLS association. Its response is
    read by pynetdicom's DUL thread."""
    with read_by_pynetdicom(association), _local_file(store, item.object_key, spool_dir) as path:
        if item.transfer_syntax in syntaxes:
            answer = association.send_c_store(path, msg_id=message_id)
        else:
            dataset = _decoded_for(path, set(syntaxes))
            if dataset is None:
                return "cannot transcode to a syntax the destination accepts"
            answer = association.send_c_store(dataset, msg_id=message_id)
    return int(answer.Status) if answer is not None and "Status" in answer else None


def send_item(association: Any, accepted: Accepted, store: ObjectStore, item: Item, spool_dir: Path,
              message_id: int = 1) -> tuple[str, str]:
    """One C-STORE sub-operation on ``association``: (outcome, reason)."""
    syntaxes = accepted.get(item.sop_class_uid, {})
    if not syntaxes:
        return SendOutcome.FAILED, "the destination accepted no context for the SOP class"
    writer = writer_of(association)
    try:
        status: int | None | str
        if writer is not None and item.transfer_syntax in syntaxes:
            status = _send_as_stored(association, writer, syntaxes[item.transfer_syntax], store, item, message_id)
        else:
            status = _send_with_pynetdicom(association, syntaxes, store, item, spool_dir, message_id)
    except SEND_ERRORS as exc:
        return failure_of(exc)
    return outcome_of(status)


SEND_ERRORS = (StorageError, OSError, ValueError, AttributeError, RuntimeError)


def failure_of(exc: BaseException) -> tuple[str, str]:
    """The outcome of a sub-operation that met one of SEND_ERRORS."""
    if isinstance(exc, StorageError):
        return SendOutcome.FAILED, "object store unavailable"
    return SendOutcome.FAILED, f"sending failed ({exc.__class__.__name__})"


def outcome_of(status: int | None | str) -> tuple[str, str]:
    """The outcome of a sub-operation from the status of its response (None: no response; text: why nothing was
    sent)."""
    if isinstance(status, str):
        return SendOutcome.FAILED, status
    if status is None:
        return SendOutcome.FAILED, "no response from the destination"
    if status in SUCCESS_STATUSES:
        return SendOutcome.COMPLETED, ""
    if status in WARNING_STATUSES:
        return SendOutcome.WARNING, f"destination answered 0x{status:04X}"
    return SendOutcome.FAILED, f"destination answered 0x{status:04X}"


def _decoded_for(path: Path, accepted: set[str]) -> pydicom.Dataset | None:
    """The object decoded for an uncompressed little-endian syntax the destination accepts."""
    target = next((ts for ts in UNCOMPRESSED if ts in accepted), None)
    if target is None:
        return None
    try:
        dataset = to_uncompressed(pydicom.dcmread(path), target)
    except Exception as exc:
        log.warning("mover.transcode_failed error=%s", exc.__class__.__name__)
        return None
    return dataset


def _always() -> bool:
    return True


class StoreSender:
    """One association to one destination; ``send_each`` makes its C-STORE sub-operations."""

    def __init__(self, store: ObjectStore, destination: Destination, items: list[Item], spool_dir: Path) -> None:
        _config.STORE_SEND_CHUNKED_DATASET = True  # paths are streamed from disk, never loaded whole
        _config.LOG_HANDLER_LEVEL = "none"  # pynetdicom's log handlers format every PDU and message we send
        event_driven_requestors()  # its threads wait for the response on the socket, not in 0.1 ms sleeps
        uid_memo.install()  # the UIDs of its A-ASSOCIATE-RQ and of the AC, converted once per value
        self._store = store
        self._spool_dir = spool_dir
        self._ae = AE(ae_title=destination.calling_ae_title)
        self._ae.acse_timeout = self._ae.dimse_timeout = self._ae.network_timeout = 30
        self._ae.requested_contexts = contexts_for(items)
        self._association = self._ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                                               evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])
        if not self._association.is_established:
            rejection = rejection_of(self._association)
            raise DestinationUnreachable(
                "association with the destination was not established" if rejection is None else
                "the destination rejected the association (result/source/reason %d/%d/%d)" % rejection)
        send_without_waiting_for_the_reactor(self._association)
        write_messages_directly(self._association)
        read_store_responses_directly(self._association)
        self._responses = read_own_responses(self._association)
        self._framer = Framer()
        self._accepted = accepted_syntaxes(self._association)

    def close(self) -> None:
        if self._responses is not None:
            self._responses.give_back()  # the release response is the DUL thread's to read
        if self._association.is_established:
            self._association.release()

    @property
    def alive(self) -> bool:
        return bool(self._association.is_established)

    def send_each(self, items: Iterable[tuple[Key, Item]], go_on: Callable[[], bool] = _always,
                  ) -> Iterator[tuple[Key, str, str]]:
        """(key, outcome, reason) of each item, in order, while ``go_on`` says yes before each (send_in_turn)."""
        return send_in_turn(self._association, self._accepted, self._store, self._spool_dir, self._framer,
                            ((key, item, MESSAGE_ID) for key, item in items), go_on)


def send_in_turn(association: Any, accepted: Accepted, store: ObjectStore, spool_dir: Path, framer: Framer,
                 items: Iterable[tuple[Key, Item, int]], go_on: Callable[[], bool] = _always,
                 ) -> Iterator[tuple[Key, str, str]]:
    """(key, outcome, reason) of each (key, item, message ID), in order, one sub-operation at a time
    (services.mover.prepared), for as long as ``go_on`` says yes before each.

    The objects are read ahead in a thread (services.mover.read_ahead); while the destination stores one object,
    the next request is framed, and the outcome before it is handed out (the caller records it meanwhile). When
    ``go_on`` says no (a cancellation), the sub-operation in flight is still completed and reported, and what was
    read ahead is dropped."""
    writer = writer_of(association)

    def alive() -> bool:
        return bool(association.is_established)

    def framed_here(item: Item) -> bool:  # else streamed or decoded at its turn by send_item, or not sendable
        return writer is not None and item.transfer_syntax in accepted.get(item.sop_class_uid, {})

    def take() -> tuple[tuple[Key, Item, int], Loaded] | None:
        return ahead.take() if go_on() else None

    def prepared(entry: tuple[tuple[Key, Item, int], Loaded]) -> Prepared | None:
        (_key, item, message_id), loaded = entry
        if (loaded.data_set is None and loaded.error is None) or not alive():
            loaded.release()
            return None
        assert writer is not None
        return framer.frame(writer, accepted[item.sop_class_uid][item.transfer_syntax], item, message_id, loaded)

    ahead: ReadAhead[tuple[Key, Item, int]] = ReadAhead(store, items, lambda entry: entry[1], framed_here)
    try:
        upcoming = take()
        ready = prepared(upcoming) if upcoming is not None else None
        finished: tuple[Key, str, str] | None = None  # reported once the next request is on its way
        while upcoming is not None:
            (key, item, message_id), _loaded = upcoming
            outcome: tuple[str, str] | None
            if ready is None:
                if finished is not None:
                    yield finished
                outcome = ASSOCIATION_LOST if not alive() else \
                    send_item(association, accepted, store, item, spool_dir, message_id)
            else:
                outcome = ASSOCIATION_LOST if not alive() else _write(association, ready)
                if finished is not None:
                    yield finished
            upcoming = take()
            following = prepared(upcoming) if upcoming is not None else None
            if outcome is None:  # written: its response is awaited now
                outcome = outcome_of(status_of_response(association, message_id))
            finished, ready = (key, *outcome), following
        if finished is not None:
            yield finished
    finally:
        ahead.close()


def _write(association: Any, ready: Prepared) -> tuple[str, str] | None:
    """Write a prepared request; the sub-operation's failure, or None once it is on its way."""
    try:
        if ready.error is not None:
            raise ready.error
        writer = writer_of(association)
        assert writer is not None and ready.framed is not None
        writer.send_framed(ready.framed, ready.size)
    except SEND_ERRORS as exc:
        return failure_of(exc)
    return None
