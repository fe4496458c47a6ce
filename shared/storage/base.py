"""The object-store contract shared by the local-folder and the S3 implementations."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol

_KEY_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
RESERVED_PREFIXES = (".pending/", ".claims/", ".deleting/")


class StorageError(Exception):
    """Base class of object-store failures."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or did not answer in time."""


class StorageFull(StorageError):
    """The store refuses new data: no space or quota left."""


class ObjectNotFound(StorageError):
    """No object under that key."""


class InvalidKey(ValueError):
    """A key that the server would never build."""


class PutOutcome(enum.Enum):
    CREATED = "created"
    IDENTICAL = "identical"  # the key already held exactly these bytes: nothing written
    CONFLICT = "conflict"  # the key already held other bytes: they were kept


@dataclass(frozen=True)
class PutResult:
    outcome: PutOutcome
    stored_sha256: str
    # Of the object a durable put_new CREATED (ObjectStore.stamp); None: the store cannot tell, or durable=False.
    stamp: str | None = None


@dataclass(frozen=True)
class StreamedData:
    """Content too large to hold in memory (a spooled C-STORE data set): its size, and its bytes read chunk by
    chunk on demand; each call of ``chunks`` starts from the beginning (a retried write reads it again)."""

    size: int
    chunks: Callable[[], Iterator[bytes]]


@dataclass(frozen=True)
class PartedData:
    """Content held in memory as consecutive parts (the node's File Meta, then the data set as received), stored
    without being joined into one ``bytes`` first: joining a 526 KB data set is a copy of ~0.24 ms."""

    parts: tuple[bytes, ...]

    @property
    def size(self) -> int:
        return sum(len(part) for part in self.parts)

    def joined(self) -> bytes:
        return b"".join(self.parts)


ObjectData = bytes | PartedData | StreamedData


def size_of(data: ObjectData) -> int:
    return len(data) if isinstance(data, bytes) else data.size


def held_parts(data: ObjectData) -> tuple[bytes, ...] | None:
    """The parts of content held in memory, in order; None for streamed content."""
    if isinstance(data, StreamedData):
        return None
    return data.parts if isinstance(data, PartedData) else (data,)


def chunks_of(data: ObjectData) -> Iterator[bytes]:
    if isinstance(data, StreamedData):
        yield from data.chunks()
    elif isinstance(data, PartedData):
        yield from data.parts
    else:
        yield data


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


def validate_key(key: str) -> str:
    """Accept only keys of the server's own scheme: safe components joined by '/', or a reserved prefix."""
    body = key
    for prefix in RESERVED_PREFIXES:
        if key.startswith(prefix):
            body = key[len(prefix):]
            break
    parts = body.split("/")
    if not body or len(key) > 1024 or any(_KEY_COMPONENT.fullmatch(part) is None for part in parts):
        raise InvalidKey("object key outside the server's key scheme")
    if any(part in (".", "..") for part in parts):
        raise InvalidKey("object key outside the server's key scheme")
    return key


class StagedHint(Protocol):
    """A hint written by ``ObjectStore.stage_hint``: ``publish`` or ``drop`` it, once."""

    def publish(self) -> None:
        """Under its key from now on; StorageError if it cannot be."""
        ...

    def drop(self) -> None:
        """Not wanted: removed, or never named. Never raises."""
        ...


class StagedPut(Protocol):
    """An object written by ``ObjectStore.stage_new``: ``publish`` it, once, whatever happens after the stage."""

    result: PutResult  # as decided at the stage: CREATED (durable, named by publish), IDENTICAL or CONFLICT

    def publish(self) -> PutResult:
        """Under its key from now on; the outcome then: ``result``'s, with the stamp of a CREATED object, or
        IDENTICAL or CONFLICT when another send of the key was named first. StorageError if it cannot be named:
        the store names it later from what made it durable (a local store's journal)."""
        ...


