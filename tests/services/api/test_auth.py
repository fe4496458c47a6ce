"""Access control of the HTTP API, against running `pacs api` processes: every route of the OpenAPI spec without
credentials (401), with a too-weak role (403) and with the right one; the loopback first-run rule; the refusal to
start on a non-loopback address without a token; tokens made, used and revoked on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.node import PACS, REPO, Node, wait_until

ROLES = ("viewer", "operator", "admin")
OPEN = {"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
PATH_VALUES = {"name": "nobody", "job_id": "0" * 32}


def expected_role(method: str, path: str) -> str | None:
    """The rules of the README's "Access control for the API", written out independently of services.api.auth."""
    if path in OPEN:
        return None
    if path.startswith(("/api/audit", "/api/tokens", "/api/webhooks", "/api/routing")):
        return "admin"
    if method in ("get", "head"):
        return "viewer"
    if method == "post" and (path == "/api/modalities/{name}/store" or path.startswith("/dicomweb/studies")):
        return "operator"
    return "admin"


def pacs(node: Node, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PACS, *args], cwd=REPO, env=env or node.env, capture_output=True, text=True,
                          timeout=120)


def create_token(node: Node, name: str, role: str) -> str:
    result = pacs(node, "token", "create", name, "--role", role)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("pacs_") and len(token) > 40 and "\n" not in token
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def concrete(path: str) -> str:
    for key, value in PATH_VALUES.items():
        path = path.replace("{" + key + "}", value)
    while "{" in path:  # any other parameter (UIDs of DICOMweb routes)
        start, end = path.index("{"), path.index("}")
        path = path[:start] + "1.2.3" + path[end + 1:]
    return path


def call(node: Node, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body: dict[str, Any] = {}
    if method in ("post", "put", "patch"):
        body = {"json": {}}
    return httpx.request(method.upper(), f"{node.api}{concrete(path)}", headers=headers or {}, timeout=30, **body)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, dict[str, str]]]:
    """`pacs api` on loopback (SQLite) once a token of each role exists."""
    node = Node(tmp_path_factory.mktemp("auth"))
    assert node.run("migrate").returncode == 0
    tokens = {role: create_token(node, f"test-{role}", role) for role in ROLES}
    node.service("api")
    try:
        wait_until(lambda: httpx.get(f"{node.api}/healthz", timeout=2).status_code == 200, 30, "API /healthz")
        yield node, tokens
    finally:
        node.stop()
        print(node.logs())


def operations(node: Node) -> list[tuple[str, str, dict[str, Any]]]:
    spec = httpx.get(f"{node.api}/openapi.json", timeout=10).json()  # open: it describes, it holds no data
    found = [(method, path, operation) for path, methods in spec["paths"].items()
             for method, operation in methods.items() if method in ("get", "put", "post", "patch", "delete")]
    assert len(found) >= 18, "the spec lists the routes"
    return found


def test_every_route_of_the_openapi_spec_needs_its_role(secured: tuple[Node, dict[str, str]]) -> None:
    node, tokens = secured
    checked = 0
    for method, path, operation in operations(node):
        needed = expected_role(method, path)
        assert operation.get("x-required-role") == needed, f"{method} {path}: the spec documents another role"
        if needed is None:
            assert call(node, method, path).status_code not in (401, 403), f"{method} {path} must stay open"
            continue
        anonymous = call(node, method, path)
        assert anonymous.status_code == 401, f"{method} {path} without credentials: {anonymous.status_code}"
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer"), path
        wrong = call(node, method, path, bearer("pacs_" + "x" * 43))
        assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["WWW-Authenticate"], path
        for role in ROLES:
            answer = call(node, method, path, bearer(tokens[role]))
            if ROLES.index(role) < ROLES.index(needed):
                assert answer.status_code == 403, f"{method} {path} as {role}: {answer.status_code}"
                assert needed in answer.json()["detail"]
            else:
                assert answer.status_code not in (401, 403), f"{method} {path} as {role}: {answer.text}"
        checked += 1
    assert checked >= 15


def test_paths_no_router_serves_are_closed_too(secured: tuple[Node, dict[str, str]]) -> None:
    node, tokens = secured
    assert httpx.get(f"{node.api}/no/such/route", timeout=10).status_code == 401
    assert httpx.get(f"{node.api}/no/such/route", headers=bearer(tokens["viewer"]), timeout=10).status_code == 404
    # A write to a path no rule names needs admin: routers added later are closed by default.
    answer = httpx.post(f"{node.api}/later/router", headers=bearer(tokens["operator"]), timeout=10)
    assert answer.status_code == 403
    assert httpx.post(f"{node.api}/later/router", headers=bearer(tokens["admin"]), timeout=10).status_code == 404
    assert httpx.get(f"{node.api}//api//audit", headers=bearer(tokens["viewer"]), timeout=10).status_code == 403


