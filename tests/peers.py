"""Real DICOM peers for the tests: dcmtk's command-line tools, and a pynetdicom SCU for exact statuses."""

from __future__ import annotations

import itertools
import os
import time
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from shared.dicom.requestor import keep_reactor_off_responses
from tests.factory import SOP_CLASSES, UNCOMPRESSED_SYNTAXES, SampleFile, with_file_meta

# storescu proposes only uncompressed syntaxes unless told; one option per transfer syntax family.
STORESCU_PROPOSAL = {
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.5": "-xr",
}


def dcmtk_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"dcmtk's {name} is required (apt-get install dcmtk)")
    return path


def dcmtk_env(nodelay: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    if nodelay:
        env["TCP_NODELAY"] = "1"
    else:
        env.pop("TCP_NODELAY", None)
    return env


def echoscu(port: int, called_aet: str = "PACS", calling_aet: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run([dcmtk_tool("echoscu"), "-aet", calling_aet, "-aec", called_aet, "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=30, env=dcmtk_env())


def storescu(port: int, paths: Iterable[Path], proposal: str | None = None, called_aet: str = "PACS",
             calling_aet: str = "STORESCU", nodelay: bool = True,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [dcmtk_tool("storescu"), "-aet", calling_aet, "-aec", called_aet]
    if proposal:
        command += [proposal, "-R"]
    command += ["127.0.0.1", str(port), *[str(path) for path in paths]]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=dcmtk_env(nodelay))


def push_files(port: int, files: list[SampleFile], calling_aet: str = "STORESCU") -> None:
    """Push files with storescu, one association per transfer syntax, each proposed as it is stored."""
    by_syntax: dict[str, list[Path]] = {}
    for item in files:
        by_syntax.setdefault(item.transfer_syntax, []).append(item.path)
    for syntax, paths in sorted(by_syntax.items()):
        result = storescu(port, paths, STORESCU_PROPOSAL[syntax], calling_aet=calling_aet)
        assert result.returncode == 0, f"storescu {syntax}: {result.stdout}{result.stderr}"


class StoreClient:
    """A pynetdicom SCU that reports the exact DIMSE status of each C-STORE."""

    def __init__(self, port: int, called_aet: str = "PACS", calling_aet: str = "PYSCU") -> None:
        self.ae = AE(ae_title=calling_aet)
        self.ae.add_requested_context(Verification)
        for sop_class in SOP_CLASSES:  # one context per transfer syntax, so each can be chosen exactly
            for syntax in UNCOMPRESSED_SYNTAXES:
                self.ae.add_requested_context(sop_class, syntax)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 30
        self.port = port
        self.called_aet = called_aet

    def __enter__(self) -> "StoreClient":
        self.association = self.ae.associate("127.0.0.1", self.port, ae_title=self.called_aet)
        assert self.association.is_established, "association was not accepted"
        keep_reactor_off_responses(self.association)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.association.is_established:
            self.association.release()

    def store(self, dataset: Dataset | Path, transfer_syntax: str = "1.2.840.10008.1.2.1") -> int:
        if isinstance(dataset, Dataset) and "TransferSyntaxUID" not in getattr(dataset, "file_meta", {}):
            with_file_meta(dataset, transfer_syntax)
        answer = self.association.send_c_store(dataset)
        assert "Status" in answer, "no C-STORE response"
        return int(answer.Status)


def received_by_storescp(files: list[SampleFile], workdir: Path) -> dict[str, bytes]:
    """What storescu actually puts on the wire for these files, as dcmtk's storescp receives it bit-preserved.

    storescu re-encodes some datasets (e.g. undefined-length sequences get explicit lengths), so "the bytes
    that were sent" are these, not always the file's.
    """
    from tests.factory import dataset_start
    from tests.node import free_port, port_accepts, wait_until

    out = workdir / "storescp-received"
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    receiver = subprocess.Popen([dcmtk_tool("storescp"), "+B", "+xa", "-od", str(out), str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dcmtk_env())
    try:
        wait_until(lambda: port_accepts(port), 10, "storescp")
        push_files(port, files)
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)
    received = {}
    for path in out.iterdir():
        data = path.read_bytes()
        received[path.name.split(".", 1)[1]] = data[dataset_start(data):]
    return received


_message_ids = itertools.count(1000)


def send_raw_c_store(association: Any, sop_class_uid: str, sop_instance_uid: str, dataset: bytes,
                     transfer_syntax: str = "1.2.840.10008.1.2.1") -> int | None:
    """Send a C-STORE whose command and dataset bytes are exactly as given (for hostile and malformed input).

    Returns the response status, or None when the peer aborted the association instead of answering.
    """
    from io import BytesIO

    from pynetdicom.dimse_primitives import C_STORE

    context = next(cx for cx in association.accepted_contexts
                   if cx.abstract_syntax == sop_class_uid and cx.transfer_syntax[0] == transfer_syntax)
    request = C_STORE()
    request.MessageID = next(_message_ids)
    request.AffectedSOPClassUID = sop_class_uid
    request._affected_sop_instance_uid = sop_instance_uid  # bypass the setter: hostile values on purpose
    request.Priority = 2
    request.DataSet = BytesIO(dataset)
    keep_reactor_off_responses(association)  # the association's own thread must leave the response to us
    association.dimse.send_msg(request, context.context_id)
    _, response = association.dimse.get_msg(block=True)
    if response is None:
        deadline = time.monotonic() + 5  # the resumed reactor notices the A-ABORT
        while association.is_established and time.monotonic() < deadline:
            time.sleep(0.01)
        assert association.is_aborted, "neither a C-STORE response nor an A-ABORT"
        return None
    return int(response.Status)
