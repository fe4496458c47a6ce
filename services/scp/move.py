"""C-MOVE SCP: the job goes to the mover through the queue; this association relays its progress.

pynetdicom's own C-MOVE service would send the sub-operations from this process. Ours hands them to the mover
(any replica, possibly on another machine) and answers with pending responses as the job's counters move,
then the final response once every sub-operation has finished (statuses in services.scp.retrieval), or:
0xA801 unknown move destination;
0xA900 a level the information model does not have; 0xC000 the index or the queue cannot be reached;
0x0124 the caller may not move. A request that matches nothing: 0x0000 with zero sub-operations.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pynetdicom.dimse_primitives import C_MOVE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from services.scp.retrieval import SUCCESS, UNABLE_TO_PROCESS, Responder, final_status, open_request
from shared import doorbell
from shared.jobs import Destination, Progress, create_job, fail_unfinished, progress, request_cancel
from shared.live_config import LiveConfig
from shared.node_config import ModalityEntry
from shared.query.retrieve import instances_to_retrieve

log = logging.getLogger(__name__)

MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    StudyRootQueryRetrieveInformationModelMove: ("STUDY", "SERIES", "IMAGE"),
}
UNKNOWN_DESTINATION = 0xA801
POLL_SECONDS = 0.02  # the job row is read at least this often while a C-MOVE runs, and whenever the mover rings


@contextmanager
def progress_waits(doorbells: str) -> Iterator[Callable[[float], object]]:
    """A wait that ends at the next ring of a mover of this data directory (shared.jobs.ring_progress) or after the
    seconds given; a plain sleep where no doorbell can be listed in ``doorbells``."""
    try:
        bell = doorbell.Doorbell(doorbells)
    except OSError as exc:
        log.warning("move.no_progress_doorbell error=%s (polling)", exc.__class__.__name__)
        yield time.sleep
        return
    try:
        yield bell.wait
    finally:
        bell.close()


class MoveService:
    def __init__(self, sessions: sessionmaker[Session], live: LiveConfig, admits: Callable[[Any, str], bool],
                 node_ae_title: str, publish_job: Callable[[str], None], progress_doorbells: str,
                 stall_seconds: float = 120.0) -> None:
        self._sessions = sessions
        self._progress_doorbells = progress_doorbells  # shared.jobs: a mover of this data directory rings there
        self._stall_seconds = stall_seconds  # no progress for this long (mover down): the rest fails
        self._live = live
        self._admits = admits
        self._node_ae_title = node_ae_title
        self._publish_job = publish_job

    def _destination(self, ae_title: str) -> ModalityEntry | None:
        """The registered modality with that AE title as the database holds it now (DESIGN: a PUT takes effect at
        once for move destinations, a replaced entry too); the values in force while the database is down."""
        return next((m for m in self._live.confirmed().modalities if m.ae_title == ae_title), None)

    def serve(self, assoc: Any, request: C_MOVE, context_id: int) -> None:
        """Answer one C-MOVE request on ``assoc`` (called from the association's reactor thread)."""
        opened = open_request(assoc, request, context_id, "move", self._admits, MOVE_MODELS)
        if opened is None:
            return
        answer, level, values, calling = opened.answer, opened.level, opened.values, opened.calling_aet
        target = str(request.MoveDestination or "").strip()
        entry = self._destination(target)
        if entry is None:
            log.warning("move.unknown_destination")
            answer.final(UNKNOWN_DESTINATION)
            return
        destination = Destination(entry.ae_title, entry.host, entry.port,
                                  entry.local_ae_title or self._node_ae_title)
        try:
            with self._sessions.begin() as session:
                items = instances_to_retrieve(session, level, values)
                job_id = create_job(session, "c-move", destination, calling, items) if items else None
        except SQLAlchemyError as exc:
            log.error("move.index_unavailable error=%s", exc.__class__.__name__)
            answer.final(UNABLE_TO_PROCESS)
            return
        if job_id is None:
            answer.final(SUCCESS, Progress("done", 0, 0, 0, 0))
            return
        with progress_waits(self._progress_doorbells) as progress_rung:  # listed before the mover rings
            try:
                self._publish_job(job_id)
            except Exception as exc:  # the broker refused the job
                log.error("move.queue_unavailable error=%s", exc.__class__.__name__)
                with self._sessions.begin() as session:
                    fail_unfinished(session, job_id, "the job could not be queued")
                answer.final(UNABLE_TO_PROCESS)
                return
            log.info("move.queued job=%s suboperations=%d", job_id, len(items))
            self._relay(assoc, answer, request, job_id, progress_rung)

    def _relay(self, assoc: Any, answer: Responder, request: C_MOVE, job_id: str,
               progress_rung: Callable[[float], object]) -> None:
        last: Progress | None = None
        last_change = time.monotonic()
        cancel_sent = False
        while True:
            progress_rung(POLL_SECONDS)
            if not cancel_sent and request.MessageID in assoc.dimse.cancel_req:
                with self._sessions.begin() as session:
                    request_cancel(session, job_id)
                cancel_sent = True
            try:
                with self._sessions() as session:
                    current = progress(session, job_id)
            except SQLAlchemyError:
                continue  # the index is down for a moment: keep waiting (bounded by the stall limit)
            if current is None:
                answer.final(UNABLE_TO_PROCESS)
                return
            if current != last:
                last, last_change = current, time.monotonic()
                if not current.finished:
                    answer.pending(current)
            elif time.monotonic() - last_change > self._stall_seconds:
                with self._sessions.begin() as session:
                    fail_unfinished(session, job_id, "no progress from the mover")
                continue
            if current.finished:
                with self._sessions() as session:
                    done = progress(session, job_id, with_failed_uids=True)
                assert done is not None
                answer.final(final_status(done), done)
                return
            if not assoc.is_established or assoc.acse.is_aborted() or not assoc.dul.is_alive():
                with self._sessions.begin() as session:
                    request_cancel(session, job_id)  # the requester went away: stop sending
                return


