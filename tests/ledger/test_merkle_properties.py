"""Properties of ledger.merkle: honest proofs verify, any change is refused with ProofError, hostile
arguments only ever raise ProofError, and the stored-subtree helpers stay O(log n).

Leaves are SHA-256 leaf hashes of distinct data, so two different tree positions never share a
hash: every "rejected" below holds except with negligible (hash collision) probability.
"""

from __future__ import annotations

import itertools
from functools import cache

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger import merkle
from ledger.merkle import ProofError

MAX_N = 300
LEAVES = [merkle.leaf_hash(b"leaf %d" % i) for i in range(MAX_N)]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@cache
def root(n: int) -> bytes:
    return merkle.root_hash(LEAVES[:n])


@cache
def inclusion(index: int, n: int) -> tuple[bytes, ...]:
    return tuple(merkle.inclusion_proof(index, LEAVES[:n]))


@cache
def consistency(m: int, n: int) -> tuple[bytes, ...]:
    return tuple(merkle.consistency_proof(m, LEAVES[:n]))


@st.composite
def size_and_index(draw, max_n: int = MAX_N) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return n, draw(st.integers(0, n - 1))


@st.composite
def two_sizes(draw, max_n: int = MAX_N) -> tuple[int, int]:
    """0 < m < n: the sizes between which a consistency proof has hashes."""
    n = draw(st.integers(2, max_n))
    return draw(st.integers(1, n - 1)), n


def flip(h: bytes, byte: int, bit: int) -> bytes:
    b = bytearray(h)
    b[byte % len(b)] ^= 1 << bit
    return bytes(b)


def sides(index: int, n: int) -> list[bool]:
    """For each proof hash, leaf side first: is it a left sibling? The verifier's whole
    computation is this list, so (index, n) pairs with equal lists verify the same proofs."""
    return [hi <= index for _, hi in merkle.inclusion_proof_ranges(index, n)]


def rejected(fn, *args) -> bool:
    try:
        fn(*args)
    except ProofError:
        return True
    return False


# --- honest proofs verify --------------------------------------------------------------------


def test_every_inclusion_proof_of_every_small_tree_verifies() -> None:
    for n in range(1, 41):
        for i in range(n):
            merkle.verify_inclusion(i, n, LEAVES[i], list(inclusion(i, n)), root(n))


def test_every_consistency_proof_between_small_trees_verifies() -> None:
    for n in range(41):
        for m in range(n + 1):
            merkle.verify_consistency(m, n, root(m), root(n), list(consistency(m, n)))


@FAST
@given(size_and_index())
def test_inclusion_proofs_verify_for_every_size(case: tuple[int, int]) -> None:
    n, i = case
    merkle.verify_inclusion(i, n, LEAVES[i], list(inclusion(i, n)), root(n))


@FAST
@given(st.integers(0, MAX_N).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_consistency_proofs_verify_for_every_pair_of_sizes(case: tuple[int, int]) -> None:
    m, n = case
    merkle.verify_consistency(m, n, root(m), root(n), list(consistency(m, n)))


@FAST
@given(size_and_index())
def test_an_inclusion_proof_has_the_rfc_length(case: tuple[int, int]) -> None:
    n, i = case
    assert len(inclusion(i, n)) <= (n - 1).bit_length()
    assert len(inclusion(i, n)) == len(merkle.inclusion_proof_ranges(i, n))


# --- any change is refused -------------------------------------------------------------------


@FAST
@given(size_and_index(), st.data())
def test_a_changed_byte_in_an_inclusion_proof_hash_is_refused(case, data) -> None:
    n, i = case
    proof = list(inclusion(i, n))
    assume(proof)
    k = data.draw(st.integers(0, len(proof) - 1))
    proof[k] = flip(proof[k], data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7)))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, n, LEAVES[i], proof, root(n))


