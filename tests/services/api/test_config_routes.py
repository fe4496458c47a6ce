"""GET/PATCH /api/config and the /api/modalities routes, driven over HTTP against a running `pacs api`."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.node import Node, wait_until

DEFAULTS = {
    "check_called_aet": True,
    "unknown_callers_allowed": ["echo", "store"],
    "accept_unknown_sop_classes": False,
    "accepted_transfer_syntaxes": None,
    "max_associations": 64,
    "allowed_calling_aets": [],
    "blocked_calling_aets": [],
    "ip_allowlist": [],
    "enabled_services": ["echo", "store", "find", "move", "get"],
    "patient_name_ignore_accents": False,
    "check_calling_aet_host": False,
    "duplicate_policy": "keep_first",
    "storage_layout": "series",
    "storage_max_bytes": None,
    "storage_naming": "sop_uid",
    "storage_max_instances": None,
    "ingest_compression": "none",
    "retention_days": None,
    "retention_basis": "received",
    "storage_recycle": False,
    "study_stable_seconds": 60,
    "webhook_max_attempts": 10,
    "webhook_retry_seconds": 10,
    "forward_max_attempts": 5,
    "forward_retry_seconds": 60,
    "commitment_wait_seconds": 30,
}

BAD_VALUES = [
    ("check_called_aet", "yes"),
    ("check_called_aet", 1),
    ("unknown_callers_allowed", ["telnet"]),
    ("unknown_callers_allowed", "echo"),
    ("accept_unknown_sop_classes", "true"),
    ("accepted_transfer_syntaxes", ["1.2.840.10008.1.2.1", "not-a-uid"]),
    ("accepted_transfer_syntaxes", []),
    ("accepted_transfer_syntaxes", "1.2.840.10008.1.2.1"),
    ("max_associations", 0),
    ("max_associations", 1001),
    ("max_associations", "2"),
    ("max_associations", 2.5),
    ("max_associations", True),
    ("allowed_calling_aets", ["X" * 17]),
    ("allowed_calling_aets", ["A\\B"]),
    ("blocked_calling_aets", [""]),
    ("blocked_calling_aets", [42]),
    ("ip_allowlist", ["10.0.0.0/33"]),
    ("ip_allowlist", ["not an address"]),
    ("enabled_services", ["print"]),
    ("enabled_services", None),
    ("duplicate_policy", "keep_last"),
    ("storage_layout", "random"),
    ("storage_max_bytes", 0),
    ("storage_max_bytes", -5),
    ("storage_max_bytes", "10"),
]

MODALITY = {"ae_title": "CTSCANNER", "host": "10.1.2.3", "port": 104, "allow": ["echo", "store", "find"],
            "description": "CT in room 3"}


@pytest.fixture(scope="module")
def api_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """`pacs api` alone on a migrated SQLite index (the routes need nothing else)."""
    node = Node(tmp_path_factory.mktemp("config-routes"))
    migrate = node.run("migrate")
    assert migrate.returncode == 0, migrate.stderr
    node.service("api")
    try:
        wait_until(lambda: httpx.get(f"{node.api}/healthz", timeout=2).status_code == 200, 30, "API /healthz")
        yield node
    finally:
        node.stop()
        print(node.logs())


@pytest.fixture
def api(api_node: Node) -> Iterator[Node]:
    """The module's node, put back to its defaults after each test."""
    yield api_node
    assert httpx.patch(f"{api_node.api}/api/config", json=DEFAULTS, timeout=10).status_code == 200
    for modality in httpx.get(f"{api_node.api}/api/modalities", timeout=10).json():
        httpx.delete(f"{api_node.api}/api/modalities/{modality['name']}", timeout=10)


def config(node: Node) -> dict[str, Any]:
    response = httpx.get(f"{node.api}/api/config", timeout=10)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def patch(node: Node, body: Any) -> httpx.Response:
    return httpx.patch(f"{node.api}/api/config", json=body, timeout=10)


def audit(node: Node, action: str) -> list[dict[str, Any]]:
    with sqlite3.connect(node.data_dir / "index.sqlite3", timeout=10) as connection:
        rows = connection.execute("SELECT details FROM audit_events WHERE action = ? ORDER BY pk",
                                  (action,)).fetchall()
    return [json.loads(details) for (details,) in rows]


