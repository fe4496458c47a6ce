"""The children of `pacs serve` are forked from the supervisor (services.forked_children) and behave as the processes
`python -m services.cli <service>` started before: their own command line in ps, their own session, no descriptor of
the supervisor's but standard input/output/error and (for an SCP process) the listening socket, the indexer niced;
and one that dies is forked again and serves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node import PACS, REPO, Node, child_commands, wait_until
from tests.peers import echoscu

SERVICES = {"scp", "indexer", "mover", "api"}


@pytest.fixture(scope="module")
def node_and_pipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str, int]]:
    """A node whose supervisor inherited one more descriptor (a pipe), as a caller's shell may hand one down."""
    node = Node(tmp_path_factory.mktemp("serve-children"), {"PACS_SCP_PROCESSES": "2"})
    read_end, write_end = os.pipe()
    log = open(node.workdir / "serve.log", "ab")
    process = subprocess.Popen([*PACS, "serve"], cwd=REPO, env=node.env, stdout=log, stderr=subprocess.STDOUT,
                               pass_fds=(write_end,))
    log.close()
    pipe = os.readlink(f"/proc/self/fd/{write_end}")
    os.close(write_end)
    try:
        node.wait_ready()
        yield node, pipe, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        os.close(read_end)


def children(supervisor: int) -> dict[int, list[str]]:
    return {pid: [word.decode() for word in command] for pid, command in child_commands(supervisor).items()}


def descriptors(pid: int) -> set[str]:
    """What the process's descriptors point to; one closed between the listing and its reading is left out (a
    running service opens and closes files: its journal, its objects)."""
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return held


def test_each_child_shows_its_command_line_runs_in_its_own_session_and_holds_only_its_own_descriptors(
        node_and_pipe: tuple[Node, str, int]) -> None:
    _, inherited_pipe, supervisor = node_and_pipe
    assert inherited_pipe in descriptors(supervisor)
    found = children(supervisor)
    services = [command[3] for command in found.values()]
    assert sorted(services) == ["api", "indexer", "mover", "scp", "scp"]
    for pid, command in found.items():
        assert command[:3] == [sys.executable, "-m", "services.cli"]
        assert os.getsid(pid) == pid != os.getsid(supervisor)
        held = descriptors(pid)
        assert inherited_pipe not in held
        assert any(name.startswith("socket:") for name in held) or command[3] != "scp"  # the listening socket
        niceness = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert niceness == (10 if command[3] == "indexer" else 0)


def test_a_killed_child_is_forked_again_and_serves(node_and_pipe: tuple[Node, str, int]) -> None:
    node, _, supervisor = node_and_pipe
    before = children(supervisor)
    killed = [pid for pid, command in before.items() if command[3] in ("scp", "api")]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    def forked_again() -> bool:
        now = children(supervisor)
        return len(now) == len(before) and not set(killed) & set(now)

    wait_until(forked_again, 30, "the killed children forked again")
    node.wait_ready()
    wait_until(lambda: echoscu(node.dicom_port, node.ae_title).returncode == 0, 30, "a C-ECHO answered")
    assert sorted(command[3] for command in children(supervisor).values()) == ["api", "indexer", "mover", "scp",
                                                                               "scp"]
