"""Cold files are written from the Avro bodies the worker produced, not re-encoded: the file
must be the very bytes ``fastavro.writer`` gives for the decoded records (same blocks, same
sync markers), so files written before and after this change, and a batch rebuilt after a
crash, agree byte for byte."""

from __future__ import annotations

import functools
import hashlib
import io
import json

import fastavro
import pytest

from schemas.catalog import Catalog
from schemas.samples import signed_chain
from schemas.serde import WIRE_HEADER_SIZE, Decoder, Encoder
from sealstream.keys import HmacKeyring
from sinks.objects.files import SYNC_INTERVAL, BucketKey, ColdFile, read_file

SCHEMA = Catalog().signed_schema()
ENCODER = Encoder(11, SCHEMA)
DECODER = Decoder(lambda schema_id: json.dumps(SCHEMA))


@functools.cache
def chain(count: int) -> list[bytes]:
    """``count`` signed events as the worker writes them (random ids: made once per count)."""
    keys = HmacKeyring("k1", {"k1": b"k" * 32})
    return [ENCODER.encode(r) for r in signed_chain(count, "events.raw/0", keys)]


def cold(count: int) -> ColdFile:
    values = chain(count)
    decoded = [DECODER.decode(v)[1] for v in values]
    key = BucketKey("acme", "payment", "2026-12-01", "10", 11)
    return ColdFile(
        "events/x.avro",
        key,
        "events.signed",
        0,
        decoded,
        list(range(100, 100 + count)),
        [v[WIRE_HEADER_SIZE:] for v in values],
    )


def reencoded(one: ColdFile, codec: str) -> bytes:
    """What ``fastavro.writer`` makes of the decoded records, with the same header fields:
    how cold files were written before they were written from the received bodies."""
    buf = io.BytesIO()
    fastavro.writer(
        buf,
        DECODER.schema(11),
        one.records,
        codec=codec,
        metadata=one.metadata(),
        sync_marker=one.sync_marker(),
    )
    return buf.getvalue()


@pytest.mark.parametrize("codec", ["null", "deflate", "zstandard"])
@pytest.mark.parametrize("count", [1, 2, 25, 26, 27, 200, 1001])
def test_bodies_give_the_bytes_a_re_encoding_gives(codec: str, count: int) -> None:
    one = cold(count)
    passed, manifest = one.build(DECODER.schema(11), codec)
    assert passed == reencoded(one, codec)
    assert json.loads(manifest)["sha256"] == hashlib.sha256(passed).hexdigest()
    records, offsets, _ = read_file(passed)
    assert len(records) == count and offsets == list(range(100, 100 + count))


def test_blocks_close_where_fastavro_closes_them() -> None:
    """More than one block: the split point matters, not just the records."""
    data, _ = cold(200).build(DECODER.schema(11), "null")
    blocks = list(fastavro.block_reader(io.BytesIO(data)))  # type: ignore[arg-type]
    assert len(blocks) > 2
    assert all(b.size >= SYNC_INTERVAL for b in blocks[:-1])


def test_the_stored_bytes_are_the_bodies_as_received() -> None:
    """A body is stored as it came, even where a re-encoding would differ: the event id's
    length written as a two-byte varint decodes to the same record, and the file keeps those
    bytes (what was signed and hashed downstream), not a copy re-made from the record."""
    one = cold(1)
    assert one.bodies[0][0] == 0x48  # 36 characters, zigzag 72
    odd = b"\xc8\x00" + one.bodies[0][1:]
    assert (
        DECODER.decode(ENCODER.encode(one.records[0])[:WIRE_HEADER_SIZE] + odd)[1]
        == (one.records[0])
    )
    one.bodies = [odd]
    data, _ = one.build(DECODER.schema(11), "null")
    assert odd in data
    assert read_file(data)[0] == one.records
    assert odd not in reencoded(one, "null")
