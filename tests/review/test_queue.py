"""The adjusters' work queue through Django's test client: who may see it, what each row shows,
filters, sorting, keyset pages, search, status counts, validation (a fuzzed query string never
gives a 500), live status of claims being verified, and bulk approval.

Claims for the read-only queries are rows written directly (their status and checks as the
verifier would leave them: many of them, quickly); claims that are decided or verified here go
through the real intake and verification (tests/review/factories.py).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.test import Client
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claims.models import Claim, ClaimCheck
from claims.states import ClaimStatus
from review import queue as q
from review.models import Hold, Payout
from review.roles import Role
from tests.claims import factories as cf
from tests.review.factories import decidable_claim, user_with

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
S = ClaimStatus
_n = itertools.count(1)
T0 = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


def claim_row(
    kit: cf.ProviderKit,
    *,
    status: str = S.VERIFIED,
    total: str | None = "100.00",
    created: datetime | None = None,
    reference: str = "",
    verdict: str | None = None,
    failed: tuple[str, ...] = (),
    old_failed: tuple[str, ...] = (),
) -> Claim:
    """A claim as the verifier leaves it: ``failed`` checks failed in its latest run (run 2),
    ``old_failed`` only in the run before."""
    n = next(_n)
    created = created or T0 + timedelta(minutes=n)
    claim = Claim.objects.create(
        provider=kit.provider,
        idempotency_key=f"row-{n}",
        provider_reference=reference or f"REF-{n:05d}",
        body_sha256=b"\0" * 32,
        body=b"{}",
        signed_payload=b"{}",
        kid=kit.kid,
        use="claim",
        total=None if total is None else Decimal(total),
        currency="USD",
        status=status,
        verdict=status if verdict is None and status in q.VERDICTS else (verdict or ""),
        verification_runs=2,
        created_at=created,
        updated_at=created,
    )
    for run, names in ((1, old_failed), (2, failed)):
        for name in names:
            ClaimCheck.objects.create(
                claim=claim,
                run=run,
                name=name,
                outcome=ClaimCheck.Outcome.FAIL,
                sentence=f"{name} failed",
                checked_at=created,
            )
    return claim


def signed_in(*roles: Role) -> Client:
    client = Client()
    client.force_login(user_with(*roles))
    return client


def ids_on(response) -> list[str]:
    """The claim ids (short) of the table's rows, in order."""
    return re.findall(
        r'<td class="mono"><a href="/claims/[^"]+" title="[^"]+">(\w+)</a>', response.text
    )


def short(claim: Claim) -> str:
    return claim.public_id.hex[:8]


@pytest.fixture
def kit() -> cf.ProviderKit:
    return cf.make_provider()


@pytest.fixture
def lab() -> cf.ProviderKit:
    return cf.make_provider(cf.LAB)


@pytest.fixture
def adjuster() -> Client:
    return signed_in(Role.ADJUSTER)


# --- access -----------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ADJUSTER, Role.SENIOR_ADJUSTER, Role.AUDITOR])
def test_adjusters_seniors_and_auditors_see_the_queue(role: Role, kit) -> None:
    claim = claim_row(kit)
    response = signed_in(role).get("/queue/")
    assert response.status_code == 200
    assert short(claim) in ids_on(response)


def test_operators_provider_users_and_strangers_are_refused(kit) -> None:
    assert signed_in(Role.OPERATOR).get("/queue/").status_code == 403
    provider_user = Client()
    provider_user.force_login(kit.user)
    assert provider_user.get("/queue/").status_code == 403
    assert provider_user.get("/queue/counts/").status_code == 403
    assert provider_user.get("/queue/live/?ids=1").status_code == 403
    anonymous = Client().get("/queue/?status=verified")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/login/?next=/queue/")


# --- rows -------------------------------------------------------------------------------------


def test_a_row_shows_what_an_adjuster_decides_on(kit, adjuster) -> None:
    claim = claim_row(
        kit, status=S.REJECTED, total="1234.50", reference="INV-77", failed=("signature",)
    )
    holder = user_with(Role.ADJUSTER, username="alice")
    Hold.objects.create(claim=claim, user=holder, since=timezone.now())
    page = adjuster.get("/queue/").text
    row = re.search(rf'<tr id="claim-row-{claim.pk}".*?</tr>', page, re.S).group(0)
    assert f'href="/claims/{claim.public_id}/"' in row
    for text in (short(claim), "INV-77", kit.provider.name, "1234.50 USD", "signature", "alice"):
        assert text in row
    assert '<span class="badge bad">rejected</span>' in row
    assert claim.created_at.strftime("%Y-%m-%d %H:%M") in row


