"""Every REST change is audited (issue 4): each writing route of the OpenAPI document, called against a running
`pacs serve`, leaves its audit row with the caller's address and who it was (the bootstrap admin or a token).

The list of calls below must cover every PUT, POST, PATCH and DELETE of the spec: a writing route added later
without an entry here (and so without a proven audit row) fails the test.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from tests.factory import make_image, save
from tests.node import Node, free_port, wait_until
from tests.services.api.test_no_arbitrary_paths import _multipart

ADMIN = "pacs_audit_bootstrap_admin_" + "a" * 32
WRITING = ("put", "post", "patch", "delete")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path, {"PACS_API_ADMIN_TOKEN": ADMIN})
    node.service("serve")
    with node.running():
        yield node


def stow_body(paths: list[Path]) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = _multipart([({"Content-Type": "application/dicom"}, path.read_bytes()) for path in paths], boundary)
    return body, {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                  "Accept": "application/dicom+json"}


class Caller:
    """Makes one writing call and finds the audit row it left."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.covered: set[tuple[str, str]] = set()

    def newest_id(self) -> int:
        events = self.audit(limit=1)
        return int(events[0]["id"]) if events else 0

    def audit(self, **query: Any) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.node.api}/api/audit", params=query, headers=bearer(ADMIN), timeout=10)
        assert answer.status_code == 200, answer.text
        events: list[dict[str, Any]] = answer.json()["events"]
        return events

    def call(self, method: str, template: str, action: str, token: str = ADMIN, actor: str = "bootstrap-admin",
             values: dict[str, str] | None = None, **request: Any) -> httpx.Response:
        path = template.format(**(values or {}))
        before = self.newest_id()
        headers = {**bearer(token), **request.pop("headers", {})}
        response = httpx.request(method, f"{self.node.api}{path}", headers=headers, timeout=30, **request)
        assert 200 <= response.status_code < 300, (method, path, response.status_code, response.text)
        rows = [event for event in self.audit(action=action, limit=10) if event["id"] > before]
        assert len(rows) == 1, (method, template, action, rows)
        [row] = rows
        assert row["remote_ip"] == "127.0.0.1" and row["occurred_at"].endswith("Z"), row
        assert row["details"].get("actor") == actor or row["details"].get("created_by") == actor or \
            row["details"].get("revoked_by") == actor, row
        self.covered.add((method.lower(), template))
        return response


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def writing_routes(node: Node) -> set[tuple[str, str]]:
    spec = httpx.get(f"{node.api}/openapi.json", timeout=10).json()
    return {(method, path) for path, methods in spec["paths"].items() for method in methods if method in WRITING}


def test_every_writing_route_leaves_an_audit_row_with_its_actor_and_address(node: Node, tmp_path: Path) -> None:
    caller = Caller(node)
    study_a, study_b = generate_uid(), generate_uid()
    series_a1, series_a2 = generate_uid(), generate_uid()
    images = [make_image(study_uid=study_a, series_uid=series_a1), make_image(study_uid=study_a, series_uid=series_a2),
              make_image(study_uid=study_a, series_uid=series_a2), make_image(study_uid=study_b)]
    paths = [save(image, tmp_path / f"{index}.dcm") for index, image in enumerate(images)]

    operator = caller.call("POST", "/api/tokens", "token_created", json={"name": "ops", "role": "operator"}).json()
    body, headers = stow_body(paths[:3])
    caller.call("POST", "/dicomweb/studies", "stow", token=operator["token"], actor="token:ops", content=body,
                headers=headers)
    body, headers = stow_body(paths[3:])
    caller.call("POST", "/dicomweb/studies/{study}", "stow", token=operator["token"], actor="token:ops",
                values={"study": study_b}, content=body, headers=headers)
    wait_until(lambda: httpx.get(f"{node.api}/api/status", headers=bearer(ADMIN), timeout=10).json()["counts"]
               ["instances"] == 4, 60, "the stored instances indexed")

    caller.call("PATCH", "/api/config", "config_changed", json={"max_associations": 10})
    caller.call("PUT", "/api/modalities/{name}", "modality_saved", values={"name": "dest"},
                json={"ae_title": "DEST", "host": "127.0.0.1", "port": free_port(), "allow": ["store"]})
    caller.call("POST", "/api/modalities/{name}/store", "rest_send", token=operator["token"], actor="token:ops",
                values={"name": "dest"}, json={"studies": [study_b]})
    caller.call("PUT", "/api/webhooks/{name}", "webhook_saved", values={"name": "hook"},
                json={"url": "http://127.0.0.1:9/hook", "events": ["study_stable"]})
    caller.call("DELETE", "/api/webhooks/{name}", "webhook_deleted", values={"name": "hook"})
    caller.call("PUT", "/api/routing/rules/{name}", "routing_rule_saved", values={"name": "rule"},
                json={"destination": "dest", "trigger": "study_stable"})
    caller.call("DELETE", "/api/routing/rules/{name}", "routing_rule_deleted", values={"name": "rule"})
    caller.call("PUT", "/api/studies/{uid}/protection", "study_protected", values={"uid": study_a})
    caller.call("DELETE", "/api/studies/{uid}/protection", "study_unprotected", values={"uid": study_a})
    caller.call("DELETE", "/api/instances/{uid}", "instance_deleted", values={"uid": images[1].SOPInstanceUID})
    caller.call("DELETE", "/api/series/{uid}", "series_deleted", values={"uid": series_a1})
    caller.call("DELETE", "/api/studies/{uid}", "study_deleted", values={"uid": study_a})
    caller.call("DELETE", "/api/modalities/{name}", "modality_deleted", values={"name": "dest"})
    caller.call("DELETE", "/api/tokens/{name}", "token_revoked", values={"name": "ops"})

    assert caller.covered == writing_routes(node), "a writing route without a proven audit row"
