"""ClickHouse's Native format, written by hand for the one answer the query endpoint cannot
take from the engine: the hello of clickhouse-go (Grafana's ClickHouse plugin) over HTTP.

Over HTTP a client may send ``client_protocol_version``, and a ClickHouse server then writes
its Native blocks in that revision: a block info before each block's columns and rows, and a
custom-serialization flag after each column's type. The embedded engine writes revision 0
only, and the endpoint says so: its ``revision()`` is 0. clickhouse-go reads every block in
the revision the server's hello reported, so after the hello it reads revision 0, as the
engine writes it; but it reads the hello itself in the revision it sent, before it knows
ours. So the hello's answer is rendered by the engine in TabSeparatedWithNamesAndTypes and
written here as one Native block in the client's revision. (clickhouse-connect checks the
bytes of its own probe, finds revision 0 and reads revision 0 from then on.)

Hand-written because no Python library writes ClickHouse's Native format outside a client's
own insert path; it writes the two types of the hello (String, UInt32) and refuses others.
"""

from __future__ import annotations

import struct

# ClickHouse's src/Core/ProtocolDefines.h: from this revision a column's type is followed by a
# flag saying whether it has custom serialization (never here)
MIN_REVISION_WITH_CUSTOM_SERIALIZATION = 54454
# is_overflows (field 1) false, bucket_num (field 2) -1, end of fields (0)
BLOCK_INFO = b"\x01\x00\x02\xff\xff\xff\xff\x00"
_TSV_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\\\": "\\", "\\'": "'", "\\0": "\0", "\\r": "\r"}


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(value: str) -> bytes:
    raw = value.encode()
    return varint(len(raw)) + raw


def _unescape(cell: str) -> str:
    out, i = [], 0
    while i < len(cell):
        pair = cell[i : i + 2]
        if pair in _TSV_ESCAPES:
            out.append(_TSV_ESCAPES[pair])
            i += 2
        else:
            out.append(cell[i])
            i += 1
    return "".join(out)


def _column(type_name: str, cells: list[str]) -> bytes:
    if type_name == "String":
        return b"".join(_string(cell) for cell in cells)
    if type_name == "UInt32":
        return b"".join(struct.pack("<I", int(cell)) for cell in cells)
    raise ValueError(f"no Native writer here for {type_name}")


def block(tsv: bytes, revision: int) -> bytes:
    """Rows in TabSeparatedWithNamesAndTypes as one Native block of ``revision``."""
    names, types, *rows = [
        [_unescape(cell) for cell in line.split("\t")] for line in tsv.decode().splitlines()
    ]
    out = bytearray(BLOCK_INFO if revision > 0 else b"")
    out += varint(len(names)) + varint(len(rows))
    for i, (name, type_name) in enumerate(zip(names, types, strict=True)):
        out += _string(name) + _string(type_name)
        if revision >= MIN_REVISION_WITH_CUSTOM_SERIALIZATION:
            out += b"\x00"
        out += _column(type_name, [row[i] for row in rows])
    return bytes(out)
