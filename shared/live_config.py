"""LiveConfig: what a running service knows of the live configuration and the modality registry.

A background thread reads both from the index database every 0.5 s (REST changes reach the service within
that time, without a restart). ``current()`` returns the last snapshot: no I/O, safe on the C-STORE path.
``fresh()`` (every new association) and the poll first read the database's config generation, one row that
triggers raise with every change of either table (shared.db.models.ConfigGeneration), and read the configuration
itself only when it moved: a read of everything cost 0.4 ms per association on SQLite with three modalities, 3 ms
with a hundred. The poll still reads everything every FULL_READ_SECONDS, whatever the counter says (a database
restored from a backup may hold another configuration at the same count), and where the counter cannot be read (a
database not migrated yet) everything is read as before.
When the database cannot be read the last good values stay in force, and they are kept in
``<data_dir>/config-cache.json`` so that a service started while the database is down still applies the last
known configuration (invariant 3: config is cached). The cache holds what the database held (the keys set over
REST and the modalities); the defaults are applied on top of it at load time, as for the database.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import ConfigGeneration
from shared.events import iso_utc, utc_now
from shared.node_config import (
    ModalityEntry,
    NodeConfig,
    default_config_for,
    load_modalities,
    merge_stored,
    read_stored_settings,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

REFRESH_INTERVAL_SECONDS = 0.5
FULL_READ_SECONDS = 30.0
CONFIRM_RETRY_SECONDS = 1.0
CACHE_FILE_NAME = "config-cache.json"
CACHE_SCHEMA_VERSION = 1
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_GENERATION = select(ConfigGeneration.__table__.c.generation).where(ConfigGeneration.__table__.c.id == 1)


@dataclass(frozen=True)
class ConfigSnapshot:
    """One consistent view of configuration and modalities, with the lookups the SCP needs precomputed."""

    config: NodeConfig
    modalities: tuple[ModalityEntry, ...]
    source: str  # "database", "cache" or "defaults"
    allow_by_ae_title: dict[str, frozenset[str]] = field(default_factory=dict)
    networks: tuple[IPNetwork, ...] = ()
    allowed_aets: frozenset[str] = frozenset()
    blocked_aets: frozenset[str] = frozenset()
    enabled_services: frozenset[str] = frozenset()
    unknown_callers_allowed: frozenset[str] = frozenset()
    accepted_transfer_syntaxes: frozenset[str] | None = None
    hosts_by_ae_title: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, config: NodeConfig, modalities: Iterable[ModalityEntry], source: str) -> "ConfigSnapshot":
        entries = tuple(modalities)
        allow: dict[str, set[str]] = {}
        hosts: dict[str, set[str]] = {}
        for entry in entries:  # several entries may share an AE title: their permissions and hosts add up
            allow.setdefault(entry.ae_title, set()).update(entry.allow)
            hosts.setdefault(entry.ae_title, set()).add(entry.host)
        return cls(
            config=config,
            modalities=entries,
            source=source,
            allow_by_ae_title={title: frozenset(services) for title, services in allow.items()},
            networks=tuple(ipaddress.ip_network(text) for text in config.ip_allowlist),
            allowed_aets=frozenset(config.allowed_calling_aets),
            blocked_aets=frozenset(config.blocked_calling_aets),
            enabled_services=frozenset(config.enabled_services),
            unknown_callers_allowed=frozenset(config.unknown_callers_allowed),
            accepted_transfer_syntaxes=(None if config.accepted_transfer_syntaxes is None
                                        else frozenset(config.accepted_transfer_syntaxes)),
            hosts_by_ae_title={title: frozenset(values) for title, values in hosts.items()},
        )

    def is_registered(self, ae_title: str) -> bool:
        return ae_title in self.allow_by_ae_title

    def address_allowed(self, address: str) -> bool:
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)  # a dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d
        return any(candidate in network for candidate in candidates for network in self.networks
                   if candidate.version == network.version)

    def calling_aet_from_wrong_host(self, ae_title: str, address: str) -> bool:
        """With check_calling_aet_host: a registered calling AE title connecting from none of its modalities' hosts."""
        hosts = self.hosts_by_ae_title.get(ae_title)
        if not self.config.check_calling_aet_host or not hosts:
            return False
        caller = _canonical_ip(address)
        return caller is None or not any(caller in host_addresses(host) for host in hosts)

    def calling_aet_refused(self, ae_title: str) -> str | None:
        """Why this calling AE title may not associate at all (a stable reason key), or None."""
        if ae_title in self.blocked_aets:
            return "calling_aet_blocked"
        if self.allowed_aets and ae_title not in self.allowed_aets:
            return "calling_aet_not_allowed"
        if not self.unknown_callers_allowed and not self.is_registered(ae_title):
            return "unknown_calling_aet"
        return None

    def permits(self, ae_title: str, service: str) -> bool:
        """May this calling AE title use this service now (echo, store, find, move, get)?"""
        if service not in self.enabled_services or self.calling_aet_refused(ae_title) is not None:
            return False
        allowed = self.allow_by_ae_title.get(ae_title)
        return service in (self.unknown_callers_allowed if allowed is None else allowed)

    def modality(self, name: str) -> ModalityEntry | None:
        return next((entry for entry in self.modalities if entry.name == name), None)


