"""The lean intake path (claims.api.IntakeMiddleware) against what a provider or an attacker can
send: a remembered token stores a claim only where the full stack would store it, under the same
provider, and every other request answers as the full stack does, with nothing written."""

from __future__ import annotations

import json
import threading
import uuid

import psycopg
import pytest
from django.conf import settings as django_settings
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from audit.models import AuditEntry
from claims.api import ClaimOutput
from claims.models import Claim, ClaimEvent, ClaimItem
from tests.claims import factories as f
from tests.claims.test_intake_race import _race as _race_bodies
from tests.claims.test_intake_race import throwaway_queue  # noqa: F401 (a fixture)

LEAN = "claims.api.IntakeMiddleware"


def client_for(kit, authorization: str | None = None) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=authorization or f"Token {kit.token}")
    return client


def post(kit, body: bytes, key: str | None = None, *, authorization=None, **extra):
    extra.setdefault("content_type", "application/fhir+json")
    return client_for(kit, authorization).generic(
        "POST", "/api/v1/claims", body, HTTP_IDEMPOTENCY_KEY=key or str(uuid.uuid4()), **extra
    )


def remembered(kit) -> None:
    """Read the token once (any request of the providers' API): this process remembers it."""
    assert client_for(kit).get("/api/v1/claims").status_code == 200


def full_stack(settings) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != LEAN]


@pytest.fixture
def kit(db):
    return f.make_provider()


@pytest.fixture
def anchored(db):
    return [f.anchor_procedure(f.procedure()) for _ in range(2)]


def _body(kit, anchored, price: str) -> bytes:
    return f.signed_body(kit, f.claim_resource(anchored, unit_price=price), anchored)


# --- media types ---------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "content_type",
    ["Application/FHIR+JSON", "APPLICATION/JSON; charset=utf-8", "application/fhir+json ;x=1"],
)
def test_a_media_type_answers_the_same_on_the_lean_path_and_the_full_stack(
    kit, anchored, settings, content_type
):
    remembered(kit)
    lean = post(kit, _body(kit, anchored, "2.00"), content_type=content_type)
    full_stack(settings)
    full = post(kit, _body(kit, anchored, "3.00"), content_type=content_type)
    # media types are case-insensitive (RFC 9110 8.3.1); the full stack used to refuse these
    assert lean.status_code == full.status_code == 202, (lean.content, full.content)
    assert Claim.objects.count() == 2


# --- the request as a whole ----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_host_not_allowed_stores_nothing(kit, anchored):
    remembered(kit)
    response = post(kit, _body(kit, anchored, "2.00"), HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert not Claim.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v1/claims/", 404), ("/api/v1/claimsx", 404), ("/api/v1/claims?x=1", 202)],
)
def test_other_paths_answer_through_the_full_stack(kit, anchored, path, status):
    remembered(kit)
    response = client_for(kit).generic(
        "POST",
        path,
        _body(kit, anchored, "2.00"),
        content_type="application/fhir+json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert response.status_code == status
    assert Claim.objects.count() == (1 if status == 202 else 0)


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"])
def test_other_methods_store_nothing(kit, anchored, method):
    remembered(kit)
    response = client_for(kit).generic(
        method,
        "/api/v1/claims",
        _body(kit, anchored, "2.00"),
        content_type="application/fhir+json",
        HTTP_IDEMPOTENCY_KEY="k",
    )
    assert response.status_code != 202
    assert not Claim.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "authorization",
    [
        "Token {key} extra",
        "Token",
        "Bearer {key}",
        "Token {key}x",
        "Token {key}\u00e9",
        "Basic {key}",
    ],
)
def test_a_malformed_or_other_authorization_stores_nothing(kit, anchored, authorization):
    remembered(kit)
    header = authorization.format(key=kit.token)
    response = post(kit, _body(kit, anchored, "2.00"), authorization=header)
    assert response.status_code == 401
    assert not Claim.objects.exists()


@pytest.mark.django_db
def test_a_remembered_user_deleted_stores_nothing(kit, anchored):
    remembered(kit)
    type(kit.user).objects.filter(pk=kit.user.pk).delete()
    response = post(kit, _body(kit, anchored, "2.00"))
    assert response.status_code == 401
    assert not Claim.objects.exists()