def test_malformed_credentials_are_refused(secured: tuple[Node, dict[str, str]]) -> None:
    node, tokens = secured
    for header in ("Basic dXNlcjpwYXNz", "Bearer", tokens["admin"], f"Token {tokens['admin']}"):
        answer = httpx.get(f"{node.api}/api/status", headers={"Authorization": header}, timeout=10)
        assert answer.status_code == 401, header
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    lower = httpx.get(f"{node.api}/api/status", headers={"Authorization": f"bearer {tokens['viewer']}"}, timeout=10)
    assert lower.status_code == 200  # the scheme is case-insensitive (RFC 9110)


def test_the_openapi_spec_declares_the_bearer_scheme_and_docs_stay_open(secured: tuple[Node, dict[str, str]]) -> None:
    node, _ = secured
    spec = httpx.get(f"{node.api}/openapi.json", timeout=10).json()
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["bearerAuth"][
            "description"]}
    assert spec["paths"]["/api/status"]["get"]["security"] == [{"bearerAuth": []}]
    assert spec["paths"]["/healthz"]["get"]["security"] == []
    assert httpx.get(f"{node.api}/docs", timeout=10).status_code == 200
    assert httpx.get(f"{node.api}/readyz", timeout=10).status_code in (200, 503)


def test_loopback_without_any_token_is_open_until_the_first_token(tmp_path: Path) -> None:
    node = Node(tmp_path)
    assert node.run("migrate").returncode == 0
    node.service("api")
    try:
        node_ready = lambda: httpx.get(f"{node.api}/healthz", timeout=2).status_code == 200  # noqa: E731
        wait_until(node_ready, 30, "API /healthz")
        assert httpx.get(f"{node.api}/api/status", timeout=10).status_code == 200  # plain curl on a first run
        assert httpx.get(f"{node.api}/metrics", timeout=10).status_code == 200
        patched = httpx.patch(f"{node.api}/api/config", json={"max_associations": 32}, timeout=10)
        assert patched.status_code == 200
        token = create_token(node, "first", "viewer")
        wait_until(lambda: httpx.get(f"{node.api}/api/status", timeout=10).status_code == 401, 10,
                   "the API to require a token once one exists")
        assert httpx.get(f"{node.api}/api/status", headers=bearer(token), timeout=10).status_code == 200
        assert pacs(node, "token", "revoke", "first").returncode == 0
        time.sleep(1.5)  # past the cache of "does any token exist": still closed, auth was chosen once
        assert httpx.get(f"{node.api}/api/status", timeout=10).status_code == 401
        # The anonymous change was audited as such.
        admin = create_token(node, "admin", "admin")
        events = wait_until(lambda: httpx.get(f"{node.api}/api/audit?action=config_changed", headers=bearer(admin),
                                              timeout=10).json()["events"], 10, "the audit row")
        assert events[0]["details"]["actor"] == "anonymous-loopback"
    finally:
        node.stop()
        print(node.logs())


@pytest.mark.parametrize("command", ["api", "serve"])
def test_a_non_loopback_api_without_any_token_refuses_to_start(tmp_path: Path, command: str) -> None:
    node = Node(tmp_path, {"PACS_API_HOST": "0.0.0.0"})
    assert node.run("migrate").returncode == 0
    result = pacs(node, command)
    assert result.returncode != 0
    assert "refusing to serve the API on 0.0.0.0" in result.stderr and "pacs token create" in result.stderr
    assert "PACS_API_ADMIN_TOKEN" in result.stderr
    assert not (node.data_dir / "pacs.pid").exists()


def test_a_non_loopback_api_starts_with_a_bootstrap_token_or_a_token_in_the_database(tmp_path: Path) -> None:
    secret = "pacs_bootstrap_" + "k" * 40
    node = Node(tmp_path, {"PACS_API_HOST": "0.0.0.0", "PACS_API_ADMIN_TOKEN": secret})
    assert node.run("migrate").returncode == 0
    node.service("api")
    try:
        wait_until(lambda: httpx.get(f"{node.api}/healthz", timeout=2).status_code == 200, 30, "API /healthz")
        assert httpx.get(f"{node.api}/api/status", timeout=10).status_code == 401
        answer = httpx.post(f"{node.api}/api/tokens", json={"name": "ops", "role": "operator"},
                            headers=bearer(secret), timeout=10)
        assert answer.status_code == 201, answer.text
        operator = answer.json()["token"]
        assert httpx.get(f"{node.api}/api/status", headers=bearer(operator), timeout=10).status_code == 200
        assert httpx.patch(f"{node.api}/api/config", json={}, headers=bearer(operator), timeout=10).status_code == 403
    finally:
        node.stop()
    assert secret not in node.logs() and operator not in node.logs()
    # Without the bootstrap token, the token now in the database is enough to start.
    (tmp_path / "again").mkdir()
    again = Node(tmp_path / "again", {"PACS_API_HOST": "0.0.0.0", "PACS_DATA_DIR": str(node.data_dir)})
    assert "PACS_API_ADMIN_TOKEN" not in again.env
    again.service("api")
    try:
        wait_until(lambda: httpx.get(f"{again.api}/healthz", timeout=2).status_code == 200, 30, "API /healthz")
        assert httpx.get(f"{again.api}/api/status", headers=bearer(operator), timeout=10).status_code == 200
    finally:
        again.stop()


