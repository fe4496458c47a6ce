"""`pacs api`: the HTTP API under uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from services.api.app import create_app
from services.api.auth import startup_refusal
from shared.heartbeat import Heartbeat
from shared.lifecycle import StopRequest
from shared.runtime import build_runtime
from shared.settings import Settings


def run_api(settings: Settings) -> int:
    # uvicorn handles SIGTERM/SIGINT itself, then raises the signal again for the handler it found: ours, so
    # that a clean stop ends with exit code 0 rather than death by the signal.
    StopRequest().install()
    runtime = build_runtime(settings)
    refusal = startup_refusal(settings, runtime.sessions)
    if refusal is not None:
        print(f"pacs: {refusal}", file=sys.stderr)
        runtime.close()
        return 1
    heartbeat = Heartbeat("api", runtime.sessions, settings.heartbeat_interval_seconds,
                          details=lambda: {"port": settings.api_port})
    heartbeat.start()
    config = uvicorn.Config(create_app(runtime), host=settings.api_host, port=settings.api_port,
                            log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()  # stops cleanly on SIGTERM/SIGINT
    heartbeat.stop()
    runtime.close()
    return 0