def test_a_failed_check_counts_only_in_the_latest_run(kit, adjuster) -> None:
    now_failing = claim_row(kit, status=S.REJECTED, failed=("binding",))
    fixed = claim_row(kit, status=S.VERIFIED, old_failed=("binding",))
    procedure = claim_row(kit, status=S.REJECTED, failed=("procedure:urn:uuid:1",))
    shown = ids_on(adjuster.get("/queue/?failed_check=binding"))
    assert shown == [short(now_failing)]
    assert ids_on(adjuster.get("/queue/?failed_check=procedure")) == [short(procedure)]
    row = re.search(rf'<tr id="claim-row-{fixed.pk}".*?</tr>', adjuster.get("/queue/").text, re.S)
    assert "binding" not in row.group(0)


# --- filters, search, sort ------------------------------------------------------------------


def test_each_filter_narrows_the_queue(kit, lab, adjuster) -> None:
    a = claim_row(kit, status=S.VERIFIED, total="50.00", created=T0)
    b = claim_row(kit, status=S.NEEDS_REVIEW, total="700.00", created=T0 + timedelta(days=2))
    c = claim_row(lab, status=S.REJECTED, total="9000.00", created=T0 + timedelta(days=5))
    d = claim_row(lab, status=S.RECEIVED, total=None, created=T0 + timedelta(days=6))

    def shown(**params) -> set[str]:
        response = adjuster.get("/queue/?" + urlencode(params))
        assert response.status_code == 200
        assert 'role="alert"' not in response.text, response.text
        return set(ids_on(response))

    assert shown() == {short(x) for x in (a, b, c, d)}
    assert shown(status="needs_review") == {short(b)}
    assert shown(provider=lab.provider.pk) == {short(c), short(d)}
    assert shown(amount_min="100") == {short(b), short(c)}
    assert shown(amount_max="700.00") == {short(a), short(b)}
    assert shown(amount_min="100", amount_max="1,000") == {short(b)}
    assert shown(created_from="2026-11-04") == {short(c), short(d)}
    assert shown(created_to="2026-11-03") == {short(a), short(b)}  # the whole 'to' day counts
    assert shown(created_from="2026-11-06", created_to="2026-11-06") == {short(c)}
    assert shown(verdict="rejected") == {short(c)}
    assert shown(verdict="none") == {short(d)}
    assert shown(provider=kit.provider.pk, status="verified", amount_max="60") == {short(a)}


def test_search_by_claim_id_short_id_or_provider_reference(kit, adjuster) -> None:
    one = claim_row(kit, reference="INV-2026-0042")
    two = claim_row(kit, reference="INV-2026-0099")
    claim_row(kit, reference="OTHER-1")

    def found(text: str) -> list[str]:
        return sorted(ids_on(adjuster.get("/queue/?" + urlencode({"q": text}))))

    assert found(str(one.public_id)) == [short(one)]
    assert found(one.public_id.hex.upper()) == [short(one)]
    assert found(short(two)) == [short(two)]
    assert found("INV-2026-0042") == [short(one)]
    assert found("INV-2026") == sorted([short(one), short(two)])
    assert found("nothing-like-it") == []


def test_sorting_by_date_and_by_amount_with_missing_totals_last(kit, adjuster) -> None:
    low = claim_row(kit, total="10.00")
    high = claim_row(kit, total="900.00")
    none = claim_row(kit, total=None, status=S.REJECTED)
    mid = claim_row(kit, total="300.00")
    assert ids_on(adjuster.get("/queue/")) == [short(c) for c in (mid, none, high, low)]
    assert ids_on(adjuster.get("/queue/?sort=oldest")) == [short(c) for c in (low, high, none, mid)]
    by_amount = [short(c) for c in (high, mid, low, none)]
    assert ids_on(adjuster.get("/queue/?sort=amount_desc")) == by_amount
    by_amount_up = [short(c) for c in (low, mid, high, none)]
    assert ids_on(adjuster.get("/queue/?sort=amount_asc")) == by_amount_up


