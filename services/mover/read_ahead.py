"""Objects read before their turn, in a thread of their own, so that neither our disk nor S3 keeps a destination
waiting.

Sub-operations go one at a time: the next request is written once the response to the one before it is in. The
sender frames the next request while the destination stores the current one (services.mover.prepared); the bytes
it frames are read here, up to READ_AHEAD_ITEMS objects (and at most READ_AHEAD_BYTES) ahead, while the sender
writes requests and waits for responses. Read at their turn, they added the read to every sub-operation whenever it
took longer than the destination's store: a 526 KB CT slice written a moment ago by the local store is on the disk,
not in the page cache (shared.storage.direct_io), and reading it took 0.5-0.9 ms here, as long as sending it.

Which items are sent is not decided here: the sender asks before each one whether it may go on (a cancellation, a
lost lease, a gone requester), and whatever was read ahead of a stop is dropped. An object larger than
PREPARED_MAX_BYTES is not read here (it is streamed at its turn), nor one the sender will not frame itself.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import BinaryIO, Generic, TypeVar

from shared.dicom.part10 import skip_file_meta
from shared.jobs import Item
from shared.storage import ObjectStore, direct_io

log = logging.getLogger(__name__)

PREPARED_MAX_BYTES = 8 << 20  # a larger data set is streamed from the store at its turn, never held in memory
READ_AHEAD_ITEMS = 3
READ_AHEAD_BYTES = 16 << 20
CLOSE_WAIT_SECONDS = 5.0
Entry = TypeVar("Entry")


def _nothing_to_release() -> None:
    return None


@dataclass
class Loaded:
    """An object's data set (after its File Meta) read ahead, the error reading met, or neither: not read (the
    sender streams it at its turn)."""

    data_set: memoryview | bytearray | bytes | None = None
    error: BaseException | None = None
    give_back: Callable[[], None] = field(default=_nothing_to_release, repr=False)

    @property
    def size(self) -> int:
        return len(self.data_set) if self.data_set is not None else 0

    def release(self) -> None:
        """Once the sender has copied the data set: its view of a reused buffer ends before the buffer is given
        back (a buffer is unmapped there when the pool does not keep it, which fails while a view is alive)."""
        if isinstance(self.data_set, memoryview):
            self.data_set.release()
        self.data_set = None
        self.give_back()


NOT_READ = Loaded()


def load(store: ObjectStore, item: Item) -> Loaded:
    """The data set of ``item``'s object: a large local file read around the page cache (as the local store wrote
    it), a small one or a remote one as usual; NOT_READ when it is larger than PREPARED_MAX_BYTES."""
    kept = ExitStack()
    try:
        with store.open(item.object_key) as stream:
            skip_file_meta(stream)
            size = _remaining(stream)
            if size is None:
                data_set = stream.read(PREPARED_MAX_BYTES + 1)
                return Loaded(data_set) if len(data_set) <= PREPARED_MAX_BYTES else NOT_READ
            if size > PREPARED_MAX_BYTES:
                return NOT_READ
            offset = stream.tell()
            if offset + size >= direct_io.DIRECT_MIN_BYTES:
                whole = kept.enter_context(direct_io.read_head(stream.fileno(), offset + size))
                if whole is not None and len(whole) == offset + size:
                    return Loaded(whole[offset:], give_back=kept.close)
                kept.close()
            data_set = stream.read(size)
            if len(data_set) != size:
                raise ValueError("the object ended before its size")  # a failed sub-operation, as for other reads
            return Loaded(data_set)
    except Exception as exc:  # reported as the sub-operation's outcome at its turn
        kept.close()
        return Loaded(error=exc)


def _remaining(stream: BinaryIO) -> int | None:
    """The bytes left in a local file from the current position; None for a stream of unknown length."""
    try:
        return os.fstat(stream.fileno()).st_size - stream.tell()
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None


class ReadAhead(Generic[Entry]):
    """Takes ``entries`` in order in a thread of its own and reads the object of each whose item ``wanted`` says
    so (``load``); ``take`` hands them out in the same order. ``close`` stops the thread and drops what it read."""

    def __init__(self, store: ObjectStore, entries: Iterable[Entry], item_of: Callable[[Entry], Item],
                 wanted: Callable[[Item], bool]) -> None:
        self._store, self._item_of, self._wanted = store, item_of, wanted
        self._entries: Iterator[Entry] = iter(entries)
        self._ready: deque[tuple[Entry, Loaded]] = deque()
        self._held_bytes = 0
        self._changed = threading.Condition()
        self._closed = self._finished = False
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="read-ahead", daemon=True)
        self._thread.start()

    def take(self) -> tuple[Entry, Loaded] | None:
        """The next entry and what was read for it, once read; None after the last. An error taking the entries
        (the index gone, say) is raised here."""
        with self._changed:
            while not self._ready and not self._finished:
                self._changed.wait()
            if self._ready:
                entry, loaded = self._ready.popleft()
                self._held_bytes -= loaded.size
                self._changed.notify_all()
                return entry, loaded
            if self._failure is not None:
                raise self._failure
            return None

    def close(self) -> None:
        with self._changed:
            self._closed = True
            while self._ready:
                self._ready.popleft()[1].release()
            self._changed.notify_all()
        self._thread.join(CLOSE_WAIT_SECONDS)  # a read under way is finished (and dropped) first

    def _has_room(self) -> bool:
        return len(self._ready) < READ_AHEAD_ITEMS and self._held_bytes < READ_AHEAD_BYTES

    def _read(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._closed and not self._has_room():
                        self._changed.wait()
                    if self._closed:
                        return
                entry = next(self._entries, None)
                if entry is None:
                    return
                item = self._item_of(entry)
                loaded = load(self._store, item) if self._wanted(item) else NOT_READ
                with self._changed:
                    if self._closed:
                        loaded.release()
                        return
                    self._ready.append((entry, loaded))
                    self._held_bytes += loaded.size
                    self._changed.notify_all()
        except Exception as exc:
            log.warning("mover.read_ahead_failed error=%s", exc.__class__.__name__)
            self._failure = exc
        finally:
            with self._changed:
                self._finished = True
                self._changed.notify_all()