@FAST
@given(size_and_index(), st.integers(0, 31), st.integers(0, 7))
def test_a_changed_byte_in_the_leaf_hash_is_refused(case, byte: int, bit: int) -> None:
    n, i = case
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, n, flip(LEAVES[i], byte, bit), list(inclusion(i, n)), root(n))


@FAST
@given(size_and_index(), st.integers(0, 31), st.integers(0, 7))
def test_a_changed_byte_in_the_root_is_refused(case, byte: int, bit: int) -> None:
    n, i = case
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, n, LEAVES[i], list(inclusion(i, n)), flip(root(n), byte, bit))


@FAST
@given(size_and_index(), st.data())
def test_any_other_index_is_refused(case, data) -> None:
    n, i = case
    assume(n > 1)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(other, n, LEAVES[i], list(inclusion(i, n)), root(n))


@FAST
@given(size_and_index(), st.data())
def test_another_index_with_that_leaf_s_own_hash_is_refused(case, data) -> None:
    n, i = case
    assume(n > 1)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(other, n, LEAVES[other], list(inclusion(i, n)), root(n))


@FAST
@given(size_and_index(), st.integers(1, MAX_N))
def test_any_other_size_with_its_own_root_is_refused(case, other: int) -> None:
    n, i = case
    assume(other != n and i < other)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, other, LEAVES[i], list(inclusion(i, n)), root(other))


@FAST
@given(size_and_index(), st.integers(0, MAX_N + 5))
def test_another_size_with_the_same_root_passes_only_if_the_proof_shape_is_the_same(
    case, other: int
) -> None:
    """RFC 9162 proofs bind a root, not a size on its own: the proof of leaf 4 in a tree of 8
    also "verifies" as a tree of 7 with the root of 8. Size and root must therefore come from
    the same signed checkpoint; the verifier accepts exactly when the path shape is equal."""
    n, i = case
    assume(other != n)
    refused = rejected(merkle.verify_inclusion, i, other, LEAVES[i], list(inclusion(i, n)), root(n))
    assert refused == (i >= other or sides(i, other) != sides(i, n))


def test_an_inclusion_proof_of_leaf_4_of_8_passes_as_a_tree_of_7_with_the_root_of_8() -> None:
    merkle.verify_inclusion(4, 7, LEAVES[4], list(inclusion(4, 8)), root(8))
    with pytest.raises(ProofError):
        merkle.verify_inclusion(4, 7, LEAVES[4], list(inclusion(4, 8)), root(7))


@FAST
@given(size_and_index(), st.data())
def test_an_inclusion_proof_with_a_hash_added_or_removed_is_refused(case, data) -> None:
    n, i = case
    proof = list(inclusion(i, n))
    if proof and data.draw(st.booleans()):
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    else:
        extra = data.draw(st.sampled_from([*LEAVES[:4], root(n), bytes(32)]))
        proof.insert(data.draw(st.integers(0, len(proof))), extra)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, n, LEAVES[i], proof, root(n))


@FAST
@given(two_sizes(), st.data())
def test_a_changed_byte_in_a_consistency_proof_hash_is_refused(case, data) -> None:
    m, n = case
    proof = list(consistency(m, n))
    k = data.draw(st.integers(0, len(proof) - 1))
    proof[k] = flip(proof[k], data.draw(st.integers(0, 31)), data.draw(st.integers(0, 7)))
    with pytest.raises(ProofError):
        merkle.verify_consistency(m, n, root(m), root(n), proof)


@FAST
@given(two_sizes(), st.booleans(), st.integers(0, 31), st.integers(0, 7))
def test_a_changed_byte_in_either_root_is_refused(case, old: bool, byte: int, bit: int) -> None:
    m, n = case
    old_root, new_root = root(m), root(n)
    if old:
        old_root = flip(old_root, byte, bit)
    else:
        new_root = flip(new_root, byte, bit)
    with pytest.raises(ProofError):
        merkle.verify_consistency(m, n, old_root, new_root, list(consistency(m, n)))