# --- keyset pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("sort", list(q.SORTS))
def test_keyset_pages_list_every_claim_once_in_order_both_ways(kit, sort: str) -> None:
    """Ties on the sort key (same amount, same second) and missing totals included."""
    for i in range(23):
        claim_row(
            kit,
            total=None if i % 7 == 3 else f"{(i % 4) * 100}.00",
            created=T0 + timedelta(minutes=i // 3),
        )
    key, descending, _ = q.SORTS[sort]

    def sort_key(c: Claim) -> tuple:
        """Missing keys last; ties broken by id in the sort's direction."""
        value = getattr(c, key)
        tie = -c.pk if descending else c.pk
        if value is None:
            return (1, 0, tie)
        value = value.timestamp() if isinstance(value, datetime) else float(value)
        return (0, -value if descending else value, tie)

    expected = [c.pk for c in sorted(Claim.objects.all(), key=sort_key)]
    query = q.QueueQuery(sort=sort)
    pages, seen = [], []
    while True:
        page = q.queue_page(query, size=5)
        pages.append(page)
        seen += [r.claim.pk for r in page.rows]
        if page.next_after is None:
            break
        query = q.QueueQuery(sort=sort, after=page.next_after)
    assert seen == expected
    assert len(pages) == 5
    # and back: each "previous" link shows the page before it
    for before, page in itertools.pairwise(pages[1:]):
        back = q.queue_page(q.QueueQuery(sort=sort, before=page.prev_before), size=5)
        assert [r.claim.pk for r in back.rows] == [r.claim.pk for r in before.rows]
    first = q.queue_page(q.QueueQuery(sort=sort, before=pages[1].prev_before), size=5)
    assert [r.claim.pk for r in first.rows] == [r.claim.pk for r in pages[0].rows]
    assert first.prev_before is None


@pytest.mark.parametrize("sort", ["newest", "amount_asc"])
def test_pages_of_a_rare_failure_start_from_the_failures_and_keep_the_order(kit, sort) -> None:
    """Few failures: the queue sorts the matches (no index order); same pages either way."""
    failing = [
        claim_row(kit, status=S.REJECTED, failed=("signature",), total=f"{i % 3}0.00")
        for i in range(8)
    ]
    claim_row(kit, status=S.VERIFIED, old_failed=("signature",))  # an older run: no match
    claim_row(kit, status=S.REJECTED, failed=("binding",))
    assert q.failures_are_few("signature")
    query, seen = q.QueueQuery(failed_check="signature", sort=sort), []
    while True:
        page = q.queue_page(query, size=3)
        seen += [r.claim.pk for r in page.rows]
        if page.next_after is None:
            break
        query = replace(query, after=page.next_after)
    everything = q.queue_page(q.QueueQuery(sort=sort), size=100).rows
    assert seen == [r.claim.pk for r in everything if r.claim in failing]
    back = q.queue_page(replace(query, after=None, before=page.prev_before), size=3)
    assert [r.claim.pk for r in back.rows] == seen[3:6]  # pages of 3, 3 and 2
    counts = q.status_counts(q.QueueQuery(failed_check="signature"))
    assert counts[""] == 8 and counts[S.REJECTED] == 8 and counts[S.VERIFIED] == 0


def test_the_page_links_walk_the_filtered_queue(kit, lab, adjuster) -> None:
    mine = [claim_row(kit, status=S.VERIFIED) for _ in range(q.PAGE_SIZE + 5)]
    claim_row(lab, status=S.VERIFIED)
    first = adjuster.get(f"/queue/?provider={kit.provider.pk}")
    assert len(ids_on(first)) == q.PAGE_SIZE
    link = re.search(r'href="([^"]+)"[^>]*rel="next"', first.text).group(1).replace("&amp;", "&")
    assert f"provider={kit.provider.pk}" in link and "after=" in link
    second = adjuster.get(link)
    assert ids_on(second) == [short(c) for c in reversed(mine[:5])]
    assert 'rel="next"' not in second.text
    assert 'rel="prev"' in second.text


def test_a_cursor_naming_no_claim_shows_the_first_page_and_says_so(kit, adjuster) -> None:
    claim = claim_row(kit)
    response = adjuster.get("/queue/?after=999999999")
    assert response.status_code == 200
    assert "no longer exists" in response.text
    assert ids_on(response) == [short(claim)]


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"amount_min": "ten"}, "is not a number"),
        ({"amount_max": "1e999999"}, "between 0 and"),
        ({"amount_min": "-5"}, "between 0 and"),
        ({"amount_min": "1.001"}, "at most two decimals"),
        ({"amount_min": "NaN"}, "is not a number"),
        ({"amount_min": "500", "amount_max": "100"}, "minimum amount is above the maximum"),
        ({"created_from": "2026-13-01"}, "write it as YYYY-MM-DD"),
        ({"created_to": "yesterday"}, "write it as YYYY-MM-DD"),
        (
            {"created_from": "2026-11-05", "created_to": "2026-11-01"},
            "start date is after the end date",
        ),
        ({"created_to": "9999-12-31"}, "between 1900 and 9998"),
        ({"status": "lost"}, "is not one of"),
        ({"provider": "99999999999999999999"}, "positive whole number"),
        ({"provider": "424242"}, "There is no provider 424242"),
        ({"sort": "random"}, "is not one of"),
        ({"failed_check": "astrology"}, "is not one of"),
        ({"after": "-3"}, "positive whole number"),
    ],
)
def test_a_bad_parameter_is_explained_on_the_page_and_ignored(
    kit, adjuster, params, message
) -> None:
    claim = claim_row(kit)
    response = adjuster.get("/queue/?" + urlencode(params))
    assert response.status_code == 200
    assert message in response.text
    assert ids_on(response) == [short(claim)]  # the bad filter is dropped, the queue still shows


