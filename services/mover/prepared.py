"""Objects read and framed before their turn, so that the destination is never kept waiting for our disk or S3.

DIMSE sub-operations go one at a time: the next request may be written only once the response to the previous
one arrived. Whatever the sender does between those two moments (open the object, read it, frame its PDUs) adds
to every sub-operation, and the destination idles meanwhile. So the sender does that work for the next object
while the destination stores the current one, and writes the framed request as soon as the response is in.

The data set is read straight into its places between the PDU headers of one reused buffer (a local file with
one preadv call; a large one around the page cache, as the local store wrote it, then copied into its places),
without a joined copy or a fresh allocation per object. An object larger than
PREPARED_MAX_BYTES is not held in memory: it is streamed at its turn.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import BinaryIO

from shared.dicom.message_writer import MessageWriter
from shared.dicom.part10 import skip_file_meta
from shared.dicom.store_request import StoreRequest
from shared.jobs import Item
from shared.storage import ObjectStore, direct_io

PREPARED_MAX_BYTES = 8 << 20


@dataclass(frozen=True)
class Prepared:
    """A C-STORE request ready to write (``framed``, its data set ``size`` bytes), or the error reading met."""

    framed: memoryview | None = None
    size: int = 0
    error: BaseException | None = None


class Framer:
    """Prepares one request at a time in a reused buffer: a request stays valid until the next is prepared."""

    def __init__(self) -> None:
        self._buffer: bytearray | None = None

    def prepare(self, writer: MessageWriter, context_id: int, store: ObjectStore, item: Item,
                message_id: int) -> Prepared | None:
        """The request of ``item`` framed for ``context_id``; None when the object is too large to hold."""
        request = StoreRequest(item.sop_class_uid, item.sop_instance_uid, message_id)
        try:
            with store.open(item.object_key) as stream:
                skip_file_meta(stream)
                size = _remaining(stream)
                data_set = stream.read(PREPARED_MAX_BYTES + 1) if size is None else None
                if data_set is not None:
                    size = len(data_set)
                assert size is not None
                if size > PREPARED_MAX_BYTES:
                    return None
                self._buffer, framed, places = writer.frame_stored_object(context_id, request, size, self._buffer)
                if data_set is None:
                    _read_local(stream, size, places)
                else:
                    _copy_into(data_set, places)
            return Prepared(framed, size)
        except Exception as exc:  # reported as the sub-operation's outcome at its turn
            return Prepared(error=exc)


def _remaining(stream: BinaryIO) -> int | None:
    """The bytes left in a local file from the current position; None for a stream of unknown length."""
    try:
        return os.fstat(stream.fileno()).st_size - stream.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


def _read_local(stream: BinaryIO, size: int, places: list[memoryview]) -> None:
    """The rest of a local file (``size`` bytes) into ``places``: a large one read around the page cache (the local
    store writes it so: shared.storage.direct_io), else with preadv."""
    offset = stream.tell()
    if offset + size >= direct_io.DIRECT_MIN_BYTES:
        with direct_io.read_head(stream.fileno(), offset + size) as whole:
            if whole is not None and len(whole) == offset + size:
                _copy_into(whole[offset:], places)
                return
    _read_into(stream, places)


def _read_into(stream: BinaryIO, places: list[memoryview]) -> None:
    """Read the rest of a local file into ``places`` (one preadv call when the kernel allows)."""
    offset = stream.tell()
    remaining = places
    while remaining:
        count = os.preadv(stream.fileno(), remaining[:1024], offset)  # IOV_MAX
        if count <= 0:
            raise ValueError("the object ended before its size")  # a failed sub-operation, as for other reads
        offset += count
        while remaining and count >= len(remaining[0]):
            count -= len(remaining[0])
            remaining = remaining[1:]
        if count:
            remaining = [remaining[0][count:], *remaining[1:]]


def _copy_into(data_set: bytes | memoryview, places: list[memoryview]) -> None:
    source = memoryview(data_set)
    start = 0
    for place in places:
        place[:] = source[start:start + len(place)]
        start += len(place)
