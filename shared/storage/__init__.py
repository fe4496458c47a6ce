"""Object storage: one small protocol (create, read, remove, list by key) and its implementations."""

from shared.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PutOutcome,
    PutResult,
    StorageError,
    StorageFull,
    StorageUnavailable,
    validate_key,
)
from shared.storage.factory import open_object_store

__all__ = [
    "ObjectInfo",
    "ObjectNotFound",
    "ObjectStore",
    "PutOutcome",
    "PutResult",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "open_object_store",
    "validate_key",
]
