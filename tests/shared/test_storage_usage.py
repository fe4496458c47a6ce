"""The running total behind the storage limits: index totals plus pending markers plus local additions, refreshed
off the ingest path; with PostgreSQL gone the last totals and the pending markers still enforce the limits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy.orm import sessionmaker

from shared.db.engine import create_index_engine, create_session_factory
from shared.events import InstanceStored, Reception, utc_now
from shared.storage_usage import StorageLimitReached, StorageUsage
from tests.archive import ingest, open_archive
from tests.conftest import POSTGRES_ADMIN
from tests.factory import make_image


def pending_event(size: int) -> InstanceStored:
    return InstanceStored(sop_instance_uid="1.2.3.9", sop_class_uid="1.2.840.10008.5.1.4.1.1.7",
                          study_instance_uid="1.2.3", series_instance_uid="1.2.3.4",
                          transfer_syntax=ExplicitVRLittleEndian, object_key="1.2.3/1.2.3.4/1.2.3.9.dcm", size=size,
                          sha256=hashlib.sha256(b"x").hexdigest(),
                          reception=Reception(remote_aet="M", called_aet="PACS", remote_ip="127.0.0.1",
                                              received_at=utc_now()))


def test_totals_pending_and_local_additions_and_postgresql_going_away(tmp_path: Path, postgres_url: str) -> None:
    runtime = open_archive(tmp_path / "data", postgres_url)
    ingest(runtime, [make_image() for _ in range(3)])
    usage = StorageUsage(runtime.sessions, runtime.store, background=False)
    usage.admit(10**9, None, 1)  # unknown totals: admitted (ingest never waits on the index)
    usage.refresh_now()
    indexed = usage.current()
    assert indexed.known and indexed.instances == 3 and indexed.bytes > 0
    runtime.ledger.stage(pending_event(1000)).publish()  # acknowledged, not indexed yet
    usage.refresh_now()
    assert usage.current().instances == 4 and usage.current().bytes == indexed.bytes + 1000
    usage.added(500)
    assert usage.current().instances == 5
    with pytest.raises(StorageLimitReached) as by_count:
        usage.admit(1, None, 5)
    assert by_count.value.limit == "instances"
    usage.admit(1, None, 6)
    with pytest.raises(StorageLimitReached) as by_size:
        usage.admit(2, indexed.bytes + 1501, None)
    assert by_size.value.limit == "bytes"

    runtime.engine.dispose()
    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:  # PostgreSQL loses the database
        admin.execute(f'DROP DATABASE "{postgres_url.rsplit("/", 1)[1]}" WITH (FORCE)')
    second = pending_event(2000).model_copy(update={"sop_instance_uid": "1.2.3.10"})
    runtime.ledger.stage(second).publish()  # stored by another process meanwhile: it stays pending
    usage.refresh_now()
    held = usage.current()
    assert held.known and held.instances == 3 + 2 + 1 and held.bytes == indexed.bytes + 1000 + 2000 + 500
    with pytest.raises(StorageLimitReached):
        usage.admit(1, None, 6)
    runtime.close()


def test_a_process_that_never_read_the_index_admits(tmp_path: Path) -> None:
    engine = create_index_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    sessions: sessionmaker = create_session_factory(engine)  # type: ignore[type-arg]
    runtime = open_archive(tmp_path / "data")
    usage = StorageUsage(sessions, runtime.store, background=False)
    usage.refresh_now()
    assert not usage.current().known
    usage.admit(10**12, 1, 1)  # documented: limits are enforced from the first successful read on
    engine.dispose()
    runtime.close()
