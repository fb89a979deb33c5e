"""HTTPS for the gateway: uvicorn's TLS settings from GatewaySettings, and the verified client
certificate of a mutual-TLS connection handed to the app as the ASGI TLS extension.

uvicorn terminates TLS but does not (as of 0.54) fill ``scope["extensions"]["tls"]``, so the
app could not know who the client certificate names. :class:`TLSHttpToolsProtocol` is
uvicorn's own httptools protocol with the extension added to each request's scope from the
connection's ``ssl_object`` (the certificate was verified against the CA during the
handshake: with ``tls_client_ca_file`` set, a connection without one never gets this far).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sealstream.keys import check_private
from sealstream.settings import GatewaySettings, KeySettings
from sealstream.tls import issue, subject_of


class TLSHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with ``scope["extensions"]["tls"]`` on TLS connections."""

    _tls: dict[str, Any] | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        self._tls = {
            "client_cert_name": subject_of(der) if der else None,
            "client_cert_error": None,
            "tls_version": ssl_object.version(),
        }

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope.setdefault("extensions", {})["tls"] = self._tls  # type: ignore[assignment]


def uvicorn_tls(settings: GatewaySettings, keys: KeySettings) -> dict[str, Any]:
    """uvicorn.run's TLS keyword arguments: none for plain HTTP; the configured certificate
    and key, or the local stack's own (issued by its CA, ``sealstream/tls.py``); with
    ``tls_client_ca_file``, client certificates required and verified against it."""
    if not settings.tls:
        return {}
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ValueError(
            "set both SEALSTREAM_GATEWAY_TLS_CERT_FILE and ..._TLS_KEY_FILE, or neither"
        )
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        cert, key = settings.tls_cert_file, settings.tls_key_file
    else:
        own = issue(keys.dir, "gateway", server_hosts=[settings.host])
        cert, key = own.cert, own.key
    check_private(key)
    options: dict[str, Any] = {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "http": TLSHttpToolsProtocol,
    }
    if settings.tls_client_ca_file is not None:
        options["ssl_ca_certs"] = str(Path(settings.tls_client_ca_file))
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options
