"""A received data set that stays in memory while small and moves to an anonymous file once large.

pynetdicom assembles a C-STORE data set in a ``BytesIO`` (it insists on that type), and the SCP used to copy it
into one ``bytes`` object: a 1 GB instance cost 2 GB of memory per association. A SpooledDataset is that
``BytesIO``: writes stay in memory up to ``limit`` bytes; the write that crosses it moves everything to an
anonymous file in the spool folder (``O_TMPFILE`` where the system has it: nothing is left behind by a crash)
and every later write goes there. The ingest path reads a spilled data set in chunks (its head to identify it,
then the whole to hash and store it); ``read``/``seek`` and ``getvalue`` still answer for any other reader, the
latter at the memory cost it implies.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from shared.digest import CHUNK_BYTES, read_chunks



class SpooledDataset(BytesIO):
    def __init__(self, spool_dir: Path, limit: int) -> None:
        super().__init__()
        self._spool_dir = spool_dir
        self._limit = limit
        self._file: BinaryIO | None = None
        self._size = 0

    @property
    def spilled(self) -> bool:
        return self._file is not None

    @property
    def size(self) -> int:
        return self._size

    def write(self, data: Any) -> int:
        if self._file is None and self._size + len(data) > self._limit:
            self._spill()
        if self._file is None:
            written = super().write(data)
        else:
            self._file.seek(0, 2)  # appends, even after a reader moved the position
            written = self._file.write(data)
        self._size += written
        return written

    def _spill(self) -> None:
        spill: BinaryIO = tempfile.TemporaryFile(dir=self._spool_dir)  # noqa: SIM115 - closed with the dataset
        spill.write(super().getbuffer())
        self._file = spill
        super().seek(0)
        super().truncate()

    def head(self, length: int) -> bytes:
        """The first ``length`` bytes (fewer if the data set is shorter)."""
        if self._file is None:
            return bytes(super().getbuffer()[:length])
        self._file.flush()
        self._file.seek(0)
        return self._file.read(length)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The whole data set, in order, a chunk at a time (each call starts from the beginning)."""
        if self._file is None:
            yield bytes(super().getbuffer())
            return
        self._file.flush()
        self._file.seek(0)
        yield from read_chunks(self._file, chunk_bytes)

    # Reading it as a stream (pynetdicom decodes a C-FIND identifier that way) reads the spool file once spilled.
    def read(self, size: int | None = -1) -> bytes:
        return self._file.read(size) if self._file is not None else super().read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        if self._file is None:
            return super().seek(offset, whence)
        self._file.flush()
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell() if self._file is not None else super().tell()

    def getvalue(self) -> bytes:
        return b"".join(self.chunks()) if self._file is not None else super().getvalue()

    def getbuffer(self) -> memoryview:
        return memoryview(self.getvalue()) if self._file is not None else super().getbuffer()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()
