"""``claimproof claim info`` and ``claim answer`` run for real against a live node: the
provider reads the insurer's request and answers with a document, and the claim comes back to
the adjusters."""

from __future__ import annotations

import base64
import io

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command

from claims.models import Claim
from claims.states import ClaimStatus
from review import services
from review.models import InfoRequest
from review.roles import Role
from tests.claims.factories import make_provider
from tests.cli.test_cli import Cli
from tests.review.factories import decidable_claim, user_with

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def waiting(live_server):
    call_command("ledger_init", stdout=io.StringIO())
    for role in Role:
        Group.objects.get_or_create(name=role.value)
    kit = make_provider()
    claim = decidable_claim(kit)
    services.claim_request_info(
        claim_id=claim.pk,
        user=user_with(Role.ADJUSTER),
        reason_code="operative-report",
        question="Please send the operative report.",
    )
    return kit, claim, live_server.url


def test_the_provider_reads_the_request_and_answers_with_a_file(waiting, tmp_path):
    kit, claim, url = waiting
    cli = Cli(tmp_path, url, kit.token)
    shown = cli("claim", "info", str(claim.public_id)).stdout
    assert "Please send the operative report." in shown and "OPEN" in shown
    [request] = cli.json("claim", "info", str(claim.public_id))
    assert request["answered"] is False and request["reason_code"] == "operative-report"

    report = tmp_path / "op-report.pdf"
    report.write_bytes(b"%PDF-1.4 operative report")
    answered = cli.json(
        "claim", "answer", str(claim.public_id), "--file", str(report), "--text", "Page 2."
    )
    assert answered["answered"] is True and answered["attachment_type"] == "DocumentReference"
    stored = InfoRequest.objects.get(claim=claim)
    attachment = stored.attachment["content"][0]["attachment"]
    assert attachment["contentType"] == "application/pdf" and attachment["title"] == "op-report.pdf"
    assert base64.b64decode(attachment["data"]) == b"%PDF-1.4 operative report"
    assert stored.answer_text == "Page 2."
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.NEEDS_REVIEW

    again = cli("claim", "answer", str(claim.public_id), "--file", str(report), code=1)
    assert "no_open_request" in again.stderr


def test_answer_with_a_resource_file_and_usage_errors(waiting, tmp_path):
    kit, claim, url = waiting
    cli = Cli(tmp_path, url, kit.token)
    cli("claim", "answer", str(claim.public_id), code=2)  # neither --resource nor --file
    patient = cli.write("patient.json", {"resourceType": "Patient"})
    cli("claim", "answer", str(claim.public_id), "--resource", patient, code=2)
    bad = cli.write("bad.json", {"resourceType": "Binary"})  # no contentType: the node refuses
    refused = cli("claim", "answer", str(claim.public_id), "--resource", bad, code=1)
    assert "422" in refused.stderr
    binary = cli.write(
        "binary.json", {"resourceType": "Binary", "contentType": "text/plain", "data": "aGk="}
    )
    cli("claim", "answer", str(claim.public_id), "--resource", binary)
    assert Claim.objects.get(pk=claim.pk).status == ClaimStatus.NEEDS_REVIEW
