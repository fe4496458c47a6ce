"""Access control of the HTTP API: bearer tokens with roles, enforced for every request in one place.

``AccessControl`` is an ASGI middleware around the whole application, so it covers every route, including
routers, mounted apps and static pages added later: the role a request needs is decided from its method and
path alone (``required_role``), before any routing. The rules:

- open (no credentials): ``GET|HEAD /healthz``, ``/readyz`` (probes), ``/docs``, ``/docs/oauth2-redirect``,
  ``/redoc`` and ``/openapi.json`` (the description of the API holds no data), the dashboard's page shell ``/``
  and its static files ``/dashboard/dashboard.{css,js}`` (fixed bytes; the page reads its data from the API
  with the user's token);
- admin: ``/api/audit``, ``/api/tokens``, ``/api/webhooks``, ``/api/routing`` (any method), and every other method
  than GET/HEAD/OPTIONS unless listed below (config, modalities, anything a later router adds: closed by default);
- operator: ``POST /api/modalities/{name}/store`` (sends), ``POST /dicomweb/studies[/{study}]`` (STOW-RS);
- viewer: every other GET/HEAD/OPTIONS (status, instances, jobs, config, modalities, ``/metrics``, DICOMweb
  QIDO-RS/WADO-RS, ``/api/studies``).

Credentials: ``Authorization: Bearer <token>``, a token made by ``pacs token create`` or ``POST /api/tokens``
(services.api.auth_tokens), or the bootstrap admin token of the ``api_admin_token`` setting. No credentials:
401 with ``WWW-Authenticate: Bearer``; a token that is unknown, revoked or expired: 401 (``invalid_token``); a
token whose role is too low: 403. The one exception: while no token exists at all (none was ever made in the
database, revoked and expired ones included, and no bootstrap token) and the API is bound to a loopback address,
requests without credentials are let through as admin, so that a first ``make run`` works with plain curl. A
non-loopback API without a usable token refuses to start (``startup_refusal``).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from services.api.auth_tokens import (
    SHOWN_PREFIX_LENGTH,
    Role,
    any_token_made,
    digest,
    find_token,
    live_token_count,
    touch,
)
from shared.events import utc_now
from shared.settings import Settings

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
                        "/", "/dashboard/dashboard.css", "/dashboard/dashboard.js"})  # the dashboard shell: no data
ADMIN_PREFIXES = ("/api/audit", "/api/tokens", "/api/webhooks", "/api/routing")  # webhooks/routing: URLs, rules
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OPERATOR_WRITES = (
    ("POST", re.compile(r"^/api/modalities/[^/]+/store/?$")),
    ("POST", re.compile(r"^/dicomweb/studies(/[^/]+)?/?$")),
)
TOKEN_CACHE_SECONDS = 2.0  # a revoked token stops working within this long
AUTH_STATE_CACHE_SECONDS = 1.0  # "does any token exist" is asked again after this long
LAST_USED_RESOLUTION_SECONDS = 60.0
TOKEN_CACHE_CAPACITY = 1000
REALM = 'Bearer realm="pacs"'
MIN_BOOTSTRAP_TOKEN_LENGTH = 24


def required_role(method: str, path: str) -> Role | None:
    """The role a request needs, from its method and path only (None: open to all)."""
    method = method.upper()
    path = re.sub(r"/{2,}", "/", path)
    if path in OPEN_PATHS and method in ("GET", "HEAD"):
        return None
    if any(path == prefix or path.startswith(prefix + "/") for prefix in ADMIN_PREFIXES):
        return Role.admin
    if method in READ_METHODS:
        return Role.viewer
    if any(method == wanted and pattern.match(path) for wanted, pattern in OPERATOR_WRITES):
        return Role.operator
    return Role.admin


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything: treated as exposed


@dataclass(frozen=True)
class Principal:
    """Who made a request: a token's name, the bootstrap admin, or the anonymous first-run caller."""

    name: str
    role: Role
    kind: str  # token | bootstrap | anonymous

    @property
    def actor(self) -> str:
        """As written in audit rows."""
        return {"token": f"token:{self.name}", "bootstrap": "bootstrap-admin"}.get(self.kind, "anonymous-loopback")


