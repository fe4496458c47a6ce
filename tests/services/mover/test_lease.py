"""Job leases, on SQLite and PostgreSQL: one run holds a job at a time, a second delivery of a running job does
nothing, a job whose runner stopped renewing is taken over, and orphaned jobs are handed to the queue again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from services.mover.lease import LeaseKeeper, OrphanPass, claim, hand_over_orphans, new_runner, renew
from services.mover.runner import run_job
from shared.db.models import Job
from shared.events import utc_now
from shared.jobs import Destination, Item, create_job, progress
from shared.runtime import Runtime

NOBODY_LISTENS = Destination("DEST", "127.0.0.1", 9, "PACS")  # the discard port: nothing answers there


def new_job(runtime: Runtime, items: int = 2) -> str:
    with runtime.sessions.begin() as session:
        return create_job(session, "c-move", NOBODY_LISTENS, "WS", [
            Item(f"1.2.3.{number}", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", f"k/{number}.dcm")
            for number in range(items)])


def age(runtime: Runtime, job_id: str, seconds: float) -> None:
    """As if the job had not been touched (nor its lease renewed) for ``seconds``."""
    past = utc_now() - timedelta(seconds=seconds)
    with runtime.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(updated_at=past, lease_until=past))


def test_one_run_holds_a_job_and_a_lapsed_lease_is_taken_over(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    first, second = new_runner(), new_runner()
    assert claim(runtime.sessions, job_id, first)
    assert not claim(runtime.sessions, job_id, second)  # a second delivery while the first runs
    assert renew(runtime.sessions, job_id, first)
    age(runtime, job_id, 120)  # the first run stopped renewing (its mover died)
    assert claim(runtime.sessions, job_id, second)
    assert not renew(runtime.sessions, job_id, first)  # the first learns it lost the job


def test_the_lease_keeper_renews_in_the_background_and_reports_a_takeover(runtime: Runtime) -> None:
    job_id = new_job(runtime)
    runner = new_runner()
    assert claim(runtime.sessions, job_id, runner, lease_seconds=0.6)
    with LeaseKeeper(runtime.sessions, job_id, runner, lease_seconds=0.6) as keeper:
        wait = keeper.lost.wait(1.5)  # renewed every 0.1 s: never lapses
        assert not wait and not claim(runtime.sessions, job_id, new_runner(), lease_seconds=0.6)
        with runtime.sessions.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(runner="someone-else"))
        assert keeper.lost.wait(2)


def test_a_second_delivery_of_a_running_job_sends_nothing_and_counts_nothing(runtime: Runtime,
                                                                               tmp_path: Path) -> None:
    job_id = new_job(runtime)
    assert claim(runtime.sessions, job_id, new_runner())  # another mover runs it
    run_job(runtime, job_id, tmp_path)  # the destination would refuse: had it run, both items would be failed
    with runtime.sessions() as session:
        state = progress(session, job_id)
    assert state is not None and (state.state, state.failed, state.completed) == ("running", 0, 0)

    age(runtime, job_id, 120)  # that mover died: the next delivery takes over and finishes the job
    run_job(runtime, job_id, tmp_path)
    with runtime.sessions() as session:
        state = progress(session, job_id)
    assert state is not None and (state.state, state.failed, state.total) == ("failed", 2, 2)


def test_orphaned_jobs_are_handed_over_once_per_grace_period(runtime: Runtime) -> None:
    lost_message, dead_runner, running, fresh = (new_job(runtime) for _ in range(4))
    for job_id in (dead_runner, running):
        assert claim(runtime.sessions, job_id, new_runner())
    age(runtime, lost_message, 300)
    age(runtime, dead_runner, 300)
    with runtime.sessions.begin() as session:  # quiet for long, but its lease is renewed: it runs
        session.execute(update(Job).where(Job.id == running).values(updated_at=utc_now() - timedelta(hours=1)))
    handed: list[str] = []
    orphans = OrphanPass(runtime.sessions, handed.append, grace_seconds=120)
    assert orphans.run_once() == 2
    assert sorted(handed) == sorted([lost_message, dead_runner])
    assert hand_over_orphans(runtime.sessions, 120) == []  # touched: not again before the grace passes
    assert fresh not in handed
