"""``claimproof key generate | register | show``: the provider's claim-signing key (Ed25519 JWK)."""

from __future__ import annotations

import json

from claimproof_cli.context import Context
from claims import jws


def generate(ctx: Context) -> int:
    private_jwk, public_jwk = jws.generate_key()
    ctx.store.key_add(private_jwk, public_jwk)
    ctx.emit(
        {"kid": public_jwk["kid"], "public_jwk": public_jwk, "store": str(ctx.store.path)},
        f"new signing key {public_jwk['kid']} (private part kept in {ctx.store.path})\n"
        f"register it: claimproof key register --provider-id <your provider id>",
    )
    return 0


def register(ctx: Context) -> int:
    key = ctx.store.key(ctx.args.kid)
    provider_id = ctx.args.provider_id
    answer = ctx.client.post_json(
        f"/api/v1/providers/{provider_id}/keys", {"public_jwk": key.public_jwk}
    )
    ctx.store.key_registered(key.kid, provider_id)
    data = answer.json()
    verb = "registered" if answer.status == 201 else "was already registered"
    ctx.emit(
        {"kid": key.kid, "provider_id": provider_id, "created": answer.status == 201, "key": data},
        f"key {key.kid} {verb} for provider {provider_id} "
        f"(valid from {data.get('not_before', '?')})",
    )
    return 0


def show(ctx: Context) -> int:
    key = ctx.store.key(ctx.args.kid)
    ctx.emit(
        {"kid": key.kid, "public_jwk": key.public_jwk, "provider_id": key.provider_id},
        json.dumps(key.public_jwk, indent=2),
    )
    return 0
