"""The DICOM listener: Verification, every storage SOP class in every transfer syntax pynetdicom knows,
and Query/Retrieve (Patient Root and Study Root: C-FIND, C-MOVE, C-GET)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, evt
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from services.scp import statuses
from services.scp.access import ASSOCIATION_CEILING, AccessPolicy, AuditBuffer
from services.scp.find import FindService
from services.scp.get import GetService
from services.scp.move import MoveService
from services.scp.publisher import EventPublisher
from services.scp.sockets import LowLatencyRequestHandler
from services.scp.store import StoreService
from shared.live_config import LiveConfig
from shared.queue import RUN_JOB_TASK
from shared.runtime import Runtime

log = logging.getLogger(__name__)


QUERY_RETRIEVE_MODELS = (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
QUERY_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
                           DeflatedExplicitVRLittleEndian]


def _context(abstract_syntax: str, transfer_syntaxes: list[str], both_roles: bool = False) -> PresentationContext:
    context = PresentationContext()
    context.abstract_syntax = abstract_syntax
    context.transfer_syntax = list(transfer_syntaxes)
    if both_roles:  # a C-GET requester proposes the SCP role for storage: accept it (role selection)
        context.scu_role, context.scp_role = True, True
    return context


def supported_contexts() -> list[PresentationContext]:
    storage = [c.abstract_syntax for c in AllStoragePresentationContexts]
    return ([_context(Verification, ALL_TRANSFER_SYNTAXES)]
            + [_context(uid, ALL_TRANSFER_SYNTAXES, both_roles=True) for uid in storage]
            + [_context(uid, QUERY_TRANSFER_SYNTAXES) for uid in QUERY_RETRIEVE_MODELS])


def handle_echo(_event: Any) -> int:
    return statuses.SUCCESS


class ScpServer:
    """Owns the AE, the listening server and the event publisher of one SCP process."""

    def __init__(self, runtime: Runtime, live_config: LiveConfig) -> None:
        settings = runtime.settings
        self.runtime = runtime
        # Called AE check, callers, addresses, association limit, transfer syntaxes: live, per association.
        self.access = AccessPolicy(live_config, AuditBuffer(runtime.sessions))
        self.publisher = EventPublisher(self._send_batch, max_batch=settings.indexer_batch_size)
        self.store_service = StoreService(runtime.store, runtime.ledger, self.publisher)
        self.find_service = FindService(runtime.sessions, settings.find_result_limit)
        spool_dir = settings.data_dir.resolve() / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.get_service = GetService(runtime.sessions, runtime.store, self.access.permits, spool_dir)
        self.move_service = MoveService(runtime.sessions, live_config, self.access.permits, settings.ae_title,
                                        self._publish_job)
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_pdu_size = settings.max_pdu_size
        self.ae.maximum_associations = ASSOCIATION_CEILING  # backstop; the live limit is access.AccessPolicy's
        self.ae.network_timeout = settings.association_idle_timeout_seconds
        self.ae.acse_timeout = 30
        self.ae.dimse_timeout = 60
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def _send_batch(self, task_name: str, payloads: list[dict[str, object]]) -> None:
        self.runtime.celery.send_task(task_name, args=[payloads], retry=False)

    def _publish_job(self, job_id: str) -> None:
        self.runtime.celery.send_task(RUN_JOB_TASK, args=[job_id], retry=False)

    def _route_requests(self, assoc: Any) -> None:
        """C-MOVE (sent by the mover) and C-GET go to our own services; everything else to pynetdicom's."""
        serve_with_pynetdicom = assoc._serve_request

        def serve(message: Any, context_id: int) -> None:
            if isinstance(message, C_MOVE) and message.is_valid_request:
                self.move_service.serve(assoc, message, context_id)
            elif isinstance(message, C_GET) and message.is_valid_request:
                self.get_service.serve(assoc, message, context_id)
            else:
                serve_with_pynetdicom(message, context_id)

        assoc._serve_request = serve

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> None:
        settings = self.runtime.settings
        handlers = [
            (evt.EVT_REQUESTED, self.access.on_requested),
            (evt.EVT_C_ECHO, self.access.guard("echo", handle_echo)),
            (evt.EVT_C_STORE, self.access.guard("store", self.store_service.handle)),
            (evt.EVT_C_FIND, self.access.guard_generator("find", self.find_service.handle)),
        ]
        self.publisher.start()
        self.access.start()
        self._server = ThreadedAssociationServer(
            self.ae,
            (settings.dicom_host, settings.dicom_port),
            settings.ae_title,
            supported_contexts(),
            evt_handlers=handlers,
            request_handler=LowLatencyRequestHandler,
        )
        self._server.daemon_threads = True
        self._server.route_requests = self._route_requests  # type: ignore[attr-defined]
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
        self.access.stop()
        self._server = None
        log.info("scp.stopped")
