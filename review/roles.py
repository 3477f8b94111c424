"""Who may do what in the browser. Roles are Django groups; this module is the one place that
maps them to abilities, so the views, the templates and the role-matrix test agree.

Provider users authenticate to the API only: they hold no role and every workspace page refuses
them. Superusers hold every role.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied


class Role(StrEnum):
    ADJUSTER = "adjuster"
    SENIOR_ADJUSTER = "senior_adjuster"
    AUDITOR = "auditor"
    OPERATOR = "operator"


class Ability(StrEnum):
    DASHBOARD = "dashboard"  # the landing page with charts
    READ_CLAIMS = "read_claims"  # the queue and a claim's evidence
    DECIDE = "decide"  # hold, adjudicate items, approve, deny, request information
    SENIOR_DECIDE = "senior_decide"  # approve above the senior amount, take over a hold
    READ_AUDIT = "read_audit"  # the audit trail and its verification
    RUN_JOBS = "run_jobs"  # batch verification and payment runs
    READ_JOBS = "read_jobs"  # the jobs page, read-only


R, A = Role, Ability
ABILITIES: dict[Role, frozenset[Ability]] = {
    R.ADJUSTER: frozenset({A.DASHBOARD, A.READ_CLAIMS, A.DECIDE}),
    R.SENIOR_ADJUSTER: frozenset({A.DASHBOARD, A.READ_CLAIMS, A.DECIDE, A.SENIOR_DECIDE}),
    R.AUDITOR: frozenset({A.DASHBOARD, A.READ_CLAIMS, A.READ_AUDIT, A.READ_JOBS}),
    R.OPERATOR: frozenset({A.DASHBOARD, A.READ_AUDIT, A.READ_JOBS, A.RUN_JOBS}),
}


def user_roles(user) -> frozenset[Role]:
    if not getattr(user, "is_authenticated", False) or not user.is_active:
        return frozenset()
    if user.is_superuser:
        return frozenset(Role)
    cached = getattr(user, "_claimproof_roles", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = frozenset(r for r in Role if r.value in names)
        user._claimproof_roles = cached
    return cached


def user_abilities(user) -> frozenset[Ability]:
    found: set[Ability] = set()
    for role in user_roles(user):
        found |= ABILITIES[role]
    return frozenset(found)


def can(user, ability: Ability) -> bool:
    return ability in user_abilities(user)


def requires(ability: Ability) -> Callable:
    """View decorator: anonymous users go to the login page, users without the ability get 403."""

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not can(request.user, ability):
                raise PermissionDenied(f"your role does not allow this ({ability})")
            return view(request, *args, **kwargs)

        wrapped.required_ability = ability
        return wrapped

    return decorate