ANONYMOUS = Principal("anonymous", Role.admin, "anonymous")


def principal_of(request: Request) -> Principal:
    """The authenticated caller of a request (set by AccessControl)."""
    principal = getattr(request.state, "pacs_principal", None)
    return principal if isinstance(principal, Principal) else ANONYMOUS


def actor_of(request: Request) -> str:
    return principal_of(request).actor


def forget_cached_tokens(request: Request) -> None:
    authenticator = getattr(request.app.state, "authenticator", None)
    if isinstance(authenticator, Authenticator):
        authenticator.forget()


class AuthUnavailable(Exception):
    """Credentials cannot be checked now (the index database is unreachable)."""


class Authenticator:
    """Token checks with a short cache, so that most requests do not touch the database."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        secret = settings.api_admin_token.get_secret_value() if settings.api_admin_token else ""
        self._bootstrap_digest = digest(secret) if secret else None
        self.loopback = is_loopback(settings.api_host)
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[Principal, float]] = {}
        self._touched: dict[str, float] = {}
        self._any_token: tuple[bool, float] | None = None

    def forget(self) -> None:
        """Drop what is cached (after this process created or revoked a token)."""
        with self._lock:
            self._tokens.clear()
        self._any_token = None

    def open_without_credentials(self) -> bool:
        """True while the API binds to loopback and no token was ever made (a revoked or expired one counts)."""
        if not self.loopback or self._bootstrap_digest is not None:
            return False
        now = time.monotonic()
        cached = self._any_token
        if cached is not None and now - cached[1] < AUTH_STATE_CACHE_SECONDS:
            return not cached[0]
        try:
            with self._sessions() as session:
                any_token = any_token_made(session)
        except SQLAlchemyError as exc:
            raise AuthUnavailable from exc
        self._any_token = (any_token, now)
        return not any_token

    def authenticate(self, token: str) -> Principal | None:
        """The principal a bearer token stands for, or None (unknown, revoked, expired)."""
        token_digest = digest(token)
        if self._bootstrap_digest is not None and hmac.compare_digest(token_digest, self._bootstrap_digest):
            return Principal("bootstrap-admin", Role.admin, "bootstrap")
        now = time.monotonic()
        with self._lock:
            cached = self._tokens.get(token_digest)
        if cached is not None and now - cached[1] < TOKEN_CACHE_SECONDS:
            return cached[0]
        try:
            with self._sessions() as session:
                info = find_token(session, token)
                if info is not None and now - self._touched.get(info.id, -1e9) >= LAST_USED_RESOLUTION_SECONDS:
                    touch(session, info.id, utc_now())
                    session.commit()
                    self._touched[info.id] = now
        except SQLAlchemyError as exc:
            raise AuthUnavailable from exc
        if info is None:
            with self._lock:
                self._tokens.pop(token_digest, None)
            return None
        principal = Principal(info.name, info.role, "token")
        with self._lock:
            if len(self._tokens) >= TOKEN_CACHE_CAPACITY:
                self._tokens.clear()
            self._tokens[token_digest] = (principal, now)
        return principal


def _bearer(scope: Scope) -> str | None:
    """The Authorization header's value, or None when there is none."""
    for key, value in scope.get("headers") or ():
        if key == b"authorization":
            return value.decode("latin-1")
    return None


