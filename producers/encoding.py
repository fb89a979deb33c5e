"""Compressed request bodies: ``Content-Encoding: gzip`` or ``zstd``, inflated while the body
streams in, with the gateway's size limit applied to the inflated bytes.

A decompression bomb (a few kilobytes that inflate to gigabytes) is refused with 413 once the
limit is passed, having inflated at most the limit plus one output buffer (64 KiB): gzip through
``zlib``'s ``max_length``, zstd through a ``stream_writer`` whose sink refuses the byte past the
limit. The compressed bytes count against the same limit (they can only be smaller for a body
worth sending).

Written here because what exists does not fit: Starlette's GZipMiddleware compresses responses
only, and the ASGI decompression middlewares we found inflate a whole body (or a whole chunk)
before any limit is checked, which is exactly what a bomb exploits.
"""

from __future__ import annotations

import zlib
from typing import Any

from producers.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType

CODINGS = ("gzip", "zstd")
WRITE_SIZE = 64 * 1024  # the most one step of inflation makes before the limit is checked


class _Over(Exception):
    """The inflated body passed the limit."""


class _Bounded:
    """Collects inflated bytes, refusing the byte past ``limit`` (zstd's stream_writer calls
    ``write`` with at most WRITE_SIZE bytes at a time)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.size += len(data)
        if self.size > self.limit:
            raise _Over
        self.parts.append(bytes(data))
        return len(data)


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
    """Feed the compressed chunks as they arrive; ``finish`` gives the inflated body."""

    def __init__(self, coding: str, limit: int) -> None:
        self.coding, self.limit = coding, limit
        self.out = _Bounded(limit)
        self._gzip: Any = None
        self._zstd: Any = None
        if coding == "gzip":
            self._gzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        else:
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().stream_writer(
                self.out,  # type: ignore[arg-type]  # only write() is called
                write_size=WRITE_SIZE,
                closefd=False,
            )

    def feed(self, chunk: bytes) -> None:
        try:
            if self._gzip is not None:
                self._feed_gzip(chunk)
            else:
                self._zstd.write(chunk)
        except _Over:
            raise self._too_large() from None
        except Exception as error:  # zlib.error, zstandard.ZstdError: a corrupt stream
            raise self._corrupt(error) from None

    def _feed_gzip(self, data: bytes) -> None:
        while data:
            room = max(1, min(WRITE_SIZE, self.limit - self.out.size + 1))
            self.out.write(self._gzip.decompress(data, room))
            if not self._gzip.eof:
                data = self._gzip.unconsumed_tail
                continue
            data = self._gzip.unused_data  # RFC 1952: a body may hold several members in a row
            if data:
                self._gzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    def finish(self) -> bytes:
        if self._gzip is not None and not self._gzip.eof:
            raise self._corrupt(ValueError("the gzip stream ends early"))
        if self._zstd is not None:
            try:
                self._zstd.flush()
            except _Over:
                raise self._too_large() from None
            except Exception as error:  # zstandard.ZstdError
                raise self._corrupt(error) from None
        return b"".join(self.out.parts)

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
