"""Compressed request bodies: ``Content-Encoding: gzip`` or ``zstd``, inflated while the body
streams in, with the gateway's size limit applied to the inflated bytes
(``sealstream.inflate``: a bomb is 413 having inflated at most the limit plus 64 KiB, a
cut-off or corrupt stream 400). The compressed bytes count against the same limit (they can
only be smaller for a body worth sending).
"""

from __future__ import annotations

from producers.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from sealstream import inflate

CODINGS = ("gzip", "zstd")


def coding_of(header: str | None) -> str | None:
    """The body's one content coding (None for identity); 415 for anything else."""
    coding = (header or "").strip().lower()
    if coding in ("", "identity"):
        return None
    if coding == "x-gzip":  # RFC 9110 8.4.1.3: the same as gzip
        return "gzip"
    if coding in CODINGS:
        return coding
    raise UnsupportedMediaType(
        f"Content-Encoding {header!r} is not supported: send the body uncompressed, or as one "
        f"of {', '.join(CODINGS)}",
        code="unsupported_content_encoding",
        field="Content-Encoding",
    )


class Inflater:
    """Feed the compressed chunks as they arrive; ``finish`` gives the inflated body; the
    gateway's 413 and 400 for a body too large or not of its coding."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding, self.limit = coding, limit
        self._inflater = inflate.Inflater(coding, limit)

    def feed(self, chunk: bytes) -> None:
        try:
            self._inflater.feed(chunk)
        except inflate.TooLarge:
            raise self._too_large() from None
        except inflate.Corrupt as error:
            raise self._corrupt(error) from None

    def finish(self) -> bytes:
        try:
            return self._inflater.finish()
        except inflate.TooLarge:
            raise self._too_large() from None
        except inflate.Corrupt as error:
            raise self._corrupt(error) from None

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(
            f"the {self.coding}-decoded request body is over the limit of {self.limit} bytes",
            code="body_too_large",
        )

    def _corrupt(self, error: Exception) -> InvalidRequest:
        return InvalidRequest(
            f"the body is not valid {self.coding} (Content-Encoding: {self.coding}): {error}",
            code="bad_content_encoding",
            field="body",
        )
