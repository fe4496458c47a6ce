"""pacs serve hands its resolved settings to its children: as flags, except secrets, which go by environment."""

from __future__ import annotations

import os

import pytest

from services.serve import child_arguments, export_secrets
from shared.settings import load_settings

S3_SECRET = "s3-secret-value-never-in-argv"
ADMIN_TOKEN = "admin-token-value-never-in-argv-0123456789"


def test_secrets_reach_the_children_by_environment_never_on_their_command_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_S3_SECRET_KEY", "")
    monkeypatch.setenv("PACS_API_ADMIN_TOKEN", "")
    settings = load_settings(s3_secret_key=S3_SECRET, api_admin_token=ADMIN_TOKEN, s3_access_key="access",
                             ae_title="SERVED")
    arguments = child_arguments(settings)
    assert S3_SECRET not in arguments and ADMIN_TOKEN not in arguments
    assert "--s3-secret-key" not in arguments and "--api-admin-token" not in arguments
    assert arguments[arguments.index("--ae-title") + 1] == "SERVED"
    export_secrets(settings)
    assert os.environ["PACS_S3_SECRET_KEY"] == S3_SECRET
    assert os.environ["PACS_API_ADMIN_TOKEN"] == ADMIN_TOKEN
