"""Masking for the hot route: personal data becomes a keyed pseudonym analysts can group by.

A field the schema marks ``"pii": true`` is replaced in the hot copy by
``pii:<kind>:<16 hex>``, the first 64 bits of HMAC-SHA256(key, tenant, kind, value). The same
value gives the same pseudonym within a tenant (so GROUP BY still works), different tenants
get unrelated pseudonyms, and without the key the value cannot be guessed by hashing
candidates. The cold copy keeps the original; the signed record lists which fields were masked.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from sealstream.keys import HmacKeyring


class Masker:
    def __init__(self, keys: HmacKeyring, pii_fields: dict[str, dict[str, str]]) -> None:
        """``pii_fields``: event type -> {payload field -> PII kind}."""
        self._key = keys.keys[keys.active]
        self.pii_fields = pii_fields

    def pseudonym(self, tenant: str, kind: str, value: Any) -> str:
        message = "\x1f".join((tenant, kind, str(value))).encode()
        digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()[:16]
        return f"pii:{kind}:{digest}"

    def mask(
        self, tenant: str, event_type: str, payload: dict[str, Any]
    ) -> tuple[dict[str, Any], list[str]]:
        """The hot copy of ``payload`` and the sorted names of the fields masked in it."""
        fields = self.pii_fields.get(event_type, {})
        hot = dict(payload)
        masked = []
        for name, kind in fields.items():
            value = hot.get(name)
            if value is None:
                continue
            hot[name] = self.pseudonym(tenant, kind, value)
            masked.append(name)
        return hot, sorted(masked)
