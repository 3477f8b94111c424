"""Token authentication for the providers' API in one query: the token, its user and the user's
provider link, read together on every request.

DRF's ``TokenAuthentication`` reads the token and its user (one ORM query), then every provider
view reads the user's provider (another). Here one SQL statement joins
``authtoken_token → auth_user → claims_provideruser → claims_provider`` and the rows become model
instances with the ORM's own converters, so nothing is cached between requests: a deleted token, a
deactivated user or an unbound provider link takes effect on the very next request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication, get_authorization_header
from rest_framework.authtoken.models import Token

from claims.models import Provider, ProviderUser
from config.errors import Conflict

# What request.user carries when the user is bound to no provider (None) or was authenticated
# another way (attribute absent: claims.api reads the link itself).
PROVIDER_ATTR = "_claims_provider"


class _Part:
    """One model's columns in the joined row, and how to turn them into an instance."""

    def __init__(self, model: type[Model], alias: str) -> None:
        self.model = model
        fields = model._meta.concrete_fields
        self.names = [f.attname for f in fields]
        qn = connection.ops.quote_name
        self.select = [f"{alias}.{qn(f.column)}" for f in fields]
        cols = [f.get_col(model._meta.db_table) for f in fields]
        self.converters = [
            [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
            for col in cols
        ]
        self.cols = cols

    def build(self, values: list[Any]) -> Model:
        out = []
        for value, converters, col in zip(values, self.converters, self.cols, strict=True):
            for convert in converters:
                value = convert(value, col, connection)
            out.append(value)
        return self.model.from_db(connection.alias, self.names, out)


@cache
def _query() -> tuple[str, _Part, _Part, _Part]:
    user_model = get_user_model()
    qn = connection.ops.quote_name
    token, user, provider = _Part(Token, "t"), _Part(user_model, "u"), _Part(Provider, "p")
    link = ProviderUser._meta
    sql = (
        f"SELECT {', '.join(token.select + user.select + provider.select)} "  # noqa: S608 (names from the models)
        f"FROM {qn(Token._meta.db_table)} t "
        f"JOIN {qn(user_model._meta.db_table)} u ON u.{qn(user_model._meta.pk.column)} = "
        f"t.{qn(Token._meta.get_field('user').column)} "
        f"LEFT JOIN {qn(link.db_table)} pu ON pu.{qn(link.get_field('user').column)} = "
        f"u.{qn(user_model._meta.pk.column)} "
        f"LEFT JOIN {qn(Provider._meta.db_table)} p ON p.{qn(Provider._meta.pk.column)} = "
        f"pu.{qn(link.get_field('provider').column)} "
        f"WHERE t.{qn(Token._meta.pk.column)} = %s"
    )
    return sql, token, user, provider


class ProviderTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>`` as DRF reads it (same header rules, same errors), with the
    user's provider read in the same query and left on ``request.user``."""

    def authenticate_credentials(self, key: str):
        sql, _token, _user, _provider = _query()
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            _remembered.pop(key, None)
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = _build(row)
        if not user.is_active:
            _remembered.pop(key, None)
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        if (provider := getattr(user, PROVIDER_ATTR)) is not None:
            _remember(key, row, _guard(key, user, provider))
        return user, token


# --- POST /api/v1/claims: the token from memory, checked again by the claim's own INSERT --------

GUARD_ATTR = "_claims_guard"  # on request.user when it came from memory: the Guard to write with
REMEMBER_S = 60.0  # settings.CLAIMS_TOKEN_REMEMBER_S overrides it; 0 reads every token
REMEMBER_MAX = 10_000
# token key -> (read at, monotonic; its row; the Guard a write under it carries)
_remembered: dict[str, tuple[float, tuple, Guard]] = {}


@dataclass(frozen=True)
class Guard:
    """What the claim's INSERT must still find true when it runs: this token, of this active
    user, named so, bound to this provider, named so (the names go into the audit entry)."""

    token_key: str
    user_id: int
    username: str
    provider_id: int
    provider_name: str


def _build(row: tuple):
    _sql, token_part, user_part, provider_part = _query()
    n_token, n_user = len(token_part.names), len(user_part.names)
    token = token_part.build(row[:n_token])
    user = user_part.build(row[n_token : n_token + n_user])
    provider_values = row[n_token + n_user :]
    provider = None if provider_values[0] is None else provider_part.build(provider_values)
    setattr(user, PROVIDER_ATTR, provider)
    token.user = user
    return user, token


def _guard(key: str, user, provider: Provider) -> Guard:
    return Guard(key, user.pk, user.get_username(), provider.pk, provider.name)


def _remember(key: str, row: tuple, guard: Guard) -> None:
    if len(_remembered) >= REMEMBER_MAX:
        _remembered.clear()
    _remembered[key] = (time.monotonic(), row, guard)


def _fresh(key: str | None) -> tuple[float, tuple, Guard] | None:
    hit = _remembered.get(key) if key else None
    if hit is None:
        return None
    if time.monotonic() - hit[0] >= getattr(settings, "CLAIMS_TOKEN_REMEMBER_S", REMEMBER_S):
        return None
    return hit


def remembered_guard(key: str | None) -> Guard | None:
    """The Guard of a token this process read less than ``CLAIMS_TOKEN_REMEMBER_S`` ago (None
    otherwise), without building its user: what ``POST /api/v1/claims``'s lean path
    (``claims.api.IntakeMiddleware``) writes with."""
    hit = _fresh(key)
    return None if hit is None else hit[2]


def forget(key: str) -> None:
    _remembered.pop(key, None)


class IntakeTokenAuthentication(ProviderTokenAuthentication):
    """For ``POST /api/v1/claims`` only: a token this process read in the last REMEMBER_S
    seconds is not read again. The request carries a :class:`Guard` instead, and the claim's
    INSERT stores nothing unless, in the same statement, the token still exists, its user is
    still active, named so and bound to the same provider (``claims.intake_write``), and any
    other answer (a refusal, an earlier claim, a failed guard) reads the token again first
    (:func:`confirm`): a deleted token, a deactivated user or an unbound provider link stores and
    sees nothing from the very next request on, and gets DRF's 401 / 403. Every other method
    reads the token every time."""

    def authenticate(self, request):
        if request.method != "POST":
            return super().authenticate(request)
        key = token_key(request)
        hit = _fresh(key)
        if hit is None:
            return super().authenticate(request)
        user, token = _build(hit[1])
        setattr(user, GUARD_ATTR, hit[2])
        return user, token


def token_key(request) -> str | None:
    """The key of a well-formed ``Token <key>`` header; None for anything else (DRF then
    answers it with its own errors)."""
    parts = get_authorization_header(request).split()
    if len(parts) != 2 or parts[0].lower() != b"token":
        return None
    try:
        return parts[1].decode()
    except UnicodeError:
        return None


def confirm(guard: Guard) -> None:
    """Read a remembered token again before any answer but a guarded write: 401 / 403 as DRF
    would answer them now, 409 when the account changed (renamed, bound elsewhere) but still
    authenticates, so that the request is sent again."""
    forget(guard.token_key)
    user, _token = ProviderTokenAuthentication().authenticate_credentials(guard.token_key)
    provider = getattr(user, PROVIDER_ATTR)
    if provider is None:
        raise exceptions.PermissionDenied(
            "this API is for provider users; this user is bound to no provider"
        )
    if (user.pk, user.get_username(), provider.pk, provider.name) != (
        guard.user_id,
        guard.username,
        guard.provider_id,
        guard.provider_name,
    ):
        raise Conflict(
            "this account changed while the claim was sent: send it again",
            code="account_changed",
        )


@cache
def guard_sql() -> str:
    """A condition true while the guard holds (its parameters: :func:`guard_params`)."""
    user_model = get_user_model()
    qn = connection.ops.quote_name
    link = ProviderUser._meta
    return (
        f"EXISTS (SELECT 1 FROM {qn(Token._meta.db_table)} gt "  # noqa: S608 (model names)
        f"JOIN {qn(user_model._meta.db_table)} gu ON gu.{qn(user_model._meta.pk.column)} = "
        f"gt.{qn(Token._meta.get_field('user').column)} "
        f"JOIN {qn(link.db_table)} gl ON gl.{qn(link.get_field('user').column)} = "
        f"gu.{qn(user_model._meta.pk.column)} "
        f"JOIN {qn(Provider._meta.db_table)} gp ON gp.{qn(Provider._meta.pk.column)} = "
        f"gl.{qn(link.get_field('provider').column)} "
        f"WHERE gt.{qn(Token._meta.pk.column)} = %s AND gu.{qn(user_model._meta.pk.column)} = %s "
        f"AND gu.{qn(user_model.USERNAME_FIELD)} = %s AND gu.{qn('is_active')} "
        f"AND gp.{qn(Provider._meta.pk.column)} = %s AND gp.{qn('name')} = %s)"
    )


def guard_params(guard: Guard) -> list:
    return [
        guard.token_key,
        guard.user_id,
        guard.username,
        guard.provider_id,
        guard.provider_name,
    ]


def guard_holds(guard: Guard) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {guard_sql()}", guard_params(guard))
        return bool(cursor.fetchone()[0])
