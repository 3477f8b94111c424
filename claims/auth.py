"""Token authentication for the providers' API in one query: the token, its user and the user's
provider link, read together on every request.

DRF's ``TokenAuthentication`` reads the token and its user (one ORM query), then every provider
view reads the user's provider (another). Here one SQL statement joins
``authtoken_token → auth_user → claims_provideruser → claims_provider`` and the rows become model
instances with the ORM's own converters, so nothing is cached between requests: a deleted token, a
deactivated user or an unbound provider link takes effect on the very next request.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import Model
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from claims.models import Provider, ProviderUser

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
        sql, token_part, user_part, provider_part = _query()
        with connection.cursor() as cursor:
            cursor.execute(sql, [key])
            row = cursor.fetchone()
        if row is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        n_token, n_user = len(token_part.names), len(user_part.names)
        token = token_part.build(row[:n_token])
        user = user_part.build(row[n_token : n_token + n_user])
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        provider_values = row[n_token + n_user :]
        provider = None if provider_values[0] is None else provider_part.build(provider_values)
        setattr(user, PROVIDER_ATTR, provider)
        token.user = user
        return user, token
