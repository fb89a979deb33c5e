from __future__ import annotations

from producers.ids import uuid7


def test_uuid7_layout_and_order() -> None:
    a, b = uuid7(1_700_000_000_000), uuid7(1_700_000_000_001)
    assert a.version == 7 and a.variant == "specified in RFC 4122"
    assert a.int >> 80 == 1_700_000_000_000
    assert str(a) < str(b)
    assert len({uuid7(5) for _ in range(1000)}) == 1000
