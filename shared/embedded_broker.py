"""The embedded queue: kombu's folder transport, made safe for several processes.

A message file is written under a hidden temporary name and renamed into place, so a consumer never reads a
half-written message; a consumer claims a message by renaming it, which exactly one consumer can do.
Messages sort by wall-clock time across processes. The exchange tables (which queue a routing key goes to) are
replaced atomically under a lock file: kombu's own version truncates the table before it locks it, so a process
publishing at that moment could find no queue and drop the message. A binding is written to its table before the
process-wide kombu state records it: otherwise a second thread that declares the same queue finds the binding
already known, skips writing it, publishes, reads a table without it and drops the message (measured: the first
58 of 200 messages lost when two consumer threads declared while a third published). A worker waiting for
messages notices a warm shutdown at its next poll, not at the end of Celery's 2-second wait. A consumed message's
file is kept as a spare for the next message (shared.spare_files) rather than deleted. A temporary file that a
process killed before its rename left behind is removed by the next channel opened (shared.abandoned_files). A
consumer with nothing to take sleeps until a publisher rings its doorbell (shared.doorbell), looking at the queue at
least every ``doorbell.FALLBACK_SECONDS`` (kombu's folder transport lists the folder every ``polling_interval``,
which is not used here). Used as ``pacsfs://localhost/``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
import uuid
from functools import cached_property
from queue import Empty
from typing import Any

from celery.worker import state as worker_state
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from shared import doorbell
from shared.abandoned_files import remove_abandoned
from shared.spare_files import SpareFiles

SCHEME = "pacsfs"


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")  # a message or an exchange table not yet in place


def doorbell_folder(data_folder: str) -> str:
    """Where the consumers of the queue in ``data_folder`` list their doorbells: beside it."""
    return os.path.join(os.path.dirname(os.path.abspath(data_folder)), "doorbells")


class Channel(filesystem.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for folder in (self.data_folder_out, self.control_folder):  # what a killed writer left (abandoned_files)
            remove_abandoned(str(folder), _is_temporary)

    @cached_property
    def spare_files(self) -> SpareFiles:
        return SpareFiles(os.path.join(os.path.dirname(os.path.abspath(self.processed_folder)), "spare"))

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        name = f"{time.time_ns() // 1000:017d}_{uuid.uuid4().hex}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        temporary = os.path.join(self.data_folder_out, f".{name}.tmp")
        body = str_to_bytes(dumps(payload))
        if not self.spare_files.fill(temporary, body):
            with open(temporary, "wb") as stream:
                stream.write(body)
        os.replace(temporary, final)
        doorbell.ring_all(doorbell_folder(self.data_folder_out))

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
            if not self.spare_files.give(claimed, len(payload)):
                os.remove(claimed)
            return loads(bytes_to_str(payload))
        raise Empty()


    def _exchange_lock(self) -> int:
        self.control_folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.control_folder / ".exchanges.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _write_table(self, exchange: str, table: list[Any]) -> None:
        final = self._exchange_file(exchange)
        temporary = final.with_name(f".{final.name}.{uuid.uuid4().hex}.tmp")
        temporary.write_bytes(str_to_bytes(dumps(table)))
        os.replace(temporary, final)

    def get_table(self, exchange: str) -> list[Any]:
        try:
            raw = self._exchange_file(exchange).read_bytes()
        except FileNotFoundError:
            return []
        return [filesystem.exchange_queue_t(*entry) for entry in loads(bytes_to_str(raw))]

    def queue_bind(self, queue: str, exchange: str | None = None, routing_key: str = "", arguments: Any = None,
                   **kwargs: Any) -> Any:
        exchange = exchange or "amq.direct"
        self._queue_bind(exchange, *self.typeof(exchange).prepare_bind(queue, exchange, routing_key, arguments))
        return super().queue_bind(queue, exchange, routing_key, arguments, **kwargs)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: str, queue: str) -> None:
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        lock = self._exchange_lock()
        try:
            table = self.get_table(exchange)
            if binding not in table:
                self._write_table(exchange, [binding, *table])
        finally:
            os.close(lock)  # releases the lock

    def _delete(self, queue: str, exchange: str, routing_key: str, pattern: str, *args: Any, **kwargs: Any) -> None:
        filesystem.virtual.Channel._delete(self, queue, exchange, routing_key, pattern, *args, **kwargs)
        binding = filesystem.exchange_queue_t(routing_key or "", pattern or "", queue or "")
        lock = self._exchange_lock()
        try:
            table = self.get_table(exchange)
            if binding in table:
                self._write_table(exchange, [entry for entry in table if entry != binding])
        finally:
            os.close(lock)


def _shutdown_requested() -> bool:
    """Celery's own test (worker.state.maybe_shutdown): a warm shutdown sets ``should_stop`` to the exit code, 0."""
    return any(flag is not None and flag is not False
               for flag in (worker_state.should_stop, worker_state.should_terminate))


class Transport(filesystem.Transport):
    Channel = Channel
    _doorbell: doorbell.Doorbell | None = None

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Deliver a message, waiting for one up to ``timeout`` (None: until one comes): asleep until a publisher
        rings, looking at the queue at least every FALLBACK_SECONDS, and ended early when the worker has been asked
        to stop (Celery's loop itself waits 2 s before it looks)."""
        started = time.monotonic()
        if self._doorbell is None:  # listed before the first look: a message put after that look rings it
            self._doorbell = doorbell.Doorbell(doorbell_folder(self.client.transport_options["data_folder_in"]))
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            waited = time.monotonic() - started
            if _shutdown_requested() or (timeout is not None and waited >= timeout):
                raise socket.timeout()
            self._doorbell.wait(doorbell.FALLBACK_SECONDS if timeout is None
                                else min(doorbell.FALLBACK_SECONDS, timeout - waited))

    def close_connection(self, connection: Any) -> None:
        if self._doorbell is not None:
            self._doorbell.close()
            self._doorbell = None
        super().close_connection(connection)


def register() -> None:
    TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
