"""services/scp/tls.py: the BCP 195 server context, its configuration errors, and TLS-aware event-driven waits."""

from __future__ import annotations

import fcntl
import os
import queue
import resource
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shared.dicom import event_driven
from services.scp.tls import TlsConfigurationError, complete_handshake, server_context
from shared.settings import Settings
from tests.certificates import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: Pki, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"tls_port": 2762, "tls_certificate": pki.server.certificate,
                              "tls_private_key": pki.server.private_key}
    values.update(overrides)
    return Settings(**values)


# ---- settings ------------------------------------------------------------------------------------------------

def test_tls_is_off_by_default_and_an_empty_value_means_unset(pki: Pki) -> None:
    assert Settings().tls_port is None and server_context(Settings()) is None
    settings = Settings(tls_port="", tls_certificate="", tls_private_key=" ", tls_ca_certificates="")
    assert (settings.tls_port, settings.tls_certificate, settings.tls_private_key,
            settings.tls_ca_certificates) == (None, None, None, None)
    assert settings.tls_require_client_certificate is False
    with pytest.raises(ValueError):
        Settings(tls_port=70000)


# ---- the context: BCP 195 -----------------------------------------------------------------------------------

def test_the_context_is_tls_1_2_or_later_with_forward_secret_aead_suites_no_compression_no_renegotiation(
    pki: Pki,
) -> None:
    context = server_context(tls_settings(pki))
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.MAXIMUM_SUPPORTED
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    assert context.verify_mode == ssl.CERT_NONE  # no tls_ca_certificates: no client certificate asked for
    suites = context.get_ciphers()
    tls12 = [suite for suite in suites if suite["protocol"] == "TLSv1.2"]
    assert tls12 and {suite["protocol"] for suite in suites} <= {"TLSv1.2", "TLSv1.3"}
    for suite in tls12:
        assert suite["kea"] in ("kx-ecdhe", "kx-dhe"), suite["name"]
        assert suite["aead"] is True, suite["name"]
        assert suite["auth"] in ("auth-rsa", "auth-ecdsa"), suite["name"]
    names = {suite["name"] for suite in suites}
    # PS3.15 B.9 (Non-Downgrading BCP 195) suites that must be there for an ECDSA or an RSA certificate.
    assert {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES256-GCM-SHA384"} <= names


def test_client_certificates_verified_when_presented_with_a_ca_and_demanded_when_required(pki: Pki) -> None:
    optional = server_context(tls_settings(pki, tls_ca_certificates=pki.ca.certificate))
    assert optional is not None and optional.verify_mode == ssl.CERT_OPTIONAL
    required = server_context(tls_settings(pki, tls_ca_certificates=pki.ca.certificate,
                                           tls_require_client_certificate=True))
    assert required is not None and required.verify_mode == ssl.CERT_REQUIRED
    subjects = [dict(item[0] for item in ca["subject"]) for ca in required.get_ca_certs()]
    assert subjects == [{"organizationName": "PACS tests", "commonName": "test-ca"}]


def test_the_key_may_be_in_the_certificate_file(pki: Pki, tmp_path: Path) -> None:
    combined = tmp_path / "server.pem"
    combined.write_bytes(pki.server.certificate.read_bytes() + pki.server.private_key.read_bytes())
    assert server_context(tls_settings(pki, tls_certificate=combined, tls_private_key=None)) is not None


# ---- configuration errors name the setting and the file ------------------------------------------------------

def refusal(settings: Settings) -> str:
    with pytest.raises(TlsConfigurationError) as error:
        server_context(settings)
    return str(error.value)


def test_a_missing_certificate_or_key_file_is_named(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "server.crt"
    assert refusal(tls_settings(pki, tls_certificate=missing)) == f"tls_certificate: {missing}: no such file"
    assert refusal(tls_settings(pki, tls_private_key=missing)) == f"tls_private_key: {missing}: no such file"
    assert refusal(tls_settings(pki, tls_ca_certificates=missing)) == f"tls_ca_certificates: {missing}: no such file"
    assert refusal(tls_settings(pki, tls_certificate=tmp_path)) == \
        f"tls_certificate: {tmp_path}: is a directory, not a PEM file"


def test_unusable_contents_are_named(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    message = refusal(tls_settings(pki, tls_certificate=garbage))
    assert message.startswith(f"tls_certificate: {garbage}: no PEM certificate could be read")
    message = refusal(tls_settings(pki, tls_private_key=garbage))
    assert message.startswith(f"tls_private_key: {garbage}: no usable PEM private key for {pki.server.certificate}")
    message = refusal(tls_settings(pki, tls_ca_certificates=garbage))
    assert message.startswith(f"tls_ca_certificates: {garbage}: no PEM certificate could be read")
    assert refusal(tls_settings(pki, tls_private_key=pki.client.private_key)) == (
        f"tls_private_key: {pki.client.private_key}: the private key does not match the certificate in "
        f"{pki.server.certificate}")


def test_an_encrypted_key_is_refused_without_prompting(pki: Pki, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.server.private_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    assert refusal(tls_settings(pki, tls_private_key=encrypted)) == (
        f"tls_private_key: {encrypted}: the private key is encrypted; give an unencrypted key and protect the "
        "file instead")


def test_incomplete_settings_are_named(pki: Pki) -> None:
    assert refusal(Settings(tls_port=2762)) == "tls_certificate: required when tls_port is set (a PEM file)"
    assert refusal(tls_settings(pki, tls_require_client_certificate=True)).startswith(
        "tls_ca_certificates: required when tls_require_client_certificate is true")
    assert refusal(tls_settings(pki, tls_port=11112, dicom_port=11112)).startswith(
        "tls_port: 11112 is dicom_port too")


# ---- handshakes and waits on a real TLS connection ----------------------------------------------------------

@pytest.fixture
def tls_pair(pki: Pki) -> Iterator[tuple[ssl.SSLSocket, ssl.SSLSocket]]:
    """(server side, client side) of a TLS connection made with the node's server context."""
    context = server_context(tls_settings(pki))
    assert context is not None
    client_context = ssl.create_default_context(cafile=str(pki.ca.certificate))
    left, right = socket.socketpair()
    server = context.wrap_socket(left, server_side=True, do_handshake_on_connect=False)
    client = client_context.wrap_socket(right, server_hostname="localhost", do_handshake_on_connect=False)
    handshake = threading.Thread(target=client.do_handshake)
    handshake.start()
    assert complete_handshake(server, "127.0.0.1")
    handshake.join(10)
    yield server, client
    server.close()
    client.close()


def test_waits_return_at_once_while_decrypted_bytes_wait_in_the_tls_buffer(
    tls_pair: tuple[ssl.SSLSocket, ssl.SSLSocket], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """select() cannot see bytes the SSL object already decrypted: the DUL's wait must not block on them."""
    server, client = tls_pair
    client.sendall(b"PDU-ONE|PDU-TWO")  # one TLS record carrying two reads' worth
    assert server.recv(8) == b"PDU-ONE|"
    assert server.pending() == 7
    watched: list[list[int]] = []
    real_poll = select.poll

    class RecordingPoll:
        def __init__(self) -> None:
            self.poller = real_poll()
            self.fds: list[int] = []

        def register(self, fd: Any, events: int) -> None:
            self.fds.append(fd if isinstance(fd, int) else fd.fileno())
            self.poller.register(fd, events)

        def poll(self, timeout: float) -> Any:
            watched.append(self.fds)
            return self.poller.poll(timeout)

    monkeypatch.setattr(event_driven.select, "poll", RecordingPoll)
    wakeup = event_driven._DulWakeup()
    wake_fd = wakeup.fd
    try:
        wait = event_driven._dul_waiter(SimpleNamespace(socket=SimpleNamespace(socket=server),
                                                        to_provider_queue=queue.Queue()), wakeup)
        wait()
        assert watched == [], "the wait polled although the TLS buffer held data"
        assert server.recv(7) == b"PDU-TWO" and server.pending() == 0
        client.sendall(b"MORE")
        wait()  # nothing buffered: it waits on the socket (and the wake-up descriptor), and the record wakes it
        assert watched == [[wake_fd, server.fileno()]]
        assert server.recv(4) == b"MORE"
    finally:
        os.close(wake_fd)


def test_a_failed_handshake_is_reported_without_a_dicom_association(pki: Pki) -> None:
    context = server_context(tls_settings(pki))
    assert context is not None
    left, right = socket.socketpair()
    server = context.wrap_socket(left, server_side=True, do_handshake_on_connect=False)
    right.sendall(b"\x01\x00\x00\x00\x00\xcd\x00\x01")  # the start of a plaintext A-ASSOCIATE-RQ
    failures: list[tuple[str, str]] = []
    assert not complete_handshake(server, "192.0.2.7", lambda ip, reason: failures.append((ip, reason)))
    [(ip, reason)] = failures
    assert ip == "192.0.2.7" and reason  # OpenSSL's reason, e.g. WRONG_VERSION_NUMBER
    server.close()
    right.close()


def test_the_handshake_has_one_deadline_even_for_a_peer_that_dribbles_it(pki: Pki) -> None:
    """A byte now and then never lets a socket timeout expire; the handshake's own deadline still does."""
    context = server_context(tls_settings(pki))
    assert context is not None
    left, right = socket.socketpair()
    server = context.wrap_socket(left, server_side=True, do_handshake_on_connect=False)
    hello = b"\x16\x03\x01\x02\x00" + b"\x01" * 512  # a record header announcing 512 bytes, then a trickle
    stop = threading.Event()
    sent: list[int] = []

    def dribble() -> None:
        for byte in hello:
            if stop.wait(0.05):
                return
            try:
                right.sendall(bytes([byte]))
            except OSError:
                return
            sent.append(byte)

    sender = threading.Thread(target=dribble)
    sender.start()
    try:
        assert not complete_handshake(server, "192.0.2.8", timeout=0.5)
        assert len(sent) < len(hello), "it gave up only once the peer had finished dribbling"
    finally:
        stop.set()
        sender.join(10)
        server.close()
        right.close()


@pytest.fixture
def descriptors_above_1023() -> Iterator[None]:
    """A soft limit of 1024 open files is common: raise it (up to the hard limit) for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_waits_work_on_descriptors_above_1023(monkeypatch: pytest.MonkeyPatch, descriptors_above_1023: None) -> None:
    """select() refuses them (and the wait would return at once, in a loop); the wait must block until data."""
    left, right = socket.socketpair()
    high = socket.socket(fileno=fcntl.fcntl(left.fileno(), fcntl.F_DUPFD_CLOEXEC, 1088))
    left.close()
    wakeup = event_driven._DulWakeup()
    monkeypatch.setattr(event_driven, "IDLE_WAIT_SECONDS", 60.0)
    sending = threading.Event()

    def send_soon() -> None:
        time.sleep(0.2)
        sending.set()  # before the bytes: the wait may only end after this
        right.sendall(b"PDU")

    sender = threading.Thread(target=send_soon)
    sender.start()
    try:
        assert high.fileno() >= 1024
        event_driven._dul_waiter(SimpleNamespace(socket=SimpleNamespace(socket=high), to_provider_queue=queue.Queue()),
                                 wakeup)()
        assert sending.is_set(), "the wait returned before anything arrived"
        assert high.recv(3) == b"PDU"
    finally:
        sender.join(10)
        os.close(wakeup.fd)
        high.close()
        right.close()