@FAST
@given(two_sizes(), st.integers(0, MAX_N), st.integers(0, MAX_N))
def test_other_sizes_with_their_own_roots_are_refused(case, m2: int, n2: int) -> None:
    m, n = case
    assume((m2, n2) != (m, n) and m2 <= n2)
    with pytest.raises(ProofError):
        merkle.verify_consistency(m2, n2, root(m2), root(n2), list(consistency(m, n)))


def test_a_consistency_proof_from_4_to_8_passes_for_4_to_5_with_the_root_of_8() -> None:
    """Again the size is bound only with the root: a checkpoint carries both."""
    merkle.verify_consistency(4, 5, root(4), root(8), list(consistency(4, 8)))
    with pytest.raises(ProofError):
        merkle.verify_consistency(4, 5, root(4), root(5), list(consistency(4, 8)))


@FAST
@given(two_sizes(), st.data())
def test_a_consistency_proof_with_a_hash_added_or_removed_is_refused(case, data) -> None:
    m, n = case
    proof = list(consistency(m, n))
    if data.draw(st.booleans()):
        del proof[data.draw(st.integers(0, len(proof) - 1))]
    else:
        extra = data.draw(st.sampled_from([*LEAVES[:4], root(m), root(n), bytes(32)]))
        proof.insert(data.draw(st.integers(0, len(proof))), extra)
    with pytest.raises(ProofError):
        merkle.verify_consistency(m, n, root(m), root(n), proof)


@SOME
@given(st.integers(1, MAX_N), st.sampled_from([0, "same"]), st.binary(min_size=32, max_size=32))
def test_trivial_consistency_refuses_any_proof_hash_and_any_other_root(n, kind, junk) -> None:
    m = 0 if kind == 0 else n
    with pytest.raises(ProofError):
        merkle.verify_consistency(m, n, root(m), root(n), [junk])
    assume(junk != root(m))
    with pytest.raises(ProofError):
        merkle.verify_consistency(m, n, junk, root(n), [])


def test_a_consistency_proof_from_a_forked_history_is_refused() -> None:
    forked = [*LEAVES[:5], merkle.leaf_hash(b"rewritten"), *LEAVES[6:20]]
    proof = merkle.consistency_proof(10, forked)
    with pytest.raises(ProofError):
        merkle.verify_consistency(10, 20, root(10), merkle.root_hash(forked), proof)


# --- hostile arguments only raise ProofError -------------------------------------------------

hostile_ints = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.integers(min_value=2**64, max_value=2**200),
    st.booleans(),
    st.floats(allow_nan=True),
    st.none(),
    st.text(max_size=5),
    st.binary(max_size=8),
    st.decimals(allow_nan=False, places=1),
)
hostile_hashes = st.one_of(
    st.binary(max_size=31),
    st.binary(min_size=33, max_size=80),
    st.text(min_size=32, max_size=32),
    st.none(),
    st.integers(),
    st.lists(st.integers(0, 255), min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32).map(memoryview),
)
hostile_proofs = st.one_of(
    st.none(),
    st.binary(min_size=32, max_size=64),
    st.text(max_size=64),
    st.integers(),
    st.lists(hostile_hashes, min_size=1, max_size=4),
    st.integers(129, 5000).map(lambda k: [bytes(32)] * k),
    st.just(iter([bytes(32)])),
    st.just({bytes(32)}),
    st.dictionaries(st.binary(min_size=32, max_size=32), st.none(), max_size=2),
)


@SOME
@given(size_and_index(64), st.integers(0, 4), st.data())
def test_hostile_inclusion_arguments_only_raise_proof_error(case, which: int, data) -> None:
    n, i = case
    args = [i, n, LEAVES[i], list(inclusion(i, n)), root(n)]
    strategy = [hostile_ints, hostile_ints, hostile_hashes, hostile_proofs, hostile_hashes][which]
    args[which] = data.draw(strategy)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(*args)


