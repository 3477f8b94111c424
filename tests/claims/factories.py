"""Real claims for tests, built the way a provider's systems build them.

A provider is a consortium member (``ledger_init`` writes the demo members' keys); its EHR anchors
each Procedure (salted commitment, signed anchor statement, appended and sealed into a cosigned
checkpoint); its billing system wraps the Claim and the disclosed Procedures in a Bundle and signs
it with the provider's JWS key. Nothing here is mocked.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db.models import Max
from rest_framework.authtoken.models import Token

from claims import disclosure, jws
from claims.checks.billing import CLAIM_ID_SYSTEM
from claims.models import Claim, ClaimCheck, Provider, ProviderKey, ProviderUser
from claims.services import claim_submit
from claims.verification import claim_verify
from ledger import anchor, services
from ledger.models import Member

_numbers = itertools.count(1)
HOSPITAL, LAB = "stmarys.example", "northlab.example"


def ledger_node() -> None:
    """Operator and demo member keys under the test's var/, members registered."""
    if not Member.objects.exists():
        call_command("ledger_init", stdout=io.StringIO())


def member_anchor_key(member: str) -> str:
    return (settings.LEDGER_KEYS_DIR / "members" / f"{member}.key").read_text().strip()


@dataclass
class ProviderKit:
    """A provider with an API user and token, and one registered signing key."""

    provider: Provider
    user: object
    token: str
    private_jwk: dict
    key: ProviderKey

    @property
    def kid(self) -> str:
        return self.key.kid

    @property
    def organization(self) -> str:
        return f"Organization/{self.provider.member.name}"


def make_provider(member: str = HOSPITAL, *, key_not_before: datetime | None = None) -> ProviderKit:
    ledger_node()
    provider, _ = Provider.objects.get_or_create(
        member=Member.objects.get(name=member), defaults={"name": member}
    )
    user = get_user_model().objects.create_user(f"{member}-{next(_numbers)}")
    ProviderUser.objects.create(user=user, provider=provider)
    private_jwk, public_jwk = jws.generate_key()
    key = ProviderKey.objects.create(
        provider=provider,
        kid=public_jwk["kid"],
        public_jwk=public_jwk,
        not_before=key_not_before or datetime.now(UTC) - timedelta(days=1),
    )
    return ProviderKit(provider, user, Token.objects.create(user=user).key, private_jwk, key)


def procedure(
    n: int | None = None,
    *,
    patient: str = "Patient/p1",
    performed: str | None = None,
    status: str = "completed",
) -> dict:
    n = next(_numbers) if n is None else n
    return {
        "resourceType": "Procedure",
        "id": f"proc-{n}",
        "status": status,
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]},
        "subject": {"reference": patient},
        "performedDateTime": performed or "2026-11-01T09:30:00Z",
    }


@dataclass
class Anchored:
    procedure: dict
    salt: bytes
    leaf_index: int
    leaf_hash: bytes
    full_url: str = field(
        default_factory=lambda: f"urn:uuid:00000000-0000-4000-8000-{next(_numbers):012d}"
    )

    def entry(self) -> dict:
        return disclosure.disclose(
            self.procedure, self.salt, self.leaf_index, self.leaf_hash, self.full_url
        )


def anchor_procedure(proc: dict, member: str = HOSPITAL, *, seal: bool = True) -> Anchored:
    """What the EHR does: commit with a fresh salt, sign, append; then beat seals and cosigns."""
    salt = anchor.new_salt()
    data = anchor.statement_sign(
        commitment=anchor.commitment(salt, proc),
        signer_key=member_anchor_key(member),
        timestamp=datetime.now(UTC) - timedelta(minutes=5),
    )
    result = services.anchor_append(data=data)
    if seal:
        services.ledger_seal_and_cosign()
    return Anchored(proc, salt, result.leaf.index, result.leaf.leaf_hash)


