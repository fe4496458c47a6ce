"""Schemathesis against a running node, from its own OpenAPI spec (bounded, deterministic): no request, however
malformed, gets a 5xx; and no operation that declares the bearer scheme answers without credentials
(``ignored_auth``: each is tried without its Authorization header too)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.node import Node

ADMIN = "pacs_fuzz_bootstrap_admin_" + "f" * 32  # a bootstrap token: the fuzzer cannot revoke it


def test_schemathesis_finds_no_server_error_and_no_route_that_ignores_auth(tmp_path: Path) -> None:
    node = Node(tmp_path, {"PACS_API_ADMIN_TOKEN": ADMIN})
    node.service("serve")
    try:
        node.wait_ready()
        st = shutil.which("st", path=str(Path(sys.executable).parent))
        assert st is not None, "schemathesis is a test dependency (pip install -e '.[test]')"
        result = subprocess.run(
            [st, "run", f"{node.api}/openapi.json", "--checks", "not_a_server_error,ignored_auth",
             "--header", f"Authorization: Bearer {ADMIN}", "--generation-with-security-parameters", "false",
             "--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--generation-deterministic",
             "--workers", "1", "--request-timeout", "30", "--exclude-path", "/readyz", "--no-color"],
            capture_output=True, text=True, timeout=600, cwd=tmp_path)  # its .schemathesis/ cache stays there
        assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-2000:]
        assert "Tested: " in result.stdout
    finally:
        node.stop()
    assert ADMIN not in node.logs()
