"""The DICOM listener: Verification, every storage SOP class in every transfer syntax pynetdicom knows,
and Query/Retrieve (Patient Root and Study Root: C-FIND, C-MOVE, C-GET)."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, _config, evt
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, N_ACTION
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from services.scp import negotiation, statuses
from services.scp.access import ASSOCIATION_CEILING, AccessPolicy, AuditBuffer, refusal
from services.scp.audit_trail import AssociationTrail
from services.scp.commitment import CommitmentService
from services.scp.direct_store import DirectStoreServices
from services.scp.find import FindService, note_early_cancel
from services.scp.get import GetService
from services.scp.listening import listening_server
from services.scp.move import MoveService
from services.scp.node_associations import NodeAssociations
from services.scp.publisher import EventPublisher
from services.scp.pdu_guard import PduLimits
from services.scp.spooling import ReceivedSpool
from services.scp.sockets import LowLatencyRequestHandler, SharedContexts
from services.scp.store import StoreService
from services.scp.tls import TlsAssociationServer, TlsRequestHandler
from shared.dicom import uid_memo
from shared.ingest import StoragePolicy
from shared.jobs import progress_doorbells
from shared.live_config import LiveConfig
from shared.queue import RUN_JOB_TASK
from shared.runtime import Runtime
from shared.storage_usage import StorageUsage

log = logging.getLogger(__name__)
ACSE_TIMEOUT_SECONDS = 30.0


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
            + [_context(uid, QUERY_TRANSFER_SYNTAXES) for uid in QUERY_RETRIEVE_MODELS]
            # Storage commitment (services/scp/commitment.py): either role, for reports on the same association
            + [_context(StorageCommitmentPushModel, QUERY_TRANSFER_SYNTAXES, both_roles=True)])


def handle_echo(_event: Any) -> int:
    return statuses.SUCCESS


class ScpServer:
    """Owns the AE, the listening server and the event publisher of one SCP process."""

    def __init__(self, runtime: Runtime, live_config: LiveConfig, tls_context: ssl.SSLContext | None = None) -> None:
        # pynetdicom's own log handlers format every PDU and DIMSE message, under the association's lock, and copy
        # each received data set whole to see whether it is empty (a spooled 1 GB instance read back into memory);
        # it also formats every query identifier and C-FIND answer for its log (patient data, never shown by us).
        # Our audit trail and metrics observe the same events without that cost.
        _config.LOG_HANDLER_LEVEL = "none"
        _config.LOG_REQUEST_IDENTIFIERS = _config.LOG_RESPONSE_IDENTIFIERS = False
        negotiation.install()  # transfer syntaxes in the requestor's order of preference
        uid_memo.install()  # an A-ASSOCIATE-RQ of 128 contexts: decoded in 1.6 ms, not 8.8
        settings = runtime.settings
        self.runtime = runtime
        # Called AE check, callers, addresses, association limit, transfer syntaxes: live, per association.
        self._node_associations = NodeAssociations(settings.data_dir.resolve())  # with the node's other SCPs
        self.access = AccessPolicy(live_config, AuditBuffer(runtime.sessions), self._node_associations)
        self.trail = AssociationTrail(self.access.audit)
        self.publisher = EventPublisher(self._send_batch, settings.index_batch_wait_seconds,
                                        max_batch=settings.indexer_batch_size,
                                        quiet_seconds=settings.index_batch_quiet_seconds)
        # Storage layout, naming and limits: live (shared.ingest); the running totals for the limits refresh in
        # the background (shared.storage_usage), never on the C-STORE path.
        self.storage_usage = StorageUsage(runtime.sessions, runtime.store)
        self.store_service = StoreService(runtime.store, runtime.ledger, self.publisher,
                                          lambda: StoragePolicy.of(live_config.current().config),
                                          self.storage_usage, self.access.audit.record)
        self.find_service = FindService(runtime.sessions, settings.find_result_limit, live_config)
        spool_dir = settings.data_dir.resolve() / "spool"
        spool_dir.mkdir(parents=True, exist_ok=True)
        self.get_service = GetService(runtime.sessions, runtime.store, self.access.admits, spool_dir)
        self._received_spool = ReceivedSpool(spool_dir)
        self.move_service = MoveService(runtime.sessions, live_config, self.access.admits, settings.ae_title,
                                        self._publish_job, progress_doorbells(settings.data_dir),
                                        settings.move_stall_seconds)
        self.commitment_service = CommitmentService(runtime.sessions, runtime.store, live_config, settings.ae_title,
                                                    self.access.audit, self.publisher.hurry)
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.maximum_pdu_size = settings.max_pdu_size
        self.ae.maximum_associations = ASSOCIATION_CEILING  # backstop; the live limit is access.AccessPolicy's
        self.ae.network_timeout = settings.association_idle_timeout_seconds
        self._pdu_limits = PduLimits(max_p_data_length=settings.max_pdu_size,
                                     pdu_seconds=settings.association_idle_timeout_seconds)
        # ACSE_TIMEOUT_SECONDS bounds the wait for an association request and for ACSE answers; a connection
        # silent for the idle timeout is closed even before it asked for an association.
        self.ae.acse_timeout = min(ACSE_TIMEOUT_SECONDS, settings.association_idle_timeout_seconds)
        self.ae.dimse_timeout = 60
        self._server: ThreadedAssociationServer | None = None
        # DICOM TLS (services/scp/tls.py): a second listener with the same AE, handlers and access policy.
        self._tls_context = tls_context
        self._tls_server: TlsAssociationServer | None = None
        self.tls_handshake_failures = 0

    def _send_batch(self, task_name: str, payloads: list[dict[str, object]]) -> None:
        self.runtime.celery.send_task(task_name, args=[payloads], retry=False)

    def _association_ended(self, event: Any) -> None:
        self.publisher.hurry()  # its instances need not wait for more to be indexed

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
                if isinstance(message, C_FIND) and message.is_valid_request:
                    note_early_cancel(assoc, message)
                serve_with_pynetdicom(message, context_id)
                if isinstance(message, N_ACTION):  # its response is sent: the commitment report may follow
                    self.commitment_service.after_request(assoc)

        assoc._serve_request = serve

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def tls_port(self) -> int | None:
        return int(self._tls_server.server_address[1]) if self._tls_server else None

    def _servers(self) -> list[ThreadedAssociationServer]:
        return [server for server in (self._server, self._tls_server) if server is not None]

    def _tls_handshake_failed(self, remote_ip: str, reason: str) -> None:
        self.tls_handshake_failures += 1
        self.access.audit.record("tls_handshake_failed", "refused", "", remote_ip, {"reason": reason})

    def start(self) -> None:
        settings = self.runtime.settings
        handlers = [
            (evt.EVT_REQUESTED, self.access.on_requested),
            (evt.EVT_C_ECHO, self.access.guard("echo", handle_echo)),
            (evt.EVT_C_STORE, self.access.guard("store", self.store_service.handle)),
            (evt.EVT_C_FIND, self.access.guard_generator("find", self.find_service.handle)),
            (evt.EVT_N_ACTION, self.commitment_service.handle),  # checks its own permission (registered, store)
            (evt.EVT_CONN_CLOSE, self.access.on_closed),
            (evt.EVT_CONN_CLOSE, self._association_ended),
            *self.trail.handlers(),  # audit rows and metrics, from notification events only
        ]
        self.publisher.start()
        self.access.start()
        self._node_associations.start(lambda: self.access.report_to_node(self.ae))
        self._server = listening_server(  # or the socket pacs serve opened for its SCP processes
            ThreadedAssociationServer, settings.dicom_listen_fd, self.ae, (settings.dicom_host, settings.dicom_port),
            settings.ae_title, supported_contexts(), evt_handlers=handlers, request_handler=LowLatencyRequestHandler)
        self._serve(self._server, "dicom-listener")
        log.info("scp.listening ae_title=%s port=%d", settings.ae_title, self.port)
        if self._tls_context is not None and settings.tls_port is not None:
            self._tls_server = listening_server(
                TlsAssociationServer, settings.tls_listen_fd, self.ae, (settings.dicom_host, settings.tls_port),
                settings.ae_title, supported_contexts(), ssl_context=self._tls_context, evt_handlers=handlers,
                request_handler=TlsRequestHandler)
            self._tls_server.tls_handshake_failed = self._tls_handshake_failed  # type: ignore[attr-defined]
            self._serve(self._tls_server, "dicom-tls-listener")
            log.info("scp.listening_tls ae_title=%s port=%d client_certificate=%s", settings.ae_title,
                     self.tls_port, _client_certificate_mode(self._tls_context))

    def _serve(self, server: ThreadedAssociationServer, name: str) -> None:
        server.daemon_threads = True
        server.contexts = SharedContexts(server.contexts)
        server.route_requests = self._route_requests  # type: ignore[attr-defined]
        server.pdu_limits = self._pdu_limits  # type: ignore[attr-defined]
        server.received_spool = self._received_spool  # type: ignore[attr-defined]
        server.direct_store = DirectStoreServices(  # type: ignore[attr-defined]
            self.store_service, self.access.admits, refusal, self._received_spool)
        self.ae._servers.append(server)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name=name, daemon=True).start()

    def active_associations(self) -> int:
        return sum(len(server.active_associations) for server in self._servers())

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting, let running associations finish for ``grace_seconds``, abort the rest."""
        servers = self._servers()
        if not servers:
            return
        for server in servers:
            server.shutdown()  # stops the accept loop and closes the listening socket
        deadline = time.monotonic() + grace_seconds
        # Only established associations are worth waiting for: a connection that never sent its
        # A-ASSOCIATE-RQ (a port probe) would otherwise hold the stop for the whole ACSE timeout.
        while (any(a.is_established for server in servers for a in server.active_associations)
               and time.monotonic() < deadline):
            time.sleep(0.05)
        remaining = [association for server in servers for association in server.active_associations]
        for association in remaining:
            association.abort(block=False)  # queue an A-ABORT; its DUL thread sends it
        _drop_connections(remaining, settle_seconds=1.0)
        self.commitment_service.stop()
        self.publisher.stop(flush_seconds=2.0)
        self.storage_usage.stop()
        self.access.stop()
        self._node_associations.stop()
        self._server = self._tls_server = None
        log.info("scp.stopped")


def _drop_connections(associations: list[Any], settle_seconds: float) -> None:
    """Close the sockets of associations still alive after ``settle_seconds`` (a peer that never answers the
    A-ABORT, or sits in the middle of a PDU, must not hold the stop)."""
    deadline = time.monotonic() + settle_seconds
    while any(association.is_alive() for association in associations) and time.monotonic() < deadline:
        time.sleep(0.05)
    for association in associations:
        sock = getattr(association.dul.socket, "socket", None)
        if association.is_alive() and sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _client_certificate_mode(context: ssl.SSLContext) -> str:
    return {ssl.CERT_REQUIRED: "required", ssl.CERT_OPTIONAL: "verified_if_presented"}.get(context.verify_mode, "none")