def claim_resource(
    anchored: list[Anchored],
    *,
    patient: str = "Patient/p1",
    unit_price: str = "105.00",
    use: str = "claim",
    related: dict | None = None,
    organization: str = "Organization/stmarys.example",
) -> dict:
    items = []
    procedures = []
    for i, a in enumerate(anchored, start=1):
        procedures.append({"sequence": i, "procedureReference": {"reference": a.full_url}})
        items.append(
            {
                "sequence": i,
                "procedureSequence": [i],
                "productOrService": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "80146002"}]
                },
                "servicedDate": "2026-11-01",
                "unitPrice": {"value": float(unit_price), "currency": "USD"},
                "net": {"value": float(unit_price), "currency": "USD"},
            }
        )
    claim = {
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
        "use": use,
        "patient": {"reference": patient},
        "created": "2026-11-20T10:00:00Z",
        "insurer": {"reference": "Organization/acme-insurance.example"},
        "provider": {"reference": organization},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/c1"}}],
        "procedure": procedures,
        "item": items,
        "total": {"value": float(Decimal(unit_price) * len(items)), "currency": "USD"},
    }
    if related:
        claim["related"] = [related]
    return claim


def signed_body(
    kit: ProviderKit,
    claim: dict,
    anchored: list[Anchored],
    *,
    private_jwk: dict | None = None,
    kid: str | None = None,
    context: list[dict] | None = None,
) -> bytes:
    """The request body the provider sends: the signed Bundle (JCS makes 105.0 and 105.00 one).

    ``private_jwk``/``kid`` sign with another key than the kit's (a forger's); ``context`` adds
    resources such as a Coverage."""
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:claim-{next(_numbers)}", "resource": claim}]
        + [a.entry() for a in anchored]
        + [{"fullUrl": f"urn:uuid:ctx-{next(_numbers)}", "resource": r} for r in context or []],
    }
    signed = disclosure.sign_bundle(
        bundle, private_jwk or kit.private_jwk, kid or kit.kid, who=kit.organization, when=_now()
    )
    return json.dumps(signed).encode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- submitting and verifying ------------------------------------------------------------------


def submit(kit: ProviderKit, body: bytes, key: str | None = None) -> Claim:
    """POST /claims without HTTP: the intake service, as the API calls it."""
    return claim_submit(
        provider=kit.provider,
        user=kit.user,
        body=body,
        idempotency_key=key or f"key-{next(_numbers)}",
    ).claim


def claim_for(
    kit: ProviderKit, anchored: list[Anchored] | None = None, **claim_kwargs
) -> tuple[Claim, list[Anchored]]:
    """A submitted claim billing ``anchored`` (one freshly anchored, sealed, cosigned Procedure
    when not given), signed by ``kit``."""
    if anchored is None:
        anchored = [anchor_procedure(procedure(), kit.provider.member.name)]
    claim_kwargs.setdefault("organization", kit.organization)
    body = signed_body(kit, claim_resource(anchored, **claim_kwargs), anchored)
    return submit(kit, body), anchored


def verified(claim: Claim) -> Claim:
    """Run verification now (what the worker does), return the claim as it stands."""
    return claim_verify(claim_id=claim.pk)


def checks(claim: Claim, run: int | None = None) -> dict[str, ClaimCheck]:
    """The claim's checks of ``run`` (the latest when None), by name."""
    rows = ClaimCheck.objects.filter(claim=claim)
    run = run or rows.aggregate(run=Max("run"))["run"]
    return {c.name: c for c in rows.filter(run=run)}


def related_to(original: Claim, relationship: str, *, by: str = "reference") -> dict:
    """``Claim.related`` naming ``original`` as docs/verification.md says."""
    claim = (
        {"reference": f"Claim/{original.public_id}"}
        if by == "reference"
        else {"identifier": {"system": CLAIM_ID_SYSTEM, "value": str(original.public_id)}}
    )
    return {
        "claim": claim,
        "relationship": {"coding": [{"system": RELATIONSHIP_SYSTEM, "code": relationship}]},
    }


RELATIONSHIP_SYSTEM = "https://claimproof.example/fhir/CodeSystem/claim-relationship"
