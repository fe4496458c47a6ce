"""Logging set-up, called only by entry points. Message keys are stable; fields are key=value."""

from __future__ import annotations

import logging
import sys

QUIET_LIBRARIES = ("celery", "kombu", "amqp", "urllib3", "botocore", "uvicorn.access", "alembic")
# These quote values received from the wire (UIDs, AE titles, element values) in warnings and errors.
SILENCED_LIBRARIES = ("pynetdicom", "pydicom")


def configure_logging(level: str, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries log association details and sometimes dataset contents at INFO/DEBUG: keep them quiet,
    # so that no patient data reaches the logs.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in SILENCED_LIBRARIES:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
