"""Requests framed before their turn, so that the destination is never kept waiting for our disk or S3.

DIMSE sub-operations go one at a time: the next request may be written only once the response to the previous
one arrived. Whatever the sender does between those two moments (read the object, frame its PDUs) adds to every
sub-operation, and the destination idles meanwhile. So the object is read ahead (services.mover.read_ahead), the
next request is framed while the destination stores the current one, and it is written as soon as the response is
in.

The data set is copied into its places between the PDU headers of one reused buffer, without a joined copy or a
fresh allocation per object.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.mover.read_ahead import Loaded
from shared.dicom.message_writer import MessageWriter
from shared.dicom.store_request import StoreRequest
from shared.jobs import Item


@dataclass(frozen=True)
class Prepared:
    """A C-STORE request ready to write (``framed``, its data set ``size`` bytes), or the error reading met."""

    framed: memoryview | None = None
    size: int = 0
    error: BaseException | None = None


class Framer:
    """Frames one request at a time in a reused buffer: a request stays valid until the next is framed."""

    def __init__(self) -> None:
        self._buffer: bytearray | None = None

    def frame(self, writer: MessageWriter, context_id: int, item: Item, message_id: int,
              loaded: Loaded) -> Prepared:
        """The request of ``item`` framed for ``context_id`` around the data set read ahead for it (given back
        here), or the error reading it met."""
        try:
            if loaded.error is not None:
                raise loaded.error
            assert loaded.data_set is not None
            request = StoreRequest(item.sop_class_uid, item.sop_instance_uid, message_id)
            self._buffer, framed, places = writer.frame_stored_object(context_id, request, loaded.size,
                                                                      self._buffer)
            _copy_into(loaded.data_set, places)
            return Prepared(framed, loaded.size)
        except Exception as exc:  # reported as the sub-operation's outcome at its turn
            return Prepared(error=exc)
        finally:
            loaded.release()


def _copy_into(data_set: bytes | bytearray | memoryview, places: list[memoryview]) -> None:
    source = memoryview(data_set)
    start = 0
    for place in places:
        place[:] = source[start:start + len(place)]
        start += len(place)
