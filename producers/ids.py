"""UUIDv7 event ids (RFC 9562): time-ordered, so ids sort by arrival and index well.

Python 3.11's ``uuid`` module has no ``uuid7`` (it arrives in 3.14); this is the RFC's layout:
48 bits of Unix milliseconds, version 7, 12 random bits, variant, 62 random bits.
"""

from __future__ import annotations

import os
import time
import uuid


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)