def test_tokens_on_postgresql_are_hashed_used_listed_and_revoked(tmp_path: Path, postgres_url: str) -> None:
    node = Node(tmp_path, {"PACS_DATABASE_URL": postgres_url})
    assert node.run("migrate").returncode == 0
    admin = create_token(node, "alice", "admin")
    duplicate = pacs(node, "token", "create", "alice", "--role", "viewer")
    assert duplicate.returncode == 1 and "exists" in duplicate.stderr
    node.service("api")
    try:
        wait_until(lambda: httpx.get(f"{node.api}/healthz", timeout=2).status_code == 200, 30, "API /healthz")
        assert httpx.get(f"{node.api}/api/status", headers=bearer(admin), timeout=10).status_code == 200
        made = httpx.post(f"{node.api}/api/tokens", json={"name": "viewer-1", "role": "viewer",
                                                          "expires_in_days": 30},
                          headers=bearer(admin), timeout=10)
        assert made.status_code == 201 and made.json()["expires_at"]
        viewer = made.json()["token"]
        assert httpx.get(f"{node.api}/api/jobs", headers=bearer(viewer), timeout=10).status_code == 200
        listed = httpx.get(f"{node.api}/api/tokens", headers=bearer(admin), timeout=10).json()
        assert {row["name"]: row["role"] for row in listed} == {"alice": "admin", "viewer-1": "viewer"}
        assert all("token" not in row and viewer not in str(row) for row in listed)
        assert httpx.delete(f"{node.api}/api/tokens/viewer-1", headers=bearer(admin), timeout=10).status_code == 204
        assert httpx.get(f"{node.api}/api/jobs", headers=bearer(viewer), timeout=10).status_code == 401
        revoked = pacs(node, "token", "revoke", "alice")
        assert revoked.returncode == 0, revoked.stderr
        wait_until(lambda: httpx.get(f"{node.api}/api/status", headers=bearer(admin), timeout=10).status_code == 401,
                   10, "the revoked token to stop working")
    finally:
        node.stop()
        print(node.logs())
    listing = pacs(node, "token", "list", "--all")
    assert listing.returncode == 0 and "revoked" in listing.stdout and admin not in listing.stdout
    import psycopg

    with psycopg.connect(postgres_url.replace("+psycopg", "")) as connection:
        stored = connection.execute("SELECT secret_sha256 FROM api_tokens").fetchall()
        assert len(stored) == 2 and all(len(row[0]) == 64 for row in stored)
        assert admin not in str(stored) and viewer not in str(stored)
        actions = connection.execute("SELECT action, details FROM audit_events ORDER BY pk").fetchall()
    assert [action for action, _ in actions] == ["token_created", "token_created", "token_revoked", "token_revoked"]
    assert actions[1][1]["actor"] == "token:alice" and actions[0][1]["actor"].startswith("cli:")
    assert admin not in str(actions) and viewer not in str(actions)
    assert admin not in node.logs() and viewer not in node.logs()


@pytest.mark.parametrize("secret", ["EXAMPLE-change-me-api-admin-token", "short-secret"])
def test_a_placeholder_or_short_bootstrap_token_refuses_to_start(tmp_path: Path, secret: str) -> None:
    node = Node(tmp_path, {"PACS_API_ADMIN_TOKEN": secret})
    assert node.run("migrate").returncode == 0
    result = pacs(node, "api")
    assert result.returncode == 1 and "PACS_API_ADMIN_TOKEN" in result.stderr and "EXAMPLE" in result.stderr
    assert secret not in result.stderr


def test_pacs_status_with_tokens_reports_the_api_up_and_shows_counts_with_the_bootstrap_token(tmp_path: Path) -> None:
    secret = "pacs_status_bootstrap_" + "s" * 30
    node = Node(tmp_path)
    node.service("serve")
    try:
        node.wait_ready()
        create_token(node, "someone", "viewer")
        without = pacs(node, "status")
        assert without.returncode == 0, without.stdout + without.stderr
        assert "counts need an API token" in without.stdout and "INDEX" not in without.stdout
        with_token = pacs(node, "status", env={**node.env, "PACS_API_ADMIN_TOKEN": secret})
        assert with_token.returncode == 0  # a token this node does not know: 401, so up from /healthz, no counts
        assert "counts need an API token" in with_token.stdout
    finally:
        node.stop()
    node.env["PACS_API_ADMIN_TOKEN"] = secret
    node.service("serve", name="serve-again")
    try:
        node.wait_ready()
        shown = pacs(node, "status")
        assert shown.returncode == 0 and "INDEX  0 patients" in shown.stdout, shown.stdout
    finally:
        node.stop()
