"""What the routes of named admin resources (webhooks, auto-forward rules) share: look up by name (404),
list by name, create-or-replace by name, and the audit row of each change (same transaction)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.auth import actor_of
from services.api.routes.config import client_ip
from shared.db.models import AuditEvent
from shared.events import utc_now

Row = TypeVar("Row")


def by_name(session: Session, model: type[Row], name: str, missing: str) -> Row:
    """The row called ``name``; 404 with ``missing`` as the detail when there is none."""
    row = session.scalar(select(model).where(model.name == name))  # type: ignore[attr-defined]
    if row is None:
        raise HTTPException(404, missing)
    return row


def all_by_name(session: Session, model: type[Row]) -> list[Row]:
    return list(session.scalars(select(model).order_by(model.name)))  # type: ignore[attr-defined]


def row_to_save(session: Session, model: type[Row], name: str, now: datetime) -> tuple[Row, bool]:
    """(the row called ``name``, whether it is new): a new one gets an id and ``created_at`` and is added."""
    row = session.scalar(select(model).where(model.name == name))  # type: ignore[attr-defined]
    if row is not None:
        return row, False
    row = model(id=uuid.uuid4().hex, name=name, created_at=now)
    session.add(row)
    return row, True


def audit_change(session: Session, request: Request, action: str, details: dict[str, Any],
                 now: datetime | None = None) -> None:
    session.add(AuditEvent(occurred_at=now or utc_now(), action=action, outcome="success", remote_aet="",
                           remote_ip=client_ip(request), details={**details, "actor": actor_of(request)}))
