"""REST deletion of studies, series and instances (admin only), study protection and the retention preview, on a
node with API tokens: index rows, objects and claims go together, counts follow, each deletion is audited, and a
deleted instance can be sent again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.factory import SampleFile, make_image, save
from tests.node import Node, wait_until
from tests.peers import push_files
from tests.services.api.test_auth import bearer, create_token

ROLES = ("admin", "operator", "viewer")


class Secured:
    def __init__(self, node: Node, tokens: dict[str, str]) -> None:
        self.node = node
        self.tokens = tokens

    def call(self, method: str, path: str, role: str | None = "admin", **kwargs: Any) -> httpx.Response:
        headers = bearer(self.tokens[role]) if role else {}
        return httpx.request(method, f"{self.node.api}{path}", headers=headers, timeout=30, **kwargs)

    def status(self) -> dict[str, Any]:
        response = self.call("GET", "/api/status", "viewer")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_indexed(self, instances: int) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            body = self.status()
            return body if body["counts"]["instances"] == instances and body["queue"]["pending"] == 0 else None

        result: dict[str, Any] = wait_until(done, 60, f"{instances} instances indexed", interval=0.25)
        return result

    def objects(self) -> list[Path]:
        return sorted((self.node.data_dir / "objects").rglob("*.dcm"))

    def claims(self) -> list[Path]:
        return sorted(path for path in (self.node.data_dir / "objects" / ".claims").rglob("*") if path.is_file())


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    node = Node(tmp_path)
    assert node.run("migrate").returncode == 0
    tokens = {role: create_token(node, f"test-{role}", role) for role in ROLES}
    node.service("serve")
    try:
        node.wait_ready()
        yield Secured(node, tokens)
    finally:
        node.stop()
        print(node.logs())


def push_study(secured: Secured, folder: Path, study: str, series: list[str], per_series: int,
               patient_id: str = "DEL-1") -> list[SampleFile]:
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for series_uid in series:
        for number in range(per_series):
            dataset = make_image(study_uid=study, series_uid=series_uid, patient_id=patient_id,
                                 instance_number=number + 1)
            files.append(SampleFile(save(dataset, folder / f"{dataset.SOPInstanceUID}.dcm"), ExplicitVRLittleEndian,
                                    dataset.SOPInstanceUID))
    push_files(secured.node.dicom_port, files)
    return files


def audit(secured: Secured, action: str) -> list[dict[str, Any]]:
    answer = secured.call("GET", "/api/audit", params={"action": action})
    assert answer.status_code == 200, answer.text
    events: list[dict[str, Any]] = answer.json()["events"]
    return events


def test_delete_needs_admin_and_keeps_index_and_store_consistent(secured: Secured, tmp_path: Path) -> None:
    study, other_study = generate_uid(), generate_uid()
    series = [generate_uid(), generate_uid()]
    files = push_study(secured, tmp_path / "a", study, series, 2)
    others = push_study(secured, tmp_path / "b", other_study, [generate_uid()], 1, patient_id="KEEP-1")
    secured.wait_indexed(5)
    assert len(secured.objects()) == 5 and len(secured.claims()) == 5

    for path in (f"/api/studies/{study}", f"/api/series/{series[0]}", f"/api/instances/{files[0].sop_instance_uid}",
                 f"/api/studies/{study}/protection"):
        assert secured.call("DELETE", path, None).status_code == 401
        for role in ("viewer", "operator"):
            refused = secured.call("DELETE", path, role)
            assert refused.status_code == 403 and "admin" in refused.text
    assert secured.call("PUT", f"/api/studies/{study}/protection", "operator").status_code == 403
    assert secured.status()["counts"]["instances"] == 5

    # One instance.
    deleted = secured.call("DELETE", f"/api/instances/{files[0].sop_instance_uid}")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"deleted": {"studies": 0, "series": 0, "instances": 1, "bytes": deleted.json()[
        "deleted"]["bytes"]}, "objects_removed": 1, "objects_pending": 0}
    assert deleted.json()["deleted"]["bytes"] > 0
    assert secured.call("GET", f"/api/instances/{files[0].sop_instance_uid}", "viewer").status_code == 404
    assert len(secured.objects()) == 4 and len(secured.claims()) == 4
    assert secured.status()["counts"] == {"patients": 2, "studies": 2, "series": 3, "instances": 4}

    # Protection: deletion refused, then allowed once removed.
    protected = secured.call("PUT", f"/api/studies/{study}/protection")
    assert protected.status_code == 200 and protected.json()["protected"] is True
    assert protected.json()["protected_by"] == "token:test-admin"
    assert secured.call("GET", f"/api/studies/{study}/protection", "viewer").json()["protected"] is True
    for path in (f"/api/studies/{study}", f"/api/series/{series[1]}", f"/api/instances/{files[2].sop_instance_uid}"):
        assert secured.call("DELETE", path).status_code == 409
    assert len(secured.objects()) == 4
    assert secured.call("DELETE", f"/api/studies/{study}/protection").json()["protected"] is False

    # A series (the one whose first instance is gone), then the whole study: rows, objects, claims, patient.
    gone = secured.call("DELETE", f"/api/series/{series[0]}").json()["deleted"]
    assert (gone["series"], gone["instances"], gone["studies"]) == (1, 1, 0)
    gone = secured.call("DELETE", f"/api/studies/{study}").json()["deleted"]
    assert (gone["studies"], gone["series"], gone["instances"]) == (1, 1, 2)
    assert secured.status()["counts"] == {"patients": 1, "studies": 1, "series": 1, "instances": 1}
    assert [path.stem for path in secured.objects()] == [others[0].sop_instance_uid]
    assert len(secured.claims()) == 1
    studies = secured.call("GET", "/api/studies", "viewer").json()
    assert [item["study_instance_uid"] for item in studies["studies"]] == [other_study]

    for action, level in (("instance_deleted", "instance"), ("series_deleted", "series"), ("study_deleted", "study")):
        [event] = audit(secured, action)
        assert event["details"]["level"] == level and event["details"]["actor"] == "token:test-admin"
        assert event["remote_ip"] == "127.0.0.1"
    assert [event["action"] for event in audit(secured, "study_protected,study_unprotected")] == [
        "study_unprotected", "study_protected"]

    # Unknown and malformed UIDs.
    assert secured.call("DELETE", f"/api/studies/{study}").status_code == 404
    assert secured.call("DELETE", "/api/series/1.2.3.999").status_code == 404
    assert secured.call("DELETE", "/api/instances/not-a-uid").status_code == 422
    assert secured.call("PUT", "/api/studies/1.2.3.999/protection").status_code == 404

    # A deleted instance sent again is stored and indexed again (its claim went with it).
    push_files(secured.node.dicom_port, files[:1])
    secured.wait_indexed(2)
    assert secured.call("GET", f"/api/instances/{files[0].sop_instance_uid}", "viewer").status_code == 200


def test_retention_preview_follows_the_live_configuration(secured: Secured, tmp_path: Path) -> None:
    study = generate_uid()
    push_study(secured, tmp_path / "a", study, [generate_uid()], 2)
    secured.wait_indexed(2)
    off = secured.call("GET", "/api/retention/preview", "viewer")
    assert off.status_code == 200 and off.json()["enabled"] is False and off.json()["candidates"] == []
    assert secured.call("PATCH", "/api/config", json={"retention_days": 1}).status_code == 200
    preview = secured.call("GET", "/api/retention/preview", "viewer").json()
    assert preview["enabled"] is True and preview["days"] == 1 and preview["basis"] == "received"
    assert preview["studies"] == 0 and preview["candidates"] == []  # received just now: kept
    assert secured.status()["counts"]["instances"] == 2  # a dry run deletes nothing
