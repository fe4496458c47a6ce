"""Tables of the storage lifecycle (issue #8): protected studies, and objects whose index rows were deleted but
whose removal from the object store is not confirmed yet (migration 0008). Same Base as shared.db.models."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.models import Base, BigId, UTCDateTime


class ProtectedStudy(Base):
    """A study that retention (and any recycling) never deletes, and REST deletion refuses (409)."""

    __tablename__ = "protected_studies"

    study_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    protected_at: Mapped[datetime] = mapped_column(UTCDateTime)
    protected_by: Mapped[str] = mapped_column(String(64), default="")


class PendingDeletion(Base):
    """An object to remove from the store: written in the transaction that deleted its index rows, removed once
    the object and its claim are gone (shared.deletion). The indexer's lifecycle loop finishes what a crash left."""

    __tablename__ = "pending_deletions"

    pk: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    object_key: Mapped[str] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
