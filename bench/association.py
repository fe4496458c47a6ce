#!/usr/bin/env python3
"""Association cost: how long a DICOM node takes to accept an association, answer a C-ECHO and release it, pacs
beside dcmtk's storescp and Orthanc. See bench/README.md.

Usage (from the repository root):

    .venv/bin/python bench/association.py                       # 200 rounds, storescp, Orthanc and pacs (~1 min)
    .venv/bin/python bench/association.py --modalities 100      # pacs with 100 registered modalities
    .venv/bin/python bench/association.py --commit d6625f8 --only pacs   # another commit's pacs

Every association costs a workstation's C-FIND, a `pacs status`, a monitoring echo, and every image of a modality
that opens one association per image. The client here is a few lines of socket code (no dcmtk process start, which
costs ~20 ms and would hide the difference): it connects, sends an A-ASSOCIATE-RQ for Verification and times the
A-ASSOCIATE-AC, then a C-ECHO-RQ and its response, then an A-RELEASE-RQ and its RP, with TCP_NODELAY. The nodes are
measured in turns within each round. Reported per node: median and p95 of each step, in milliseconds.

Needs: dcmtk's storescp, Orthanc (Debian package, `--orthanc` for another path); the .venv for pacs.
Performance is never a timed assertion in a test; this script is for people.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    HOST,
    Process,
    add_source_argument,
    configure_source,
    free_port,
    http,
    log,
    median,
    pacs_command,
    pacs_cwd,
    pacs_env,
    percentile,
    tcp_accepts,
)

CALLING_AET = "BENCHASSOC"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LITTLE_ENDIAN = b"1.2.840.10008.1.2"
APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
STORAGE_TRANSFER_SYNTAXES = (b"1.2.840.10008.1.2.1", IMPLICIT_LITTLE_ENDIAN, b"1.2.840.10008.1.2.2")
MOST_STORAGE_CONTEXTS = 127  # context IDs are odd and at most 255; Verification takes 1, storage 3 to 255
STEPS = ("associate", "echo", "release")
NODES = ("storescp", "orthanc", "pacs")


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def storage_sop_classes() -> list[bytes]:
    """Storage SOP class UIDs from pydicom's dictionary, in UID order (what a sender proposes beside Verification)."""
    from pydicom._uid_dict import UID_dictionary

    return [uid.encode() for uid, (name, kind, *_rest) in sorted(UID_dictionary.items())
            if kind == "SOP Class" and name.endswith("Storage") and uid.startswith("1.2.840.10008.5.1.4.1.1.")]


