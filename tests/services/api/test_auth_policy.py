"""The role each request needs (services.api.auth.required_role), decided from method and path alone."""

from __future__ import annotations

import pytest

from services.api.auth import is_loopback, required_role
from services.api.auth_tokens import Role, digest, new_secret


@pytest.mark.parametrize(("method", "path", "role"), [
    ("GET", "/healthz", None),
    ("HEAD", "/readyz", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("POST", "/healthz", Role.admin),  # only reads are open
    ("GET", "/metrics", Role.viewer),
    ("GET", "/api/status", Role.viewer),
    ("GET", "/api/studies", Role.viewer),
    ("GET", "/dicomweb/studies", Role.viewer),
    ("GET", "/dicomweb/studies/1.2/series/3.4/instances/5.6/frames/1", Role.viewer),
    ("OPTIONS", "/dicomweb/studies", Role.viewer),
    ("POST", "/dicomweb/studies", Role.operator),
    ("POST", "/dicomweb/studies/1.2.3", Role.operator),
    ("POST", "/dicomweb/studies/1.2.3/series", Role.admin),  # not STOW-RS: closed by default
    ("POST", "/api/modalities/ct-1/store", Role.operator),
    ("POST", "/api/modalities/ct-1/store/", Role.operator),
    ("PUT", "/api/modalities/ct-1", Role.admin),
    ("DELETE", "/api/modalities/ct-1", Role.admin),
    ("PATCH", "/api/config", Role.admin),
    ("GET", "/api/audit", Role.admin),
    ("GET", "/api/audit/", Role.admin),
    ("GET", "//api//audit", Role.admin),
    ("GET", "/api/tokens", Role.admin),
    ("DELETE", "/api/tokens/x", Role.admin),
    ("GET", "/api/auditx", Role.viewer),  # a prefix is a whole path segment
    ("POST", "/a/router/added/later", Role.admin),
    ("GET", "/a/router/added/later", Role.viewer),
])
def test_required_role(method: str, path: str, role: Role | None) -> None:
    assert required_role(method, path) == role
    assert required_role(method.lower(), path) == role


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("pacs.example.org", False), ("", False),
])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_secrets_are_long_random_and_stored_as_sha256() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100 and all(s.startswith("pacs_") and len(s) == 48 for s in secrets)
    secret = secrets.pop()
    assert len(digest(secret)) == 64 and secret not in digest(secret)
    assert Role.parse(" Admin ") is Role.admin and Role.viewer < Role.operator < Role.admin
