"""A witness cosigns only what extends what it last cosigned, whatever the order or concurrency."""

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.db import connection

from ledger import keys, merkle, note, witness
from ledger.checkpoint import Checkpoint
from ledger.models import WitnessState

pytestmark = pytest.mark.django_db

ORIGIN = "log.example/test"


@pytest.fixture
def log_key():
    return note.generate_key(ORIGIN)


@pytest.fixture
def witness_key():
    return note.generate_cosigner_key("witness.example")[0]


def _tree(n: int, salt: bytes = b"") -> list[bytes]:
    return [merkle.leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _checkpoint(log_key, leaves: list[bytes]) -> str:
    body = Checkpoint(ORIGIN, len(leaves), merkle.root_hash(leaves)).body()
    return note.sign(body, log_key[0])


def _add(log_key, witness_key, old_size, proof, text):
    return witness.witness_add_checkpoint(
        witness_signer_key=witness_key,
        log_verifier_keys={ORIGIN: log_key[1]},
        old_size=old_size,
        proof=proof,
        note_text=text,
    )


def test_witness_cosigns_a_consistent_sequence(log_key, witness_key):
    leaves = _tree(20)
    line = _add(log_key, witness_key, 0, [], _checkpoint(log_key, leaves[:7]))
    text = note.add_signatures(_checkpoint(log_key, leaves[:7]), [line])
    assert "witness.example" in note.verify_cosignature(text, [note.verifier_key(witness_key)])
    proof = merkle.consistency_proof(7, leaves)
    _add(log_key, witness_key, 7, proof, _checkpoint(log_key, leaves))
    assert WitnessState.objects.get().size == 20


def test_witness_answers_each_refusal_as_tlog_witness_does(log_key, witness_key):
    leaves = _tree(10)
    _add(log_key, witness_key, 0, [], _checkpoint(log_key, leaves[:4]))
    good = merkle.consistency_proof(4, leaves)
    with pytest.raises(witness.SizeConflict) as conflict:
        _add(log_key, witness_key, 3, good, _checkpoint(log_key, leaves))
    assert (conflict.value.status, conflict.value.size) == (409, 4)
    with pytest.raises(witness.BadProof) as bad:
        _add(log_key, witness_key, 4, [b"\x00" * 32] * len(good), _checkpoint(log_key, leaves))
    assert bad.value.status == 422
    with pytest.raises(witness.NotSigned):
        _add(log_key, witness_key, 4, good, _checkpoint(note.generate_key(ORIGIN), leaves))
    with pytest.raises(witness.UnknownLog) as unknown:
        other = note.sign(
            Checkpoint("other.example", 10, merkle.root_hash(leaves)).body(),
            note.generate_key("other.example")[0],
        )
        _add(log_key, witness_key, 4, good, other)
    assert unknown.value.status == 404
    with pytest.raises(witness.BadOldSize):
        _add(log_key, witness_key, 11, good, _checkpoint(log_key, leaves))
    assert WitnessState.objects.get().size == 4


def test_a_forked_history_is_never_cosigned(log_key, witness_key):
    honest = _tree(8)
    _add(log_key, witness_key, 0, [], _checkpoint(log_key, honest[:5]))
    forked = honest[:4] + _tree(6, salt=b"fork")[4:]
    proof = merkle.consistency_proof(5, forked)
    with pytest.raises(witness.BadProof):
        _add(log_key, witness_key, 5, proof, _checkpoint(log_key, forked))
    # Same size, other root: a split view.
    with pytest.raises(witness.SizeConflict):
        _add(log_key, witness_key, 5, [], _checkpoint(log_key, _tree(5, salt=b"x")))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_never_cosign_two_trees_of_one_size(log_key, witness_key):
    base = _tree(3)
    _add(log_key, witness_key, 0, [], _checkpoint(log_key, base))
    forks = [base + _tree(5, salt=bytes([k]))[3:] for k in range(8)]

    def attempt(leaves):
        try:
            return _add(
                log_key,
                witness_key,
                3,
                merkle.consistency_proof(3, leaves),
                _checkpoint(log_key, leaves),
            )
        except witness.WitnessRefusal:
            return None
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(attempt, forks))
    assert sum(r is not None for r in results) == 1
    assert WitnessState.objects.get().size == 5


def test_the_nodes_own_witness_keys_are_loaded_from_environment(monkeypatch):
    signer = note.generate_cosigner_key("env-witness.example")[0]
    monkeypatch.setenv("LEDGER_WITNESS_KEY_ENV_WITNESS_EXAMPLE", signer)
    assert keys.local_witness_signer_key("env-witness.example") == signer
    assert keys.local_witness_signer_key("absent.example") is None
    assert settings.LEDGER_KEYS_DIR.name == "keys"


def test_another_process_moving_the_witness_is_seen_before_any_answer(log_key, witness_key):
    """This process remembers each log's state as a hint; another worker process of the same
    witness (here: the row moved behind its back) may have moved it. The witness still cosigns
    only extensions of what the database holds, and refuses only on what the database holds."""
    leaves = _tree(12)
    _add(log_key, witness_key, 0, [], _checkpoint(log_key, leaves[:4]))  # remembered: size 4
    # Another worker cosigns 8 (the row moves; this process does not see it happen).
    WitnessState.objects.filter(witness="witness.example").update(
        size=8, root_hash=merkle.root_hash(leaves[:8]), note=_checkpoint(log_key, leaves[:8])
    )
    # Consistent with the remembered 4, not with the stored 8: refused with the stored size.
    with pytest.raises(witness.SizeConflict) as stale:
        _add(
            log_key,
            witness_key,
            4,
            merkle.consistency_proof(4, leaves[:10]),
            _checkpoint(log_key, leaves[:10]),
        )
    assert stale.value.size == 8
    # Consistent with the stored 8 (which this process had not seen): cosigned.
    _add(log_key, witness_key, 8, merkle.consistency_proof(8, leaves), _checkpoint(log_key, leaves))
    assert WitnessState.objects.get().size == 12
    # The database forgets (a restore, another test): the next request is judged on the row.
    WitnessState.objects.all().delete()
    with pytest.raises(witness.SizeConflict) as gone:
        _add(log_key, witness_key, 12, [], _checkpoint(log_key, leaves))
    assert gone.value.size == 0
    _add(log_key, witness_key, 0, [], _checkpoint(log_key, leaves[:3]))
    assert WitnessState.objects.get().size == 3


def test_the_old_root_a_proof_names_is_the_real_one_or_none():
    """The one-statement swap trusts the old root the proof leads from: it must be the real
    root of the old tree, and a proof that does not hold must name none."""
    leaves = _tree(70)
    for new in (3, 9, 33, 70):
        for old in range(new + 1):
            proof = merkle.consistency_proof(old, leaves[:new])
            new_root = merkle.root_hash(leaves[:new])
            got = witness._implied_old_root(old, new, new_root, proof)
            if old and old != new and old & (old - 1) == 0:
                assert got is None  # the proof leaves a power of two's root out
            else:
                assert got == merkle.root_hash(leaves[:old])
            other = merkle.root_hash(_tree(new, b"other"))
            if old not in (0, new):  # every tree extends the empty one; size n names itself
                assert witness._implied_old_root(old, new, other, proof) is None
            if proof:
                bent = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
                if old != new:
                    assert witness._implied_old_root(old, new, new_root, bent) is None
                assert witness._implied_old_root(old, new, new_root, proof[:-1]) is None
                assert witness._implied_old_root(old, new, new_root, [*proof, proof[0]]) is None
