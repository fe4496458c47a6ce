"""Claims: which key holds the object of a SOP Instance UID, kept in the object store itself.

A key is no longer a function of the SOP Instance UID alone (the ``date`` layout, ``timestamp`` names, a PatientID
that differs between two sends), so duplicate detection cannot rely on ``put_new`` of the key alone. Before the
object is written, ingest writes a small claim ``.claims/<2 hex>/<SOPInstanceUID>`` with ``put_new`` whose content
is the chosen key, or, for the usual key ``<folder>/<SOPInstanceUID>.dcm``, the folder's template ``<folder>/*.dcm``
with ``put_claim`` (the claims of one folder then share one file in a local folder: shared.storage.claim_anchors).
``put_new`` never overwrites, so the first claim wins, and every later send of that SOP
Instance UID (another day, another PatientID, another process) reads the claim and writes to the claimed key, where
``put_new`` answers IDENTICAL or CONFLICT as before. The claim is not flushed by itself: the object's durable
``put_new`` flushes it too (in a local folder, the journal flush that precedes the object's name). A crash before
that flush can leave a claim that is empty (its name on disk, not its content): the next send of the SOP Instance
UID takes it over, as nothing was acknowledged under it. Everything lives in the object store (the source of
truth): duplicates are detected with the index database down.

An object stored before claims existed sits under the legacy key ``StudyUID/SeriesUID/SOPInstanceUID.dcm``; when
no claim exists that key is probed first and, if it holds an object, claimed (so old objects keep their place).
Deleting an instance marks its claim first, in the same step as the index rows are deleted (before that transaction
commits): the claim then reads ``deleting:<key>`` and a ``.deleting/<SOPInstanceUID>`` entry lists it for the
lifecycle loop. A send of that SOP Instance UID that reads a marked claim is refused (InstanceBeingDeleted, answered
0xA701: send again later) instead of being answered Success on an object about to be removed. Then the object is
removed, then the claim and its entry (shared.deletion). A send that read the claim before it was marked is ordered
before the deletion: it may be answered Success and then deleted with the rest, as the admin asked; if it wrote its
object after the old one was removed, that object is new and stays.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from shared.storage.base import InvalidKey, ObjectNotFound, ObjectStore, PutOutcome, StorageError, validate_key
from shared.uids import require_uid

CLAIMS_PREFIX = ".claims/"
DELETING_PREFIX = ".deleting/"
DELETING_MARK = "deleting:"
_TEMPLATE_NAME = "*.dcm"  # a claim "<folder>/*.dcm" names "<folder>/<its SOP Instance UID>.dcm"


class _UnreadableClaim(Exception):
    """A claim whose content is not a key."""


class InstanceBeingDeleted(StorageError):
    """The SOP Instance UID's claim is marked for deletion: a new send must wait until the deletion finished."""


def deleting_key(sop_instance_uid: str) -> str:
    return f"{DELETING_PREFIX}{require_uid(sop_instance_uid, 'SOP Instance UID')}"


def claim_key(sop_instance_uid: str) -> str:
    uid = require_uid(sop_instance_uid, "SOP Instance UID")
    shard = hashlib.sha256(uid.encode()).hexdigest()[:2]
    return f"{CLAIMS_PREFIX}{shard}/{uid}"


@dataclass(frozen=True)
class Claim:
    key: str  # where the SOP instance's object is (or is to be written)
    created: bool  # True: this call made the claim (the instance is new to the store)


@dataclass(frozen=True)
class DeletionEntry:
    sop_instance_uid: str
    key: str  # of the object being deleted
    listed_at: datetime


def _template_of(sop_instance_uid: str, key: str) -> str | None:
    """The content shared by the claims of ``key``'s folder, if ``key`` is ``<folder>/<SOPInstanceUID>.dcm``."""
    folder, _, name = key.rpartition("/")
    if name != f"{sop_instance_uid}.dcm":
        return None
    return f"{folder}/{_TEMPLATE_NAME}" if folder else _TEMPLATE_NAME