def named_keys(response: httpx.Response) -> set[str]:
    assert response.status_code == 422, response.text
    return {item["key"] for item in response.json()["detail"]}


def test_get_shows_every_key_with_its_default(api: Node) -> None:
    assert config(api) == DEFAULTS


def test_patch_changes_the_given_keys_returns_the_whole_config_and_is_audited(api: Node) -> None:
    before = len(audit(api, "config_changed"))
    response = patch(api, {"max_associations": 8, "unknown_callers_allowed": ["store", "echo", "store"],
                           "ip_allowlist": ["10.1.2.3/8", "192.168.0.7"], "storage_layout": "date",
                           "accepted_transfer_syntaxes": ["1.2.840.10008.1.2.1"], "storage_max_bytes": 10**12})
    assert response.status_code == 200, response.text
    expected = {**DEFAULTS, "max_associations": 8, "unknown_callers_allowed": ["echo", "store"],
                "ip_allowlist": ["10.0.0.0/8", "192.168.0.7/32"], "storage_layout": "date",
                "accepted_transfer_syntaxes": ["1.2.840.10008.1.2.1"], "storage_max_bytes": 10**12}
    assert response.json() == expected
    assert config(api) == expected

    rows = audit(api, "config_changed")
    assert len(rows) == before + 1
    assert rows[-1]["changes"]["max_associations"] == {"old": 64, "new": 8}
    assert rows[-1]["changes"]["ip_allowlist"] == {"old": [], "new": ["10.0.0.0/8", "192.168.0.7/32"]}
    assert set(rows[-1]["changes"]) == {"max_associations", "unknown_callers_allowed", "ip_allowlist",
                                        "storage_layout", "accepted_transfer_syntaxes", "storage_max_bytes"}


def test_an_unknown_key_gets_422_naming_it_and_nothing_is_applied(api: Node) -> None:
    before = len(audit(api, "config_changed"))
    response = patch(api, {"max_associations": 3, "max_associatons": 4})
    assert named_keys(response) == {"max_associatons"}
    assert "max_associatons" in response.text
    assert config(api) == DEFAULTS  # the valid key of the same PATCH was not applied either
    assert len(audit(api, "config_changed")) == before


@pytest.mark.parametrize(("key", "value"), BAD_VALUES)
def test_an_invalid_value_gets_422_naming_the_key_and_the_old_value_stays(api: Node, key: str, value: Any) -> None:
    assert patch(api, {"check_called_aet": False}).status_code == 200
    before = config(api)
    response = patch(api, {"storage_layout": "flat", key: value})
    assert named_keys(response) == {key}
    assert config(api) == before


def test_several_bad_keys_are_all_named(api: Node) -> None:
    response = patch(api, {"max_associations": 0, "ip_allowlist": ["x"], "nonsense": 1})
    assert named_keys(response) == {"max_associations", "ip_allowlist", "nonsense"}


@pytest.mark.parametrize("body", [[], "max_associations=3", 3, None])
def test_a_body_that_is_not_a_json_object_gets_422(api: Node, body: Any) -> None:
    assert patch(api, body).status_code == 422
    assert config(api) == DEFAULTS


def test_null_restores_every_transfer_syntax(api: Node) -> None:
    assert patch(api, {"accepted_transfer_syntaxes": ["1.2.840.10008.1.2"]}).status_code == 200
    response = patch(api, {"accepted_transfer_syntaxes": None})
    assert response.status_code == 200 and response.json()["accepted_transfer_syntaxes"] is None


