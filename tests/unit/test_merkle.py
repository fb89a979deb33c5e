"""RFC 9162 Merkle trees: the builder against the RFC's own verification procedure, and the
tree hash against the RFC's recursive definition written out separately."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealstream import merkle


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1, literally."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def test_empty_tree_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one leaf"):
        merkle.tree([])


@pytest.mark.parametrize("size", [*range(1, 34), 63, 64, 65, 100, 127, 128, 129, 1000])
def test_every_leaf_verifies_and_root_is_the_rfc_tree_hash(size: int) -> None:
    leaves = [f"leaf-{i}".encode() for i in range(size)]
    root, proofs = merkle.tree(leaves)
    assert root == mth(leaves)
    for index, proof in enumerate(proofs):
        assert len(proof) <= max(1, (size - 1).bit_length())
        assert merkle.verify_inclusion(leaves[index], index, size, proof, root)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(max_size=40), min_size=1, max_size=70),
    st.data(),
)
def test_any_change_breaks_the_proof(leaves: list[bytes], data: st.DataObject) -> None:
    root, proofs = merkle.tree(leaves)
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = proofs[index]
    # (the tree size itself is not bound by a proof: leaf 0 of 3 and of 4 leaves has the same
    # path shape; the signed tree head binds it, tests/unit/test_gateway_receipts.py)
    assert merkle.verify_inclusion(leaves[index], index, size, proof, root)
    # another leaf's content at this index
    assert not merkle.verify_inclusion(leaves[index] + b"x", index, size, proof, root)
    # a wrong index, an index past the end, a shorter or longer proof, a flipped sibling
    other = data.draw(st.integers(0, size - 1))
    if other != index and leaves[other] != leaves[index]:
        assert not merkle.verify_inclusion(leaves[index], other, size, proof, root)
    assert not merkle.verify_inclusion(leaves[index], size, size, proof, root)
    if proof:
        assert not merkle.verify_inclusion(leaves[index], index, size, proof[:-1], root)
        flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        assert not merkle.verify_inclusion(leaves[index], index, size, flipped, root)
    assert not merkle.verify_inclusion(leaves[index], index, size, [*proof, root], root)