def _log_refusal(scope: Scope, status: int, reason: str, who: str) -> None:
    """A refused credential (never the secret: a token's recognisable prefix at most; the path, no query)."""
    client = scope.get("client") or ("", 0)
    log.warning("api.auth_refused status=%d reason=%s method=%s path=%s remote_ip=%s who=%r", status, reason,
                scope.get("method", ""), scope.get("path", "")[:200], client[0], who)


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class AccessControl:
    """The ASGI middleware: every HTTP request is authenticated and authorised here, or answered 401/403/503."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator) -> None:
        self.app = app
        self.auth = authenticator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        method = scope.get("method", "GET")  # a websocket handshake is a GET
        needed = required_role(method, scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        header = _bearer(scope)
        try:
            if header is None:
                if not await self._open():
                    await _answer(send, 401, "authentication required: send Authorization: Bearer <token>",
                                  {"WWW-Authenticate": REALM})
                    return
                principal = ANONYMOUS
            else:
                scheme, _, token = header.strip().partition(" ")
                token = token.strip()
                if scheme.lower() != "bearer" or not token:
                    await _answer(send, 401, "the Authorization header must be: Bearer <token>",
                                  {"WWW-Authenticate": REALM + ', error="invalid_request"'})
                    return
                found = await self._authenticate(token)
                if found is None:
                    _log_refusal(scope, 401, "invalid_token", token[:SHOWN_PREFIX_LENGTH])
                    await _answer(send, 401, "unknown, revoked or expired token",
                                  {"WWW-Authenticate": REALM + ', error="invalid_token"'})
                    return
                principal = found
        except AuthUnavailable:
            await _answer(send, 503, "credentials cannot be checked: the index database is unavailable",
                          {"Retry-After": "5"})
            return
        if principal.role < needed:
            _log_refusal(scope, 403, "insufficient_role", principal.name)
            await _answer(send, 403, f"this request needs the {needed.name} role; "
                                     f"the token {principal.name!r} has the {principal.role.name} role",
                          {"WWW-Authenticate": REALM + ', error="insufficient_scope"'})
            return
        scope.setdefault("state", {})["pacs_principal"] = principal
        await self.app(scope, receive, send)

    async def _open(self) -> bool:
        if not self.auth.loopback:
            return False
        return await run_in_threadpool(self.auth.open_without_credentials)

    async def _authenticate(self, token: str) -> Principal | None:
        return await run_in_threadpool(self.auth.authenticate, token)


def startup_refusal(settings: Settings, sessions: sessionmaker[Session]) -> str | None:
    """Why the API must not start, or None: a bootstrap token that is a placeholder or too short to be a secret,
    or a non-loopback address with no way to authenticate (no bootstrap token, no usable token in the database).

    With the database unreachable the API starts (a missing dependency never stops a start) and stays closed:
    only loopback binds are ever open without credentials. An empty api_admin_token counts as unset.
    """
    secret = settings.api_admin_token.get_secret_value() if settings.api_admin_token is not None else ""
    if secret:
        if len(secret) < MIN_BOOTSTRAP_TOKEN_LENGTH or "EXAMPLE" in secret:
            return (f"refusing to serve the API: api_admin_token (PACS_API_ADMIN_TOKEN) must be a random secret of "
                    f"at least {MIN_BOOTSTRAP_TOKEN_LENGTH} characters, not an EXAMPLE value; for instance "
                    "`echo pacs_$(openssl rand -hex 32)`.")
        return None
    if is_loopback(settings.api_host):
        return None
    try:
        with sessions() as session:
            if live_token_count(session) > 0:
                return None
    except SQLAlchemyError:
        log.warning("api.auth_state_unknown reason=database_unavailable (starting closed: every request needs "
                    "a token)")
        return None
    return (f"refusing to serve the API on {settings.api_host}:{settings.api_port} without authentication: no "
            "API token exists. Create one with `pacs token create NAME --role admin` (against the same database), "
            "or set PACS_API_ADMIN_TOKEN (a long random secret), or bind the API to 127.0.0.1.")


def openapi_security(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the bearer scheme and, on every operation, the role it needs (``x-required-role``)."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer",
        "description": "An API token (`pacs token create NAME --role viewer|operator|admin`).",
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            role = required_role(method, path)
            operation["x-required-role"] = role.name if role else None
            operation["security"] = [{"bearerAuth": []}] if role else []
    return schema
