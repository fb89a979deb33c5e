"""The local stack's CA: certificates it issues chain to it, name what they are for, keep their
keys owner-only, and are made once."""

from __future__ import annotations

import json
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from ops.cli import app
from sealstream.tls import ensure_ca, issue


def test_issued_certificates_chain_to_the_ca_and_are_made_once(tmp_path: Path) -> None:
    ca = ensure_ca(tmp_path)
    server = issue(tmp_path, "gateway", server_hosts=["gw.internal"])
    client = issue(tmp_path, "publisher-1")
    assert issue(tmp_path, "publisher-1").cert.read_bytes() == client.cert.read_bytes()
    for issued in (ca, server, client):
        assert stat.S_IMODE(issued.key.stat().st_mode) == 0o600
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    server_cert = x509.load_pem_x509_certificate(server.cert.read_bytes())
    client_cert = x509.load_pem_x509_certificate(client.cert.read_bytes())
    for cert in (server_cert, client_cert):
        cert.verify_directly_issued_by(ca_cert)
    names = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"gw.internal", "localhost"}
    assert client_cert.subject.rfc4514_string() == "CN=publisher-1,O=Sealstream local stack"
    # the standard library's TLS accepts them as a server's and a client's
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(server.cert, server.key)
    server_side.load_verify_locations(ca.cert)
    client_side = ssl.create_default_context(cafile=str(ca.cert))
    client_side.load_cert_chain(client.cert, client.key)


def test_the_cli_issues_client_certificates_and_refuses_names_it_must_not_use(
    tmp_path: Path,
) -> None:
    env = {"SEALSTREAM_KEYS_DIR": str(tmp_path)}
    made = CliRunner().invoke(app, ["keys", "client-cert", "billing-service"], env=env)
    assert made.exit_code == 0, made.output
    files = json.loads(made.output)
    assert Path(files["cert"]).exists() and Path(files["ca"]) == tmp_path / "tls" / "ca.pem"
    for bad in ("../escape", "gateway", "ca", "a b", ""):
        refused = CliRunner().invoke(app, ["keys", "client-cert", bad], env=env)
        assert refused.exit_code == 2, (bad, refused.output)
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "billing-service-key.pem", "billing-service.pem", "ca-key.pem", "ca.pem",
    ]  # fmt: skip


def test_up_reaches_its_gateway_as_the_gateway_is_served(tmp_path: Path) -> None:
    import pytest

    from ops.errors import UsageError
    from ops.mainjob import gateway_access
    from sealstream.settings import GatewaySettings
    from sealstream.tls import subject_of

    plain = gateway_access(GatewaySettings(port=18443), tmp_path)
    assert (plain.url, plain.ssl_context()) == ("http://127.0.0.1:18443", None)
    assert not (tmp_path / "tls").exists()  # no CA made for plain HTTP

    own = gateway_access(GatewaySettings(port=18443, tls=True), tmp_path)
    ca = tmp_path / "tls" / "ca.pem"
    assert (own.url, own.ca_file, own.client_cert) == ("https://127.0.0.1:18443", str(ca), None)
    context = own.ssl_context()
    assert context is not None and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED

    # a certificate of the user's own: trusted by the system's CAs, not by the stack's
    given = GatewaySettings(tls=True, tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "k")
    assert gateway_access(given, tmp_path).ca_file is None

    mtls = gateway_access(GatewaySettings(tls=True, tls_client_ca_file=ca), tmp_path)
    assert mtls.client_cert is not None
    der = x509.load_pem_x509_certificate(Path(mtls.client_cert[0]).read_bytes())
    assert subject_of(der.public_bytes(Encoding.DER)) == (
        "CN=sealstream-up,O=Sealstream local stack"
    )

    other = ensure_ca(tmp_path / "elsewhere").cert
    with pytest.raises(UsageError, match="client CA must be the stack's"):
        gateway_access(GatewaySettings(tls=True, tls_client_ca_file=other), tmp_path)
