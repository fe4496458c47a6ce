"""C-GET SCP: the C-STORE sub-operations go back on the requester's own association (PS3.4 C.4.3).

The requester must have proposed the storage SOP classes with the SCP role (role selection); an instance whose
SOP class it did not accept that way fails. Objects are streamed from the object store as stored, or decoded for
an uncompressed syntax the requester accepted (the same rules and counters as C-MOVE: services.mover.sender).
Pending responses carry the counters at most every PENDING_EVERY_SECONDS, not after every sub-operation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pynetdicom import _config
from pynetdicom.dimse_primitives import C_GET
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.mover.prepared import Framer
from services.mover.sender import SendOutcome, accepted_syntaxes, send_in_turn
from services.scp.retrieval import CANCELLED, SUCCESS, UNABLE_TO_PROCESS, final_status, open_request
from shared.jobs import Progress
from shared.query.retrieve import instances_to_retrieve
from shared.storage import ObjectStore

log = logging.getLogger(__name__)
PENDING_EVERY_SECONDS = 0.25  # pending C-GET responses (optional, PS3.4 C.4.3.1.3): at most four a second

GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    StudyRootQueryRetrieveInformationModelGet: ("STUDY", "SERIES", "IMAGE"),
}
MAX_MESSAGE_ID = 0xFFFF


class GetService:
    def __init__(self, sessions: sessionmaker[Session], store: ObjectStore, admits: Callable[[Any, str], bool],
                 spool_dir: Path) -> None:
        _config.STORE_SEND_CHUNKED_DATASET = True  # stored files are streamed, never loaded whole
        self._sessions = sessions
        self._store = store
        self._admits = admits
        self._spool_dir = spool_dir

    def serve(self, assoc: Any, request: C_GET, context_id: int) -> None:
        """Answer one C-GET request (called from the association's reactor thread)."""
        opened = open_request(assoc, request, context_id, "get", self._admits, GET_MODELS)
        if opened is None:
            return
        answer, level, values = opened.answer, opened.level, opened.values
        try:
            with self._sessions() as session:
                items = instances_to_retrieve(session, level, values)
        except SQLAlchemyError as exc:
            log.error("get.index_unavailable error=%s", exc.__class__.__name__)
            answer.final(UNABLE_TO_PROCESS)
            return
        log.info("get.started suboperations=%d", len(items))
        accepted = accepted_syntaxes(assoc, as_scu_only=True)
        counts = {SendOutcome.COMPLETED: 0, SendOutcome.WARNING: 0, SendOutcome.FAILED: 0}
        failed_uids: list[str] = []

        def progress(state: str) -> Progress:
            return Progress(state, len(items), counts[SendOutcome.COMPLETED], counts[SendOutcome.FAILED],
                            counts[SendOutcome.WARNING], failed_uids)

        stopped: list[str] = []

        def go_on() -> bool:
            """While the requester has not cancelled and is still there."""
            if request.MessageID in assoc.dimse.cancel_req:
                stopped.append("cancelled")
            elif not assoc.is_established:
                stopped.append("gone")
            return not stopped

        first_message_id = int(request.MessageID) + 1
        turns = ((item, item, (first_message_id + position) % MAX_MESSAGE_ID or 1)
                 for position, item in enumerate(items))

        assoc._is_paused = True  # as pynetdicom does while a service runs: our sub-operations use send_c_store
        next_pending = time.monotonic() + PENDING_EVERY_SECONDS
        try:
            for item, outcome, _reason in send_in_turn(assoc, accepted, self._store, self._spool_dir, Framer(),
                                                       turns, go_on):
                counts[outcome] += 1
                if outcome == SendOutcome.FAILED:
                    failed_uids.append(item.sop_instance_uid)
                if sum(counts.values()) < len(items) and time.monotonic() >= next_pending:
                    answer.pending(progress("running"))
                    next_pending = time.monotonic() + PENDING_EVERY_SECONDS
            if stopped == ["gone"]:
                return
            if stopped == ["cancelled"]:
                answer.final(CANCELLED, progress("cancelled"))
                return
            done = progress("done")
            answer.final(final_status(done) if items else SUCCESS, done)
        finally:
            assoc._is_paused = False
