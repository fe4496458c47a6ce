"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from services.api.dependencies import get_runtime
from services.api.readiness import check_dependencies
from shared.runtime import Runtime

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The API process is alive")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Every dependency is reachable (503 names what is missing)")
def readyz(runtime: Runtime = Depends(get_runtime)) -> JSONResponse:
    checks = check_dependencies(runtime)
    missing = sorted(name for name, state in checks.items() if state != "ok")
    body = {"ready": not missing, "missing": missing, "checks": checks}
    return JSONResponse(body, status_code=503 if missing else 200)
