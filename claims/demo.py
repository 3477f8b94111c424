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
from claims.verification import claim_verify
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


def _bundle(
    demo: DemoProvider,
    procs: list,
    *,
    price: float,
    patient: str,
    reference: str = "",
    use: str = "claim",
    private_jwk: dict | None = None,
) -> dict:
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
        "use": use,
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
    if reference:
        claim["identifier"] = [
            {"system": f"https://{demo.provider.member.name}/claims", "value": reference}
        ]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": f"urn:uuid:claim-{secrets.token_hex(8)}", "resource": claim},
            *entries,
        ],
    }
    key = private_jwk or demo.private_jwk
    return disclosure.sign_bundle(
        bundle,
        key,
        key["kid"],
        who=f"Organization/{demo.provider.member.name}",
        when=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )


def _submit(demo: DemoProvider, bundle: dict | bytes):
    body = bundle if isinstance(bundle, bytes) else json.dumps(bundle).encode()
    return services.claim_submit(
        provider=demo.provider, user=demo.user, body=body, idempotency_key=secrets.token_hex(8)
    ).claim


# Prices cycle through these: small claims one adjuster approves, four-eyes claims (above
# REVIEW_FOUR_EYES_ABOVE) and claims above CLAIMS_REVIEW_ABOVE that verification flags for review.
PRICES = [180.0, 250.0, 420.0, 95.0, 310.0, 1250.0, 2400.0, 640.0, 7000.0, 150.0]


def load_demo_claims(count: int, *, live: int = 8) -> dict[str, int]:
    """Submit ``count`` honest claims per provider and one of each kind of fraud the verifier
    catches, all through the real intake. All but the last ``live`` are verified here; the worker
    verifies those when the app starts, so the queue shows them change live. Decisions come
    after: :func:`demo_decide`."""
    made: dict[str, int] = {}
    demos = [demo_provider(*spec) for spec in DEMO_PROVIDERS]
    honest = []
    for demo in demos:
        member = demo.provider.member.name
        for n in range(count):
            patient = f"Patient/demo-{n % 23}"
            procs = [_anchor(_procedure(n * 3 + k, patient), member) for k in range(1 + n % 2)]
            honest.append((demo, procs, patient, n))
    ledger_services.ledger_seal_and_cosign()
    submitted = []
    for demo, procs, patient, n in honest:
        price = PRICES[n % len(PRICES)] / len(procs)
        reference = f"{demo.provider.member.name.split('.')[0].upper()}-{2026_0000 + n}"
        submitted.append(
            _submit(demo, _bundle(demo, procs, price=price, patient=patient, reference=reference))
        )
    made["honest"] = len(submitted)
    frauds = _frauds(*demos)
    made["fraud"] = len(frauds)
    for claim in frauds + submitted[: max(0, len(submitted) - live)]:
        claim_verify(claim_id=claim.pk)
    return made


def _frauds(hospital: DemoProvider, lab: DemoProvider) -> list:
    """One claim per kind of fraud, each rejected by the check that catches it."""
    h, lab_member = hospital.provider.member.name, lab.provider.member.name
    proc = [_anchor(_procedure(9001, "Patient/demo-1"), h)]
    ghost = [(_procedure(9002, "Patient/demo-2"), anchor.new_salt(), 10**9, b"\0" * 32)]
    foreign = [_anchor(_procedure(9003, "Patient/demo-3"), lab_member)]
    twice = [_anchor(_procedure(9004, "Patient/demo-4"), h)]
    salted = list(_anchor(_procedure(9005, "Patient/demo-5"), h))
    salted[1] = anchor.new_salt()  # the provider discloses another salt than it committed
    not_done = [_anchor(_procedure(9006, "Patient/demo-6", status="not-done"), h)]
    late = _procedure(9007, "Patient/demo-7")
    late["performedDateTime"] = (datetime.now(UTC) + timedelta(days=2)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    after = [_anchor(late, h)]
    forged = [_anchor(_procedure(9008, "Patient/demo-8"), h)]
    ledger_services.ledger_seal_and_cosign()
    made = []
    tampered = json.dumps(_bundle(hospital, proc, price=250.0, patient="Patient/demo-1"))
    made.append(
        _submit(hospital, tampered.replace('"value": 250.0', '"value": 2500.0', 3).encode())
    )
    made.append(_submit(hospital, _bundle(hospital, ghost, price=250.0, patient="Patient/demo-2")))
    made.append(
        _submit(hospital, _bundle(hospital, foreign, price=250.0, patient="Patient/demo-3"))
    )
    made.append(_submit(hospital, _bundle(hospital, twice, price=250.0, patient="Patient/demo-4")))
    made.append(_submit(hospital, _bundle(hospital, twice, price=260.0, patient="Patient/demo-4")))
    made.append(
        _submit(hospital, _bundle(hospital, [tuple(salted)], price=250.0, patient="Patient/demo-5"))
    )
    made.append(
        _submit(hospital, _bundle(hospital, not_done, price=250.0, patient="Patient/demo-6"))
    )
    made.append(_submit(hospital, _bundle(hospital, after, price=250.0, patient="Patient/demo-7")))
    # Signed with the lab's key under the hospital's kid: the signature does not verify.
    lab_key = {**lab.private_jwk, "kid": hospital.private_jwk["kid"]}
    made.append(
        _submit(
            hospital,
            _bundle(hospital, forged, price=250.0, patient="Patient/demo-8", private_jwk=lab_key),
        )
    )
    return made


def demo_logins() -> list[str]:
    return [
        f"{d.user.username}: API token {d.token}  ({d.provider.name}, provider API)"
        for d in (demo_provider(*spec) for spec in DEMO_PROVIDERS)
    ]
