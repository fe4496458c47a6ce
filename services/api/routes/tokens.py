"""/api/tokens: API tokens managed over REST (admin only), as `pacs token` does on the command line."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request, Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.auth import actor_of, forget_cached_tokens
from services.api.auth_tokens import TokenError, as_json, create_token, list_tokens, revoke_token
from services.api.dependencies import get_session
from services.api.routes.config import client_ip

router = APIRouter(tags=["tokens"])

TokenName = Path(..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="1 to 64 letters, digits, '_', '-', '.'")
CREATE_SCHEMA = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["name", "role"], "additionalProperties": False,
        "properties": {
            "name": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{1,64}$"},
            "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
            "expires_in_days": {"type": ["number", "null"], "exclusiveMinimum": 0},
        },
    }}}},
}


def _unavailable(exc: SQLAlchemyError) -> HTTPException:
    return HTTPException(503, f"index database unavailable ({exc.__class__.__name__})")


@router.get("/api/tokens", summary="API tokens (never their secrets): name, role, prefix, state, dates")
def get_tokens(include_revoked: bool = Query(False), session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    try:
        return [as_json(row) for row in list_tokens(session, include_revoked)]
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc


@router.post("/api/tokens", status_code=201, openapi_extra=CREATE_SCHEMA,
             summary="Create a token; the answer holds its secret, shown this once")
def post_token(request: Request, body: Any = Body(..., include_in_schema=False),
               session: Session = Depends(get_session)) -> dict[str, Any]:
    if not isinstance(body, dict) or set(body) - {"name", "role", "expires_in_days"}:
        raise HTTPException(422, "expected {\"name\", \"role\", \"expires_in_days\"}")
    name, role, days = body.get("name"), body.get("role"), body.get("expires_in_days")
    if not isinstance(name, str) or not isinstance(role, str):
        raise HTTPException(422, "name and role are required strings")
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 36500):
        raise HTTPException(422, "expires_in_days: a positive number of days (at most 36500)")
    try:
        with session.begin():
            secret, row = create_token(session, name, role, created_by=actor_of(request),
                                       remote_ip=client_ip(request),
                                       expires_in=timedelta(days=days) if days else None)
            answer = {**as_json(row), "token": secret}
        forget_cached_tokens(request)
    except TokenError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, str(exc)) from None
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    return answer


@router.delete("/api/tokens/{name}", status_code=204, summary="Revoke the live token of that name (at once)")
def delete_token(request: Request, name: str = TokenName, session: Session = Depends(get_session)) -> Response:
    try:
        with session.begin():
            revoke_token(session, name, revoked_by=actor_of(request), remote_ip=client_ip(request))
        forget_cached_tokens(request)
    except TokenError as exc:
        raise HTTPException(404, str(exc)) from None
    except SQLAlchemyError as exc:
        raise _unavailable(exc) from exc
    return Response(status_code=204)
