"""`sealstream up` serving its gateway over HTTPS with mutual TLS against the stack's own CA:
its health check, dashboard and demo reach the gateway over TLS with the stack's client
certificate, a plain-HTTP request or a TLS one without a client certificate is refused, and
the audit decisions of the demo's requests name the certificate's subject."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from ops.upjob import wait_for
from tests.integration.pipeline import Pipeline

pytestmark = pytest.mark.integration

UP_SUBJECT = "CN=sealstream-up,O=Sealstream local stack"


def test_up_serves_https_with_mtls_and_its_demo_is_audited_by_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "stack" / "keys" / "tls" / "ca.pem"  # made by the stack on first start
    job = Pipeline(
        tmp_path, SEALSTREAM_GATEWAY_TLS="true", SEALSTREAM_GATEWAY_TLS_CLIENT_CA_FILE=str(ca)
    )
    try:
        job.start()  # returns once every service, the gateway too, answered its health check
        url = f"https://127.0.0.1:{job.port['SEALSTREAM_GATEWAY_PORT']}"
        assert url in job.log.read_text()  # `up` tells where the gateway is, with https

        # plain HTTP on the TLS port gets no HTTP answer
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https:", "http:") + "/healthz", timeout=5)
        # TLS with the stack's CA but no client certificate: refused in the handshake
        with pytest.raises((httpx.HTTPError, ssl.SSLError)):
            httpx.get(url + "/healthz", verify=ssl.create_default_context(cafile=ca), timeout=5)

        done = job.cli("demo", "--dir", str(job.dir), "--per-tenant", "5", "--json", timeout=400)
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["ok"] and summary["accepted"] > 0, summary

        def audited() -> list[list[object]]:
            rows = job.query(
                "SELECT DISTINCT client_cert FROM audit_decisions "
                "WHERE correlation_id LIKE 'demo-%'"
            )
            return rows if rows else []

        rows = wait_for(audited, 120, "the demo's decisions in ClickHouse")
        assert rows == [[UP_SUBJECT]], rows
        # the dashboard scrapes the gateway over the same TLS: its accepted count moved
        dash = job.port["SEALSTREAM_UP_DASHBOARD_PORT"]

        def scraped() -> float:
            data = httpx.get(f"http://127.0.0.1:{dash}/dashboard/data.json", timeout=5).json()
            return float(data["latest"].get("gateway", {}).get("accepted") or 0)

        wait_for(scraped, 60, "the dashboard to read the gateway's metrics over TLS")
    finally:
        job.stop()
