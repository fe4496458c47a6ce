"""The FastAPI application, built around a runtime (no engine at import time)."""

from __future__ import annotations

from fastapi import FastAPI

from services.api.routes import config, health, instances, jobs, modalities, status
from shared.runtime import Runtime
from shared.version import VERSION


def create_app(runtime: Runtime) -> FastAPI:
    app = FastAPI(title="PACS node", version=VERSION,
                  description="Status and configuration of a DICOM PACS node.")
    app.state.runtime = runtime
    for router in (health.router, status.router, instances.router, config.router, modalities.router,
                   jobs.router):
        app.include_router(router)
    return app
