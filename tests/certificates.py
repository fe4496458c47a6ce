"""Throwaway PKI for the TLS tests: a CA, a server certificate for 127.0.0.1, client certificates (cryptography)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Identity:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class Authority:
    name: str
    certificate: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "PACS tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))


def make_authority(directory: Path, name: str) -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _validity(x509.CertificateBuilder()
                        .subject_name(_name(name)).issuer_name(_name(name))
                        .public_key(key.public_key()).serial_number(x509.random_serial_number()))
    builder = (builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    cert = builder.sign(key, hashes.SHA256())
    path = directory / f"{name}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name, path, key, cert)


def issue(authority: Authority, directory: Path, name: str, server: bool) -> Identity:
    """A leaf certificate signed by ``authority``: for 127.0.0.1/localhost (server) or a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = _validity(x509.CertificateBuilder()
                        .subject_name(_name(name)).issuer_name(authority.cert.subject)
                        .public_key(key.public_key()).serial_number(x509.random_serial_number()))
    builder = (builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
                              critical=False))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    cert = builder.sign(authority.key, hashes.SHA256())
    certificate = directory / f"{name}.crt"
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Identity(certificate, _write_key(key, directory / f"{name}.key"))


@dataclass(frozen=True)
class Pki:
    ca: Authority            # issues the server certificate and the trusted client certificate
    server: Identity
    client: Identity         # issued by ca: trusted
    stranger_ca: Authority   # a CA the node does not trust
    stranger: Identity       # a client certificate issued by stranger_ca


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_authority(directory, "test-ca")
    stranger_ca = make_authority(directory, "stranger-ca")
    return Pki(ca=ca, server=issue(ca, directory, "pacs-server", server=True),
               client=issue(ca, directory, "modality", server=False),
               stranger_ca=stranger_ca, stranger=issue(stranger_ca, directory, "stranger", server=False))
