"""The embedded queue: kombu's folder transport, made safe for several processes.

A message file is written under a hidden temporary name and renamed into place, so a consumer never reads a
half-written message; a consumer claims a message by renaming it, which exactly one consumer can do.
Messages sort by wall-clock time across processes. Used as ``pacsfs://localhost/`` (no server needed).
"""

from __future__ import annotations

import os
import time
import uuid
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

SCHEME = "pacsfs"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{time.time_ns() // 1000:017d}_{uuid.uuid4().hex}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        with open(temporary, "wb") as stream:
            stream.write(str_to_bytes(dumps(payload)))
        os.replace(temporary, final)

    def _get(self, queue: str) -> Any:
        suffix = f".{queue}.msg"
        names = sorted(name for name in os.listdir(self.data_folder_in)
                       if name.endswith(suffix) and not name.startswith("."))
        for name in names:
            claimed = os.path.join(self.processed_folder, name)
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it
            with open(claimed, "rb") as stream:
                payload = stream.read()
            os.remove(claimed)
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel


def register() -> None:
    TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
