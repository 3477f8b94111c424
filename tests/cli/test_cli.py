"""The provider's command-line client, run for real (a subprocess) against a live node.

The node is pytest-django's ``live_server`` with the demo consortium (``ledger_init``); beat's
sealing and the worker's verification are called in this process where the flow needs them.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from claims.models import Claim
from claims.verification import claim_verify
from ledger import keys, note, services
from tests.claims.factories import make_provider

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db(transaction=True)
DEAD_URL = "http://127.0.0.1:9"  # the discard port: nothing listens


def procedure(n: int) -> dict:
    return {
        "resourceType": "Procedure",
        "id": f"cli-proc-{n}",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "subject": {"reference": "Patient/p1"},
        "performedDateTime": "2026-11-01T09:30:00Z",
    }


def claim(n_procedures: int) -> dict:
    item = {
        "productOrService": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "servicedDate": "2026-11-01",
        "unitPrice": {"value": 105.0, "currency": "USD"},
        "net": {"value": 105.0, "currency": "USD"},
    }
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": "Patient/p1"},
        "created": "2026-11-20T10:00:00Z",
        "insurer": {"reference": "Organization/acme-insurance.example"},
        "provider": {"reference": "Organization/stmarys.example"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/c1"}}],
        "item": [
            {"sequence": i, "procedureSequence": [i], **item} for i in range(1, n_procedures + 1)
        ],
        "total": {"value": 105.0 * n_procedures, "currency": "USD"},
    }


class Cli:
    """``python -m claimproof_cli`` with the node's URL, a token and a store in ``tmp``."""

    def __init__(self, tmp: Path, url: str, token: str = "") -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "CLAIMPROOF_URL": url,
            "CLAIMPROOF_TOKEN": token,
            "CLAIMPROOF_STORE": str(tmp / "store" / "store.sqlite3"),
        }

    def __call__(self, *args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "claimproof_cli", *args],
            cwd=self.tmp,
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        return result

    def json(self, *args: str, code: int = 0, **env: str) -> dict:
        return json.loads(self(*args, "--json", code=code, **env).stdout)

    def write(self, name: str, value: object) -> str:
        path = self.tmp / name
        path.write_text(json.dumps(value) if not isinstance(value, str) else value)
        return str(path)


@pytest.fixture
def node(live_server):
    call_command("ledger_init", stdout=io.StringIO())
    return live_server.url


def _consortium_keys() -> tuple[str, list[str]]:
    witnesses = sorted((settings.LEDGER_KEYS_DIR / "witnesses").glob("*.key"))
    return keys.operator_verifier_key(), [
        note.verifier_key(p.read_text().strip()) for p in witnesses
    ]


