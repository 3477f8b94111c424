"""An insurer's node verifies claims against the log another node runs: a second ClaimProof
process (gunicorn, its own database) is the log operator and serves C2SP tlog-tiles; this test
process is the insurer, with an empty ledger of its own, and LEDGER_MIRROR_URL pointing at it."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import psycopg
import pytest
from django.conf import settings

from claims.states import ClaimStatus
from claims.verification import claim_verify_many
from ledger import anchor, keys, merkle, mirror_source, note
from ledger.models import Leaf, MemberKey
from tests.claims.factories import (
    HOSPITAL,
    LAB,
    Anchored,
    checks,
    claim_for,
    make_provider,
    member_anchor_key,
    procedure,
    verified,
)
from tests.conftest import PG_URL, SERVICES
from tests.consortium.conftest import ROOT, WitnessNode, _admin_url, _base_env

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]
S = ClaimStatus

# Runs in the operator node's environment: append the statements read from stdin (hex, one a
# line), seal, gather the hosted witnesses' cosignatures; print each leaf's index.
_APPEND = """
import sys, django
django.setup()
from ledger import services
datas = [bytes.fromhex(line) for line in sys.stdin.read().split()]
results = services.anchor_append_many(datas=datas)
services.ledger_seal_and_cosign()
print(" ".join(str(r.leaf.index) for r in results))
"""


@pytest.fixture
def log_node() -> Iterator[tuple[WitnessNode, dict]]:
    """The operator's node: its own database and process, the consortium's keys (the same
    members, witnesses and log key this node knows)."""
    if SERVICES.get("postgres"):
        pytest.skip(f"postgres missing: {SERVICES['postgres']}")
    make_provider()  # this node: the members and their keys (ledger_init); its log stays empty
    name = f"claimproof_log_{os.environ.get('TOX_PARALLEL_ENV', 'x')}_{os.getpid()}"
    with psycopg.connect(_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlparse(PG_URL)._replace(path=f"/{name}").geturl()
    var = tempfile.mkdtemp(prefix="claimproof-log-node-")
    shutil.copytree(settings.LEDGER_KEYS_DIR, Path(var) / "keys")
    env = {**_base_env(var), "DATABASE_URL": url}
    for command in (["migrate", "--noinput", "-v", "0"], ["ledger_init"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=180,
            capture_output=True,
        )
    witness = (settings.LEDGER_KEYS_DIR / "witnesses" / "acme-insurance.example.key").read_text()
    node = WitnessNode(url, "acme-insurance.example", witness.strip(), {}, workers=1, var=var)
    try:
        node.start()
        yield node, env
    finally:
        node.stop()
        mirror_source._SOURCES.clear()
        with psycopg.connect(_admin_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _anchor_on(env: dict, procedures: list[dict], member: str = HOSPITAL) -> list[Anchored]:
    """What a provider's EHR does, against the operator's node."""
    out, datas = [], []
    for proc in procedures:
        salt = anchor.new_salt()
        data = anchor.statement_sign(
            commitment=anchor.commitment(salt, proc),
            signer_key=member_anchor_key(member),
            timestamp=datetime.now(UTC) - timedelta(minutes=5),
        )
        out.append((proc, salt, data))
        datas.append(data)
    done = subprocess.run(
        [sys.executable, "-c", _APPEND],
        cwd=ROOT,
        env=env,
        input="\n".join(d.hex() for d in datas),
        text=True,
        check=True,
        timeout=120,
        capture_output=True,
    )
    indexes = [int(i) for i in done.stdout.split()]
    return [
        Anchored(proc, salt, index, merkle.leaf_hash(data))
        for (proc, salt, data), index in zip(out, indexes, strict=True)
    ]


def test_an_insurer_node_verifies_claims_against_the_operators_log(log_node, settings):
    node, env = log_node
    kit = make_provider()
    settings.LEDGER_MIRROR_URL = node.url
    settings.LEDGER_MIRROR_LOG_KEY = keys.operator_verifier_key()
    settings.LEDGER_MIRROR_WITNESS_KEYS = json.dumps(
        list(MemberKey.objects.filter(purpose="cosign").values_list("verifier_key", flat=True))
    )
    settings.LEDGER_MIRROR_CHECKPOINT_TTL_S = 0.0
    settings.LEDGER_QUORUM = 2
    mirror_source._SOURCES.clear()

    a, b, c, d, e = _anchor_on(env, [procedure() for _ in range(5)])
    [lab] = _anchor_on(env, [procedure()], LAB)
    assert not Leaf.objects.exists()  # this node's own log is empty: only the mirror knows

    claim, _ = claim_for(kit, [a, b])
    claim = verified(claim)
    assert claim.status == S.VERIFIED, {
        n: (c.outcome, c.sentence) for n, c in checks(claim).items()
    }
    for x in (a, b):
        check = checks(claim)[f"procedure:{x.full_url}"]
        assert check.evidence["source"] == node.url
        cp = check.evidence["checkpoint"]
        merkle.verify_inclusion(
            x.leaf_index,
            cp["size"],
            x.leaf_hash,
            [base64.b64decode(h) for h in check.evidence["proof"]],
            base64.b64decode(cp["root_hash"]),
        )
        note.verify(cp["note"], [keys.operator_verifier_key()])

    # A batch: one claim good, one with a wrong salt, one billing another member's anchor.
    c.salt = anchor.new_salt()
    good, _ = claim_for(kit, [d])
    salted, _ = claim_for(kit, [c])
    foreign, _ = claim_for(kit, [lab])
    done = {x.pk: x for x in claim_verify_many(claim_ids=[good.pk, salted.pk, foreign.pk])}
    assert done[good.pk].status == S.VERIFIED
    assert done[salted.pk].status == S.REJECTED
    assert "wrong salt" in checks(salted)[f"procedure:{c.full_url}"].sentence
    assert done[foreign.pk].status == S.REJECTED
    assert checks(foreign)[f"procedure:{lab.full_url}"].outcome == "pass"
    assert f"anchored by {LAB}" in checks(foreign)["binding"].sentence

    # The operator's node goes down: claims wait, none is rejected for it.
    node.stop()
    later, _ = claim_for(kit, [e])
    later = verified(later)
    assert later.status == S.VERIFYING
    check = checks(later)[f"procedure:{e.full_url}"]
    assert check.outcome == "wait" and "mirror could not be read" in check.sentence
