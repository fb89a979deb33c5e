"""Merkle trees as RFC 9162 (Certificate Transparency v2) defines them, section 2.1.

The gateway signs one tree head per request instead of one signature per event: each event's
receipt is a leaf, and carries its inclusion proof up to the signed root (docs/gateway.md).

- leaf hash ``SHA-256(0x00 || leaf)``, interior node ``SHA-256(0x01 || left || right)``;
- a tree of ``n`` leaves splits at ``k``, the largest power of two below ``n``;
- an inclusion proof lists the sibling hashes from the leaf up to the root.

Written here rather than taken from a package: the few Python Merkle libraries on PyPI either
build other tree shapes (duplicating the last node, as Bitcoin does) or are unmaintained, and
the whole algorithm is the thirty lines below, checked in the tests against RFC 9162's own
verification procedure (``verify_inclusion``), which is written independently of the builder.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def tree(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree over ``leaves`` (the leaf data, not yet hashed) and every leaf's
    inclusion proof, bottom-up. One pass: n leaf hashes, n - 1 node hashes, n log n list
    appends."""
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    hashes = [leaf_hash(leaf) for leaf in leaves]
    proofs: list[list[bytes]] = [[] for _ in leaves]

    def build(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return hashes[lo]
        mid = lo + _split(hi - lo)
        left, right = build(lo, mid), build(mid, hi)
        for index in range(lo, mid):
            proofs[index].append(right)
        for index in range(mid, hi):
            proofs[index].append(left)
        return node_hash(left, right)

    return build(0, len(hashes)), proofs


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 section 2.1.3.2: is ``leaf`` the ``index``-th of the ``tree_size`` leaves whose
    root is ``root``?"""
    if not 0 <= index < tree_size:
        return False
    fn, sn = index, tree_size - 1
    r = leaf_hash(leaf)
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
