"""No route writes files to arbitrary paths (issue 4, REST access control).

Three angles: no request parameter or body field of the OpenAPI document names a file-system location (the API
has nothing to pass one to); the only code of services/api that writes a file is STOW-RS's spool, a server-named
temporary file in <data_dir>/spool removed after the request; and against a running node, client-chosen names
(part headers of a STOW-RS upload, hostile UIDs, a file:// webhook, a path as storage layout) reach no path.
"""

from __future__ import annotations

import ast
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from services.api.app import create_app
from tests.archive import open_archive
from tests.factory import make_image, save
from tests.node import Node

API_SOURCE = Path(__file__).resolve().parents[3] / "services" / "api"
PATH_LIKE = re.compile(r"(^|_)(path|paths|file|files|filename|dir|directory|folder|output|location)($|_)", re.I)
# Calls that write, create, move or remove files: functions of these modules, methods of pathlib.Path, open() in a
# writing mode. Each place of services/api that makes one is listed with why.
MODULE_CALLS = {"os": {"fdopen", "open", "replace", "rename", "renames", "makedirs", "mkdir", "remove", "unlink",
                       "symlink", "link", "truncate"},
                "shutil": {"copy", "copy2", "copyfile", "copytree", "move", "rmtree"},
                "tempfile": {"mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryFile", "SpooledTemporaryFile",
                             "TemporaryDirectory"}}
PATH_METHODS = {"write_text", "write_bytes", "mkdir", "touch", "rename", "symlink_to", "hardlink_to"}
ALLOWED_WRITES = {
    ("dicomweb/stow.py", "_spool", "mkdir"),  # <data_dir>/spool, a path from the settings
    ("dicomweb/stow.py", "_spool", "tempfile.mkstemp"),  # a name chosen by tempfile in that folder
    ("dicomweb/stow.py", "_spool", "os.fdopen"),  # the handle mkstemp returned
}


def _field_names(schema: Any, definitions: dict[str, Any], seen: set[str]) -> set[str]:
    """Every property name of a JSON schema, following $ref (components and $defs) once each."""
    if not isinstance(schema, dict):
        return set()
    definitions = {**definitions, **schema.get("$defs", {})}
    names: set[str] = set()
    reference = schema.get("$ref")
    if isinstance(reference, str):
        target = reference.rsplit("/", 1)[-1]
        if target not in seen:
            names |= _field_names(definitions[target], definitions, seen | {target})
    for name, value in (schema.get("properties") or {}).items():
        names.add(name)
        names |= _field_names(value, definitions, seen)
    for key in ("items", "additionalProperties"):
        names |= _field_names(schema.get(key), definitions, seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for branch in schema.get(key) or []:
            names |= _field_names(branch, definitions, seen)
    return names


def test_no_parameter_or_body_field_of_any_route_names_a_file_system_location(tmp_path: Path) -> None:
    spec = create_app(open_archive(tmp_path / "data")).openapi()
    components = spec.get("components", {}).get("schemas", {})
    inputs: dict[str, set[str]] = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            names = {parameter["name"] for parameter in operation.get("parameters", [])}
            for content in operation.get("requestBody", {}).get("content", {}).values():
                names |= _field_names(content.get("schema", {}), components, set())
            inputs[f"{method.upper()} {path}"] = names
    assert len(inputs) >= 30 and any(inputs.values())  # the walk saw the routes and their inputs
    path_like = {route: sorted(n for n in names if PATH_LIKE.search(n)) for route, names in inputs.items()}
    assert {route: names for route, names in path_like.items() if names} == {}


def _writing_call(node: ast.Call) -> str | None:
    callee = node.func
    if isinstance(callee, ast.Attribute):
        receiver = callee.value.id if isinstance(callee.value, ast.Name) else None
        if receiver in MODULE_CALLS:
            return f"{receiver}.{callee.attr}" if callee.attr in MODULE_CALLS[receiver] else None
        return callee.attr if callee.attr in PATH_METHODS else None
    if isinstance(callee, ast.Name) and callee.id == "open":
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        if mode is not None and (not isinstance(mode, ast.Constant) or any(f in str(mode.value) for f in "wax+")):
            return "open"  # a mode that writes, or one not known here (none: "r")
    return None


def _writing_calls(source: Path) -> set[tuple[str, str, str]]:
    found = set()
    for function in ast.walk(ast.parse(source.read_text())):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                call = _writing_call(node) if isinstance(node, ast.Call) else None
                if call is not None:
                    found.add((source.relative_to(API_SOURCE).as_posix(), function.name, call))
    return found


def test_the_only_file_the_api_code_writes_is_the_stow_spool() -> None:
    found: set[tuple[str, str, str]] = set()
    for source in sorted(API_SOURCE.rglob("*.py")):
        found |= _writing_calls(source)
    assert found == ALLOWED_WRITES


def _multipart(parts: list[tuple[dict[str, str], bytes]], boundary: str) -> bytes:
    body = b""
    for headers, payload in parts:
        body += f"--{boundary}\r\n".encode()
        body += "".join(f"{key}: {value}\r\n" for key, value in headers.items()).encode() + b"\r\n"
        body += payload + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


@pytest.mark.dcmtk
def test_names_a_client_chooses_reach_no_path(embedded_node: Node, tmp_path: Path) -> None:
    node = embedded_node
    image = make_image(patient_id="../../PATIENT", patient_name="../../escape")
    upload = tmp_path / "upload"
    upload.mkdir()
    part10 = save(image, upload / "image.dcm", ExplicitVRLittleEndian).read_bytes()
    before = {path for path in tmp_path.rglob("*")}
    hostile = {"Content-Type": "application/dicom", "Content-Location": "../../escape-location.dcm",
               "Content-Disposition": 'attachment; filename="../../escape-filename.dcm"',
               "Content-ID": "<../../escape-id>"}
    boundary = uuid.uuid4().hex
    answer = httpx.post(f"{node.api}/dicomweb/studies", content=_multipart([(hostile, part10)], boundary),
                        headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                                 "Accept": "application/dicom+json"}, timeout=30)
    assert answer.status_code == 200, answer.text
    node.wait_indexed(1)

    created = {path for path in tmp_path.rglob("*")} - before
    assert not [path for path in created if "escape" in path.name or "PATIENT" in path.name]
    objects = [path for path in created if path.is_file() and path.suffix == ".dcm" and "objects" in path.parts]
    assert [path.name for path in objects] == [f"{image.SOPInstanceUID}.dcm"]  # the key the server built
    assert all(path.resolve().is_relative_to(node.data_dir.resolve()) for path in created)
    assert not list((node.data_dir / "spool").glob("*")), "the spooled request is removed"

    refused = [
        ("PUT", "/api/webhooks/hook", {"url": "file:///tmp/escape-webhook"}),
        ("PATCH", "/api/config", {"storage_layout": "/tmp/escape-layout"}),
        ("PATCH", "/api/config", {"storage_naming": "../escape-naming"}),
        ("PUT", "/api/modalities/..%2F..%2Fescape", {"ae_title": "X", "host": "127.0.0.1", "port": 104}),
    ]
    for method, path, body in refused:
        response = httpx.request(method, f"{node.api}{path}", json=body, timeout=10)
        assert response.status_code in (404, 422), (method, path, response.status_code, response.text)
    assert not [path for path in Path("/tmp").glob("escape-*")]
