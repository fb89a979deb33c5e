"""Compressed request bodies (producers/encoding.py): gzip and zstd inflate to the body sent,
the size limit applies to the inflated bytes while they stream in (a decompression bomb is
refused having inflated at most the limit, memory bounded), a corrupt or truncated stream is a
400 and an unknown coding a 415, each with its code and field."""

from __future__ import annotations

import asyncio
import gzip
import json
import tracemalloc
import zlib
from collections.abc import AsyncIterator

import lz4.frame
import pytest
import zstandard

from producers.encoding import coding_of
from producers.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from producers.http import read_body
from sealstream.inflate import MAX_MEMBERS, PIECE, WRITE_SIZE, Corrupt, Inflater

LIMIT = 1_000_000
BODY = json.dumps({"events": [{"n": i, "text": "x" * 50} for i in range(2000)]}).encode()


class FakeRequest:
    """What read_body uses of a Starlette request: headers and the body as a stream."""

    def __init__(self, body: bytes, encoding: str | None, chunk: int = 16 * 1024) -> None:
        self.headers = {"content-encoding": encoding} if encoding else {}
        self._body, self._chunk = body, chunk
        self.streamed = 0

    async def stream(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._body), self._chunk):
            piece = self._body[start : start + self._chunk]
            self.streamed += len(piece)
            yield piece


def read(body: bytes, encoding: str | None, limit: int = LIMIT, chunk: int = 16 * 1024) -> bytes:
    return asyncio.run(read_body(FakeRequest(body, encoding, chunk), limit))  # type: ignore[arg-type]


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=19).compress(data)