def _canonical_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 callers as ::ffff:a.b.c.d
    return str(ip)


HOST_CACHE_SECONDS = 60.0
_host_addresses: dict[str, tuple[float, frozenset[str]]] = {}


def host_addresses(host: str) -> frozenset[str]:
    """The addresses of a modality's host: itself when it is an address, else what its name resolves to (cached
    for a minute; an unresolvable name has none)."""
    literal = _canonical_ip(host)
    if literal is not None:
        return frozenset({literal})
    cached = _host_addresses.get(host)
    if cached is not None and time.monotonic() - cached[0] < HOST_CACHE_SECONDS:
        return cached[1]
    try:
        resolved = {_canonical_ip(str(info[4][0])) for info in socket.getaddrinfo(host, None)}
    except OSError:
        resolved = set()
    addresses = frozenset(address for address in resolved if address is not None)
    _host_addresses[host] = (time.monotonic(), addresses)
    return addresses


class LiveConfig:
    """The live configuration of one service process (see the module docstring)."""

    def __init__(
        self,
        defaults: NodeConfig,
        sessions: sessionmaker[Session],
        cache_path: Path | None,
        interval_seconds: float = REFRESH_INTERVAL_SECONDS,
    ) -> None:
        self._defaults = defaults
        self._sessions = sessions
        self._engine = sessions.kw["bind"]
        self._cache_path = cache_path
        self._interval = interval_seconds
        self._snapshot = ConfigSnapshot.build(defaults, (), "defaults")
        self._stored: dict[str, Any] | None = None  # what the database (or the cache) last held
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._first_refresh = threading.Event()
        self._thread: threading.Thread | None = None
        self._database_ok: bool | None = None
        self._generation: int | None = None  # the config generation the snapshot was read at (None: unknown)
        self._full_read_at = float("-inf")  # monotonic time of the last read of everything
        self._confirm_tried_at = 0.0  # monotonic time confirmed() last read the database itself
        self.refresh_failures = 0

    @classmethod
    def for_settings(cls, settings: Settings, sessions: sessionmaker[Session]) -> "LiveConfig":
        return cls(default_config_for(settings), sessions,
                   settings.data_dir.resolve() / CACHE_FILE_NAME)

    def current(self) -> ConfigSnapshot:
        """The configuration in force: no I/O."""
        return self._snapshot

    def confirmed(self) -> ConfigSnapshot:
        """The configuration as the database holds it now (read again if its config generation moved).

        Used before refusing something (an unknown caller, a move destination, a service): a change made over
        REST an instant ago then takes effect at once, while the fast path never waits for the database.
        While the database is known to be down, it is tried again at most once a second (so that refusals do not
        each wait for a connection attempt, yet a database that just came back is seen before the next poll).
        """
        now = time.monotonic()
        if self._database_ok is False and now - self._confirm_tried_at < CONFIRM_RETRY_SECONDS:
            return self._snapshot
        self._confirm_tried_at = now
        return self._refresh_if_changed()

    def fresh(self) -> tuple[ConfigSnapshot, bool]:
        """What a new association runs with, and whether it was checked against the database just now: the config
        generation is read, and the configuration too if it moved, unless the database is not known to answer (then
        the values in force, kept up to date by the poll). A change made over REST applies to every association
        requested after it, whichever of the node's SCP processes takes it."""
        if self._database_ok is not True:
            return self._snapshot, False
        return self._refresh_if_changed(), True

    # ---- loading ------------------------------------------------------------------------------------------

    def _apply(self, stored: dict[str, Any], source: str) -> None:
        config = merge_stored(self._defaults, stored["settings"])
        modalities = []
        for item in stored["modalities"]:
            try:
                modalities.append(ModalityEntry.model_validate(item))
            except ValidationError:
                log.warning("live_config.modality_ignored source=%s", source)
        self._snapshot = ConfigSnapshot.build(config, modalities, source)
        self._stored = stored

    def load_cache(self) -> bool:
        """Apply the cache file, if there is a valid one (used before the database answered)."""
        if self._cache_path is None:
            return False
        try:
            document = json.loads(self._cache_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return False
        except (OSError, ValueError) as exc:
            log.warning("live_config.cache_unreadable error=%s", exc.__class__.__name__)
            return False
        if (not isinstance(document, dict) or document.get("schema_version") != CACHE_SCHEMA_VERSION
                or not isinstance(document.get("settings"), dict) or not isinstance(document.get("modalities"), list)):
            log.warning("live_config.cache_ignored reason=unexpected_format")
            return False
        self._apply({"settings": document["settings"], "modalities": document["modalities"]}, "cache")
        log.info("live_config.loaded source=cache saved_at=%s", str(document.get("saved_at", ""))[:32])
        return True

    def _write_cache(self, stored: dict[str, Any]) -> None:
        if self._cache_path is None:
            return
        document = {"schema_version": CACHE_SCHEMA_VERSION, "saved_at": iso_utc(utc_now()), **stored}
        try:
            self._cache_path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".config-cache-", suffix=".tmp", dir=self._cache_path.parent)
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as output:
                    json.dump(document, output, indent=1, sort_keys=True)
                    output.flush()
                    os.fsync(output.fileno())
                os.replace(temporary, self._cache_path)
            except BaseException:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass
                raise
        except OSError as exc:
            log.warning("live_config.cache_not_written error=%s", exc.__class__.__name__)

    def _refresh_if_changed(self) -> ConfigSnapshot:
        """The snapshot, read again from the database unless its config generation is the one it was read at."""
        known = self._generation
        if known is None or self._database_ok is not True:
            return self.refresh_now()
        current = self._read_generation()
        return self._snapshot if current == known else self._read_everything(current)

    def _read_generation(self) -> int | None:
        """The database's config generation; None when it cannot be read (down, or not migrated yet)."""
        try:
            with self._engine.connect() as connection:  # half the cost of a Session: read by every association
                return connection.execute(_GENERATION).scalar()
        except SQLAlchemyError:
            return None

    def refresh_now(self) -> ConfigSnapshot:
        """Read the database now; on failure keep (and return) the values in force."""
        return self._read_everything(self._read_generation())

    def _read_everything(self, generation: int | None) -> ConfigSnapshot:
        """Settings and modalities, recorded as read at ``generation``, which was read before them: a change made
        after it has moved it again, so the next check reads them once more (never the other way round)."""
        with self._refresh_lock:
            try:
                with self._sessions() as session:
                    stored = {
                        "settings": read_stored_settings(session),
                        "modalities": [entry.model_dump(mode="json") for entry in load_modalities(session)],
                    }
            except SQLAlchemyError as exc:
                self.refresh_failures += 1
                if self._database_ok is not False:
                    log.warning("live_config.database_unavailable keeping=%s error=%s",
                                self._snapshot.source, exc.__class__.__name__)
                    # The last good values must be on disk for a restart during the outage.
                    if (self._stored is not None and self._cache_path is not None
                            and not self._cache_path.exists()):
                        self._write_cache(self._stored)
                self._database_ok = False
                return self._snapshot
            if self._database_ok is False:
                log.info("live_config.database_back")
            self._database_ok = True
            self._generation = generation
            self._full_read_at = time.monotonic()
            if stored != self._stored or self._snapshot.source != "database":
                changed = stored != self._stored
                self._apply(stored, "database")
                if changed:
                    self._write_cache(stored)
            return self._snapshot

    # ---- the refresh thread ---------------------------------------------------------------------------------

    def start(self, first_load_timeout: float = 1.0) -> None:
        """Apply the cache, start polling; wait up to ``first_load_timeout`` for the database's values."""
        self.load_cache()
        self._thread = threading.Thread(target=self._run, name="live-config", daemon=True)
        self._thread.start()
        self._first_refresh.wait(first_load_timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if time.monotonic() - self._full_read_at >= FULL_READ_SECONDS:
                    self.refresh_now()
                else:
                    self._refresh_if_changed()
            except Exception:  # never let the refresher die: the service would stop seeing changes
                log.exception("live_config.refresh_failed")
            self._first_refresh.set()
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
