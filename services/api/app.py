"""The FastAPI application, built around a runtime (no engine at import time)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.api import dicomweb
from services.api.auth import AccessControl, Authenticator, openapi_security
from services.api.routes import audit, metrics, tokens
from services.api.routes import config, health, instances, jobs, modalities, status
from services.api.routes import dashboard, studies
from services.api.routes import routing, webhooks
from services.api.routes import storage_admin
from shared.runtime import Runtime
from shared.storage_usage import StorageUsage
from shared.version import VERSION


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="PACS node", version=VERSION,
                  description="Status and configuration of a DICOM PACS node.")
    app.state.runtime = runtime
    app.state.storage_usage = StorageUsage(runtime.sessions, runtime.store)  # STOW-RS limits (refreshed lazily)
    for router in (health.router, status.router, instances.router, config.router, modalities.router,
                   jobs.router, dicomweb.router):
        app.include_router(router)
    for router in (studies.router, dashboard.router):  # dashboard: GET / and its static files
        app.include_router(router)
    for router in (audit.router, tokens.router, metrics.router):
        app.include_router(router)
    for router in (webhooks.router, routing.router):  # events and routing (admin)
        app.include_router(router)
    app.include_router(storage_admin.router)  # deletion, protection (admin), retention preview
    install_access_control(app, runtime)
    install_cors(app, runtime.settings.cors_origins)  # outermost: a preflight never needs a token
    return app


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Browsers on these origins (an OHIF viewer elsewhere) may call the API; none by default."""
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["*"], expose_headers=["Warning", "Content-Location"])


def install_access_control(app: FastAPI, runtime: Runtime) -> None:
    """Bearer tokens and roles for every request, whatever router or mount serves it (services.api.auth)."""
    app.state.authenticator = Authenticator(runtime.settings, runtime.sessions)
    app.add_middleware(AccessControl, authenticator=app.state.authenticator)
    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_security(build_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
