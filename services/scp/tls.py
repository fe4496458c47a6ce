"""DICOM TLS: the listener's SSLContext (PS3.15 Annex B, the BCP 195 profiles) and the server that uses it.

The context follows PS3.15 B.9 (Non-Downgrading BCP 195 TLS Secure Transport Connection Profile, RFC 9325):
TLS 1.2 or 1.3 only; in TLS 1.2 only suites with forward secrecy and authenticated encryption (ECDHE or DHE
with AES-GCM or ChaCha20-Poly1305; TLS 1.3 has nothing else); no TLS compression; no renegotiation. Client
certificates are verified against ``tls_ca_certificates`` when one is presented, and demanded when
``tls_require_client_certificate`` is set.

pynetdicom would run the TLS handshake inside its accept loop, so that one client that connects and stays silent
would hold up every other TLS connection. Here the accept loop only wraps the socket; the handshake runs in the
connection's own thread, within HANDSHAKE_TIMEOUT_SECONDS in all (a peer that dribbles its handshake a byte at a
time gets no longer), before the association is created. A failed handshake (plaintext, TLS below 1.2, an
untrusted or missing client certificate) never reaches the DICOM layer.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pynetdicom.transport import ThreadedAssociationServer

from services.scp.sockets import LowLatencyRequestHandler
from shared.dicom.tcp import quickack
from shared.settings import Settings

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT_SECONDS = 10.0
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# TLS 1.2 suites (TLS 1.3's are configured apart and are all allowed): forward secrecy and AEAD only.
BCP195_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"


class TlsConfigurationError(ValueError):
    """The TLS settings cannot be used; the message names the setting and the file."""


def _no_password() -> bytes:
    raise TlsConfigurationError("encrypted")


def _check_readable(setting: str, path: Path) -> None:
    try:
        with path.open("rb") as file:
            file.read(1)
    except FileNotFoundError:
        raise TlsConfigurationError(f"{setting}: {path}: no such file") from None
    except IsADirectoryError:
        raise TlsConfigurationError(f"{setting}: {path}: is a directory, not a PEM file") from None
    except PermissionError:
        raise TlsConfigurationError(f"{setting}: {path}: not readable (permission denied)") from None
    except OSError as exc:
        raise TlsConfigurationError(f"{setting}: {path}: cannot be read ({exc.strerror or exc})") from None


def _check_certificates(setting: str, path: Path) -> None:
    """The file holds at least one PEM certificate (a scratch context parses it)."""
    _check_readable(setting, path)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsConfigurationError(f"{setting}: {path}: no PEM certificate could be read ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(reason or exc.__class__.__name__)


def _load_identity(context: ssl.SSLContext, certificate: Path, private_key: Path | None) -> None:
    _check_certificates("tls_certificate", certificate)
    if private_key is not None:
        _check_readable("tls_private_key", private_key)
    key_setting, key_path = ("tls_private_key", private_key) if private_key else ("tls_certificate", certificate)
    try:
        context.load_cert_chain(str(certificate), str(private_key) if private_key else None, password=_no_password)
    except TlsConfigurationError:
        raise TlsConfigurationError(
            f"{key_setting}: {key_path}: the private key is encrypted; give an unencrypted key and protect the "
            "file instead") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or _reason(exc) == "KEY_VALUES_MISMATCH":
            raise TlsConfigurationError(
                f"{key_setting}: {key_path}: the private key does not match the certificate in {certificate}"
            ) from None
        raise TlsConfigurationError(
            f"{key_setting}: {key_path}: no usable PEM private key for {certificate} ({_reason(exc)})") from None


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS listener's context, or None when ``tls_port`` is not set. Raises TlsConfigurationError."""
    if settings.tls_port is None:
        return None
    if settings.tls_port == settings.dicom_port:
        raise TlsConfigurationError(f"tls_port: {settings.tls_port} is dicom_port too; give the TLS listener "
                                    "a port of its own")
    if settings.tls_certificate is None:
        raise TlsConfigurationError("tls_certificate: required when tls_port is set (a PEM file)")
    if settings.tls_require_client_certificate and settings.tls_ca_certificates is None:
        raise TlsConfigurationError("tls_ca_certificates: required when tls_require_client_certificate is true "
                                    "(the CAs that issue the client certificates)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.set_ciphers(BCP195_CIPHERS)
    _load_identity(context, settings.tls_certificate, settings.tls_private_key)
    if settings.tls_ca_certificates is not None:
        _check_certificates("tls_ca_certificates", settings.tls_ca_certificates)
        context.load_verify_locations(cafile=str(settings.tls_ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED if settings.tls_require_client_certificate else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


# ---- the listener ------------------------------------------------------------------------------------------

_QUIET_FAILURES = (ssl.SSLEOFError, ConnectionError, TimeoutError)  # probes, scanners, clients that hung up


def complete_handshake(sock: ssl.SSLSocket, remote_ip: str, on_failure: Callable[[str, str], None] | None = None,
                       timeout: float = HANDSHAKE_TIMEOUT_SECONDS) -> bool:
    """Run the server side of the handshake within ``timeout`` in all; False (and logged) if it fails."""
    try:
        sock.settimeout(timeout)  # CPython applies it to do_handshake as one deadline, not per read
        sock.do_handshake()
        sock.settimeout(None)
    except (ssl.SSLError, OSError, ValueError) as exc:
        reason = _reason(exc)
        if isinstance(exc, _QUIET_FAILURES):
            log.debug("scp.tls_handshake_failed remote=%s reason=%s", remote_ip, reason)
        else:
            log.info("scp.tls_handshake_failed remote=%s reason=%s", remote_ip, reason)
            if on_failure is not None:
                on_failure(remote_ip, reason)
        return False
    log.debug("scp.tls_established remote=%s version=%s cipher=%s client_certificate=%s", remote_ip,
              sock.version(), (sock.cipher() or ("?",))[0], sock.getpeercert() is not None)
    return True


class TlsRequestHandler(LowLatencyRequestHandler):
    """The plain listener's request handler, after a completed handshake."""

    def handle(self) -> None:
        sock = self.request
        assert isinstance(sock, ssl.SSLSocket)
        try:  # the handshake's flights go out at once, as every PDU after it does (services/scp/sockets.py)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        quickack(sock)
        on_failure = getattr(self.server, "tls_handshake_failed", None)
        if not complete_handshake(sock, str(self.client_address[0]), on_failure):
            _close(sock)
            return
        super().handle()


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TlsAssociationServer(ThreadedAssociationServer):
    """Wraps each accepted socket without a handshake; TlsRequestHandler completes it in the connection's thread."""

    def get_request(self) -> tuple[socket.socket, Any]:
        assert self.socket is not None and self.ssl_context is not None
        client, address = self.socket.accept()
        try:
            wrapped = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        except (ssl.SSLError, OSError):
            _close(client)
            raise
        return wrapped, address