def associate_rq(called_aet: str, storage_contexts: tuple[bytes, ...] = ()) -> bytes:
    """An A-ASSOCIATE-RQ proposing Verification in Implicit VR Little Endian (PS3.8 9.3.2), then each storage SOP
    class of ``storage_contexts`` with three transfer syntaxes, as dcmtk's storescu proposes them."""
    context = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_LITTLE_ENDIAN))
    for index, sop_class in enumerate(storage_contexts):
        context += _item(0x20, bytes([2 * index + 3, 0, 0, 0]) + _item(0x30, sop_class)
                         + b"".join(_item(0x40, syntax) for syntax in STORAGE_TRANSFER_SYNTAXES))
    user_information = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.826.0.1.3680043.9.1"))
    body = (struct.pack(">HH", 1, 0) + called_aet.encode().ljust(16) + CALLING_AET.encode().ljust(16) + bytes(32)
            + _item(0x10, APPLICATION_CONTEXT) + context + user_information)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _element(element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def echo_rq() -> bytes:
    """A P-DATA-TF PDU holding a C-ECHO-RQ command set (Message ID 1, no data set)."""
    command = (_element(0x0002, VERIFICATION + b"\x00") + _element(0x0100, struct.pack("<H", 0x0030))
               + _element(0x0110, struct.pack("<H", 1)) + _element(0x0800, struct.pack("<H", 0x0101)))
    command = _element(0x0000, struct.pack("<I", len(command))) + command
    pdv = struct.pack(">IB", len(command) + 2, 1) + bytes([0x03]) + command  # last fragment of a command
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


RELEASE_RQ = struct.pack(">BBI", 0x05, 0, 4) + bytes(4)


def _read_pdu(connection: socket.socket) -> int:
    """Read one whole PDU; its type."""
    header = _read_exactly(connection, 6)
    _read_exactly(connection, struct.unpack(">I", header[2:])[0])
    return header[0]


def _read_exactly(connection: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = connection.recv(length - len(data))
        if not chunk:
            raise ConnectionError("the node closed the connection")
        data += chunk
    return data


def one_association(port: int, called_aet: str, storage_contexts: tuple[bytes, ...] = ()) -> tuple[float, float, float]:
    """Seconds from connect to A-ASSOCIATE-AC, for the C-ECHO, for the release."""
    request = associate_rq(called_aet, storage_contexts)
    started = time.perf_counter()
    with socket.create_connection((HOST, port), timeout=10) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sendall(request)
        if _read_pdu(connection) != 0x02:
            raise RuntimeError(f"association with {called_aet} not accepted")
        associated = time.perf_counter()
        connection.sendall(echo_rq())
        if _read_pdu(connection) != 0x04:
            raise RuntimeError(f"no C-ECHO response from {called_aet}")
        echoed = time.perf_counter()
        connection.sendall(RELEASE_RQ)
        if _read_pdu(connection) != 0x06:
            raise RuntimeError(f"no A-RELEASE-RP from {called_aet}")
        released = time.perf_counter()
    return associated - started, echoed - associated, released - echoed


@dataclass
class Node:
    name: str
    aet: str
    port: int
    process: Process
    samples: list[tuple[float, float, float]] = field(default_factory=list)


def start_storescp(workdir: Path) -> Node:
    port = free_port()
    (workdir / "storescp").mkdir()
    process = Process("storescp", ["storescp", "--fork", "+B", "-od", str(workdir / "storescp"), str(port)],
                      workdir / "storescp.log", env=_nodelay_env(), cwd=workdir)
    process.wait_ready(lambda: tcp_accepts(port))
    return Node("storescp", "ANY-SCP", port, process)


def start_orthanc(workdir: Path, executable: str) -> Node:
    folder = workdir / "orthanc"
    folder.mkdir()
    port, http_port = free_port(), free_port()
    config = {"Name": "bench", "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "index"),
              "DicomAet": "ORTHANC", "DicomPort": port, "HttpPort": http_port, "DicomCheckCalledAet": False,
              "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "Plugins": []}
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    process = Process("orthanc", [executable, str(folder / "orthanc.json")], folder / "orthanc.log",
                      env=_nodelay_env(), cwd=folder)
    process.wait_ready(lambda: http("GET", f"http://{HOST}:{http_port}/system", timeout=2)[0] == 200
                       and tcp_accepts(port))
    return Node("orthanc", "ORTHANC", port, process)


def start_pacs(workdir: Path, modalities: int) -> Node:
    port, api = free_port(), free_port()
    while api == port:
        api = free_port()
    process = Process("pacs serve", pacs_command("serve", "--data-dir", str(workdir / "pacs"), "--dicom-port",
                                                 str(port), "--api-port", str(api), "--ae-title", "PACS"),
                      workdir / "pacs.log", pacs_env(PACS_DICOM_HOST=HOST, PACS_API_HOST=HOST), cwd=pacs_cwd())
    process.wait_ready(lambda: http("GET", f"http://{HOST}:{api}/healthz", timeout=2)[0] == 200
                       and tcp_accepts(port))
    for number in range(modalities):  # what a site registers: its modalities and workstations
        status, answer = http("PUT", f"http://{HOST}:{api}/api/modalities/bench-{number}",
                              {"ae_title": f"BENCH{number}", "host": f"10.0.{number // 250}.{number % 250 + 1}",
                               "port": 104, "allow": ["echo", "store", "find"]})
        if status not in (200, 201):
            raise RuntimeError(f"PUT /api/modalities/bench-{number}: {status} {answer[:200]!r}")
    return Node("pacs", "PACS", port, process)


def _nodelay_env() -> dict[str, str]:
    return dict(os.environ, TCP_NODELAY="1")  # dcmtk and Orthanc read it (PERFORMANCE.md)


def report(nodes: list[Node], rounds: int, source: str, modalities: int, contexts: int) -> str:
    lines = [f"Association cost, {rounds} rounds, milliseconds, median · p95 (pacs: {source}, "
             f"{modalities} registered modalities; {contexts} presentation contexts proposed)", "",
             "| node | connect → A-ASSOCIATE-AC | C-ECHO-RQ → RSP | A-RELEASE-RQ → RP | all three |",
             "|---|---|---|---|---|"]
    for node in nodes:
        cells = []
        for step in range(len(STEPS)):
            values = [sample[step] * 1000 for sample in node.samples]
            cells.append(f"{median(values):.2f} · {percentile(values, 0.95):.2f}")
        totals = [sum(sample) * 1000 for sample in node.samples]
        cells.append(f"{median(totals):.2f} · {percentile(totals, 0.95):.2f}")
        lines.append(f"| {node.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="associations per node (default 200)")
    parser.add_argument("--warm-up", type=int, default=10, help="associations per node before measuring")
    parser.add_argument("--modalities", type=int, default=0, help="modalities registered in pacs first (default 0)")
    parser.add_argument("--contexts", type=int, default=1,
                        help="presentation contexts proposed: Verification, then storage SOP classes with three "
                             "transfer syntaxes each (default 1; dcmtk's storescu proposes 128 for one file)")
    parser.add_argument("--only", default=",".join(NODES), help=f"nodes to measure, from {','.join(NODES)}")
    parser.add_argument("--orthanc", default=shutil.which("Orthanc") or "/usr/sbin/Orthanc")
    add_source_argument(parser)
    args = parser.parse_args(argv)
    wanted = [name for name in args.only.split(",") if name]
    if set(wanted) - set(NODES):
        parser.error(f"--only takes names from {','.join(NODES)}")
    if not 1 <= args.contexts <= MOST_STORAGE_CONTEXTS + 1:
        parser.error(f"--contexts takes 1 to {MOST_STORAGE_CONTEXTS + 1}")
    storage_contexts = tuple(storage_sop_classes()[:args.contexts - 1])
    source = configure_source(args.commit)
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bench-assoc-"))
    nodes: list[Node] = []
    try:
        for name in wanted:
            if name == "storescp":
                nodes.append(start_storescp(workdir))
            elif name == "orthanc":
                nodes.append(start_orthanc(workdir, args.orthanc))
            else:
                nodes.append(start_pacs(workdir, args.modalities))
            log(f"[start] {name} on port {nodes[-1].port}")
        time.sleep(1.0)  # pacs's first configuration poll, Orthanc's start-up work
        for node in nodes:
            for _ in range(args.warm_up):
                one_association(node.port, node.aet, storage_contexts)
        for _ in range(args.rounds):
            for node in nodes:
                node.samples.append(one_association(node.port, node.aet, storage_contexts))
        print(report(nodes, args.rounds, source, args.modalities, 1 + len(storage_contexts)))
        return 0
    finally:
        for node in nodes:
            node.process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