def test_modalities_create_replace_read_list_delete_and_audit(api: Node) -> None:
    base = f"{api.api}/api/modalities"
    assert httpx.get(base, timeout=10).json() == []
    assert httpx.get(f"{base}/ct-3", timeout=10).status_code == 404

    created = httpx.put(f"{base}/ct-3", json=MODALITY, timeout=10)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body.pop("updated_at").endswith("Z")
    assert body == {"name": "ct-3", **MODALITY, "local_ae_title": None, "facility": ""}

    replaced = httpx.put(f"{base}/ct-3", json={"ae_title": "CT3", "host": "ct3.example.org", "port": 11112,
                                               "local_ae_title": "PACS_FOR_CT"}, timeout=10)
    assert replaced.status_code == 200, replaced.text
    fetched = httpx.get(f"{base}/ct-3", timeout=10).json()
    assert {key: fetched[key] for key in ("ae_title", "host", "port", "allow", "description", "local_ae_title")} == \
        {"ae_title": "CT3", "host": "ct3.example.org", "port": 11112, "allow": ["echo", "store"],
         "description": "", "local_ae_title": "PACS_FOR_CT"}

    assert httpx.put(f"{base}/MR_1", json={**MODALITY, "ae_title": "MR1"}, timeout=10).status_code == 201
    assert [item["name"] for item in httpx.get(base, timeout=10).json()] == ["MR_1", "ct-3"]

    assert httpx.delete(f"{base}/ct-3", timeout=10).status_code == 204
    assert httpx.get(f"{base}/ct-3", timeout=10).status_code == 404
    assert httpx.delete(f"{base}/ct-3", timeout=10).status_code == 404

    saved = [row for row in audit(api, "modality_saved") if row["name"] == "ct-3"]
    assert [row["created"] for row in saved][-2:] == [True, False]
    assert saved[-1]["old"]["ae_title"] == "CTSCANNER" and saved[-1]["new"]["ae_title"] == "CT3"
    assert audit(api, "modality_deleted")[-1]["name"] == "ct-3"


@pytest.mark.parametrize(("change", "key"), [
    ({"ae_title": "X" * 17}, "ae_title"),
    ({"ae_title": "A\\B"}, "ae_title"),
    ({"ae_title": "   "}, "ae_title"),
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"port": "104"}, "port"),
    ({"allow": ["echo", "print"]}, "allow"),
    ({"host": "bad host; rm -rf /"}, "host"),
    ({"host": ""}, "host"),
    ({"local_ae_title": "Y" * 17}, "local_ae_title"),
    ({"colour": "blue"}, "colour"),
])
def test_an_invalid_modality_gets_422_naming_the_key_and_nothing_is_stored(
    api: Node, change: dict[str, Any], key: str
) -> None:
    response = httpx.put(f"{api.api}/api/modalities/ct", json={**MODALITY, **change}, timeout=10)
    assert named_keys(response) == {key}
    assert httpx.get(f"{api.api}/api/modalities/ct", timeout=10).status_code == 404


def test_a_modality_without_its_required_keys_gets_422(api: Node) -> None:
    response = httpx.put(f"{api.api}/api/modalities/ct", json={"ae_title": "CT"}, timeout=10)
    assert named_keys(response) == {"host", "port"}


@pytest.mark.parametrize("name", ["bad name", "a" * 65, "ct.1", "ct%2F..%2Fx"])
def test_an_invalid_modality_name_gets_422(api: Node, name: str) -> None:
    response = httpx.put(f"{api.api}/api/modalities/{name}", json=MODALITY, timeout=10)
    assert response.status_code in (404, 422), response.text  # 404 only when the name is not one path segment
    assert httpx.get(f"{api.api}/api/modalities", timeout=10).json() == []


def test_the_routes_are_in_the_openapi_document_with_their_tags(api: Node) -> None:
    paths = httpx.get(f"{api.api}/openapi.json", timeout=10).json()["paths"]
    assert set(paths["/api/config"]) == {"get", "patch"}
    assert paths["/api/config"]["patch"]["tags"] == ["config"]
    assert set(paths["/api/modalities/{name}"]) == {"get", "put", "delete"}
    assert paths["/api/modalities"]["get"]["tags"] == ["modalities"]


def test_changes_are_in_the_database(api: Node) -> None:
    assert patch(api, {"blocked_calling_aets": ["BADGUY"]}).status_code == 200
    assert httpx.put(f"{api.api}/api/modalities/ct", json=MODALITY, timeout=10).status_code == 201
    with sqlite3.connect(api.data_dir / "index.sqlite3", timeout=10) as connection:
        settings = dict(connection.execute("SELECT key, value FROM node_settings").fetchall())
        modalities = connection.execute("SELECT name, ae_title, allow FROM modalities").fetchall()
    assert json.loads(settings["blocked_calling_aets"]) == ["BADGUY"]
    assert modalities == [("ct", "CTSCANNER", '["echo", "store", "find"]')]
