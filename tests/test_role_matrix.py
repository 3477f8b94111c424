"""Every page and action of the browser workspace, with every role: allowed or refused, exactly as
review/roles.py says.

The routes come from the URL resolver, not from a list kept by hand: a new page that forgets its
`requires(...)` decorator fails here, and so does one whose answer differs from the matrix.
"""

from __future__ import annotations

from datetime import date

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from claims.models import ProviderUser
from review.roles import ABILITIES, Role
from tests.claims import factories as cf
from tests.review.factories import decidable_claim, user_with

pytestmark = [pytest.mark.django_db]

WORKSPACE_NAMESPACES = {"review", "audit", "jobs_pages", "payments"}


def workspace_routes() -> list[tuple[str, URLPattern]]:
    found = []

    def walk(patterns, namespace=""):
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, p.namespace or namespace)
            elif namespace in WORKSPACE_NAMESPACES:
                found.append((f"{namespace}:{p.name}", p))

    walk(get_resolver().url_patterns)
    return found


ROUTES = workspace_routes()
PERSONAS = ["anonymous", "provider", "no-role", *(r.value for r in Role), "superuser"]


@pytest.fixture
def world():
    """One of everything a route can name."""
    from jobs.services import job_start
    from payments.services import payment_run_start

    claim = decidable_claim()
    kit = cf.make_provider(cf.LAB)
    job = job_start({"all": True})
    run = payment_run_start(date(2026, 1, 5))
    users = {
        "provider": kit.user,
        "no-role": user_with(),
        **{r.value: user_with(r) for r in Role},
        "superuser": get_user_model().objects.create_superuser("root", password="x" * 12),
    }
    assert ProviderUser.objects.filter(user=users["provider"]).exists()
    kwargs = {
        "public_id": claim.public_id,
        "sequence": 1,
        "job_id": job.pk,
        "run_id": run.pk,
        "provider_id": claim.provider_id,
    }
    return users, kwargs


def _method(client: Client, url: str) -> str:
    """GET for pages, POST for actions (a view that refuses GET with 405)."""
    return "post" if client.get(url).status_code == 405 else "get"


def test_every_workspace_route_declares_who_may_use_it():
    assert len(ROUTES) >= 20, [name for name, _ in ROUTES]
    undeclared = [name for name, p in ROUTES if not hasattr(p.callback, "required_ability")]
    assert not undeclared, f"routes without requires(...): {undeclared}"


def test_the_role_matrix(world):
    """One world for every persona (building it is the slow part); every mismatch is listed."""
    users, kwargs = world
    admin = Client()
    admin.force_login(users["superuser"])
    methods = {}
    for name, pattern in ROUTES:
        url = reverse(name, kwargs={k: kwargs[k] for k in pattern.pattern.converters})
        methods[name] = (url, _method(admin, url))
    wrong = []
    for persona in PERSONAS:
        wrong += _mismatches(users, methods, persona)
    assert not wrong, "\n".join(wrong)


def _mismatches(users, methods, persona: str) -> list[str]:
    client = Client(enforce_csrf_checks=False)
    if persona != "anonymous":
        client.force_login(users[persona])
    abilities = set()
    if persona == "superuser":
        abilities = {a for role in Role for a in ABILITIES[role]}
    elif persona in {r.value for r in Role}:
        abilities = set(ABILITIES[Role(persona)])

    wrong = []
    for name, pattern in ROUTES:
        url, method = methods[name]
        response = getattr(client, method)(url, HTTP_ACCEPT="text/html")
        ability = pattern.callback.required_ability
        to_login = response.status_code == 302 and response["Location"].startswith(reverse("login"))
        if persona == "anonymous":
            ok, expected = to_login, "redirect to login"
        elif ability in abilities:
            # an action may refuse for a business reason (409, 422) or redirect back (302)
            ok = response.status_code not in (403, 404, 500) and not to_login
            expected = "allowed"
        else:
            ok = response.status_code == 403
            expected = "403"
        if not ok:
            wrong.append(
                f"{persona}: {method.upper()} {url} ({name}): {response.status_code}, "
                f"want {expected}"
            )
    return wrong


def test_the_ledger_answers_everyone_and_the_login_page_everyone_signed_out(world):
    users, _ = world
    for persona in PERSONAS:
        client = Client()
        if persona != "anonymous":
            client.force_login(users[persona])
        assert client.get(reverse("ledger:page")).status_code == 200, persona
        login = client.get(reverse("login"))
        assert login.status_code == (200 if persona == "anonymous" else 302), persona


def test_a_refusal_is_a_page_that_says_why(world):
    users, _ = world
    client = Client()
    client.force_login(users["operator"])
    response = client.get(reverse("review:queue"), HTTP_ACCEPT="text/html")
    assert response.status_code == 403
    assert b"Not allowed" in response.content and b"read_claims" in response.content


def test_a_forged_post_without_the_csrf_token_is_refused(world):
    users, kwargs = world
    client = Client(enforce_csrf_checks=True)
    client.force_login(users["adjuster"])
    url = reverse("review:claim-approve", kwargs={"public_id": kwargs["public_id"]})
    assert client.post(url).status_code == 403