KEYS = [
    "status", "provider", "amount_min", "amount_max", "created_from", "created_to", "verdict",
    "failed_check", "q", "sort", "after", "before", "ids",
]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e9999", "NaN", "Infinity", "9" * 40, "2026-02-30", "\x00",
                     "\x00abc", "0x10", "\uff11\uff12", "1,5", "verified", "procedure", "%"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)  # fmt: skip


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=6))
def test_a_fuzzed_query_string_never_breaks_the_queue(kit, adjuster, pairs) -> None:
    if not Claim.objects.exists():
        claim_row(kit)
    query = urlencode(pairs)
    for url in ("/queue/", "/queue/counts/", "/queue/live/"):
        response = adjuster.get(f"{url}?{query}")
        assert response.status_code == 200, (url, pairs)
    htmx = adjuster.get(f"/queue/?{query}", headers={"HX-Request": "true"})
    assert htmx.status_code == 200


# --- counts -----------------------------------------------------------------------------------


def test_counts_per_status_follow_the_other_filters(kit, lab, adjuster) -> None:
    for _ in range(3):
        claim_row(kit, status=S.VERIFIED)
    claim_row(kit, status=S.REJECTED)
    claim_row(lab, status=S.VERIFIED)
    counts = q.status_counts(q.QueueQuery(provider=kit.provider.pk, status=S.REJECTED))
    assert counts[""] == 4
    assert counts[S.VERIFIED] == 3
    assert counts[S.REJECTED] == 1
    assert counts[S.PAID] == 0
    assert q.status_counts(q.QueueQuery(), cap=2)[S.VERIFIED] == 2  # capped
    cells = adjuster.get(f"/queue/counts/?provider={kit.provider.pk}&status=rejected").text
    assert '<span class="count" id="count-verified" hx-swap-oob="true">3</span>' in cells
    assert '<span class="count" id="count-all" hx-swap-oob="true">4</span>' in cells
    assert "checked" not in cells  # the tabs' state is the user's, not the counts'
    page = adjuster.get(f"/queue/?provider={kit.provider.pk}&status=rejected").text
    rejected = re.search(r'data-testid="tab-rejected">(.*?)</label>', page, re.S).group(1)
    assert "checked" in rejected and 'id="count-rejected"' in rejected


# --- htmx -------------------------------------------------------------------------------------


