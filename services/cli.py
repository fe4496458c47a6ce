"""The `pacs` command: serve | scp | indexer | mover | api | migrate | status | stop | token.

Every field of shared.settings.Settings is also a flag (``--dicom-port``), so that flags, PACS_* variables and
the TOML file name the same options.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from services import token_cli
from shared.logs import configure_logging
from shared.settings import Settings, load_settings


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _flag_type(annotation: Any) -> Callable[[str], Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    return {bool: _parse_bool, int: int, float: float, Path: Path}.get(annotation, str)


def _settings_flags() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("options (each also PACS_<NAME> in the environment or NAME in --config)")
    for name, field in Settings.model_fields.items():
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                           type=_flag_type(field.annotation), metavar=name.upper(), help=field.description)
    return parent


def _leave(code: int) -> NoReturn:
    """End the process once the command is done (a service: once its own stop is complete, everything it
    acknowledged durable, its queues and logs flushed). The exit handlers run (logging's flush among them), the
    rest of the interpreter's finalization is skipped: it adds nothing then, and costs time a stop must not spend
    (threads of connections dropped at the stop, hostile peers mid-PDU, keep it busy; collecting the objects of
    the libraries a service imports takes 0.3 s on an idle machine and seconds on a loaded one, which pushed
    `pacs serve` past the 15 s a SIGTERM may take; 0.1 s of a `pacs migrate`)."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_serve(settings: Settings) -> int:
    from services.serve import run_serve

    return run_serve(settings)


def _run_scp(settings: Settings) -> int:
    from services.scp.main import run_scp

    return run_scp(settings)


def _run_indexer(settings: Settings) -> int:
    from services.indexer.main import run_indexer

    return run_indexer(settings)


def _run_mover(settings: Settings) -> int:
    from services.mover.main import run_mover

    return run_mover(settings)


def _run_api(settings: Settings) -> int:
    from services.api.main import run_api

    return run_api(settings)


def _run_migrate(settings: Settings) -> int:
    from shared.db.migrate import upgrade_to_head

    upgrade_to_head(settings.resolved_database_url)
    print("index database is at the latest schema")
    return 0


def _run_status(settings: Settings) -> int:
    from services.status import report_status

    return report_status(settings)


def _run_stop(settings: Settings) -> int:
    from services.stop import stop_node

    return stop_node(settings)


COMMANDS: dict[str, tuple[Callable[[Settings], int], str]] = {
    "serve": (_run_serve, "everything in one process group on the embedded default (or the URLs given)"),
    "scp": (_run_scp, "the DICOM listener (C-ECHO, C-STORE)"),
    "indexer": (_run_indexer, "a Celery indexer worker and the sweeper"),
    "mover": (_run_mover, "runs C-MOVE and REST sends (C-STORE SCU to the destinations)"),
    "api": (_run_api, "the HTTP API"),
    "migrate": (_run_migrate, "bring the index database to the latest schema"),
    "status": (_run_status, "C-ECHO and API health of a running node; exit code 0 when both answer"),
    "stop": (_run_stop, "stop the node that `pacs serve` started on --data-dir (SIGTERM through its pid file)"),
}


READS_DICOM = {"scp", "indexer", "mover", "api", "status"}  # the commands that read or write DICOM data sets


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. The process ends with it (``_leave``); only a refused configuration returns (2)."""
    flags = _settings_flags()
    parser = argparse.ArgumentParser(prog="pacs", description="A scalable DICOM PACS node.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, parents=[flags], help=help_text, description=help_text)
    token_cli.register(commands, flags)
    arguments = vars(parser.parse_args(argv))
    command = arguments.pop("command")
    token_arguments = token_cli.split_arguments(arguments) if command == "token" else {}
    try:
        settings = load_settings(**arguments)
    except (ValidationError, ValueError, OSError) as exc:
        print(f"pacs: invalid configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, command)
    if command in READS_DICOM:
        from shared.dicom.reading import configure_pydicom  # pydicom costs 0.3 s to import: only where it is used

        configure_pydicom()
    if command == "token":
        _leave(token_cli.run(settings, token_arguments))
    run, _ = COMMANDS[command]
    _leave(run(settings))


if __name__ == "__main__":
    sys.exit(main())
