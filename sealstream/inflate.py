"""Compressed request bodies inflated within a limit, for every HTTP edge of the pipeline (the
gateway's ``POST /v1/events``, the ClickHouse interface of the query endpoint).

A decompression bomb (a few kilobytes that inflate to gigabytes) stops once ``limit`` bytes are
inflated, having made at most one output buffer (64 KiB) past them: gzip and deflate through
``zlib``'s ``max_length``, zstd through a ``stream_writer`` whose sink refuses the byte past
the limit, lz4 through its frame decompressor's ``max_length``. A stream that ends early, or
that is not its coding at all, is ``Corrupt``: a cut-off body never passes for a shorter one.
Each edge maps ``TooLarge`` and ``Corrupt`` to its own error.

The work is linear in the body, whatever its shape: the compressed bytes go to the
decompressors in pieces of at most PIECE bytes, so what a decompressor copies out at the end of
a member (``unused_data``, the rest of its input) is at most a piece, and a body may hold at
most MAX_MEMBERS gzip members, zstd frames or lz4 frames. Before, a 1 MiB body of 116,508
empty zstd frames took 3.6 s of the event loop (each frame copied the rest of the body), and
one of 52,000 empty gzip members 0.7 s.

Written here because what exists does not fit: Starlette's GZipMiddleware compresses responses
only, and the ASGI decompression middlewares we found inflate a whole body (or a whole chunk)
before any limit is checked, which is exactly what a bomb exploits.
"""

from __future__ import annotations

import zlib
from typing import Any

CODINGS = ("gzip", "deflate", "zstd", "lz4")
WRITE_SIZE = 64 * 1024  # the most one step of inflation makes before the limit is checked
PIECE = 4 * 1024  # the most compressed input one decompressor call takes
MAX_MEMBERS = 1024  # gzip members, zstd or lz4 frames in one body (a client writes a few)
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class TooLarge(Exception):
    """The inflated body passed the limit; ``Inflater.inflated`` holds its first bytes."""


class Corrupt(Exception):
    """The body is not valid data of its coding, or it ends early."""


class _Bounded:
    """Collects inflated bytes up to ``limit`` and refuses the byte past it (zstd's
    stream_writer calls ``write`` with at most WRITE_SIZE bytes at a time)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        room = self.limit - self.size
        self.parts.append(bytes(data[:room]))
        self.size += len(data)
        if self.size > self.limit:
            raise TooLarge
        return len(data)


class Inflater:
    """Feed the compressed chunks as they arrive; ``finish`` gives the inflated body."""

    def __init__(self, coding: str, limit: int) -> None:
        if coding not in CODINGS:
            raise ValueError(f"no inflater for {coding!r}")
        self.coding, self.limit = coding, limit
        self.out = _Bounded(limit)
        self._zlib: Any = None
        self._zstd: Any = None
        self._lz4: Any = None
        self._input: list[bytes] = []  # zstd's: checked for whole frames by ``finish``
        self.members = 1
        if coding in _WBITS:
            self._zlib = zlib.decompressobj(_WBITS[coding])
        elif coding == "zstd":
            import zstandard

            self._zstd = zstandard.ZstdDecompressor().stream_writer(
                self.out,  # type: ignore[arg-type]  # only write() is called
                write_size=WRITE_SIZE,
                closefd=False,
            )
        else:
            import lz4.frame

            self._lz4 = lz4.frame.LZ4FrameDecompressor()

    @property
    def inflated(self) -> bytes:
        return b"".join(self.out.parts)

    def feed(self, chunk: bytes) -> None:
        """TooLarge past the limit, Corrupt for data that is not of the coding."""
        try:
            if self._zstd is not None:
                self._input.append(chunk)
                self._zstd.write(chunk)
                return
            view = memoryview(chunk)
            for start in range(0, len(view), PIECE):
                piece = view[start : start + PIECE]
                if self._zlib is not None:
                    self._feed_zlib(piece)
                else:
                    self._feed_lz4(piece)
        except (TooLarge, Corrupt):
            raise
        except Exception as error:  # zlib.error, zstandard.ZstdError, RuntimeError (lz4)
            raise Corrupt(f"not valid {self.coding} data: {error}") from None

    def _next_member(self) -> None:
        self.members += 1
        if self.members > MAX_MEMBERS:
            raise Corrupt(
                f"the body holds more than {MAX_MEMBERS} {self.coding} "
                f"{'members' if self._zlib is not None else 'frames'}: send it as one"
            )

    def _feed_zlib(self, data: Any) -> None:
        while data:
            room = max(1, min(WRITE_SIZE, self.limit - self.out.size + 1))
            self.out.write(self._zlib.decompress(data, room))
            if not self._zlib.eof:
                data = self._zlib.unconsumed_tail
                continue
            data = self._zlib.unused_data  # RFC 1952: a body may hold several members in a row
            if data:
                self._next_member()
                self._zlib = zlib.decompressobj(_WBITS[self.coding])

    def _feed_lz4(self, data: Any) -> None:
        while data or (self._lz4.needs_input is False and not self._lz4.eof):
            if self._lz4.eof:  # the frame before ended (in this piece or the last): a new one
                self._next_member()
                import lz4.frame

                self._lz4 = lz4.frame.LZ4FrameDecompressor()
            room = max(1, min(WRITE_SIZE, self.limit - self.out.size + 1))
            self.out.write(self._lz4.decompress(data, max_length=room))
            data = self._lz4.unused_data if self._lz4.eof else b""  # several frames in a row

    def finish(self) -> bytes:
        """The whole inflated body; Corrupt when the stream ends early."""
        ended = True
        if self._zlib is not None:
            ended = self._zlib.eof
        elif self._lz4 is not None:
            ended = self._lz4.eof
        elif self._zstd is not None:
            try:
                self._zstd.flush()
            except TooLarge:
                raise
            except Exception as error:  # zstandard.ZstdError
                raise Corrupt(f"not valid zstd data: {error}") from None
            ended = _whole_zstd_frames(b"".join(self._input))
        if not ended:
            raise Corrupt(f"the {self.coding} stream ends early: the body was cut off")
        return self.inflated


def _whole_zstd_frames(data: bytes) -> bool:
    """Whether ``data`` ends where a zstd frame ends, in at most MAX_MEMBERS frames (Corrupt
    past them). Run after the bounded writer inflated all of it within the limit, so decoding
    it once more makes no more than that; in pieces, so a frame's end copies at most one."""
    import zstandard

    decompressor = zstandard.ZstdDecompressor()
    frame, frames = decompressor.decompressobj(), 1
    view = memoryview(data)
    for start in range(0, len(view), PIECE):
        piece: Any = view[start : start + PIECE]
        while piece:
            if frame.eof:
                frames += 1
                if frames > MAX_MEMBERS:
                    raise Corrupt(
                        f"the body holds more than {MAX_MEMBERS} zstd frames: send it as one"
                    )
                frame = decompressor.decompressobj()
            try:
                frame.decompress(piece)
            except zstandard.ZstdError:
                return False
            piece = frame.unused_data if frame.eof else b""
    return frame.eof or not data  # an empty body is an empty body, as before
