"""One settings class: flag > environment (PACS_*) > TOML config file > default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from no PACS_* variable, whatever the machine has set."""
    for name in list(os.environ):
        if name.startswith("PACS_"):
            monkeypatch.delenv(name)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_apply_when_nothing_is_given() -> None:
    settings = load_settings()
    assert (settings.ae_title, settings.dicom_host, settings.dicom_port) == ("PACS", "0.0.0.0", 11112)
    assert (settings.api_host, settings.api_port, settings.data_dir) == ("127.0.0.1", 8042, Path("data"))
    assert settings.check_called_aet is True


def test_config_file_overrides_defaults(tmp_path: Path) -> None:
    config = write_config(tmp_path / "pacs.toml", 'ae_title = "FILEAE"\ndicom_port = 2000\n')
    settings = load_settings(config=config)
    assert (settings.ae_title, settings.dicom_port) == ("FILEAE", 2000)


def test_config_file_can_be_named_by_pacs_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "pacs.toml", "api_port = 9001\n")
    monkeypatch.setenv("PACS_CONFIG", str(config))
    assert load_settings().api_port == 9001


def test_environment_overrides_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "pacs.toml", 'ae_title = "FILEAE"\ndicom_port = 2000\n')
    monkeypatch.setenv("PACS_DICOM_PORT", "3000")
    settings = load_settings(config=config)
    assert (settings.ae_title, settings.dicom_port) == ("FILEAE", 3000)


def test_flag_overrides_environment_and_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path / "pacs.toml", "dicom_port = 2000\napi_port = 2001\n")
    monkeypatch.setenv("PACS_DICOM_PORT", "3000")
    settings = load_settings(config=config, dicom_port=4000, api_port=None)  # None: flag not given
    assert (settings.dicom_port, settings.api_port) == (4000, 2001)


def test_embedded_defaults_resolve_under_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'index.sqlite3'}"
    assert settings.resolved_storage_url == (tmp_path.resolve() / "objects").as_uri()
    assert settings.resolved_storage_url.startswith("file:///")
    assert settings.resolved_broker_url.startswith("pacsfs://")
    assert settings.uses_embedded_broker
    assert settings.embedded_queue_dir == tmp_path.resolve() / "queue"


def test_explicit_urls_replace_the_embedded_defaults() -> None:
    settings = load_settings(database_url="postgresql+psycopg://u@h/db", storage_url="s3://pacs",
                             broker_url="redis://127.0.0.1:6379/0")
    assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert settings.resolved_storage_url == "s3://pacs"
    assert not settings.uses_embedded_broker


@pytest.mark.parametrize("title", ["", "   ", "A" * 17, "BAD\\AE", "TAB\tAE"])
def test_an_invalid_ae_title_is_rejected(title: str) -> None:
    with pytest.raises(ValidationError, match="ae_title"):
        load_settings(ae_title=title)


def test_an_invalid_ae_title_from_the_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PACS_AE_TITLE", "X" * 17)
    with pytest.raises(ValidationError, match="ae_title"):
        load_settings()


def test_an_unknown_key_in_the_config_file_is_rejected(tmp_path: Path) -> None:
    config = write_config(tmp_path / "pacs.toml", "dicom_prot = 104\n")
    with pytest.raises(ValidationError, match="dicom_prot"):
        load_settings(config=config)