def test_htmx_gets_the_table_fragment_and_the_counts_are_told_to_follow(kit, adjuster) -> None:
    claim = claim_row(kit)
    response = adjuster.get("/queue/?status=verified", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert short(claim) in ids_on(response)
    assert response["HX-Trigger"] == "queueChanged"
    assert 'id="f-sort"' in response.text and 'hx-swap-oob="true"' in response.text
    restore = adjuster.get(
        "/queue/", headers={"HX-Request": "true", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in restore.text  # history restore needs the whole page


# --- live status ------------------------------------------------------------------------------


def test_claims_being_verified_are_polled_until_their_status_is_final(adjuster) -> None:
    kit = cf.make_provider()
    claim, _ = cf.claim_for(kit)
    assert claim.status == S.RECEIVED
    page = adjuster.get("/queue/").text
    live = re.search(r'<span id="queue-live" hx-get="([^"]+)" hx-trigger="every 2s"', page)
    assert live, "a received claim on the page must be polled"
    url = live.group(1).replace("&amp;", "&")
    assert url == f"/queue/live/?ids={claim.pk}"

    still = adjuster.get(url).text
    assert 'hx-trigger="every 2s"' in still
    assert "received" in still

    cf.verified(claim)
    done = adjuster.get(url).text
    assert 'data-live="off"' in done and "every 2s" not in done  # polling stops
    row = re.search(rf'<tr id="claim-row-{claim.pk}"[^>]*hx-swap-oob="true".*?</tr>', done, re.S)
    assert row and '<span class="badge ok">verified</span>' in row.group(0)
    assert 'type="checkbox"' in row.group(0)  # now it can be bulk approved
    assert "every 2s" not in adjuster.get("/queue/").text  # nothing left to poll


# --- bulk approval ----------------------------------------------------------------------------


def test_bulk_approve_approves_what_it_may_and_says_why_it_skips_the_rest() -> None:
    kit = cf.make_provider()
    small = decidable_claim(kit)  # 105.00: one adjuster may approve
    big = decidable_claim(kit, unit_price="600.00", procedures=2)  # 1200.00 > four-eyes
    flagged = decidable_claim(kit, unit_price="6000.00", status=S.NEEDS_REVIEW)
    adjuster = signed_in(Role.ADJUSTER)
    page = adjuster.get("/queue/").text
    assert f'name="claim" value="{small.pk}"' in page
    assert f'name="claim" value="{flagged.pk}"' not in page  # only verified claims are offered

    response = adjuster.post(
        "/queue/bulk-approve/",
        {"claim": [small.pk, big.pk, flagged.pk]},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    lines = re.findall(
        r'<li data-testid="bulk-line" data-ok="(yes|no)">(.*?)</li>', response.text, re.S
    )
    assert len(lines) == 3
    assert "Approved 1 of 3 selected claims." in response.text
    (ok_small, text_small), (ok_big, text_big), (ok_flag, text_flag) = lines
    payout = Payout.objects.get(claim=small)
    assert ok_small == "yes" and payout.reference in text_small and "105.00 USD" in text_small
    assert ok_big == "no" and "needs two adjusters" in text_big
    assert ok_flag == "no" and "not verified" in text_flag
    assert Claim.objects.get(pk=small.pk).status == S.APPROVED
    assert Claim.objects.get(pk=big.pk).status == S.VERIFIED
    assert not Payout.objects.filter(claim__in=[big, flagged]).exists()
    # the table's rows follow: the approved claim's row comes back without a checkbox
    row = re.search(
        rf'<tr id="claim-row-{small.pk}"[^>]*hx-swap-oob="true".*?</tr>', response.text, re.S
    )
    assert row and "approved" in row.group(0) and "checkbox" not in row.group(0)


def test_bulk_approve_with_nothing_selected_says_so(adjuster) -> None:
    response = adjuster.post("/queue/bulk-approve/", {"claim": ["x"]})
    assert response.status_code == 200
    assert "Select at least one verified claim" in response.text


def test_auditors_see_no_checkboxes_and_cannot_bulk_approve() -> None:
    claim = decidable_claim()
    auditor = signed_in(Role.AUDITOR)
    page = auditor.get("/queue/").text
    assert short(claim) in page
    assert 'type="checkbox"' not in page and "Approve selected" not in page
    response = auditor.post("/queue/bulk-approve/", {"claim": [claim.pk]})
    assert response.status_code == 403
    assert Claim.objects.get(pk=claim.pk).status == S.VERIFIED
    assert not Payout.objects.filter(claim=claim).exists()
    assert Client().post("/queue/bulk-approve/", {"claim": [claim.pk]}).status_code == 302


def test_bulk_approve_needs_post(adjuster) -> None:
    assert adjuster.get("/queue/bulk-approve/").status_code == 405


def test_the_queue_settings_do_not_leak_into_the_rest_of_the_request(kit) -> None:
    """No parallel workers and a count timeout for the queue's statements only."""
    from django.db import connection

    claim_row(kit)

    def setting(name: str) -> str:
        with connection.cursor() as cursor:
            cursor.execute(f"SHOW {name}")
            return cursor.fetchone()[0]

    before = (setting("max_parallel_workers_per_gather"), setting("statement_timeout"))
    q.queue_page(q.QueueQuery())
    q.status_counts(q.QueueQuery())
    q.status_counts(q.QueueQuery(failed_check="signature"))
    after = (setting("max_parallel_workers_per_gather"), setting("statement_timeout"))
    assert after == before
    with q.interactive(statement_timeout="123ms"):
        assert setting("max_parallel_workers_per_gather") == "0"
        assert setting("statement_timeout") == "123ms"
