"""A small Python client for upstream systems that publish to the Sealstream gateway.

    from producers.client import SealstreamClient
    with SealstreamClient("https://gateway", token) as client:
        result = client.publish([{"event_type": "login", "tenant": "acme", ...}])
        for receipt in result.receipts:
            assert client.verify(receipt)

- Every event gets an ``event_id`` before the first attempt, so a retry (timeouts, 429, 503,
  connection errors) sends the same ids and the gateway answers with the first receipts
  instead of producing twice.
- Retries back off exponentially with full jitter and honour ``Retry-After``.
- Events rejected for their content (400/403/413/422) are returned, not retried.
- ``verify`` checks a receipt's Ed25519 signature with the gateway's published keys.
- HTTPS: the server certificate is always verified, against the system's CAs or ``ca_file``
  (the local stack's is ``.sealstream/keys/tls/ca.pem``); ``client_cert=(cert, key)`` for a
  gateway that requires mutual TLS. Verification cannot be switched off here.
"""

from __future__ import annotations

import random
import ssl
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from producers.receipts import verify_receipt

RETRYABLE = {429, 502, 503, 504}


class PublishError(RuntimeError):
    """The gateway could not take the events after every retry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class PublishResult:
    receipts: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SealstreamClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        batch_size: int = 100,
        max_attempts: int = 6,
        backoff_s: float = 0.2,
        max_backoff_s: float = 10.0,
        timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        ca_file: str | None = None,
        client_cert: tuple[str, str] | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        tls = ssl.create_default_context(cafile=ca_file)  # verifies the host name and chain
        if client_cert is not None:
            tls.load_cert_chain(*client_cert)
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout_s,
            transport=transport,
            verify=tls,
        )
        self._keys: dict[str, Any] | None = None

    def __enter__(self) -> SealstreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def publish(
        self, events: Iterable[dict[str, Any]], correlation_id: str | None = None
    ) -> PublishResult:
        """Publish events in batches; return every receipt and every rejection."""
        prepared = [{**e, "event_id": e.get("event_id") or str(uuid.uuid4())} for e in events]
        result = PublishResult()
        for chunk in _chunks(prepared, self.batch_size):
            self._send(chunk, correlation_id, result)
        return result

    def _send(
        self, chunk: list[dict[str, Any]], correlation_id: str | None, result: PublishResult
    ) -> None:
        pending = chunk
        headers = {"X-Correlation-ID": correlation_id} if correlation_id else {}
        for attempt in range(1, self.max_attempts + 1):
            result.attempts += 1
            try:
                response = self._http.post("/v1/events", json={"events": pending}, headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.max_attempts:
                    raise PublishError(f"gateway unreachable: {exc}") from exc
                self._sleep(attempt, None)
                continue
            if response.status_code in RETRYABLE and not _has_results(response):
                if attempt == self.max_attempts:
                    raise PublishError(
                        f"gateway answered {response.status_code}", response.status_code
                    )
                self._sleep(attempt, response.headers.get("Retry-After"))
                continue
            if response.status_code == 401:
                raise PublishError("authentication failed: " + response.text, 401)
            body = response.json()
            accepted = body.get("accepted", [])
            result.receipts.extend(a["receipt"] for a in accepted)
            retry: list[dict[str, Any]] = []
            for rejection in body.get("rejected", []):
                event = pending[rejection["index"]]
                if rejection.get("status") in RETRYABLE:
                    retry.append(event)
                else:
                    result.rejected.append({**rejection, "event_id": event["event_id"]})
            if not retry:
                return
            if attempt == self.max_attempts:
                raise PublishError(f"{len(retry)} events still refused after {attempt} attempts")
            pending = retry
            self._sleep(attempt, response.headers.get("Retry-After"))

    def _sleep(self, attempt: int, retry_after: str | None) -> None:
        delay = random.uniform(0, min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
        if retry_after is not None and retry_after.isdigit():
            delay = max(delay, float(retry_after))
        time.sleep(delay)

    def keys(self) -> dict[str, Any]:
        if self._keys is None:
            response = self._http.get("/.well-known/sealstream/keys")
            response.raise_for_status()
            self._keys = response.json()
        return self._keys

    def verify(self, receipt: dict[str, Any]) -> bool:
        """True if the receipt is signed by the gateway and unchanged."""
        return verify_receipt(receipt, self.keys())


def _has_results(response: httpx.Response) -> bool:
    try:
        return "accepted" in response.json()
    except ValueError:
        return False