@pytest.mark.parametrize("chunk", [1, 7, 16 * 1024])
def test_gzip_and_zstd_bodies_inflate_to_what_was_sent_whatever_the_chunking(chunk: int) -> None:
    assert read(gzip.compress(BODY), "gzip", chunk=chunk) == BODY
    assert read(gzip.compress(BODY), "x-gzip", chunk=chunk) == BODY
    assert read(zstd(BODY), "zstd", chunk=chunk) == BODY
    # several gzip members in a row are one body (RFC 1952), as `cat a.gz b.gz` makes
    two = gzip.compress(BODY[:5000]) + gzip.compress(BODY[5000:])
    assert read(two, "gzip", chunk=chunk) == BODY
    assert read(BODY, None) == read(BODY, "identity") == BODY


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_decompression_bomb_is_413_having_inflated_at_most_the_limit(encoding: str) -> None:
    inflated = 500 * 1024 * 1024  # 500 MiB of zeros: about 500 KB as gzip, 16 KB as zstd
    zeros = b"\0" * (8 * 1024 * 1024)
    if encoding == "gzip":
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        bomb = b"".join(compressor.compress(zeros) for _ in range(inflated // len(zeros)))
        bomb += compressor.flush()
    else:
        writer = zstandard.ZstdCompressor(level=3).compressobj()
        bomb = b"".join(writer.compress(zeros) for _ in range(inflated // len(zeros)))
        bomb += writer.flush()
    del zeros
    assert len(bomb) < LIMIT  # the compressed body passes the plain size check
    tracemalloc.start()
    try:
        with pytest.raises(RequestTooLarge) as refused:
            read(bomb, encoding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.value.status == 413 and refused.value.code == "body_too_large"
    assert f"{encoding}-decoded request body is over the limit" in refused.value.message
    # what was held: the inflated limit, one output buffer, the chunk being read, bookkeeping
    assert peak < LIMIT + 2 * WRITE_SIZE + 1024 * 1024, peak


def test_the_limit_counts_inflated_bytes_exactly() -> None:
    body = b"a" * 1000
    assert read(gzip.compress(body), "gzip", limit=1000) == body
    assert read(zstd(body), "zstd", limit=1000) == body
    for encoding, packed in (("gzip", gzip.compress(body)), ("zstd", zstd(body))):
        with pytest.raises(RequestTooLarge):
            read(packed, encoding, limit=999)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b"not gzip at all"),
        ("gzip", gzip.compress(BODY)[:-20]),  # truncated: the stream ends early
        ("gzip", b""),
        ("zstd", b"not zstd at all"),
        ("zstd", zstandard.ZstdCompressor().compress(BODY)[:-20]),  # cut off: not a shorter body
        ("zstd", zstandard.ZstdCompressor().compress(BODY * 5)[:-20]),  # past whole blocks
        ("gzip", gzip.compress(BODY)[:100] + b"\xff" * 50 + gzip.compress(BODY)[150:]),
    ],
)
def test_a_corrupt_or_truncated_stream_is_400_naming_the_coding(encoding: str, body: bytes) -> None:
    with pytest.raises(InvalidRequest) as refused:
        read(body, encoding)
    assert refused.value.status == 400 and refused.value.code == "bad_content_encoding"
    assert refused.value.field == "body" and f"not valid {encoding}" in refused.value.message


@pytest.mark.parametrize("header", ["br", "deflate", "gzip, zstd", "compress"])
def test_an_unknown_or_stacked_coding_is_415_and_lists_what_is_supported(header: str) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        coding_of(header)
    assert refused.value.status == 415 and refused.value.code == "unsupported_content_encoding"
    assert refused.value.field == "Content-Encoding" and "gzip, zstd" in refused.value.message


def members(encoding: str, count: int) -> bytes:
    """``count`` gzip members or zstd frames in a row, each of one piece of the body."""
    size = len(BODY) // count + 1
    pieces = [BODY[i * size : (i + 1) * size] for i in range(count)]
    if encoding == "gzip":
        return b"".join(gzip.compress(p, mtime=0) for p in pieces)
    return b"".join(zstandard.ZstdCompressor().compress(p) for p in pieces)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_body_of_up_to_max_members_inflates_and_one_past_is_400(encoding: str) -> None:
    """Each member's end made the decompressor copy the rest of the body: 116,508 empty zstd
    frames (1 MiB) held the event loop for 3.6 s, 52,000 empty gzip members for 0.7 s."""
    assert read(members(encoding, MAX_MEMBERS), encoding) == BODY
    with pytest.raises(InvalidRequest) as refused:
        read(members(encoding, MAX_MEMBERS + 1), encoding)
    assert refused.value.status == 400 and refused.value.code == "bad_content_encoding"
    assert f"more than {MAX_MEMBERS} {encoding}" in refused.value.message


def test_a_body_of_empty_gzip_members_is_refused_before_it_is_all_read() -> None:
    empty = gzip.compress(b"", mtime=0)
    request = FakeRequest(empty * 50_000, "gzip")
    with pytest.raises(InvalidRequest):
        asyncio.run(read_body(request, LIMIT))  # type: ignore[arg-type]
    assert request.streamed < len(empty) * (MAX_MEMBERS + 1) + 16 * 1024  # stopped at the cap


@pytest.mark.parametrize("chunk", [1, 5, PIECE + 1, 3 * PIECE])
def test_members_and_frames_split_across_pieces_and_chunks_inflate(chunk: int) -> None:
    for encoding in ("gzip", "zstd"):
        assert read(members(encoding, 37), encoding, chunk=chunk) == BODY
    lz4_body = b"".join(lz4.frame.compress(BODY[i : i + 9000]) for i in range(0, len(BODY), 9000))
    inflater = Inflater("lz4", LIMIT)
    for start in range(0, len(lz4_body), chunk):
        inflater.feed(lz4_body[start : start + chunk])
    assert inflater.finish() == BODY


def test_lz4_frames_past_max_members_are_corrupt_too() -> None:
    frame = lz4.frame.compress(b"x")
    inflater = Inflater("lz4", LIMIT)
    with pytest.raises(Corrupt, match=f"more than {MAX_MEMBERS} lz4 frames"):
        inflater.feed(frame * (MAX_MEMBERS + 1))


def test_an_empty_body_is_empty_in_zstd_and_cut_off_in_gzip() -> None:
    assert Inflater("zstd", LIMIT).finish() == b""  # as before the frame count
    with pytest.raises(Corrupt):
        Inflater("gzip", LIMIT).finish()
