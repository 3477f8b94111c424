"""`make run` loads a demo a newcomer can explore: ledger, providers with tokens, claims."""

import io

import pytest
from django.conf import settings
from django.core.management import call_command

from claims.models import Claim, Provider
from claims.verification import claim_verify
from ledger.models import Leaf

pytestmark = pytest.mark.django_db


def test_demo_load_builds_the_whole_story_once():
    call_command("ledger_init", stdout=io.StringIO())
    call_command("demo_load", anchors=3, claims=2, stdout=io.StringIO())
    assert Leaf.objects.count() > 9
    assert Provider.objects.count() == 2
    assert Claim.objects.count() == 2 * 2 + 5
    logins = (settings.VAR_DIR / "demo-logins.txt").read_text()
    assert "operator /" in logins and "API token" in logins
    outcomes = [claim_verify(claim_id=c.pk).status for c in Claim.objects.order_by("created_at")]
    assert outcomes.count("rejected") == 4  # tampered, never anchored, foreign anchor, billed twice
    assert set(outcomes[:4]) <= {"verified", "needs_review"}
    call_command("demo_load", anchors=3, claims=2, stdout=io.StringIO())
    assert Claim.objects.count() == 9  # loaded once
