"""API tokens: created with a role, shown once, kept only as a SHA-256 digest, revoked by name.

A token is ``pacs_`` followed by 43 URL-safe characters (32 random bytes). Being random and long, it needs no
salt or slow hash: the SHA-256 of the whole token is stored (unique, indexed), and a presented token is looked
up by its digest, so that no comparison depends on how much of a secret matched. The first characters are kept
as ``prefix`` so that an admin can tell tokens apart in listings without seeing them.

Used by the HTTP API (services.api.auth), its /api/tokens routes and the ``pacs token`` command.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db.models import ApiToken, AuditEvent
from shared.events import iso_utc, utc_now

TOKEN_PREFIX = "pacs_"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
SHOWN_PREFIX_LENGTH = 12  # "pacs_" + 7 characters of the secret


class Role(IntEnum):
    """Each role may do what the roles below it may do."""

    viewer = 1
    operator = 2
    admin = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().lower()]
        except KeyError:
            raise TokenError(f"unknown role {text!r}: one of viewer, operator, admin") from None


class TokenError(ValueError):
    """A token request that cannot be honoured (bad name or role, name taken, unknown token)."""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    name: str
    role: Role
    expires_at: datetime | None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _valid_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise TokenError("a token name has 1 to 64 letters, digits, '_', '-' or '.'")
    return name


def as_json(row: ApiToken) -> dict[str, Any]:
    now = utc_now()
    state = "revoked" if row.revoked_at else "expired" if row.expires_at and row.expires_at <= now else "active"
    return {
        "name": row.name, "role": row.role, "prefix": row.prefix, "state": state,
        "created_at": iso_utc(row.created_at), "created_by": row.created_by,
        "expires_at": iso_utc(row.expires_at) if row.expires_at else None,
        "last_used_at": iso_utc(row.last_used_at) if row.last_used_at else None,
        "revoked_at": iso_utc(row.revoked_at) if row.revoked_at else None,
    }


def _audit(session: Session, action: str, actor: str, remote_ip: str, details: dict[str, Any]) -> None:
    session.add(AuditEvent(occurred_at=utc_now(), action=action, outcome="success", remote_aet="",
                           remote_ip=remote_ip[:64], details={**details, "actor": actor}))


def create_token(session: Session, name: str, role: str | Role, *, created_by: str, remote_ip: str = "",
                 expires_in: timedelta | None = None) -> tuple[str, ApiToken]:
    """A new token (the secret, returned only here, and its row); audited as ``token_created``.

    Runs inside the caller's transaction. A live token of the same name is an error (revoke it first).
    """
    _valid_name(name)
    parsed = role if isinstance(role, Role) else Role.parse(role)
    if expires_in is not None and expires_in <= timedelta(0):
        raise TokenError("the lifetime of a token must be positive")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))):
        raise TokenError(f"a token named {name!r} exists: revoke it first, or choose another name")
    secret = new_secret()
    now = utc_now()
    row = ApiToken(id=uuid.uuid4().hex, name=name, role=parsed.name, secret_sha256=digest(secret),
                   prefix=secret[:SHOWN_PREFIX_LENGTH], created_at=now, created_by=created_by[:64],
                   expires_at=now + expires_in if expires_in else None)
    session.add(row)
    try:
        session.flush()
    except IntegrityError:
        raise TokenError(f"a token named {name!r} exists: revoke it first, or choose another name") from None
    _audit(session, "token_created", created_by, remote_ip,
           {"name": name, "role": parsed.name, "prefix": row.prefix,
            "expires_at": iso_utc(row.expires_at) if row.expires_at else None})
    return secret, row


def revoke_token(session: Session, name: str, *, revoked_by: str, remote_ip: str = "") -> ApiToken:
    """Revoke the live token of that name (it stops working at once); audited as ``token_revoked``."""
    row = session.scalar(select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None)))
    if row is None:
        raise TokenError(f"no live token named {name!r}")
    row.revoked_at = utc_now()
    _audit(session, "token_revoked", revoked_by, remote_ip, {"name": name, "role": row.role,
                                                               "prefix": row.prefix})
    return row


def list_tokens(session: Session, include_revoked: bool = False) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.name, ApiToken.created_at)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list(session.scalars(query))


def live_token_count(session: Session) -> int:
    """Tokens that could authenticate a request now (neither revoked nor expired)."""
    now = utc_now()
    return session.scalar(
        select(func.count()).select_from(ApiToken).where(
            ApiToken.revoked_at.is_(None), (ApiToken.expires_at.is_(None)) | (ApiToken.expires_at > now))
    ) or 0


def any_token_made(session: Session) -> bool:
    """Whether a token was ever made here (revoked and expired ones count: auth was chosen once)."""
    return session.scalar(select(ApiToken.id).limit(1)) is not None


def find_token(session: Session, token: str) -> TokenInfo | None:
    """The live token with this secret, or None (unknown, revoked or expired)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalar(select(ApiToken).where(ApiToken.secret_sha256 == digest(token)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and row.expires_at <= utc_now():
        return None
    return TokenInfo(id=row.id, name=row.name, role=Role[row.role], expires_at=row.expires_at)


def touch(session: Session, token_id: str, at: datetime) -> None:
    """Record when a token was last used (the API does it at most once a minute per token)."""
    row = session.get(ApiToken, token_id)
    if row is not None:
        row.last_used_at = at
