"""The one settings class of the node.

Every option is a field here, documented where it is defined. Precedence, highest first:
command-line flag (passed as keyword arguments) > environment variable ``PACS_<NAME>`` >
TOML config file (``--config`` / ``PACS_CONFIG``) > default. Nothing else reads ``os.environ``.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "PACS_"
_config_file: ContextVar[Path | None] = ContextVar("pacs_config_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    config: Path | None = Field(None, description="TOML file with any of these options (keys as named here).")
    ae_title: str = Field("PACS", description="The node's own AE title (the called AE title callers must use).")
    dicom_host: str = Field("0.0.0.0", description="Address the DICOM listener binds to.")
    dicom_port: int = Field(11112, ge=1, le=65535, description="DICOM listening port.")
    scp_processes: int = Field(
        0, ge=0, le=16, description="SCP processes `pacs serve` runs; they take associations from the same "
        "listening sockets, so that several cores receive. 0 = one per CPU, at most 4."
    )
    dicom_listen_fd: int | None = Field(
        None, ge=0, description="Set by `pacs serve` for its SCP processes: the DICOM listening socket it opened, "
        "taken over instead of binding dicom_port again."
    )
    tls_listen_fd: int | None = Field(
        None, ge=0, description="Set by `pacs serve` for its SCP processes: the DICOM TLS listening socket it "
        "opened (see dicom_listen_fd)."
    )
    api_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    api_port: int = Field(8042, ge=1, le=65535, description="HTTP API port.")
    api_admin_token: SecretStr | None = Field(
        None, description="Bootstrap admin token of the HTTP API (a long random secret, sent as "
        "`Authorization: Bearer …`), for deployments that need one before any `pacs token create`. Keep it in a "
        "secret store; unset = only tokens from the database."
    )
    data_dir: Path = Field(Path("data"), description="Where the embedded default keeps index, objects and queue.")

    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the index (postgresql+psycopg://… or sqlite:///…). "
        "Default: SQLite file index.sqlite3 in the data directory."
    )
    storage_url: str | None = Field(
        None, description="Object store: file:///absolute/folder or s3://bucket. Default: the objects/ folder "
        "in the data directory."
    )
    s3_endpoint: str | None = Field(None, description="S3 endpoint as host:port or http(s)://host:port.")
    s3_access_key: str | None = Field(None, description="S3 access key.")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret key (a secret: never on a command line "
                                            "that pacs serve builds, never logged).")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_timeout_seconds: float = Field(
        4.0, gt=0, description="Connect/read timeout of one S3 request; a failed store is answered well "
        "within the caller's DIMSE timeout."
    )
    broker_url: str | None = Field(
        None, description="Celery broker (redis://host:6379/0). Default: an embedded broker that needs no "
        "server, a folder in the data directory."
    )
    broker_visibility_timeout_seconds: int = Field(
        300, ge=1, le=86_400, description="Redis broker: a task taken but not acknowledged for this long is handed "
        "to another worker (a worker that died). Tasks are idempotent and jobs leased (services/mover/lease.py), "
        "so a task that runs longer is not run twice."
    )

    log_level: str = Field("INFO", description="Log level of the node's own loggers.")
    indexer_concurrency: int = Field(1, ge=1, le=64, description="Indexer worker processes per `pacs indexer`.")
    indexer_batch_size: int = Field(200, ge=1, le=5000, description="Most instances one indexing task carries.")
    index_batch_wait_seconds: float = Field(
        0.5, ge=0, le=10, description="Longest time the SCP gathers stored instances into one indexing task before it "
        "sends it (longer: less indexer work per instance, later queryable); a full task (indexer_batch_size), a "
        "pause of index_batch_quiet_seconds, an association's end and a storage commitment request send at once."
    )
    index_batch_quiet_seconds: float = Field(
        0.05, gt=0, le=10, description="An indexing task the SCP gathers is sent once no stored instance arrived for "
        "this long: an instance sent alone is indexed at once, a push fills its tasks."
    )
    sweep_interval_seconds: float = Field(10.0, gt=0, description="How often the sweeper looks for unindexed objects.")
    sweep_grace_seconds: float = Field(
        30.0, ge=0, description="Age after which a stored but unindexed object is handed to the indexer again."
    )
    heartbeat_interval_seconds: float = Field(5.0, gt=0, description="How often each service reports it is alive.")
    move_stall_seconds: float = Field(
        120.0, gt=0, le=3600, description="A C-MOVE whose job shows no progress for this long (no mover running, "
        "or the destination stopped answering) ends: its remaining sub-operations count as failed."
    )
    find_result_limit: int = Field(
        10_000, ge=1, description="Most matches one C-FIND answers; more gets 0xA700 (refine the query)."
    )
    max_pdu_size: int = Field(
        1_048_576, ge=0, description="Maximum PDU size the SCP receives (advertised to callers; 0 = unlimited)."
    )
    association_idle_timeout_seconds: float = Field(
        60.0, gt=0, description="An association (or a connection that has not asked for one yet, at most 30 s) with "
                               "no traffic for this long is aborted."
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, how long running associations may finish before they are aborted."
    )

    # DICOM TLS (PS3.15 Annex B, BCP 195: TLS 1.2 or 1.3): a second listener of the same SCP (services/scp/tls.py).
    tls_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the DICOM TLS listener (2762 is the registered DICOM TLS port); "
        "unset = no TLS listener. The same AE, services and access policy as dicom_port."
    )
    tls_certificate: Path | None = Field(
        None, description="PEM file with the TLS listener's certificate, followed by any intermediate CA "
        "certificates (required with tls_port)."
    )
    tls_private_key: Path | None = Field(
        None, description="PEM file with the (unencrypted) private key of tls_certificate; unset = the key is in "
        "the tls_certificate file."
    )
    tls_ca_certificates: Path | None = Field(
        None, description="PEM file with the CA certificates trusted for client certificates. Set: a client "
        "certificate, when presented, must be issued by one of them; unset: none is asked for."
    )
    tls_require_client_certificate: bool = Field(
        False, description="Refuse TLS connections without a client certificate issued by tls_ca_certificates."
    )

    # DICOMweb (services/api/dicomweb/).
    dicomweb_max_request_bytes: int = Field(
        4 * 1024**3, ge=1, description="Largest STOW-RS request body accepted (spooled to <data_dir>/spool, never "
        "held in memory); a larger one gets 413."
    )
    cors_allowed_origins: str = Field(
        "", description="Comma-separated origins allowed to call the HTTP API from a browser (CORS), e.g. an OHIF "
        "viewer served from another origin: https://viewer.example.org. Empty = no cross-origin access."
    )

    # Initial values of the live node configuration (GET/PATCH /api/config override them at run time).
    check_called_aet: bool = Field(True, description="Refuse associations whose called AE title is not ours.")
    storage_layout: Literal["flat", "patient", "study", "series", "date"] = Field(
        "series", description="Folders of new objects (flat, patient, study, series = patient/study/series, date = "
        "received YYYY/MM/DD) until storage_layout is PATCHed in /api/config."
    )
    ingest_compression: Literal["none", "jpeg_ls_lossless", "jpeg2000_lossless", "rle_lossless"] = Field(
        "none", description="Lossless compression of new instances before they are stored (none, jpeg_ls_lossless, "
        "jpeg2000_lossless, rle_lossless) until ingest_compression is PATCHed in /api/config."
    )
    storage_max_bytes: int | None = Field(
        None, gt=0, description="Most bytes of instances the node holds (C-STORE 0xA700, STOW-RS 507 beyond it) "
        "until storage_max_bytes is PATCHed in /api/config; unset = no limit."
    )

    @field_validator("tls_port", "tls_certificate", "tls_private_key", "tls_ca_certificates", "storage_max_bytes",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``PACS_TLS_PORT=`` (as deployment files write an unset option) means not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ae_title")
    @classmethod
    def _valid_ae_title(cls, value: str) -> str:
        stripped = value.strip()
        if not 1 <= len(stripped) <= 16 or not stripped.isprintable() or "\\" in stripped:
            raise ValueError("an AE title has 1 to 16 printable characters and no backslash")
        return stripped

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = _config_file.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    # Resolved values: the embedded defaults live under the data directory.
    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allowed_origins.split(",") if origin.strip()]

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'index.sqlite3'}"

    @property
    def resolved_storage_url(self) -> str:
        return self.storage_url or (self.data_dir.resolve() / "objects").as_uri()

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "pacsfs://localhost/"

    @property
    def uses_embedded_broker(self) -> bool:
        return self.resolved_broker_url.startswith("pacsfs://")

    @property
    def resolved_scp_processes(self) -> int:
        return self.scp_processes or max(1, min(4, os.cpu_count() or 1))

    @property
    def embedded_queue_dir(self) -> Path:
        return self.data_dir.resolve() / "queue"


def load_settings(**flags: Any) -> Settings:
    """Build the settings from flags (None = not given), the environment, the config file and defaults."""
    given = {name: value for name, value in flags.items() if value is not None}
    config_path = given.get("config") or os.environ.get(ENV_PREFIX + "CONFIG")
    token = _config_file.set(Path(config_path) if config_path else None)
    try:
        return Settings(**given)
    finally:
        _config_file.reset(token)