@SOME
@given(two_sizes(64), st.integers(0, 4), st.data())
def test_hostile_consistency_arguments_only_raise_proof_error(case, which: int, data) -> None:
    m, n = case
    args = [m, n, root(m), root(n), list(consistency(m, n))]
    strategy = [hostile_ints, hostile_ints, hostile_hashes, hostile_hashes, hostile_proofs][which]
    args[which] = data.draw(strategy)
    with pytest.raises(ProofError):
        merkle.verify_consistency(*args)


@SOME
@given(
    st.integers(-(2**70), 2**70),
    st.integers(-(2**70), 2**70),
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(min_size=32, max_size=32), max_size=130),
    st.binary(min_size=32, max_size=32),
)
def test_random_well_typed_inclusion_arguments_only_raise_proof_error(i, n, leaf, proof, r):
    with pytest.raises(ProofError):
        merkle.verify_inclusion(i, n, leaf, proof, r)


@SOME
@given(
    st.integers(-(2**70), 2**70),
    st.integers(-(2**70), 2**70),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32),
    st.lists(st.binary(min_size=32, max_size=32), max_size=130),
)
def test_random_well_typed_consistency_arguments_only_raise_proof_error(m, n, r1, r2, proof):
    assume(not (m == n == 0 or (0 <= m == n <= merkle.MAX_SIZE and r1 == r2)))
    with pytest.raises(ProofError):
        merkle.verify_consistency(m, n, r1, r2, proof)


def test_the_largest_sizes_are_checked_without_overflow_or_slowness() -> None:
    top = merkle.MAX_SIZE
    with pytest.raises(ProofError):
        merkle.verify_inclusion(top - 1, top, bytes(32), [bytes(32)] * 63, bytes(32))
    with pytest.raises(ProofError):
        merkle.verify_consistency(top - 1, top, bytes(32), bytes(32), [bytes(32)] * 64)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(0, top + 1, bytes(32), [], bytes(32))


def test_bytearray_hashes_are_accepted_like_bytes() -> None:
    proof = [bytearray(h) for h in inclusion(3, 10)]
    merkle.verify_inclusion(3, 10, bytearray(LEAVES[3]), proof, bytearray(root(10)))


@pytest.mark.parametrize(
    "ranges",
    [
        lambda: merkle.inclusion_proof_ranges(5, 5),
        lambda: merkle.inclusion_proof_ranges(-1, 5),
        lambda: merkle.consistency_proof_ranges(6, 5),
        lambda: merkle.consistency_proof_ranges(-1, 5),
        lambda: merkle.inclusion_proof(3, LEAVES[:3]),
        lambda: merkle.consistency_proof(4, LEAVES[:3]),
    ],
)
def test_proofs_outside_the_tree_are_refused_with_proof_error(ranges) -> None:
    with pytest.raises(ProofError):
        ranges()


# --- appending in chunks gives the stored subtrees -------------------------------------------


def every_complete_subtree(n: int) -> set[tuple[int, int, bytes]]:
    out = set()
    for level in range(n.bit_length()):
        for index in range(n >> level):
            out.add((level, index, merkle.subtree_hash(LEAVES[:n], (level, index))))
    return out


@SOME
@given(st.lists(st.integers(0, 40), max_size=12))
def test_appending_in_any_chunks_stores_every_complete_subtree_once(chunks: list[int]) -> None:
    size, frontier, created = 0, [], []
    for chunk in chunks:
        chunk = min(chunk, MAX_N - size)
        nodes, frontier = merkle.append_leaves(size, frontier, LEAVES[size : size + chunk])
        assert all(index << level >= size or level > 0 for level, index, _ in nodes)
        created += nodes
        size += chunk
        assert merkle.fold(frontier) == root(size)
    assert len(created) == len(set(created))
    assert set(created) == every_complete_subtree(size)


