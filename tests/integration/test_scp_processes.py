"""`pacs serve` runs several SCP processes on one listening socket: all of them take associations, the association
limit holds for the node, and a second node on the same port is refused at its start."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pynetdicom.sop_class import Verification

from tests.association_checks import association_answer, associate, echo_status, parallel_associations, release_all
from tests.node import PACS, REPO, Node, free_port, wait_until

LOCAL_LIMIT_EXCEEDED = (2, 3, 2)
PROCESSES = 2


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    node = Node(tmp_path_factory.mktemp("scp-processes"), {"PACS_SCP_PROCESSES": str(PROCESSES),
                                                            "PACS_HEARTBEAT_INTERVAL_SECONDS": "0.5"})
    node.service("serve")
    with node.running():
        yield node


def alive_listeners(node: Node) -> list[dict[str, Any]]:
    return [entry for entry in node.status()["services"]["scp"] if entry["alive"]]


def test_every_scp_process_reports_itself_alive(node: Node) -> None:
    listeners = wait_until(lambda: len(alive_listeners(node)) == PROCESSES and alive_listeners(node), 30,
                           "both SCP processes' heartbeats")
    assert {entry["port"] for entry in listeners} == {node.dicom_port}


def test_the_associations_are_spread_over_the_processes(node: Node) -> None:
    def both_hold_some() -> bool:
        with parallel_associations(node.dicom_port, 8, ((Verification, ()),)) as outcomes:
            assert all(outcome.accepted for outcome in outcomes)
            holding = wait_until(lambda: _holding(node), 10, "heartbeats of the held associations")
            return sorted(holding) != [0, 8] and sum(holding) == 8

    wait_until(both_hold_some, 60, "associations taken by each SCP process")


def _holding(node: Node) -> list[int] | None:
    counts = [entry["associations"] for entry in alive_listeners(node)]
    return counts if sum(counts) == 8 and len(counts) == PROCESSES else None


def test_max_associations_limits_the_node_not_each_process(node: Node) -> None:
    assert httpx.patch(f"{node.api}/api/config", json={"max_associations": 2}, timeout=10).status_code == 200
    try:
        def third_is_refused() -> bool:
            held = [associate(node.dicom_port) for _ in range(2)]
            try:
                return all(outcome.accepted for outcome in held) and \
                    association_answer(node.dicom_port) == LOCAL_LIMIT_EXCEEDED
            finally:
                release_all(held)

        wait_until(third_is_refused, 10, "the limit of 2")
        wait_until(lambda: accepted_of_six(node) == 2, 10, "the limit of 2 in every process")  # each polls config
        for _ in range(3):  # whichever processes the kernel hands them to
            assert accepted_of_six(node) == 2
    finally:
        assert httpx.patch(f"{node.api}/api/config", json={"max_associations": 64}, timeout=10).status_code == 200


def accepted_of_six(node: Node) -> int:
    """Six associations requested at once and held together: how many were accepted (the others must get 2/3/2)."""
    with parallel_associations(node.dicom_port, 6, ((Verification, ()),)) as outcomes:
        assert {outcome.rejection for outcome in outcomes if not outcome.accepted} <= {LOCAL_LIMIT_EXCEEDED}
        return sum(1 for outcome in outcomes if outcome.accepted)


def test_a_second_node_on_the_same_port_stops_at_once_and_says_why(node: Node, tmp_path: Path) -> None:
    second = subprocess.run(
        [*PACS, "serve", "--data-dir", str(tmp_path / "second"), "--dicom-port", str(node.dicom_port),
         "--api-port", str(free_port()), "--dicom-host", "127.0.0.1"],
        cwd=REPO, env=node.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {node.dicom_port}" in second.stderr
    assert echo_status(node.dicom_port) == 0x0000  # the first node still answers
