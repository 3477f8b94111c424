"""ledger.merkle against the RFC 6962 / 9162 reference vectors (vectors/merkle_rfc9162.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.merkle import (
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)

V = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "merkle_rfc9162.json").read_text("utf-8")
)
LEAVES = [leaf_hash(bytes.fromhex(h)) for h in V["leaves_hex"]]
ROOTS = [bytes.fromhex(h) for h in V["roots"]]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hashes(items: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in items]


def _flipped(proof: list[bytes], i: int) -> list[bytes]:
    out = list(proof)
    out[i] = bytes([out[i][0] ^ 8]) + out[i][1:]
    return out


def test_it_hashes_leaves_and_nodes_as_rfc6962_does() -> None:
    for case in V["hasher"]["leaf_hashes"]:
        assert leaf_hash(bytes.fromhex(case["data_hex"])).hex() == case["hash"]
    for case in V["hasher"]["node_hashes"]:
        left, right = bytes.fromhex(case["left_hex"]), bytes.fromhex(case["right_hex"])
        assert node_hash(left, right).hex() == case["hash"]
    assert root_hash([]).hex() == V["hasher"]["empty_root"]


@pytest.mark.parametrize("size", range(1, len(ROOTS) + 1))
def test_it_computes_the_reference_root_of_every_prefix(size: int) -> None:
    assert root_hash(LEAVES[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize("case", V["inclusion_proofs"], ids=lambda c: f"{c['index']}@{c['size']}")
def test_it_builds_and_verifies_the_reference_inclusion_proofs(case: dict) -> None:
    index, size, proof = case["index"], case["size"], _hashes(case["proof"])
    root = ROOTS[size - 1]
    assert inclusion_proof(index, LEAVES[:size]) == proof
    assert verify_inclusion(index, size, LEAVES[index], proof, root) is None


@pytest.mark.parametrize("case", V["inclusion_proofs"], ids=lambda c: f"{c['index']}@{c['size']}")
def test_it_rejects_corrupted_reference_inclusion_proofs(case: dict) -> None:
    index, size, proof = case["index"], case["size"], _hashes(case["proof"])
    root, leaf = ROOTS[size - 1], LEAVES[index]
    probes = [
        (index + 1, size, leaf, proof, root),
        (index ^ 2, size, leaf, proof, root),
        (index, size * 2, leaf, proof, root),
        (index, size, leaf_hash(b"WrongLeaf"), proof, root),
        (index, size, leaf, proof, SOME_HASH),
        (index, size, leaf, [*proof, root], root),
        (index, size, leaf, [root, *proof], root),
    ]
    if index > 0:
        probes.append((index - 1, size, leaf, proof, root))
    if size > 1:
        probes.append((index, size // 2, leaf, proof, root))
    probes += [(index, size, leaf, _flipped(proof, i), root) for i in range(len(proof))]
    if proof:
        probes.append((index, size, leaf, proof[:-1], root))
    for args in probes:
        with pytest.raises(ProofError):
            verify_inclusion(*args)


@pytest.mark.parametrize(
    "case", V["consistency_proofs"], ids=lambda c: f"{c['old_size']}-{c['new_size']}"
)
def test_it_builds_and_verifies_the_reference_consistency_proofs(case: dict) -> None:
    old, new, proof = case["old_size"], case["new_size"], _hashes(case["proof"])
    assert consistency_proof(old, LEAVES[:new]) == proof
    assert verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], proof) is None


@pytest.mark.parametrize(
    "case",
    [c for c in V["consistency_proofs"] if c["proof"]],
    ids=lambda c: f"{c['old_size']}-{c['new_size']}",
)
def test_it_rejects_corrupted_reference_consistency_proofs(case: dict) -> None:
    old, new, proof = case["old_size"], case["new_size"], _hashes(case["proof"])
    r1, r2 = ROOTS[old - 1], ROOTS[new - 1]
    probes = [
        (old + 1, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new, SOME_HASH, r2, proof),
        (old, new, r1, SOME_HASH, proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    if old > 1:
        probes.append((old - 1, new, r1, r2, proof))
    probes += [(old, new, r1, r2, _flipped(proof, i)) for i in range(len(proof))]
    for args in probes:
        with pytest.raises(ProofError):
            verify_consistency(*args)


@pytest.mark.parametrize(
    "case",
    V["trivial_consistency"]["cases"],
    ids=lambda c: f"{c['old_size']}-{c['new_size']}-{c['same_root']}",
)
def test_it_handles_the_reference_trivial_consistency_cases(case: dict) -> None:
    r1 = ROOTS[0]
    r2 = r1 if case["same_root"] else ROOTS[1]
    args = (case["old_size"], case["new_size"], r1, r2, _hashes(case["proof"]))
    if case["valid"]:
        assert verify_consistency(*args) is None
    else:
        with pytest.raises(ProofError):
            verify_consistency(*args)
