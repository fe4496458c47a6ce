"""`pacs scp`: the DICOM listener as a service of its own."""

from __future__ import annotations

import logging
import sys

from services.scp.server import ScpServer
from services.scp.tls import TlsConfigurationError, server_context
from shared import collector
from shared.heartbeat import Heartbeat
from shared.lifecycle import StopRequest
from shared.live_config import LiveConfig
from shared.runtime import build_runtime
from shared.settings import Settings

log = logging.getLogger(__name__)


def run_scp(settings: Settings) -> int:
    try:
        tls_context = server_context(settings)  # before anything listens: a bad certificate stops the start
    except TlsConfigurationError as exc:
        print(f"pacs: invalid configuration: DICOM TLS: {exc}", file=sys.stderr)
        return 2
    stop = StopRequest().install()
    runtime = build_runtime(settings)
    live_config = LiveConfig.for_settings(settings, runtime.sessions)
    live_config.start()  # the cache file first, then the database's values (polled every 0.5 s)
    server = ScpServer(runtime, live_config, tls_context)
    server.start()
    collector.settle()
    counters = server.store_service.counters
    heartbeat = Heartbeat(
        "scp",
        runtime.sessions,
        settings.heartbeat_interval_seconds,
        details=lambda: {
            "port": server.port,
            "tls_port": server.tls_port,
            "tls_handshake_failures": server.tls_handshake_failures,
            "associations": server.active_associations(),
            "stored": counters.stored,
            "failed": counters.failed,
            "bytes": counters.bytes_stored,
            "publish_backlog": server.publisher.backlog,
            **server.access.counters(),
            "metrics": server.trail.metrics(),  # read by the API's /metrics (services/api/routes/metrics.py)
        },
    )
    heartbeat.start()
    stop.wait()
    server.stop(settings.shutdown_grace_seconds)
    heartbeat.stop()
    live_config.stop()
    runtime.close()
    return 0
