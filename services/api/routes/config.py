"""GET/PATCH /api/config: the live node configuration (shared.node_config.NodeConfig), stored in the index.

Running services see a change within 0.5 s (shared.live_config.LiveConfig polls); nothing needs a restart.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.api.auth import actor_of
from services.api.dependencies import get_runtime, get_session
from shared.db.models import AuditEvent
from shared.events import utc_now
from shared.node_config import CONFIG_KEYS, ConfigError, NodeConfig, apply_patch, default_config_for, load_config, \
    store_settings
from shared.runtime import Runtime

router = APIRouter(tags=["config"])

PATCH_EXAMPLE = {"unknown_callers_allowed": ["echo", "store"], "max_associations": 32,
                 "ip_allowlist": ["10.0.0.0/8"]}
# Validated here as a whole (not by FastAPI), so that a 422 names each bad key and applies nothing.
PATCH_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": NodeConfig.model_json_schema(), "example": PATCH_EXAMPLE}}}}


def validation_detail(exc: ConfigError) -> list[dict[str, Any]]:
    """FastAPI's 422 shape (loc, msg, type) plus the offending key by name."""
    return [{"loc": ["body", key], "key": key, "msg": f"{key}: {message}", "type": kind}
            for key, message, kind in exc.problems]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _defaults(runtime: Runtime) -> NodeConfig:
    return default_config_for(runtime.settings)


@router.get("/api/config", summary="Every key of the live configuration with its current value")
def get_config(runtime: Runtime = Depends(get_runtime), session: Session = Depends(get_session)) -> dict[str, Any]:
    try:
        config = load_config(session, _defaults(runtime))
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"index database unavailable ({exc.__class__.__name__})") from exc
    return config.model_dump(mode="json")


@router.patch(
    "/api/config",
    summary="Change some keys (validated as a whole: on any error, 422 naming the key and nothing applied)",
    description="Any of the keys " + ", ".join(CONFIG_KEYS) + ". Running services apply the change within 0.5 s. "
    "Answer: the whole configuration.",
    openapi_extra=PATCH_SCHEMA,
)
def patch_config(
    request: Request,
    patch: dict[str, Any] = Body(..., include_in_schema=False),
    runtime: Runtime = Depends(get_runtime),
    session: Session = Depends(get_session),
) -> dict[str, Any]:
    try:
        with session.begin():
            current = load_config(session, _defaults(runtime))
            try:
                updated = apply_patch(current, patch)
            except ConfigError as exc:
                raise HTTPException(422, validation_detail(exc)) from None
            old_values = current.model_dump(mode="json")
            new_values = updated.model_dump(mode="json")
            changes = {key: new_values[key] for key in patch}
            now = utc_now()
            store_settings(session, changes, now)
            session.add(AuditEvent(
                occurred_at=now, action="config_changed", outcome="success", remote_aet="",
                remote_ip=client_ip(request),
                details={"changes": {key: {"old": old_values[key], "new": value} for key, value in changes.items()},
                         "actor": actor_of(request)},
            ))
    except SQLAlchemyError as exc:
        raise HTTPException(503, f"index database unavailable ({exc.__class__.__name__})") from exc
    return new_values
