"""A workstation pulls instances back on its own association with dcmtk's getscu (C-GET). The tests share one node
(module_node); each registers the workstation with the services it needs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid

from tests.factory import SampleFile, dataset_start, make_image, save
from tests.integration.test_move import register
from tests.node import Node, wait_until
from tests.peers import dcmtk_env, dcmtk_tool, push_files
from tests.stored import stored_object

WORKSTATION = "WORKSTATION"


def getscu(node: Node, out: Path, keys: dict[str, str], calling_aet: str = WORKSTATION
           ) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    command = [dcmtk_tool("getscu"), "-v", "-S", "+B", "-aet", calling_aet, "-aec", node.ae_title, "-od", str(out)]
    for keyword, value in keys.items():
        command += ["-k", f"{keyword}={value}"]
    command += ["127.0.0.1", str(node.dicom_port)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=dcmtk_env())


def pushed_study(node: Node, tmp_path: Path, count: int) -> tuple[str, list[Dataset]]:
    """A new CT study of ``count`` instances, pushed to the node and indexed: its UID and its data sets."""
    study, series = generate_uid(), generate_uid()
    datasets = [make_image(CTImageStorage, study, series, instance_number=n + 1) for n in range(count)]
    files = [SampleFile(save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm"), "1.2.840.10008.1.2.1", ds.SOPInstanceUID)
             for ds in datasets]
    held = node.settled_status()["counts"]["instances"]
    push_files(node.dicom_port, files)
    node.wait_indexed(held + count)
    return study, datasets


def received(out: Path) -> dict[str, Path]:
    return {re.sub(r"^[A-Z]+\.", "", path.name): path for path in out.iterdir()}  # storescp adds "CT."; getscu not


def test_get_a_study_on_the_same_association(module_node: Node, tmp_path: Path) -> None:
    register(module_node, "workstation", WORKSTATION, 104, ["find", "get"])
    study, datasets = pushed_study(module_node, tmp_path, 8)

    result = getscu(module_node, tmp_path / "pulled", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study})

    output = result.stdout + result.stderr
    assert "Received C-GET Response (Success)" in output, output
    assert "Number of Completed Suboperations : 8" in output
    pulled = received(tmp_path / "pulled")
    assert sorted(pulled) == sorted(ds.SOPInstanceUID for ds in datasets)
    for sop_uid, path in pulled.items():
        stored = stored_object(module_node.data_dir, sop_uid)
        got, kept = pydicom.dcmread(path), pydicom.dcmread(stored)
        if got.file_meta.TransferSyntaxUID == kept.file_meta.TransferSyntaxUID:
            assert path.read_bytes()[dataset_start(path.read_bytes()):] == \
                stored.read_bytes()[dataset_start(stored.read_bytes()):]
        else:  # getscu accepted another uncompressed syntax for the SOP class: sent transcoded, same content
            assert got == kept


def test_get_that_matches_nothing_succeeds_with_no_suboperations(module_node: Node, tmp_path: Path) -> None:
    register(module_node, "workstation", WORKSTATION, 104, ["get"])
    for keys in ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3.4.5.6.7"},
                 {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": ""}):
        result = getscu(module_node, tmp_path / "none", keys)
        assert "Received C-GET Response (Success)" in result.stdout + result.stderr
    assert not list((tmp_path / "none").iterdir())


def test_a_caller_not_allowed_to_get_is_refused(module_node: Node, tmp_path: Path) -> None:
    register(module_node, "workstation", WORKSTATION, 104, ["find"])  # an earlier test allowed it to get

    def refused() -> str | None:
        result = getscu(module_node, tmp_path / "refused", {"QueryRetrieveLevel": "STUDY",
                                                             "StudyInstanceUID": "1.2.3"})
        output = result.stdout + result.stderr
        return output if "0x124" in output.lower().replace("0x0124", "0x124") else None

    output = wait_until(refused, 10, "the C-GET refused once the registration is live (within 0.5 s)")
    assert "Received C-GET Response" in output, output


def test_a_get_cancelled_by_the_requester_stops_and_answers_cancel(module_node: Node, tmp_path: Path) -> None:
    """C-CANCEL (PS3.7 9.3.2.3): the sub-operations stop, the final response is 0xFE00 with the counters."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet

    register(module_node, "workstation", WORKSTATION, 104, ["get"])
    study, _ = pushed_study(module_node, tmp_path, 30)

    ae = AE(ae_title=WORKSTATION)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    stored_here: list[str] = []

    def on_store(event: evt.Event) -> int:
        stored_here.append(str(event.request.AffectedSOPInstanceUID))
        if len(stored_here) == 3:
            context = next(c for c in event.assoc.accepted_contexts
                           if c.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
            event.assoc.send_c_cancel(1, context.context_id)
        return 0x0000

    assoc = ae.associate("127.0.0.1", module_node.dicom_port, ae_title=module_node.ae_title,
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = study
    try:
        responses = [status for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet,
                                                                msg_id=1)]
    finally:
        assoc.release()
    final = responses[-1]
    assert final.Status == 0xFE00
    assert 3 <= final.NumberOfCompletedSuboperations == len(stored_here) < 30
    assert final.NumberOfRemainingSuboperations == 30 - len(stored_here)