def _key_of(sop_instance_uid: str, content: str) -> str:
    """The key a claim's content names (InvalidKey if it names none)."""
    folder, _, name = content.rpartition("/")
    if name == _TEMPLATE_NAME:
        name = f"{require_uid(sop_instance_uid, 'SOP Instance UID')}.dcm"
    return validate_key(f"{folder}/{name}" if folder else name)


class ClaimRegistry:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def read(self, sop_instance_uid: str) -> str | None:
        """The claimed key (also while marked for deletion), or None (also for an unreadable claim)."""
        try:
            return self._read(sop_instance_uid)[0]
        except _UnreadableClaim:
            return None

    def _read(self, sop_instance_uid: str) -> tuple[str | None, bool]:
        """(claimed key or None, whether the claim is marked for deletion)."""
        try:
            content = self._store.get(claim_key(sop_instance_uid)).decode("ascii")
            deleting = content.startswith(DELETING_MARK)
            return _key_of(sop_instance_uid, content.removeprefix(DELETING_MARK)), deleting
        except ObjectNotFound:
            return None, False
        except (UnicodeDecodeError, InvalidKey) as exc:
            raise _UnreadableClaim() from exc

    def resolve(self, sop_instance_uid: str, proposed: str, legacy: str) -> Claim:
        """Bind the SOP Instance UID to ``proposed`` unless it is bound already (or held under ``legacy``)."""
        if legacy != proposed and self._store.stat(legacy) is not None:
            proposed, fresh = legacy, False
        else:
            fresh = True
        template = _template_of(sop_instance_uid, proposed)
        # Not flushed on its own: the durable put_new of the object that follows flushes it too (shared.storage).
        if template is not None:
            content = template.encode("ascii")
            result = self._store.put_claim(claim_key(sop_instance_uid), content)
        else:
            content = proposed.encode("ascii")
            result = self._store.put_new(claim_key(sop_instance_uid), content, hashlib.sha256(content).hexdigest(),
                                         durable=False)
        if result.outcome is PutOutcome.CREATED:
            return Claim(proposed, fresh)
        if result.outcome is PutOutcome.IDENTICAL:
            return Claim(proposed, False)
        try:
            claimed, deleting = self._read(sop_instance_uid)
        except _UnreadableClaim:
            # Empty or torn: its name reached the disk, its content did not, so the send that wrote it was cut by a
            # crash before its flush, i.e. before it was acknowledged. This send takes the claim over.
            self._store.put_hint(claim_key(sop_instance_uid), content)
            return Claim(proposed, False)
        if deleting:
            raise InstanceBeingDeleted("this SOP Instance UID is being deleted; send it again later")
        if claimed is None:  # removed in between (a deletion): take it again
            return self.resolve(sop_instance_uid, proposed, legacy)
        return Claim(claimed, False)

    def mark_deleting(self, sop_instance_uid: str, key: str) -> None:
        """Before a deletion is decided: list it, then mark the claim (sends of the instance are refused)."""
        self._store.put_hint(deleting_key(sop_instance_uid), key.encode("ascii"))
        self._store.replace_claim(claim_key(sop_instance_uid), f"{DELETING_MARK}{validate_key(key)}".encode("ascii"))

    def unmark_deleting(self, sop_instance_uid: str, key: str) -> None:
        """The deletion was not decided after all (its transaction rolled back): the claim names ``key`` again."""
        self._store.replace_claim(claim_key(sop_instance_uid), validate_key(key).encode("ascii"))
        self._store.delete(deleting_key(sop_instance_uid))

    def deletion_entries(self) -> list[DeletionEntry]:
        """Every listed deletion (normally only those in progress; the lifecycle loop settles stale ones)."""
        entries = []
        for info in self._store.list(DELETING_PREFIX):
            try:
                key = validate_key(self._store.get(info.key).decode("ascii"))
            except ObjectNotFound:
                continue
            entries.append(DeletionEntry(info.key.removeprefix(DELETING_PREFIX), key, info.modified))
        return entries

    def release(self, sop_instance_uid: str) -> None:
        """After the object is removed: the claim, then its deletion entry (if any)."""
        self._store.delete_claim(claim_key(sop_instance_uid))
        self._store.delete(deleting_key(sop_instance_uid))
