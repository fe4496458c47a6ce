"""The DICOM listener: an AE with every storage SOP class in every transfer syntax pynetdicom knows."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from services.scp import statuses
from services.scp.publisher import EventPublisher
from services.scp.sockets import LowLatencyRequestHandler
from services.scp.store import StoreService
from shared.runtime import Runtime

log = logging.getLogger(__name__)

DEFAULT_MAX_ASSOCIATIONS = 64


def supported_contexts() -> list[PresentationContext]:
    contexts = []
    for abstract_syntax in [Verification] + [c.abstract_syntax for c in AllStoragePresentationContexts]:
        context = PresentationContext()
        context.abstract_syntax = abstract_syntax
        context.transfer_syntax = list(ALL_TRANSFER_SYNTAXES)
        contexts.append(context)
    return contexts


def handle_echo(_event: Any) -> int:
    return statuses.SUCCESS


class ScpServer:
    """Owns the AE, the listening server and the event publisher of one SCP process."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.publisher = EventPublisher(self._send_batch, max_batch=settings.indexer_batch_size)
        self.store_service = StoreService(runtime.store, runtime.ledger, self.publisher)
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_pdu_size = settings.max_pdu_size
        self.ae.maximum_associations = DEFAULT_MAX_ASSOCIATIONS
        self.ae.network_timeout = settings.association_idle_timeout_seconds
        self.ae.acse_timeout = 30
        self.ae.dimse_timeout = 60
        self.ae.require_called_aet = settings.check_called_aet
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def _send_batch(self, task_name: str, payloads: list[dict[str, object]]) -> None:
        self.runtime.celery.send_task(task_name, args=[payloads], retry=False)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        settings = self.runtime.settings
        handlers = [(evt.EVT_C_ECHO, handle_echo), (evt.EVT_C_STORE, self.store_service.handle)]
        self.publisher.start()
        self._server = ThreadedAssociationServer(
            self.ae,
            (settings.dicom_host, settings.dicom_port),
            settings.ae_title,
            supported_contexts(),
            evt_handlers=handlers,
            request_handler=LowLatencyRequestHandler,
        )
        self._server.daemon_threads = True
        self.ae._servers.append(self._server)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dicom-listener", daemon=True)
        self._thread.start()
        log.info("scp.listening ae_title=%s port=%d", settings.ae_title, self.port)

    def active_associations(self) -> int:
        return len(self._server.active_associations) if self._server else 0

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let running associations finish for ``grace_seconds``, abort the rest."""
        if self._server is None:
            return
        server = self._server
        server.shutdown()  # stops the accept loop and closes the listening socket
        deadline = time.monotonic() + grace_seconds
        # Only established associations are worth waiting for: a connection that never sent its
        # A-ASSOCIATE-RQ (a port probe) would otherwise hold the stop for the whole ACSE timeout.
        while any(a.is_established for a in server.active_associations) and time.monotonic() < deadline:
            time.sleep(0.05)
        for association in server.active_associations:
            association.abort()
        self.publisher.stop(flush_seconds=2.0)
        self._server = None
        log.info("scp.stopped")