@SOME
@given(st.integers(0, MAX_N), st.integers(0, 60))
def test_appending_from_a_stored_frontier_matches_root_hash(size: int, more: int) -> None:
    more = min(more, MAX_N - size)
    frontier = [merkle.subtree_hash(LEAVES, s) for s in merkle.frontier(size)]
    assert merkle.fold(frontier) == root(size)
    nodes, frontier = merkle.append_leaves(size, frontier, LEAVES[size : size + more])
    assert merkle.fold(frontier) == root(size + more)
    assert {(lv, i) for lv, i, _ in nodes} == {
        (lv, i)
        for lv in range((size + more).bit_length())
        for i in range(size >> lv, (size + more) >> lv)
    }
    assert all(h == merkle.subtree_hash(LEAVES, (lv, i)) for lv, i, h in nodes)


def test_appending_with_a_wrong_frontier_is_refused() -> None:
    with pytest.raises(ValueError, match="frontier"):
        merkle.append_leaves(5, [bytes(32)], [LEAVES[5]])


def test_the_root_of_an_empty_tree_is_sha256_of_nothing() -> None:
    assert merkle.root_hash([]) == merkle.fold([]) == merkle.EMPTY_ROOT
    assert merkle.append_leaves(0, [], []) == ([], [])


# --- O(log n) stored subtrees per proof ------------------------------------------------------


@FAST
@given(st.integers(0, 2**40), st.integers(1, 2**40))
def test_any_range_is_a_few_aligned_complete_subtrees(lo: int, length: int) -> None:
    hi = lo + length
    subtrees = merkle.range_subtrees(lo, hi)
    assert len(subtrees) <= 2 * length.bit_length()
    start = lo
    for level, index in subtrees:
        assert index << level == start  # aligned, contiguous
        start += 1 << level
    assert start == hi


def proof_subtrees(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [s for lo, hi in ranges for s in merkle.range_subtrees(lo, hi)]


@FAST
@given(size_and_index())
def test_an_inclusion_proof_is_a_fold_of_at_most_2_log2_n_stored_subtrees(case) -> None:
    n, i = case
    ranges = merkle.inclusion_proof_ranges(i, n)
    subtrees = proof_subtrees(ranges)
    assert len(subtrees) <= max(1, 2 * (n - 1).bit_length())
    for lo, hi in ranges:
        parts = merkle.range_subtrees(lo, hi)
        assert [lv for lv, _ in parts] == sorted((lv for lv, _ in parts), reverse=True)
        hashes = [merkle.subtree_hash(LEAVES, s) for s in parts]
        assert merkle.fold(hashes) == merkle.root_hash(LEAVES[lo:hi])


@FAST
@given(st.integers(0, MAX_N).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_a_consistency_proof_is_a_fold_of_at_most_2_log2_n_stored_subtrees(case) -> None:
    m, n = case
    ranges = merkle.consistency_proof_ranges(m, n)
    assert len(proof_subtrees(ranges)) <= max(1, 2 * n.bit_length())
    assert [
        merkle.fold([merkle.subtree_hash(LEAVES, s) for s in merkle.range_subtrees(lo, hi)])
        for lo, hi in ranges
    ] == list(consistency(m, n))


@pytest.mark.parametrize("n", [2**20, 2**30 + 12345, 10**9, 2**62 + 3, merkle.MAX_SIZE])
def test_proofs_of_huge_trees_need_about_2_log2_n_subtrees(n: int) -> None:
    bound = 2 * n.bit_length()
    for i in (0, 1, n // 3, n // 2, n - 2, n - 1):
        assert len(proof_subtrees(merkle.inclusion_proof_ranges(i, n))) <= bound
    for m in (1, 3, n // 3, n // 2 + 1, n - 1):
        assert len(proof_subtrees(merkle.consistency_proof_ranges(m, n))) <= bound


def test_the_frontier_is_the_binary_expansion_of_the_size() -> None:
    for n in itertools.chain(range(70), [2**40 + 5]):
        levels = [lv for lv, _ in merkle.frontier(n)]
        assert levels == [b for b in reversed(range(n.bit_length())) if n >> b & 1]
