"""The local stack's own certificate authority, and the certificates it issues.

A deployment brings its own certificates; the local stack, which has no PKI to ask, makes a CA
on first use and issues from it, so HTTPS and mutual TLS work without extra steps. Files in
``<keys dir>/tls/`` (private keys owner-only, see :mod:`sealstream.keys`)::

    ca.pem  ca-key.pem                 the CA (clients trust ca.pem)
    <name>.pem  <name>-key.pem         a certificate it issued, and its key

Keys are ECDSA P-256, certificates valid 825 days (the longest browsers accept for a server);
a server certificate names ``localhost`` and 127.0.0.1 besides the hosts asked for.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sealstream.keys import check_private, write_private

VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


def tls_dir(keys_dir: Path) -> Path:
    return keys_dir / "tls"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sealstream local stack"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(issued: Issued, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
    for path in (issued.cert, issued.key):
        path.unlink(missing_ok=True)
    write_private(issued.key, _key_pem(key))
    issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))  # public
    return issued


def ensure_ca(keys_dir: Path) -> Issued:
    """The stack's CA, made on first use."""
    d = tls_dir(keys_dir)
    ca = Issued(d / "ca.pem", d / "ca-key.pem")
    if ca.cert.exists() and ca.key.exists():
        check_private(ca.key)
        return ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("Sealstream local CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _write(ca, cert, key)


def issue(keys_dir: Path, name: str, *, server_hosts: list[str] | None = None) -> Issued:
    """A certificate for ``name`` from the stack's CA, made once: a server's (for
    ``server_hosts`` plus localhost and 127.0.0.1) or, with no hosts, a client's, whose
    subject is ``CN=<name>,O=Sealstream local stack``."""
    ca = ensure_ca(keys_dir)
    issued = Issued(tls_dir(keys_dir) / f"{name}.pem", tls_dir(keys_dir) / f"{name}-key.pem")
    if issued.cert.exists() and issued.key.exists():
        check_private(issued.key)
        return issued
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if server_hosts is not None:
        hosts = dict.fromkeys([*server_hosts, "localhost", "127.0.0.1"])
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_alt_name(h) for h in hosts]), critical=False
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return _write(issued, builder.sign(ca_key, hashes.SHA256()), key)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def subject_of(der: bytes) -> str:
    """A certificate's subject as an RFC 4514 string (``CN=publisher-1,O=Example``)."""
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()