@pytest.mark.django_db
def test_a_remembered_token_replaced_by_a_new_one_stores_nothing(kit, anchored):
    remembered(kit)
    Token.objects.filter(key=kit.token).delete()
    new = Token.objects.create(user=kit.user)
    response = post(kit, _body(kit, anchored, "2.00"))
    assert response.status_code == 401
    assert not Claim.objects.exists()
    again = post(kit, _body(kit, anchored, "2.00"), authorization=f"Token {new.key}")
    assert again.status_code == 202


@pytest.mark.django_db
def test_a_token_of_another_provider_stores_under_its_own_provider(kit, anchored):
    lab = f.make_provider(f.LAB)
    remembered(kit)
    remembered(lab)
    # the lab's token with the hospital's signed body: the key is not the lab's, a 422
    response = post(kit, _body(kit, anchored, "2.00"), authorization=f"Token {lab.token}")
    assert response.status_code == 422 and response.json()["code"] == "unknown_key"
    assert not Claim.objects.exists()


@pytest.mark.django_db
def test_with_debug_on_the_lean_path_stores_and_answers_as_before(kit, anchored, settings):
    settings.DEBUG = True
    remembered(kit)
    response = post(kit, _body(kit, anchored, "2.00"))
    assert response.status_code == 202
    claim = Claim.objects.prefetch_related("items", "events__actor").get()
    assert response.json() == json.loads(json.dumps(ClaimOutput(claim).data))


# --- PostgreSQL: racing on the lean path, and the statement retried on a new connection ---------


def _race(kit, body: bytes, key: str, n: int) -> list[tuple[int, dict]]:
    return _race_bodies(kit, [body] * n, key)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_one_key_raced_on_the_lean_path_stores_one_claim(throwaway_queue):  # noqa: F811
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure()) for _ in range(2)]
    remembered(kit)
    answers = _race(kit, _body(kit, anchored, "2.00"), "raced", 8)
    assert {status for status, _ in answers} == {202}, answers
    assert len({data["id"] for _, data in answers}) == 1
    assert Claim.objects.count() == ClaimEvent.objects.count() == 1
    assert ClaimItem.objects.count() == 2
    assert AuditEntry.objects.filter(action="claim.submit").count() == 1


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_one_key_raced_on_the_lean_path_with_two_bodies_stores_one(throwaway_queue):  # noqa: F811
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure()) for _ in range(2)]
    remembered(kit)
    first, second = _body(kit, anchored, "2.00"), _body(kit, anchored, "3.00")
    bodies = [first, second] * 4
    answers = _race_bodies(kit, bodies, "raced")
    stored = Claim.objects.get()
    winner = first if bytes(stored.body) == first else second
    for body, (status, data) in zip(bodies, answers, strict=True):
        if body == winner:
            assert (status, data["id"]) == (202, str(stored.public_id))
        else:
            assert (status, data["code"]) == (409, "idempotency_conflict")
    assert AuditEntry.objects.filter(action="claim.submit").count() == 1


def _kill_backend_of(conn) -> None:
    pid = conn.connection.info.backend_pid
    db = django_settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname=db["NAME"],
        password=db["PASSWORD"] or None, autocommit=True,
    ) as other:  # fmt: skip
        other.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("debug", [False, True], ids=["", "DEBUG"])
def test_a_connection_dead_before_the_statement_stores_the_claim_once(
    throwaway_queue,  # noqa: F811
    settings,
    debug,
):
    settings.DEBUG = debug  # queries logged: another cursor wrapper, the same retry
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure()) for _ in range(2)]
    # the token remembered and the key's owner known: the claim's statement is the first query
    assert post(kit, _body(kit, anchored, "1.00")).status_code == 202
    _kill_backend_of(connection)
    body = _body(kit, anchored, "2.00")
    response = post(kit, body, key="once")
    assert response.status_code == 202, response.content
    assert Claim.objects.count() == ClaimEvent.objects.count() == 2
    again = post(kit, body, key="once")
    assert again.status_code == 202 and again.json()["id"] == response.json()["id"]
    assert Claim.objects.count() == 2


