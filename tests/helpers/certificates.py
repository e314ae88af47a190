"""Throwaway certificate authorities for the TLS tests, as PEM files: a CA signing a server
certificate for 127.0.0.1/localhost and a client certificate, and another CA signing a client
certificate of its own (which a server trusting only the first CA must refuse)."""

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
class Certificates:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path  # trusting it instead of ca_cert must fail: it did not sign the server's
    foreign_client_cert: Path  # a valid client certificate, but signed by the other CA
    foreign_client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: str, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def _authority(name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    certificate = (
        _builder(name, _name(name), key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, certificate


def _leaf(
    name: str, ca_key, ca_cert: x509.Certificate, usage
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    builder = (
        _builder(name, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if usage == ExtendedKeyUsageOID.SERVER_AUTH:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _write(folder: Path, name: str, item) -> Path:
    path = folder / name
    if isinstance(item, x509.Certificate):
        path.write_bytes(item.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return path


def make_certificates(folder: Path) -> Certificates:
    ca_key, ca_cert = _authority("ssd300 test CA")
    server_key, server_cert = _leaf("127.0.0.1", ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH)
    client_key, client_cert = _leaf("ssd300 test client", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH)
    other_ca_key, other_ca = _authority("some other CA")
    foreign_key, foreign_cert = _leaf(
        "ssd300 foreign client", other_ca_key, other_ca, ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return Certificates(
        ca_cert=_write(folder, "ca.pem", ca_cert),
        server_cert=_write(folder, "server.pem", server_cert),
        server_key=_write(folder, "server.key", server_key),
        client_cert=_write(folder, "client.pem", client_cert),
        client_key=_write(folder, "client.key", client_key),
        other_ca_cert=_write(folder, "other-ca.pem", other_ca),
        foreign_client_cert=_write(folder, "foreign-client.pem", foreign_cert),
        foreign_client_key=_write(folder, "foreign-client.key", foreign_key),
    )
