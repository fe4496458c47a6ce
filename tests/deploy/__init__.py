"""Checks of the deployment files (deploy/): schemas, topology, and that every option they set is a real one.

No container engine or cluster is needed: the files are parsed and validated against the compose-spec and
Kubernetes schemas, their probes are run against local listeners, and every PACS_* name is compared with
shared.settings.Settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from shared.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

# PACS_<NAME> -> the Settings field it sets.
SETTINGS_ENV: dict[str, str] = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}
# Options that hold credentials (a password inside a URL, or a key): never in a ConfigMap or a literal.
CREDENTIAL_OPTIONS = {"PACS_DATABASE_URL", "PACS_BROKER_URL", "PACS_S3_ACCESS_KEY", "PACS_S3_SECRET_KEY",
                      "PACS_API_ADMIN_TOKEN"}
# Options a deployment sets explicitly: all but the TOML file (deployments use the environment instead) and those of
# `pacs serve` alone (how many SCP processes it runs on the port it opens; a deployment runs `pacs scp` replicas).
SERVE_ONLY_OPTIONS = {"PACS_SCP_PROCESSES", "PACS_DICOM_LISTEN_FD", "PACS_TLS_LISTEN_FD"}
DEPLOYED_OPTIONS = set(SETTINGS_ENV) - {"PACS_CONFIG"} - SERVE_ONLY_OPTIONS


def unknown_options(names: object) -> list[str]:
    """The PACS_* names among ``names`` that are not Settings fields (typos)."""
    return sorted(name for name in names if str(name).startswith(ENV_PREFIX) and name not in SETTINGS_ENV)


def settings_from(env: Mapping[str, str]) -> Settings:
    """Validate PACS_* values as the node would (same types, same validators), ignoring the test's environment."""
    given = {SETTINGS_ENV[name]: value for name, value in env.items() if name in SETTINGS_ENV}
    return Settings(**given)


def default_as_text(name: str) -> str:
    """A Settings field's default, as the string it is written as in an environment file."""
    value = Settings.model_fields[name].default
    if value is None:
        return ""  # unset: deployment files write an unset option as an empty value
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_probe(argv: list[str], env: Mapping[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """Run a probe/healthcheck command the way the container would: the node's python, only the given PACS_* env."""
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    clean = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    return subprocess.run(argv, env={**clean, **env}, cwd=REPO, capture_output=True, text=True, timeout=timeout)
