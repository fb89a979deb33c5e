"""HTTPS and mutual TLS at the gateway, against the real broker: the client verifies the
server's certificate (a wrong one is refused), and with mTLS on a connection without a client
certificate is refused in the handshake, before any JWT work; the certificate's subject is in
the audit decision."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.client import PublishError, SealstreamClient
from sealstream.tls import ensure_ca, issue
from tests.integration.conftest import free_port, register_repo_schemas
from tests.integration.test_gateway import decisions_of, event

pytestmark = pytest.mark.integration


@dataclass
class TLSGateway:
    url: str
    keys: Path
    token: str
    verified: list[str]  # every token the gateway verified


@pytest.fixture(scope="module")
def tls_gateway(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSGateway]:
    import uvicorn

    from producers.app import build_gateway, create_app
    from producers.tls import uvicorn_tls
    from sealstream.auth import Keyring, auth_settings, issue_token
    from sealstream.settings import GatewaySettings, KeySettings

    register_repo_schemas(stack)
    keys = KeySettings(dir=tmp_path_factory.mktemp("tls-keys"))
    auth = auth_settings(keys)
    ca = ensure_ca(keys.dir)
    settings = GatewaySettings(
        port=free_port(),
        policy_file=Path(__file__).resolve().parents[2] / "config" / "policy.yaml",
        tls=True,  # the stack's own certificate, from its CA
        tls_client_ca_file=ca.cert,
    )
    built = build_gateway(settings, auth, stack.kafka_settings(), stack.registry_settings(), keys)
    verified: list[str] = []
    verify = built.verifier.verify

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        verified.append(token)
        return verify(token, *args, **kwargs)

    built.verifier.verify = counting
    config = uvicorn.Config(
        create_app(built), host="127.0.0.1", port=settings.port, log_level="warning",
        access_log=False, **uvicorn_tls(settings, keys),
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="tls-gateway", daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{settings.port}"
    client = issue(keys.dir, "health-probe")
    context = ssl.create_default_context(cafile=str(ca.cert))
    context.load_cert_chain(str(client.cert), str(client.key))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1, verify=context).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    token = issue_token(Keyring.from_settings(auth), auth, "svc-tls", "acme", ["events:write"])
    try:
        yield TLSGateway(url, keys.dir, token, verified)
    finally:
        server.should_exit = True
        thread.join(timeout=20)


def _publisher(gw: TLSGateway, **tls: Any) -> SealstreamClient:
    return SealstreamClient(gw.url, gw.token, max_attempts=1, **tls)


def test_a_publisher_with_a_client_certificate_is_accepted_and_its_subject_audited(
    stack: Any, tls_gateway: TLSGateway
) -> None:
    cert = issue(tls_gateway.keys, "publisher-1")
    correlation = f"tls-{uuid.uuid4().hex[:8]}"
    ca = str(tls_gateway.keys / "tls" / "ca.pem")
    with _publisher(tls_gateway, ca_file=ca, client_cert=(str(cert.cert), str(cert.key))) as c:
        c._http.headers["X-Correlation-ID"] = correlation
        result = c.publish([event()])
    assert len(result.receipts) == 1 and not result.rejected
    (decision,) = decisions_of(stack, correlation)
    assert decision["client_cert"] == "CN=publisher-1,O=Sealstream local stack"


def test_without_a_client_certificate_the_handshake_fails_before_any_jwt_work(
    tls_gateway: TLSGateway,
) -> None:
    before = len(tls_gateway.verified)
    ca = str(tls_gateway.keys / "tls" / "ca.pem")
    with _publisher(tls_gateway, ca_file=ca) as client, pytest.raises(PublishError) as info:
        client.publish([event()])
    # TLS 1.3: the server refuses the handshake's last flight, so the client sees it close
    assert "unreachable" in str(info.value)
    assert len(tls_gateway.verified) == before  # no token was looked at


def test_the_client_refuses_a_server_certificate_it_cannot_verify(
    tls_gateway: TLSGateway, tmp_path: Path
) -> None:
    other = ensure_ca(tmp_path)  # another CA: the gateway's certificate does not chain to it
    cert = issue(tls_gateway.keys, "publisher-2")
    both = {"client_cert": (str(cert.cert), str(cert.key))}
    before = len(tls_gateway.verified)
    for tls in ({"ca_file": str(other.cert), **both}, both):  # a wrong CA; the system's CAs
        with _publisher(tls_gateway, **tls) as client, pytest.raises(PublishError) as info:
            client.publish([event()])
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert len(tls_gateway.verified) == before


def test_a_client_certificate_from_another_ca_is_refused(
    tls_gateway: TLSGateway, tmp_path: Path
) -> None:
    ensure_ca(tmp_path)
    stranger = issue(tmp_path, "stranger")  # signed by a CA the gateway does not trust
    ca = str(tls_gateway.keys / "tls" / "ca.pem")
    before = len(tls_gateway.verified)
    with (
        _publisher(
            tls_gateway, ca_file=ca, client_cert=(str(stranger.cert), str(stranger.key))
        ) as client,
        pytest.raises(PublishError, match="unreachable"),
    ):
        client.publish([event()])
    assert len(tls_gateway.verified) == before