# --- a body the database's constraints would refuse ---------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "full stack"])
def test_an_item_sequence_repeated_is_a_fhir_422_not_a_500(kit, anchored, settings, lean):
    resource = f.claim_resource(anchored)
    resource["item"][1]["sequence"] = 1  # one row per (claim, sequence) in the database
    body = f.signed_body(kit, resource, anchored)
    remembered(kit)
    if not lean:
        full_stack(settings)
    response = post(kit, body, key="dup")
    assert response.status_code == 422, response.content
    assert response["Content-Type"] == "application/fhir+json"
    issue = response.json()["issue"][0]
    assert issue["code"] == "duplicate"
    assert issue["expression"] == ["Bundle.entry[0].resource.item[1].sequence"]
    assert not Claim.objects.exists()


@pytest.mark.django_db
def test_the_lean_audit_entry_and_event_are_the_full_stacks(kit, anchored, settings):
    remembered(kit)
    lean = post(kit, _body(kit, anchored, "2.00"), key="lean")
    full_stack(settings)
    full = post(kit, _body(kit, anchored, "3.00"), key="full")
    assert lean.status_code == full.status_code == 202

    def trail(response) -> tuple:
        claim = Claim.objects.get(public_id=response.json()["id"])
        entry = AuditEntry.objects.get(target=f"claim:{claim.public_id}")
        event = ClaimEvent.objects.get(claim=claim)
        return (
            (entry.actor_id, entry.actor_label, entry.action, entry.why, sorted(entry.data)),
            entry.data["provider"],
            (event.actor_id, event.old_status, event.new_status, event.reason),
            (claim.submitted_by_id, claim.provider_id),
        )

    assert trail(lean) == trail(full)
    assert trail(lean)[0][:2] == (kit.user.pk, kit.user.username)
    assert trail(lean)[3] == (kit.user.pk, kit.provider.pk)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("lean", [True, False], ids=["lean path", "full stack"])
def test_a_user_deleted_while_their_claim_commits_is_told_and_nothing_is_stored(
    throwaway_queue,  # noqa: F811
    settings,
    lean,
):
    """The claim's statement sees the user (the delete is not committed yet), then its foreign
    keys wait on the deleted row at commit and fail once the delete commits: never a 500. The
    lean path hands over to the full stack, whose authentication answers 401; the full stack,
    which authenticated before the delete, answers 409 "send it again" (then 401)."""
    kit = f.make_provider()
    anchored = [f.anchor_procedure(f.procedure()) for _ in range(2)]
    body = _body(kit, anchored, "2.00")
    if lean:
        remembered(kit)
    else:
        full_stack(settings)
    user_id = kit.user.pk
    deleting, done = threading.Event(), threading.Event()

    def delete_then_commit_once_the_claim_waits() -> None:
        dsn = connection.get_connection_params()
        with psycopg.connect(**dsn, autocommit=False) as other:
            other.execute("DELETE FROM authtoken_token WHERE user_id = %s", [user_id])
            other.execute("DELETE FROM claims_provideruser WHERE user_id = %s", [user_id])
            other.execute("DELETE FROM auth_user WHERE id = %s", [user_id])
            deleting.set()
            for _ in range(200):  # until the claim's statement waits on the deleted rows
                waiting = other.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                ).fetchone()[0]
                if waiting:
                    break
                threading.Event().wait(0.05)
            other.commit()
        done.set()

    deleter = threading.Thread(target=delete_then_commit_once_the_claim_waits)
    deleter.start()
    assert deleting.wait(10)
    answer = post(kit, body, "gone-user")
    deleter.join(20)
    assert done.is_set()
    if lean:
        assert answer.status_code == 401, answer.content
    else:
        assert (answer.status_code, answer.json()["code"]) == (409, "account_changed")
        assert post(kit, body, "gone-user").status_code == 401
    assert (
        not Claim.objects.exists() and not AuditEntry.objects.filter(action="claim.submit").exists()
    )
