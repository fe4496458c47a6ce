"""An index filled through the real ingest and indexing code, without a network: for query tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from services.indexer.indexing import index_events
from shared.db.migrate import upgrade_to_head
from shared.dicom.part10 import encode_part10
from shared.events import InstanceStored, Reception, utc_now
from shared.runtime import Runtime, build_runtime
from shared.settings import load_settings
from shared.storage.layout import instance_key
from tests.factory import encode_dataset


def open_archive(data_dir: Path, database_url: str | None = None) -> Runtime:
    settings = load_settings(data_dir=data_dir, database_url=database_url)
    upgrade_to_head(settings.resolved_database_url)
    return build_runtime(settings)


def ingest(runtime: Runtime, datasets: list[Dataset], remote_aet: str = "MODALITY") -> None:
    events = []
    for dataset in datasets:
        part10 = encode_part10(encode_dataset(dataset, ExplicitVRLittleEndian), dataset.SOPClassUID,
                               dataset.SOPInstanceUID, ExplicitVRLittleEndian)
        sha256 = hashlib.sha256(part10).hexdigest()
        key = instance_key(dataset.StudyInstanceUID, dataset.SeriesInstanceUID, dataset.SOPInstanceUID)
        runtime.store.put_new(key, part10, sha256)
        events.append(InstanceStored(
            sop_instance_uid=dataset.SOPInstanceUID, sop_class_uid=dataset.SOPClassUID,
            study_instance_uid=dataset.StudyInstanceUID, series_instance_uid=dataset.SeriesInstanceUID,
            transfer_syntax=ExplicitVRLittleEndian, object_key=key, size=len(part10), sha256=sha256,
            reception=Reception(remote_aet=remote_aet, called_aet="PACS", remote_ip="127.0.0.1",
                                received_at=utc_now())))
    result = index_events(runtime, events)
    assert result.dead_lettered == 0
