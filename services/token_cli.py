"""`pacs token create|list|revoke`: API tokens, managed against the index database the API uses.

``create`` prints the token on stdout (only there, only once; the index keeps its SHA-256) and what it made on
stderr, so that ``TOKEN=$(pacs token create ci --role operator)`` works. Every change is audited
(``token_created``, ``token_revoked``) with the acting system user as ``cli:<user>``.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from datetime import timedelta
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from services.api.auth_tokens import TokenError, as_json, create_token, list_tokens, revoke_token
from shared.db.engine import create_index_engine, create_session_factory
from shared.db.migrate import upgrade_to_head
from shared.settings import Settings

TOKEN_ARGUMENTS = ("token_command", "name", "role", "expires_days", "all")


def register(commands: Any, flags: argparse.ArgumentParser) -> None:
    """Add ``pacs token …`` to the top-level sub-commands (each takes the usual options too)."""
    token = commands.add_parser("token", help="API tokens: create (shown once), list, revoke",
                                description="API tokens of the HTTP API (Authorization: Bearer …).")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", parents=[flags], help="create a token and print it (once)")
    create.add_argument("name", help="1 to 64 letters, digits, '_', '-', '.'; unique among live tokens")
    create.add_argument("--role", required=True, choices=("viewer", "operator", "admin"),
                        help="viewer: read; operator: also sends and STOW-RS; admin: everything")
    create.add_argument("--expires-days", dest="expires_days", type=float, default=None,
                        help="lifetime in days (default: until revoked)")
    listing = actions.add_parser("list", parents=[flags], help="list tokens (never their secrets)")
    listing.add_argument("--all", action="store_true", help="include revoked tokens")
    revoke = actions.add_parser("revoke", parents=[flags], help="revoke the live token of that name")
    revoke.add_argument("name")


def split_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """Take the token sub-command's own arguments out of the parsed ones (the rest are Settings)."""
    return {key: arguments.pop(key) for key in TOKEN_ARGUMENTS if key in arguments}


def _system_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def run(settings: Settings, arguments: dict[str, Any]) -> int:
    url = settings.resolved_database_url
    engine = create_index_engine(url)
    try:
        if make_url(url).get_backend_name() == "sqlite":
            upgrade_to_head(url)  # the embedded default: as `pacs serve` does on a first run
        elif "api_tokens" not in inspect(engine).get_table_names():
            print("pacs: the index database has no api_tokens table yet: run `pacs migrate` first", file=sys.stderr)
            return 1
        sessions = create_session_factory(engine)
        with sessions() as session:
            return _act(session, arguments)
    except SQLAlchemyError as exc:
        print(f"pacs: index database unavailable ({exc.__class__.__name__})", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _act(session: Any, arguments: dict[str, Any]) -> int:
    actor = f"cli:{_system_user()}"
    action = arguments["token_command"]
    try:
        if action == "create":
            days = arguments.get("expires_days")
            with session.begin():
                secret, row = create_token(session, arguments["name"], arguments["role"], created_by=actor,
                                           expires_in=timedelta(days=days) if days else None)
            expiry = f", expires {as_json(row)['expires_at']}" if row.expires_at else ""
            print(f"token {row.name!r} created (role {row.role}{expiry}); it is shown only this once:",
                  file=sys.stderr)
            print(secret, flush=True)
            return 0
        if action == "revoke":
            with session.begin():
                revoke_token(session, arguments["name"], revoked_by=actor)
            print(f"token {arguments['name']!r} revoked", file=sys.stderr)
            return 0
        rows = [as_json(row) for row in list_tokens(session, include_revoked=arguments.get("all", False))]
    except TokenError as exc:
        print(f"pacs: {exc}", file=sys.stderr)
        return 1
    columns = ("name", "role", "state", "prefix", "created_at", "expires_at", "last_used_at", "created_by")
    widths = {c: max([len(c)] + [len(str(r[c] or "-")) for r in rows]) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c] or "-").ljust(widths[c]) for c in columns))
    return 0
