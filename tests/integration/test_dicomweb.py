"""DICOMweb driven by a real client (dicomweb-client) against `pacs serve`: STOW-RS, QIDO-RS, WADO-RS.

One node is loaded once for the read-only tests (module fixture); tests that store choose their own UIDs and
patients so that they never change what the others see.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, MRImageStorage, generate_uid
from requests import HTTPError

from tests.factory import COMPRESSED_SAMPLES, compressed_copy, make_image, save
from tests.node import PACS, REPO, Node, child_commands, wait_until
from tests.peers import push_files, storescu


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)


class Loaded:
    """What the module node holds, as the tests expect to find it."""

    def __init__(self, node: Node, workdir: Path) -> None:
        self.node = node
        self.client = DICOMwebClient(url=f"{node.api}/dicomweb")
        self.study = generate_uid()
        self.series = [generate_uid(), generate_uid()]
        self.files: dict[str, Path] = {}  # SOP Instance UID -> file as sent
        for index in range(4):  # three CT instances in series 0 (one in big endian), one in series 1
            series = self.series[0] if index < 3 else self.series[1]
            ds = make_image(study_uid=self.study, series_uid=series, patient_id="DW-PID-1",
                            patient_name="Web^Alice", instance_number=index + 1)
            ds.SeriesNumber = 1 if index < 3 else 2
            ds.StudyDate = "20240315"
            ds.SeriesDescription = "Axial" if index < 3 else "Scout"
            ds.InstitutionName = "General Hospital"  # not an indexed key: matched on stored attributes
            request = Dataset()
            request.RequestedProcedureID = f"RP-{index}"
            request.ScheduledProcedureStepID = "SPS-1"
            ds.RequestAttributesSequence = [request]
            syntax = ExplicitVRBigEndian if index == 2 else ExplicitVRLittleEndian
            path = save(ds, workdir / f"{ds.SOPInstanceUID}.dcm", syntax)
            self.files[ds.SOPInstanceUID] = path
        self.compressed_study = generate_uid()
        self.compressed_series = generate_uid()
        self.compressed = [compressed_copy(sample, workdir, self.compressed_study, self.compressed_series,
                                           "DW-PID-2") for sample in COMPRESSED_SAMPLES]
        for sample in self.compressed:
            self.files[sample.sop_instance_uid] = sample.path
        # The first study arrives over STOW-RS, the compressed one over C-STORE: both are searchable alike.
        stow_answer = self.client.store_instances([read(self.files[uid]) for uid in list(self.files)[:4]])
        assert len(stow_answer.ReferencedSOPSequence) == 4
        push_files(node.dicom_port, self.compressed)
        node.wait_indexed(len(self.files))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    workdir = tmp_path_factory.mktemp("dicomweb")
    node = Node(workdir)
    node.service("serve")
    try:
        node.wait_ready()
        yield Loaded(node, workdir)
    finally:
        node.stop()
        print(node.logs())


def values(answer: dict[str, Any], tag: str) -> list[Any]:
    return list(answer.get(tag, {}).get("Value", []))


# ---- QIDO-RS ---------------------------------------------------------------------------------------------------

def test_search_for_studies_returns_the_default_attributes(loaded: Loaded) -> None:
    [study] = loaded.client.search_for_studies(search_filters={"PatientID": "DW-PID-1"})
    assert values(study, "0020000D") == [loaded.study]
    assert values(study, "00100010") == [{"Alphabetic": "Web^Alice"}]
    assert values(study, "00080020") == ["20240315"]
    assert values(study, "00080061") == ["CT"]  # ModalitiesInStudy
    assert values(study, "00201206") == [2] and values(study, "00201208") == [4]  # series, instances
    assert values(study, "00081190")[0].endswith(f"/dicomweb/studies/{loaded.study}")
    assert values(study, "00080056") == ["ONLINE"]
    assert list(study) == sorted(study)


def test_search_matching_is_c_find_matching(loaded: Loaded) -> None:
    search = loaded.client.search_for_studies
    assert len(search(search_filters={"PatientName": "web^ali*"})) == 1  # wildcard, case-insensitive
    assert len(search(search_filters={"00100020": "DW-PID-1"})) == 1  # a tag instead of a keyword
    assert len(search(search_filters={"PatientID": "DW-PID-1", "StudyDate": "20240301-20240331"})) == 1
    assert search(search_filters={"PatientID": "DW-PID-1", "StudyDate": "-20231231"}) == []
    both = search(search_filters={"StudyInstanceUID": f"{loaded.study},{loaded.compressed_study}"})
    assert {values(study, "0020000D")[0] for study in both} == {loaded.study, loaded.compressed_study}
    assert len(search(search_filters={"InstitutionName": "General*", "PatientID": "DW-PID-*"})) == 1
    assert search(search_filters={"PatientID": "nobody"}) == []


def test_search_for_series_and_instances(loaded: Loaded) -> None:
    client = loaded.client
    series = client.search_for_series(loaded.study)
    series.sort(key=lambda item: values(item, "00200011"))
    assert [values(item, "0020000E")[0] for item in series] == loaded.series
    assert [values(item, "00201209")[0] for item in series] == [3, 1]  # NumberOfSeriesRelatedInstances
    everywhere = client.search_for_series(search_filters={"PatientID": "DW-PID-1", "Modality": "CT"})
    assert len(everywhere) == 2 and values(everywhere[0], "00100020") == ["DW-PID-1"]  # study keys included
    instances = client.search_for_instances(loaded.study, loaded.series[0])
    instances.sort(key=lambda item: values(item, "00200013"))
    assert [values(item, "00200013")[0] for item in instances] == [1, 2, 3]
    assert values(instances[0], "00280010") == [16] and values(instances[0], "00080016") == ["1.2.840.10008.5.1.4.1.1.2"]
    assert values(instances[0], "00081190")[0].endswith(
        f"/studies/{loaded.study}/series/{loaded.series[0]}/instances/{values(instances[0], '00080018')[0]}")
    in_study = client.search_for_instances(loaded.study)
    assert len(in_study) == 4
    all_instances = client.search_for_instances(search_filters={"PatientID": "DW-PID-2"})
    assert len(all_instances) == len(COMPRESSED_SAMPLES)


def test_sequence_matching_with_attribute_paths(loaded: Loaded) -> None:
    search = loaded.client.search_for_instances
    [hit] = search(loaded.study, search_filters={"RequestAttributesSequence.RequestedProcedureID": "RP-1"})
    assert values(hit, "00200013") == [2]
    [item] = values(hit, "00400275")  # the sequence is returned with the matching item
    assert values(item, "00401001") == ["RP-1"]
    assert len(search(loaded.study, search_filters={"00400275.00400009": "SPS-1"})) == 4
    assert search(loaded.study, search_filters={"RequestAttributesSequence.RequestedProcedureID": "RP-9"}) == []


def test_accent_insensitive_names_follow_the_live_configuration(loaded: Loaded) -> None:
    ds = make_image(patient_id="DW-ACCENT", patient_name="Müller^Jörg", charset="ISO_IR 192")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    loaded.client.store_instances([ds])
    _wait_found(loaded, ds.StudyInstanceUID)
    search = loaded.client.search_for_studies
    [study] = search(search_filters={"PatientName": "MÜLLER*"})
    assert values(study, "00100010") == [{"Alphabetic": "Müller^Jörg"}]
    assert search(search_filters={"PatientName": "muller*"}) == []
    config = f"{loaded.node.api}/api/config"
    assert httpx.patch(config, json={"patient_name_ignore_accents": True}).status_code == 200
    try:
        assert len(search(search_filters={"PatientName": "muller*"})) == 1
    finally:
        httpx.patch(config, json={"patient_name_ignore_accents": False})


def test_limit_offset_and_includefield(loaded: Loaded) -> None:
    client = loaded.client
    pages = [client.search_for_instances(loaded.study, limit=3, offset=offset) for offset in (0, 3, 6)]
    assert [len(page) for page in pages] == [3, 1, 0]
    response = httpx.get(f"{loaded.node.api}/dicomweb/studies/{loaded.study}/instances?limit=3")
    assert "additional results" in response.headers["warning"]
    [study] = client.search_for_studies(search_filters={"PatientID": "DW-PID-1"},
                                        fields=["InstitutionName", "00081030"])
    assert values(study, "00080080") == ["General Hospital"] and values(study, "00081030") == ["Test study"]
    [instance] = client.search_for_instances(loaded.study, loaded.series[1], fields=["all"])
    assert values(instance, "00080080") == ["General Hospital"]  # every stored attribute of the instance


def test_qido_errors(loaded: Loaded) -> None:
    api = loaded.node.api
    no_cors = httpx.get(f"{api}/dicomweb/studies", headers={"origin": "http://viewer.test"})
    assert "access-control-allow-origin" not in no_cors.headers  # no origin is allowed by default
    assert httpx.get(f"{api}/dicomweb/studies?NoSuchKeyword=1").status_code == 400
    assert httpx.get(f"{api}/dicomweb/studies?limit=-1").status_code == 400
    assert httpx.get(f"{api}/dicomweb/studies", headers={"accept": "application/dicom+xml"}).status_code == 406
    assert httpx.get(f"{api}/dicomweb/studies?StudyDate=-").status_code == 400
    assert httpx.get(f"{api}/dicomweb/studies/..%2F..%2Fx/series").status_code in (400, 404)
    fuzzy = httpx.get(f"{api}/dicomweb/studies?PatientID=DW-PID-1&fuzzymatching=true")
    assert fuzzy.status_code == 200 and "fuzzymatching" in fuzzy.headers["warning"]
    assert fuzzy.headers["content-type"].startswith("application/dicom+json")


# ---- WADO-RS ---------------------------------------------------------------------------------------------------

def stored_object(node: Node, uid: str) -> bytes:
    [path] = list((node.data_dir / "objects").rglob(f"{uid}.dcm"))
    return path.read_bytes()


def test_retrieve_instance_series_and_study_as_stored(loaded: Loaded) -> None:
    client = loaded.client
    uid = list(loaded.files)[2]  # the big-endian one: sent as stored
    instance = client.retrieve_instance(loaded.study, loaded.series[0], uid)
    assert instance.SOPInstanceUID == uid and instance.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    series = client.retrieve_series(loaded.study, loaded.series[0])
    assert sorted(ds.SOPInstanceUID for ds in series) == sorted(list(loaded.files)[:3])
    study = client.retrieve_study(loaded.compressed_study)
    assert len(study) == len(COMPRESSED_SAMPLES)
    for ds in study:
        assert ds.PixelData == pydicom.dcmread(BytesIO(stored_object(loaded.node, ds.SOPInstanceUID))).PixelData
    response = httpx.get(f"{loaded.node.api}/dicomweb/studies/{loaded.compressed_study}",
                         headers={"accept": 'multipart/related; type="application/dicom"'})
    assert response.status_code == 200
    for uid in (sample.sop_instance_uid for sample in loaded.compressed):
        assert hashlib.sha256(stored_object(loaded.node, uid)).digest() in {
            hashlib.sha256(part).digest() for part in _parts(response)}


def _parts(response: httpx.Response) -> list[bytes]:
    boundary = response.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    chunks = response.content.split(f"--{boundary}".encode())[1:-1]
    return [chunk.split(b"\r\n\r\n", 1)[1][:-2] for chunk in chunks]


def test_retrieve_transcodes_when_a_syntax_is_named(loaded: Loaded) -> None:
    rle = next(sample for sample in loaded.compressed if sample.transfer_syntax == "1.2.840.10008.1.2.5")
    instance = loaded.client.retrieve_instance(
        loaded.compressed_study, loaded.compressed_series, rle.sop_instance_uid,
        media_types=(("application/dicom", ExplicitVRLittleEndian),))
    assert instance.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert instance.SOPInstanceUID == rle.sop_instance_uid
    assert np.array_equal(instance.pixel_array, read(rle.path).pixel_array)
    refused = httpx.get(
        f"{loaded.node.api}/dicomweb/studies/{loaded.compressed_study}/series/{loaded.compressed_series}/instances/"
        f"{rle.sop_instance_uid}",
        headers={"accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'})
    assert refused.status_code == 406


def test_metadata_of_study_series_and_instance(loaded: Loaded) -> None:
    client = loaded.client
    study = client.retrieve_study_metadata(loaded.study)
    assert len(study) == 4
    assert {values(item, "00080018")[0] for item in study} == set(list(loaded.files)[:4])
    assert all("7FE00010" not in item for item in study)  # bulk data left out
    series = client.retrieve_series_metadata(loaded.compressed_study, loaded.compressed_series)
    assert {values(item, "00083002")[0] for item in series} == {s.transfer_syntax for s in loaded.compressed}
    uid = list(loaded.files)[0]
    instance = client.retrieve_instance_metadata(loaded.study, loaded.series[0], uid)  # the one object
    dataset = Dataset.from_json(instance)
    assert dataset.PatientName == "Web^Alice" and dataset.Rows == 16 and dataset.InstitutionName == "General Hospital"


def test_frames_as_stored_and_uncompressed(loaded: Loaded) -> None:
    client = loaded.client
    for sample in loaded.compressed:
        original = read(sample.path)
        [frame] = client.retrieve_instance_frames(loaded.compressed_study, loaded.compressed_series,
                                                   sample.sop_instance_uid, [1])
        assert frame == next(generate_frames(original.PixelData, number_of_frames=1))
    jpeg_ls = next(s for s in loaded.compressed if s.transfer_syntax == "1.2.840.10008.1.2.4.80")
    [decoded] = client.retrieve_instance_frames(
        loaded.compressed_study, loaded.compressed_series, jpeg_ls.sop_instance_uid, [1],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),))
    assert decoded == read(jpeg_ls.path).pixel_array.astype("<u2").tobytes()
    uid = list(loaded.files)[2]  # big endian: frames come little endian
    [native] = client.retrieve_instance_frames(loaded.study, loaded.series[0], uid, [1])
    assert native == np.frombuffer(read(loaded.files[uid]).PixelData, ">u2").astype("<u2").tobytes()


def test_wado_errors(loaded: Loaded) -> None:
    api, study, series = loaded.node.api, loaded.study, loaded.series[0]
    uid = list(loaded.files)[0]
    assert httpx.get(f"{api}/dicomweb/studies/1.2.3.999").status_code == 404
    assert httpx.get(f"{api}/dicomweb/studies/1.2.3.999/metadata").status_code == 404
    assert httpx.get(f"{api}/dicomweb/studies/{study}/metadata",
                     headers={"accept": "application/dicom+xml"}).status_code == 406
    assert httpx.get(f"{api}/dicomweb/studies/{study}/series/{series}/instances/1.2.3.999").status_code == 404
    assert httpx.get(f"{api}/dicomweb/studies/{study}/series/{series}/instances/{uid}/frames/2").status_code == 404
    assert httpx.get(f"{api}/dicomweb/studies/{study}/series/{series}/instances/{uid}/frames/x").status_code == 400
    assert httpx.get(f"{api}/dicomweb/studies/{study}", headers={"accept": "application/zip"}).status_code == 406
    with pytest.raises(HTTPError) as error:
        loaded.client.retrieve_study("1.2.3.999")
    assert error.value.response.status_code == 404


# ---- STOW-RS ---------------------------------------------------------------------------------------------------

def failures(answer: Dataset) -> dict[str, int]:
    return {item.ReferencedSOPInstanceUID: int(item.FailureReason) for item in answer.get("FailedSOPSequence", [])}


def test_stored_instances_are_durable_indexed_and_retrievable(loaded: Loaded) -> None:
    client = loaded.client
    study = generate_uid()
    datasets = [make_image(MRImageStorage, study_uid=study, patient_id="DW-STOW-1") for _ in range(2)]
    for ds in datasets:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    answer = client.store_instances(datasets, study_instance_uid=study)
    assert answer.RetrieveURL.endswith(f"/dicomweb/studies/{study}")
    assert {item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence} == {
        ds.SOPInstanceUID for ds in datasets}
    for ds in datasets:  # durable before the answer: the object is there, as the SCP would have stored it
        assert stored_object(loaded.node, ds.SOPInstanceUID)[128:132] == b"DICM"
    [indexed] = _wait_found(loaded, study)
    assert values(indexed, "00201208") == [2]
    again = client.store_instances(datasets)  # identical re-send: success, nothing changes
    assert len(again.ReferencedSOPSequence) == 2
    reception = httpx.get(f"{loaded.node.api}/api/instances/{datasets[0].SOPInstanceUID}").json()
    assert reception["remote_ip"] == "127.0.0.1" and reception["size"] == reception["stored_size"]


def _wait_found(loaded: Loaded, study: str) -> list[dict[str, Any]]:
    return list(wait_until(lambda: loaded.client.search_for_studies(search_filters={"StudyInstanceUID": study}),
                           30, "the stored study indexed"))


def test_a_study_mismatch_is_refused_per_instance(loaded: Loaded) -> None:
    target = generate_uid()
    good = make_image(study_uid=target, patient_id="DW-STOW-2")
    other = make_image(study_uid=generate_uid(), patient_id="DW-STOW-2")
    for ds in (good, other):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    response = _post(loaded, f"/dicomweb/studies/{target}", [_part10(good), _part10(other)])
    assert response.status_code == 202
    answer = Dataset.from_json(response.json())
    assert failures(answer) == {other.SOPInstanceUID: 0xC409}
    assert [item.ReferencedSOPInstanceUID for item in answer.ReferencedSOPSequence] == [good.SOPInstanceUID]
    assert not list((loaded.node.data_dir / "objects").rglob(f"{other.SOPInstanceUID}.dcm"))
    with pytest.raises(HTTPError) as error:  # nothing stored: 409
        loaded.client.store_instances([other], study_instance_uid=target)
    assert error.value.response.status_code == 409


def _part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _post(loaded: Loaded, path: str, parts: list[bytes], part_type: str = "application/dicom") -> httpx.Response:
    boundary = "test-boundary-1234"
    body = b"".join(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode() + part + b"\r\n"
                    for part in parts) + f"--{boundary}--\r\n".encode()
    return httpx.post(f"{loaded.node.api}{path}", content=body, timeout=30,
                      headers={"content-type": f'multipart/related; type="{part_type}"; boundary={boundary}'})


def test_unusable_parts_get_their_failure_reason_and_nothing_is_written(loaded: Loaded) -> None:
    hostile = make_image(patient_id="DW-STOW-3")
    hostile.SOPInstanceUID = "../../x"
    unknown_class = make_image(patient_id="DW-STOW-3")
    unknown_class.SOPClassUID = "1.2.3.4.5.6"
    mismatch = make_image(patient_id="DW-STOW-3")
    for ds in (hostile, unknown_class, mismatch):
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    other_uid = mismatch.SOPInstanceUID[:-1] + ("1" if mismatch.SOPInstanceUID[-1] != "1" else "2")
    mismatch_bytes = _part10(mismatch).replace(mismatch.SOPInstanceUID.encode(), other_uid.encode(), 1)  # File Meta
    not_dicom = b"this is not a DICOM file" * 10
    response = _post(loaded, "/dicomweb/studies", [_part10(hostile), _part10(unknown_class), mismatch_bytes,
                                                   not_dicom])
    assert response.status_code == 409
    answer = Dataset.from_json(response.json())
    reasons = [int(item.FailureReason) for item in answer.FailedSOPSequence]
    assert reasons == [0xC001, 0x0122, 0xA900, 0xC000]
    assert "ReferencedSOPSequence" not in answer
    for ds in (hostile, unknown_class, mismatch):
        assert not list((loaded.node.data_dir / "objects").rglob(f"*{ds.StudyInstanceUID}*"))
    assert not (loaded.node.workdir / "x").exists()
    with sqlite3.connect(loaded.node.data_dir / "index.sqlite3") as index:
        rows = index.execute("SELECT remote_ip, details FROM audit_events WHERE action = 'stow' "
                             "AND outcome = 'failure'").fetchall()
    [(remote_ip, details)] = [row for row in rows if json.loads(row[1])["failed"] == 4]
    assert json.loads(details)["failure_reasons"] == {"0xC001": 1, "0x0122": 1, "0xA900": 1, "0xC000": 1}
    assert remote_ip == "127.0.0.1" and "../../x" not in details


def test_malformed_requests(loaded: Loaded) -> None:
    api = loaded.node.api
    assert httpx.post(f"{api}/dicomweb/studies", content=b"x",
                      headers={"content-type": "application/dicom"}).status_code == 415
    assert _post(loaded, "/dicomweb/studies", [b"{}"], part_type="application/dicom+json").status_code == 415
    assert httpx.post(f"{api}/dicomweb/studies", content=b"garbage",
                      headers={"content-type": 'multipart/related; type="application/dicom"; boundary=zz'}
                      ).status_code == 400
    assert _post(loaded, "/dicomweb/studies/not-a-uid", [b""]).status_code == 400
    spool = loaded.node.data_dir / "spool"
    assert not list(spool.glob("stow-*")), "spooled request bodies are removed"


# ---- PostgreSQL, request size bound ----------------------------------------------------------------------------

def test_dicomweb_on_postgresql_and_the_request_size_bound(tmp_path: Path, postgres_url: str) -> None:
    node = Node(tmp_path, env_overrides={"PACS_DATABASE_URL": postgres_url,
                                         "PACS_DICOMWEB_MAX_REQUEST_BYTES": "300000",
                                         "PACS_CORS_ALLOWED_ORIGINS": "http://viewer.test, http://other.test"})
    node.service("serve")
    try:
        node.wait_ready()
        client = DICOMwebClient(url=f"{node.api}/dicomweb")
        study, series = generate_uid(), generate_uid()
        datasets = [make_image(study_uid=study, series_uid=series, patient_id="PG-1", patient_name="Pg^Name",
                               instance_number=number) for number in (1, 2)]
        for ds in datasets:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        assert len(client.store_instances(datasets).ReferencedSOPSequence) == 2
        node.wait_indexed(2)
        [found] = client.search_for_studies(search_filters={"PatientName": "PG^*", "StudyDate": "20260101-"})
        assert values(found, "00201208") == [2]
        assert len(client.search_for_series(study)) == 1
        assert len(client.search_for_instances(study, series, limit=1, offset=1)) == 1
        retrieved = client.retrieve_series(study, series)
        assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ds.SOPInstanceUID for ds in datasets)
        assert len(client.retrieve_study_metadata(study)) == 2
        big = [make_image(patient_id="PG-2", rows=300, columns=300) for _ in range(2)]  # 2 x 180 kB > 300 kB
        for ds in big:
            ds.file_meta = pydicom.dataset.FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        with pytest.raises(HTTPError) as error:
            client.store_instances(big)
        assert error.value.response.status_code == 413
        chunked = httpx.post(f"{node.api}/dicomweb/studies", content=iter([b"x" * 100_000] * 4), timeout=30,
                             headers={"content-type": 'multipart/related; type="application/dicom"; boundary=b'})
        assert chunked.status_code == 413  # no Content-Length: counted while spooling
        assert not list((node.data_dir / "spool").glob("stow-*"))
        assert client.search_for_studies(search_filters={"PatientID": "PG-2"}) == []
        preflight = httpx.options(f"{node.api}/dicomweb/studies", headers={
            "origin": "http://viewer.test", "access-control-request-method": "GET",
            "access-control-request-headers": "authorization"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://viewer.test"
        search = httpx.get(f"{node.api}/dicomweb/studies", headers={"origin": "http://other.test"})
        assert search.headers["access-control-allow-origin"] == "http://other.test"
        stranger = httpx.get(f"{node.api}/dicomweb/studies", headers={"origin": "http://evil.test"})
        assert "access-control-allow-origin" not in stranger.headers
    finally:
        node.stop()
        print(node.logs())


def test_dicomweb_on_an_s3_object_store(tmp_path: Path, s3_server: Any) -> None:
    node = Node(tmp_path, env_overrides=s3_server.env())
    node.service("serve")
    try:
        node.wait_ready()
        client = DICOMwebClient(url=f"{node.api}/dicomweb")
        sample = compressed_copy(COMPRESSED_SAMPLES[0], tmp_path, generate_uid(), generate_uid(), "S3-1")
        original = read(sample.path)
        client.store_instances([original])
        node.wait_indexed(1)
        study, series = original.StudyInstanceUID, original.SeriesInstanceUID
        [retrieved] = client.retrieve_series(study, series)
        assert retrieved.PixelData == original.PixelData
        [frame] = client.retrieve_instance_frames(study, series, sample.sop_instance_uid, [1])
        assert frame == next(generate_frames(original.PixelData, number_of_frames=1))
    finally:
        node.stop()
        print(node.logs())


def _token(node: Node, name: str, role: str) -> str:
    result = subprocess.run([*PACS, "token", "create", name, "--role", role], cwd=REPO, env=node.env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_dicomweb_with_api_tokens(embedded_node: Node) -> None:
    """GETs need a viewer token, STOW-RS an operator token, once tokens exist (dicomweb-client sends them)."""
    viewer, operator = _token(embedded_node, "web-viewer", "viewer"), _token(embedded_node, "web-op", "operator")
    url = f"{embedded_node.api}/dicomweb"
    wait_until(lambda: httpx.get(f"{url}/studies").status_code == 401, 10, "anonymous access to end")
    as_viewer = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {viewer}"})
    as_operator = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {operator}"})
    ds = make_image(patient_id="DW-TOKENS")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with pytest.raises(HTTPError) as refused:
        as_viewer.store_instances([ds])
    assert refused.value.response.status_code == 403
    assert len(as_operator.store_instances([ds]).ReferencedSOPSequence) == 1
    wait_until(lambda: as_viewer.search_for_studies(search_filters={"PatientID": "DW-TOKENS"}), 30,
               "the study indexed")
    assert as_viewer.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
                                       ).SOPInstanceUID == ds.SOPInstanceUID


# ---- memory stays flat ------------------------------------------------------------------------------------------

def _api_process(node: Node) -> int:
    serve = node.services["serve"].process
    assert serve is not None
    for pid, command in child_commands(serve.pid).items():
        if b"api" in command:
            return pid
    raise AssertionError("the api child of pacs serve was not found")


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_retrieving_a_large_study_streams_it(embedded_node: Node, tmp_path: Path) -> None:
    """128 MB of instances pass through the API while its peak memory grows by far less than the study."""
    study, series = generate_uid(), generate_uid()
    files = []
    for number in range(16):  # 16 x 8 MB
        ds = make_image(study_uid=study, series_uid=series, patient_id="DW-BIG", rows=2048, columns=2048,
                        instance_number=number + 1)
        ds.PixelData = np.random.default_rng(number).integers(0, 4096, 2048 * 2048, dtype=np.uint16).tobytes()
        files.append(save(ds, tmp_path / f"{number}.dcm"))
    result = storescu(embedded_node.dicom_port, files)
    assert result.returncode == 0, result.stdout + result.stderr
    embedded_node.wait_indexed(len(files))
    pid = _api_process(embedded_node)
    httpx.get(f"{embedded_node.api}/dicomweb/studies/{study}/metadata")  # warm up the route and imports
    before = _peak_rss_bytes(pid)
    received = 0
    with httpx.stream("GET", f"{embedded_node.api}/dicomweb/studies/{study}", timeout=120,
                      headers={"accept": 'multipart/related; type="application/dicom"'}) as response:
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            received += len(chunk)
    assert received > 128_000_000
    growth = _peak_rss_bytes(pid) - before
    assert growth < 64 * 1024 * 1024, f"the API's peak memory grew by {growth} bytes"
