"""deploy/systemd: the example units parse (configparser, strictly: no key given twice), use only directives
systemd knows in the sections they belong to, run existing `pacs` subcommands, and read an environment file whose
keys are options of the node.
"""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path, PurePosixPath

import pytest

from services.cli import COMMANDS
from tests.deploy import DEPLOY, settings_from, unknown_options

SYSTEMD = DEPLOY / "systemd"
ENV_EXAMPLE = SYSTEMD / "pacs.env.example"
UNITS = {"pacs-scp.service": "scp", "pacs-indexer@.service": "indexer", "pacs-mover.service": "mover",
         "pacs-api.service": "api", "pacs-migrate.service": "migrate"}  # unit -> pacs command
LONG_RUNNING = {"pacs-scp.service", "pacs-indexer@.service", "pacs-mover.service", "pacs-api.service"}
WORKERS = ("pacs-indexer@.service", "pacs-mover.service")  # Celery workers: a warm shutdown lets work finish

# The directives these units may use, by section (systemd.unit(5), systemd.service(5), systemd.exec(5),
# systemd.kill(5), systemd.resource-control(5)): a misspelt one would be ignored by systemd with a warning only.
KNOWN = {
    "Unit": {"Description", "Documentation", "Wants", "Requires", "Requisite", "BindsTo", "PartOf", "After",
             "Before", "Conflicts", "ConditionPathExists", "AssertPathExists", "StartLimitIntervalSec",
             "StartLimitBurst"},
    "Service": {"Type", "User", "Group", "EnvironmentFile", "Environment", "StateDirectory", "StateDirectoryMode",
                "RuntimeDirectory", "WorkingDirectory", "ExecStart", "ExecStartPre", "ExecReload", "ExecStop",
                "KillSignal", "KillMode", "TimeoutStartSec", "TimeoutStopSec", "Restart", "RestartSec",
                "RestartPreventExitStatus", "RemainAfterExit", "LimitNOFILE", "CapabilityBoundingSet",
                "AmbientCapabilities", "NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups",
                "RestrictAddressFamilies", "RestrictNamespaces", "LockPersonality", "ReadWritePaths",
                "MemoryMax", "CPUQuota", "Nice"},
    "Install": {"WantedBy", "RequiredBy", "Alias", "Also", "DefaultInstance"},
}


def parse_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=True, interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text(), source=str(path))
    return parser


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, sep, value = stripped.partition("=")
            assert sep and key not in values, line
            values[key] = value
    return values


def test_the_unit_files_are_the_expected_ones() -> None:
    assert {path.name for path in SYSTEMD.glob("*.service")} == set(UNITS)
    assert ENV_EXAMPLE.is_file()


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_each_unit_parses_and_uses_known_directives_only(unit: str) -> None:
    parser = parse_unit(SYSTEMD / unit)
    assert parser.sections() == ["Unit", "Service", "Install"]
    for section in parser.sections():
        unknown = set(parser[section]) - KNOWN[section]
        assert not unknown, f"{unit} [{section}]: unknown directives {sorted(unknown)}"
    assert parser["Unit"]["Description"]
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("unit, command", sorted(UNITS.items()))
def test_each_unit_runs_an_existing_pacs_subcommand_as_an_unprivileged_user(unit: str, command: str) -> None:
    service = parse_unit(SYSTEMD / unit)["Service"]
    argv = shlex.split(service["ExecStart"])
    executable = PurePosixPath(argv[0])
    assert executable.is_absolute() and executable.name == "pacs", "systemd needs an absolute path"
    assert argv[1:] == [command] and command in COMMANDS
    assert service["User"] == service["Group"] == "pacs"
    assert service["EnvironmentFile"] == "/etc/pacs/pacs.env"
    assert service["NoNewPrivileges"] == "yes" and service["CapabilityBoundingSet"] == ""
    assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
    # ProtectSystem=strict leaves only the state directory writable: it is PACS_DATA_DIR.
    assert f"/var/lib/{service['StateDirectory']}" == read_env_file(ENV_EXAMPLE)["PACS_DATA_DIR"]
    assert service["WorkingDirectory"] == f"/var/lib/{service['StateDirectory']}"


def test_long_running_units_restart_on_failure_and_pull_in_the_migration() -> None:
    for unit in LONG_RUNNING:
        parser = parse_unit(SYSTEMD / unit)
        service = parser["Service"]
        assert service["Type"] in ("exec", "simple"), unit
        assert service["Restart"] == "on-failure" and service["RestartPreventExitStatus"] == "2", unit
        assert service["KillSignal"] == "SIGTERM" and service["KillMode"] == "mixed", unit
        # Wants (not Requires): a failed migration, e.g. PostgreSQL not up yet, does not keep the service down.
        assert "pacs-migrate.service" in parser["Unit"]["Wants"].split()
        assert "pacs-migrate.service" in parser["Unit"]["After"].split()
        assert "Requires" not in parser["Unit"] and "BindsTo" not in parser["Unit"]


def test_the_migration_is_a_oneshot_and_the_indexer_a_template() -> None:
    migrate = parse_unit(SYSTEMD / "pacs-migrate.service")["Service"]
    assert migrate["Type"] == "oneshot" and migrate["RemainAfterExit"] == "yes"
    assert "Restart" not in migrate
    indexer = parse_unit(SYSTEMD / "pacs-indexer@.service")
    assert "%i" in indexer["Unit"]["Description"]


def test_stop_timeouts_leave_time_for_a_clean_stop() -> None:
    grace = settings_from(read_env_file(ENV_EXAMPLE)).shutdown_grace_seconds
    assert float(parse_unit(SYSTEMD / "pacs-scp.service")["Service"]["TimeoutStopSec"]) > grace
    for unit in WORKERS:
        assert float(parse_unit(SYSTEMD / unit)["Service"]["TimeoutStopSec"]) >= 30, unit


def test_the_environment_file_sets_options_of_the_node_with_valid_values() -> None:
    env = read_env_file(ENV_EXAMPLE)
    assert unknown_options(env) == []
    assert all(key.startswith("PACS_") for key in env)
    settings = settings_from(env)
    assert settings.api_host == "127.0.0.1", "plain HTTP: the API stays on loopback"
    assert settings.database_url and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.broker_url and settings.broker_url.startswith("redis://")
    assert settings.storage_url and settings.storage_url.startswith("s3://") and settings.s3_endpoint
    for key in ("PACS_DATABASE_URL", "PACS_BROKER_URL", "PACS_S3_SECRET_KEY"):
        assert "EXAMPLE" in env[key], f"{key} must be marked as an example value"