@dataclass(frozen=True)
class PutDone:
    """A StagedPut whose object was named at the stage already."""

    result: PutResult

    def publish(self) -> PutResult:
        return self.result


class ObjectStore(Protocol):
    """Create, read, remove and list objects by key. Implementations are thread-safe."""

    description: str  # where the store is, without credentials

    def put_new(self, key: str, data: ObjectData, sha256: str, durable: bool = True) -> PutResult:
        """Store ``data`` under ``key`` unless the key exists; never overwrite. Durable on return, and so is every
        earlier write of this store in this process; with ``durable=False`` only decided (the first writer wins)
        and made durable by the next durable put_new. ``sha256`` (hex) is the SHA-256 of ``data``: the store relies
        on it (duplicate decisions, S3 metadata, a local store's journal checks its records by it)."""
        ...

    def stage_new(self, key: str, data: ObjectData, sha256: str) -> StagedPut:
        """A durable ``put_new`` in two steps: durable on return, and the outcome decided (the result's), but
        possibly under its key only once ``publish`` is called (a local store writes the file then, off the path
        that waits for the durable put). ``publish`` must be called, once, whatever happens in between."""
        ...

    def put_claim(self, key: str, content: bytes) -> PutResult:
        """``put_new(key, content, sha256, durable=False)`` for a claim whose content many claims share (the folder
        template of shared.storage.claims): a local folder keeps one file per content and names it once more for
        each claim (shared.storage.claim_anchors) instead of writing a file per claim."""
        ...

    def put_hint(self, key: str, data: bytes) -> None:
        """Store a small object (a marker), replacing any; durability follows the next durable put_new."""
        ...

    def stage_hint(self, key: str, data: bytes) -> "StagedHint":
        """``put_hint`` in two steps: durable with the next durable put_new as a put_hint is, but possibly under its
        key only once ``publish`` is called (a local store names the file then, off the path that waits for the
        durable put_new); ``drop`` instead if it is not wanted after all. One of the two must be called."""
        ...

    def get(self, key: str) -> bytes: ...

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object (for large objects); the caller closes it."""
        ...

    def stamp(self, stream: BinaryIO) -> str | None:
        """What tells the object that ``stream`` (from ``open``) reads from any other: equal to the ``stamp`` of
        the put_new that created it for as long as it is that very object, unchanged since; another object under
        the same key (deleted and written again, or rewritten by ``recover``) has another stamp. None when the
        store cannot tell: a reader then trusts nothing it was told about the content (it hashes the bytes)."""
        ...

    def stat(self, key: str) -> ObjectInfo | None: ...

    def delete(self, key: str) -> None:
        """Remove the object; removing a missing key is not an error."""
        ...

    def replace_claim(self, key: str, content: bytes) -> None:
        """``put_hint`` over a claim written by ``put_claim``; a local folder also removes the anchor of the content
        it replaces once no claim is linked to it any more."""
        ...

    def delete_claim(self, key: str) -> None:
        """Remove a claim written by ``put_claim`` or ``replace_claim``, and with it an anchor left without claims
        (see ``replace_claim``). Removing a missing key is not an error."""
        ...

    def delete_hint(self, key: str) -> None:
        """Remove a marker written by put_hint, whose space a later write may reuse: a reader that still has it
        open may then read other content. Removing a missing key is not an error."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (a folder-like prefix ending in '/')."""
        ...

    def count(self, prefix: str) -> int:
        """How many objects ``list(prefix)`` gives, as cheaply as the store can tell."""
        ...

    def ping(self) -> None:
        """Raise StorageUnavailable unless the store answers."""
        ...

    def recover(self) -> None:
        """Bring back what processes that ended uncleanly acknowledged but the store had not settled (a local
        store's journal); at the start of a service."""
        ...

    def settle(self) -> None:
        """Before objects are removed: return once no earlier write of any process can be brought back by
        ``recover`` (StorageUnavailable if that takes too long)."""
        ...

    def close(self) -> None:
        """At the end of the process: settle this process's writes."""
        ...