def test_a_provider_anchors_claims_follows_and_verifies_offline(node, tmp_path):
    kit = make_provider()
    cli = Cli(tmp_path, node, kit.token)
    member_key = str(settings.LEDGER_KEYS_DIR / "members" / "stmarys.example.key")

    key = cli.json("key", "generate")
    assert (tmp_path / "store" / "store.sqlite3").stat().st_mode & 0o777 == 0o600
    registered = cli.json("key", "register", "--provider-id", str(kit.provider.pk))
    assert registered["kid"] == key["kid"] and registered["created"]
    assert (
        "already registered" in cli("key", "register", "--provider-id", str(kit.provider.pk)).stdout
    )

    # One procedure alone, one in an NDJSON batch; the member key path is remembered.
    first = cli.json("anchor", cli.write("p1.json", procedure(1)), "--member-key", member_key)
    (tmp_path / "batch").mkdir()
    cli.write("batch/p2.json", procedure(2))
    batch = cli.json("anchor", "--batch", str(tmp_path / "batch"))
    [a1], [a2] = first["results"], batch["results"]
    assert a2["leaf_index"] == a1["leaf_index"] + 1
    again = cli.json("anchor", str(tmp_path / "p1.json"))  # a retry resends the same statement
    assert again["results"][0]["leaf_index"] == a1["leaf_index"]
    services.ledger_seal_and_cosign()  # what beat does

    bundle_path = str(tmp_path / "bundle.json")
    unbilled = cli("claim", "build", cli.write("claim.json", claim(2)), "--procedure", "cli-proc-1",
                   code=2)  # fmt: skip
    assert "bills procedureSequence 2" in unbilled.stderr
    cli("claim", "build", cli.write("claim.json", claim(2)),
        "--procedure", "cli-proc-1", "cli-proc-2", "-o", bundle_path)  # fmt: skip
    bundle = json.loads(Path(bundle_path).read_text())
    claim_entry = bundle["entry"][0]["resource"]
    assert [p["procedureReference"]["reference"] for p in claim_entry["procedure"]] == [
        e["fullUrl"] for e in bundle["entry"][1:]
    ]
    assert [i["procedureSequence"] for i in claim_entry["item"]] == [[1], [2]]

    submitted = cli.json("claim", "submit", bundle_path)
    assert submitted["url"] == f"{node}/api/v1/claims/{submitted['id']}"
    retry = cli.json("claim", "submit", bundle_path)  # the remembered key: the same claim
    assert (retry["id"], retry["idempotency_key"]) == (
        submitted["id"],
        submitted["idempotency_key"],
    )
    assert "status   received" in cli("claim", "status", submitted["id"]).stdout

    claim_verify(claim_id=Claim.objects.get(public_id=submitted["id"]).pk)  # what the worker does
    status = cli("claim", "status", submitted["id"]).stdout
    assert "status   verified" in status and "PASS   signature" in status, status
    assert cli.json("claim", "wait", submitted["id"], "--timeout", "5")["status"] == "verified"
    response = json.loads(cli("claim", "response", submitted["id"]).stdout)
    assert response["resourceType"] == "ClaimResponse" and response["outcome"] == "queued"

    # Offline: the checkpoint and the keys from the consortium; the proof fetched, or a file.
    log_key, witnesses = _consortium_keys()
    checkpoint = cli.write("checkpoint.txt", services.checkpoint_text(services.checkpoint_latest()))
    trust = ["--checkpoint", checkpoint, "--log-key", log_key, "--quorum", "2"]
    for w in witnesses:
        trust += ["--witness-key", w]
    ok = cli("verify", "leaf", str(a2["leaf_index"]), *trust).stdout
    assert ok.startswith(f"VERIFIED: leaf {a2['leaf_index']} is in the log")
    assert cli.json("verify", "procedure", "cli-proc-1", *trust)["verified"]
    proof_json = _fetch_json(f"{node}/api/v1/ledger/proofs/inclusion?index={a1['leaf_index']}")
    proof = cli.write("proof.json", proof_json)
    offline = cli.json("verify", "leaf", str(a1["leaf_index"]), *trust, "--proof", proof,
                       CLAIMPROOF_URL=DEAD_URL)  # fmt: skip
    assert offline["verified"] and offline["cosigners"] == sorted(offline["cosigners"])

    _, wrong_log_key = note.generate_key(settings.LEDGER_ORIGIN)
    bad = cli.json("verify", "leaf", str(a1["leaf_index"]), *trust, "--log-key", wrong_log_key,
                   code=1)  # fmt: skip
    assert not bad["verified"] and "does not verify under the log key" in bad["reason"]
    strangers = [note.generate_cosigner_key(f"w{i}.example")[1] for i in range(2)]
    few = ["--checkpoint", checkpoint, "--log-key", log_key, "--quorum", "2"]
    for w in [witnesses[0], *strangers]:
        few += ["--witness-key", w]
    short = cli("verify", "leaf", "0", *few, code=1)
    assert "NOT VERIFIED" in short.stdout and "the quorum is 2" in short.stdout
    leaf = str(a1["leaf_index"])
    wrong_hash = cli("verify", "leaf", leaf, *trust, "--leaf-hash", a2["leaf_hash"], code=1)
    assert "not " + a2["leaf_hash"] in wrong_hash.stdout

    # Refusals by the node: exit 1 with its code and sentence.
    stranger, _ = note.generate_key("nobody.example")
    refused = cli("anchor", cli.write("p3.json", procedure(3)),
                  "--member-key", cli.write("nobody.key", stranger), code=1)  # fmt: skip
    assert "422 unknown_member" in refused.stderr
    assert (
        "404 unknown_provider" in cli("key", "register", "--provider-id", "999999", code=1).stderr
    )
    assert "(give --token" in cli("claim", "status", submitted["id"], code=1,
                                  CLAIMPROOF_TOKEN="").stderr  # fmt: skip
    assert "404" in cli("claim", "status", "00000000-0000-4000-8000-000000000000", code=1).stderr
    unsealed = cli("verify", "leaf", "99", *trust, code=1).stdout
    assert "NOT VERIFIED" in unsealed


def _fetch_json(url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310
        return json.loads(answer.read())


def test_usage_errors_exit_2_and_an_unreachable_node_exits_3(tmp_path):
    cli = Cli(tmp_path, DEAD_URL, "token")
    assert "does not exist" in cli("anchor", "missing.json", "--member-key", "x", code=2).stderr
    cli.write("member.key", note.generate_key("stmarys.example")[0])
    key = str(tmp_path / "member.key")
    assert "is not JSON" in cli("anchor", cli.write("bad.json", "{"), "--member-key", key,
                                code=2).stderr  # fmt: skip
    assert "not a FHIR Procedure" in cli("anchor", cli.write("c.json", claim(1)),
                                         "--member-key", key, code=2).stderr  # fmt: skip
    assert "no procedure 'x'" in cli("claim", "build", str(tmp_path / "c.json"),
                                   "--procedure", "x", code=2).stderr  # fmt: skip
    assert "not a Go note signer key" in cli("anchor", cli.write("p.json", procedure(1)),
                                             "--member-key", str(tmp_path / "c.json"),
                                             code=2).stderr  # fmt: skip
    cli("claim", "status", code=2)  # argparse: ID missing
    assert "no server" in cli("claim", "status", "x", code=2, CLAIMPROOF_URL="").stderr

    down = cli.json("anchor", str(tmp_path / "p.json"), "--member-key", key, code=3)
    assert "connection refused" in down["error"]["message"]
    assert "cannot reach" in cli("claim", "status", "x", code=3).stderr
    cli.write("b.json", {"resourceType": "Bundle"})
    assert "cannot reach" in cli("claim", "submit", str(tmp_path / "b.json"), code=3).stderr


def test_the_client_never_imports_django(tmp_path):
    code = (
        "import sys\n"
        "from claimproof_cli.main import main\n"
        f"assert main(['--store', {str(tmp_path / 's.sqlite3')!r}, 'key', 'generate']) == 0\n"
        f"assert main(['--url', {DEAD_URL!r}, 'claim', 'status', 'x']) == 3\n"
        "sys.exit(3 if 'django' in sys.modules else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr or "the client imported django"
