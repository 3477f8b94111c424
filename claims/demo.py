"""Demo providers and claims for `make run`: built exactly as a provider's systems would build
them (anchor, seal, sign, submit), so the demo exercises the real pipeline end to end."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from claims import disclosure, jws, services
from claims.models import Provider, ProviderKey, ProviderUser
from ledger import anchor, keys
from ledger import services as ledger_services
from ledger.keys import write_secret
from ledger.models import Member

DEMO_PROVIDERS = [
    ("stmarys.example", "St Mary's Hospital", Provider.Kind.HOSPITAL),
    ("northlab.example", "North Laboratory", Provider.Kind.LAB),
]


@dataclass
class DemoProvider:
    provider: Provider
    user: object
    token: str
    private_jwk: dict


def _providers_dir():
    return settings.LEDGER_KEYS_DIR / "providers"


def demo_provider(member_name: str, display: str, kind: str) -> DemoProvider:
    """The provider, its API user and token, and a signing key kept under var/keys/providers/."""
    member = Member.objects.get(name=member_name)
    provider, _ = Provider.objects.get_or_create(
        member=member, defaults={"name": display, "kind": kind}
    )
    username = f"{member_name.split('.')[0]}-api"
    user, _ = get_user_model().objects.get_or_create(username=username)
    ProviderUser.objects.get_or_create(user=user, defaults={"provider": provider})
    token, _ = Token.objects.get_or_create(user=user)
    path = _providers_dir() / f"{member_name}.jwk"
    if path.exists():
        private_jwk = json.loads(path.read_text())
    else:
        private_jwk, _ = jws.generate_key()
        write_secret(path, json.dumps(private_jwk))
    public = {k: private_jwk[k] for k in ("kty", "crv", "x", "kid")}
    if not ProviderKey.objects.filter(kid=public["kid"]).exists():
        services.provider_key_register(
            provider=provider,
            public_jwk=public,
            not_before=datetime.now(UTC) - timedelta(days=30),
        )
    return DemoProvider(provider, user, token.key, private_jwk)


def _procedure(n: int, patient: str, status: str = "completed") -> dict:
    day = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1 + n % 60, hours=n % 7)
    return {
        "resourceType": "Procedure",
        "id": f"demo-proc-{n}",
        "status": status,
        "code": {
            "coding": [
                {"system": "http://snomed.info/sct", "code": "80146002", "display": "Appendectomy"}
            ]
        },
        "subject": {"reference": patient},
        "performedDateTime": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _anchor(proc: dict, member: str) -> tuple[dict, bytes, int, bytes]:
    salt = anchor.new_salt()
    signer = (keys.members_dir() / f"{member}.key").read_text().strip()
    data = anchor.statement_sign(
        commitment=anchor.commitment(salt, proc),
        signer_key=signer,
        timestamp=datetime.now(UTC) - timedelta(minutes=1),
    )
    leaf = ledger_services.anchor_append(data=data).leaf
    return proc, salt, leaf.index, leaf.leaf_hash


def _bundle(demo: DemoProvider, procs: list, *, price: float, patient: str) -> dict:
    entries, items, claim_procs = [], [], []
    for i, (proc, salt, index, leaf_hash) in enumerate(procs, start=1):
        url = f"urn:uuid:{secrets.token_hex(4)}-0000-4000-8000-{secrets.token_hex(6)}"
        entries.append(disclosure.disclose(proc, salt, index, leaf_hash, url))
        claim_procs.append({"sequence": i, "procedureReference": {"reference": url}})
        items.append(
            {
                "sequence": i,
                "procedureSequence": [i],
                "productOrService": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]
                },
                "servicedDate": proc["performedDateTime"][:10],
                "unitPrice": {"value": price, "currency": "USD"},
                "net": {"value": price, "currency": "USD"},
            }
        )
    claim = {
        "resourceType": "Claim",
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": patient},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "insurer": {"reference": "Organization/acme-insurance.example"},
        "provider": {"reference": f"Organization/{demo.provider.member.name}"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/demo"}}],
        "procedure": claim_procs,
        "item": items,
        "total": {"value": price * len(items), "currency": "USD"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:claim-{secrets.token_hex(8)}", "resource": claim},
            *entries,
        ],
    }
    return disclosure.sign_bundle(
        bundle,
        demo.private_jwk,
        demo.private_jwk["kid"],
        who=f"Organization/{demo.provider.member.name}",
        when=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _submit(demo: DemoProvider, bundle: dict | bytes) -> None:
    body = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    services.claim_submit(
        provider=demo.provider, user=demo.user, body=body, idempotency_key=secrets.token_hex(8)
    )


def load_demo_claims(count: int) -> dict[str, int]:
    """Submit ``count`` honest claims per provider, and one of each kind of fraud the verifier
    catches. The worker verifies them as they arrive."""
    made: dict[str, int] = {}
    demos = [demo_provider(*spec) for spec in DEMO_PROVIDERS]
    honest = []
    for demo in demos:
        member = demo.provider.member.name
        for n in range(count):
            patient = f"Patient/demo-{n % 23}"
            procs = [_anchor(_procedure(n * 3 + k, patient), member) for k in range(1 + n % 2)]
            honest.append((demo, procs, patient))
    ledger_services.ledger_seal_and_cosign()
    for demo, procs, patient in honest:
        price = 250.0 if len(procs) == 1 else 7_000.0 / 2  # some above the review threshold
        _submit(demo, _bundle(demo, procs, price=price, patient=patient))
        made["honest"] = made.get("honest", 0) + 1

    hospital, lab = demos
    # Fraud 1: the body was changed after it was signed.
    proc = [_anchor(_procedure(9001, "Patient/demo-1"), hospital.provider.member.name)]
    # Fraud 2: a procedure that was never anchored.
    ghost = [(_procedure(9002, "Patient/demo-2"), anchor.new_salt(), 10**9, b"\0" * 32)]
    # Fraud 3: a procedure anchored by another member (the lab's anchor, billed by the hospital).
    foreign = [_anchor(_procedure(9003, "Patient/demo-3"), lab.provider.member.name)]
    ledger_services.ledger_seal_and_cosign()
    tampered = json.dumps(_bundle(hospital, proc, price=250.0, patient="Patient/demo-1"))
    _submit(hospital, tampered.replace('"value": 250.0', '"value": 2500.0', 1).encode())
    _submit(hospital, _bundle(hospital, ghost, price=250.0, patient="Patient/demo-2"))
    _submit(hospital, _bundle(hospital, foreign, price=250.0, patient="Patient/demo-3"))
    # Fraud 4: the same procedure billed twice.
    twice = [_anchor(_procedure(9004, "Patient/demo-4"), hospital.provider.member.name)]
    ledger_services.ledger_seal_and_cosign()
    _submit(hospital, _bundle(hospital, twice, price=250.0, patient="Patient/demo-4"))
    _submit(hospital, _bundle(hospital, twice, price=250.0, patient="Patient/demo-4"))
    made["fraud"] = 5
    return made


def demo_logins() -> list[str]:
    return [
        f"{d.user.username}: API token {d.token}  ({d.provider.name}, provider API)"
        for d in (demo_provider(*spec) for spec in DEMO_PROVIDERS)
    ]
