"""The ledger page (``ledger:page``) through the Django test client, and its SVG helpers."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse

from ledger import anchor, charts, keys, merkle, services, views
from ledger.management.commands.ledger_demo import demo_procedure
from ledger.models import Leaf

URL = "/ledger/"
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def ledger(db) -> None:
    """Three members, 12 leaves sealed in cosigned checkpoints (the demo path)."""
    call_command("ledger_init", stdout=io.StringIO())
    call_command("ledger_demo", anchors=4, batches=2, stdout=io.StringIO())


def _append_pending() -> Leaf:
    signer = (keys.members_dir() / "northlab.example.key").read_text().strip()
    commitment = anchor.commitment(anchor.new_salt(), demo_procedure("northlab.example", 999))
    data = anchor.statement_sign(commitment=commitment, signer_key=signer)
    return services.anchor_append(data=data).leaf


def _text(response) -> str:
    return re.sub(r"\s+", " ", response.content.decode())


# --- the page ----------------------------------------------------------------------------------


def test_it_is_public_while_the_site_root_asks_a_visitor_to_log_in(client, db) -> None:
    """The ledger is for anyone to check; the root is the adjusters' workspace."""
    assert reverse("ledger:page") == URL
    assert client.get(URL).status_code == 200
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_renders_with_an_empty_log(client, db) -> None:
    response = client.get(URL)
    assert response.status_code == 200
    assert "The log has no checkpoint yet" in _text(response)
    assert "No checkpoints yet" in _text(response)


def test_it_shows_the_latest_checkpoint_final_with_its_cosigners(client, ledger) -> None:
    checkpoint = services.checkpoint_latest()
    response = client.get(URL)
    body = _text(response)
    assert response.status_code == 200
    assert 'data-testid="tree-size">12<' in body
    assert "FINAL" in body and "NOT FINAL" not in body
    assert base64.b64encode(bytes(checkpoint.root_hash)).decode() in body
    for name in ("St Mary&#x27;s Hospital", "North Laboratory", "Acme Insurance"):
        assert name in body
    assert "missing-witnesses" not in body
    # The note exactly as the API serves it, cosignature lines included.
    assert services.checkpoint_text(checkpoint) in response.content.decode().replace("&#x27;", "'")
    # htmx comes vendored from our static files, never from a CDN.
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', response.content.decode())
    assert any("htmx" in src for src in scripts)
    assert all(src.startswith("/static/") for src in scripts), scripts


def test_it_says_why_a_checkpoint_is_not_final(client, ledger) -> None:
    _append_pending()
    services.ledger_seal()  # a new checkpoint nobody has cosigned yet
    body = _text(client.get(URL))
    assert "NOT FINAL" in body
    assert "0 of 3 witnesses cosigned; quorum is 2" in body
    missing = body.split('data-testid="missing-witnesses"')[1].split("</ul>")[0]
    assert missing.count("<li>") == 3


def test_it_counts_against_the_configured_quorum(client, ledger, settings) -> None:
    settings.LEDGER_QUORUM = 4
    body = _text(client.get(URL))
    assert "3 of 3 witnesses cosigned; quorum is 4" in body


def test_it_draws_one_chart_point_per_checkpoint(client, ledger) -> None:
    body = _text(client.get(URL))
    chart = body.split('<svg class="chart"')[1].split("</svg>")[0]
    sizes = [int(s) for s in re.findall(r"<title>size (\d+) at", chart)]
    assert chart.count('class="point"') == len(sizes) >= 3
    assert sizes[0] == 0 and sizes[-1] == 12 and sizes == sorted(sizes)


def test_page_reads_a_bounded_number_of_rows(client, ledger, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(10):
        assert client.get(URL).status_code == 200
    with django_assert_max_num_queries(12):
        assert client.get(URL, {"leaf": "5"}).status_code == 200


# --- looking up a leaf -------------------------------------------------------------------------


def test_lookup_by_index_shows_the_verified_path(client, ledger) -> None:
    response = client.get(URL, {"leaf": "5"})
    body = _text(response)
    assert response.status_code == 200
    assert "<html" in body  # without htmx: the whole page
    assert 'data-testid="leaf-index">5<' in body
    assert "✓ Verified" in body
    assert 'data-levels="4"' in body  # a tree of 12 leaves: leaf 5 is 4 levels from the root
    assert body.count('<g class="level"') == 4


@pytest.mark.parametrize("encoding", ["hex", "base64", "base64url-unpadded"])
def test_lookup_by_hash_finds_the_leaf(client, ledger, encoding: str) -> None:
    leaf_hash = bytes(Leaf.objects.get(index=9).leaf_hash)
    query = {
        "hex": leaf_hash.hex().upper(),
        "base64": base64.b64encode(leaf_hash).decode(),
        "base64url-unpadded": base64.urlsafe_b64encode(leaf_hash).decode().rstrip("="),
    }[encoding]
    body = _text(client.get(URL, {"leaf": query}, **HTMX))
    assert 'data-testid="leaf-index">9<' in body
    assert "✓ Verified" in body


def test_htmx_lookup_returns_only_the_fragment(client, ledger) -> None:
    response = client.get(URL, {"leaf": "0"}, **HTMX)
    body = _text(response)
    assert response.status_code == 200
    assert "<html" not in body and "Latest checkpoint" not in body
    assert 'data-testid="lookup-outcome"' in body
    assert "HX-Request" in response["Vary"]


def test_htmx_history_restore_gets_the_whole_page(client, ledger) -> None:
    response = client.get(URL, {"leaf": "0"}, **HTMX, HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert "<html" in _text(response)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("abc", "is neither a leaf index nor a leaf hash"),
        ("-1", "A leaf index is a whole number from 0 up"),
        ("12", "The log has no leaf 12"),
        ("9" * 30, "No log has a leaf that large"),
        (str(2**63 - 1), "No log has a leaf that large"),
        ("ab" * 32, "No leaf has this hash"),
        ("zz" * 32, "is neither a leaf index nor a leaf hash"),
        ("q" * 42, "is neither a leaf index nor a leaf hash"),
        ("x" * 101, "That is too long"),
        ("3.5", "is neither a leaf index nor a leaf hash"),
    ],
)
def test_bad_lookups_explain_themselves(client, ledger, query: str, message: str) -> None:
    for extra in ({}, HTMX):
        response = client.get(URL, {"leaf": query}, **extra)
        assert response.status_code == 200
        body = _text(response)
        error = body.split('data-testid="lookup-error">')[1].split("</p>")[0]
        assert message in error
        assert 'data-testid="proof-path"' not in body


def test_a_proof_that_misses_the_signed_root_is_reported_not_verified(ledger) -> None:
    checkpoint = services.checkpoint_latest()
    checkpoint.root_hash = b"\x00" * 32  # in memory only: as if the signed root differed
    lookup = views.leaf_lookup("3", checkpoint)
    assert not lookup.verified
    assert lookup.verdict == "Not verified: inclusion proof does not lead to the root hash."
    assert "✗ mismatch" in lookup.svg


def test_lookup_of_a_pending_leaf_shows_it_without_a_proof(client, ledger) -> None:
    leaf = _append_pending()
    body = _text(client.get(URL, {"leaf": str(leaf.index)}, **HTMX))
    assert f'data-testid="leaf-index">{leaf.index}<' in body
    assert "PENDING" in body
    assert f"Leaf {leaf.index} is not sealed yet" in body
    assert 'data-testid="proof-path"' not in body


def test_lookup_before_any_checkpoint_says_nothing_is_sealed(client, db) -> None:
    body = _text(client.get(URL, {"leaf": "0"}, **HTMX))
    assert "The log has no leaf 0" in body


def test_an_empty_lookup_shows_nothing(client, ledger) -> None:
    response = client.get(URL, {"leaf": "  "}, **HTMX)
    assert response.status_code == 200
    assert "lookup-outcome" not in response.content.decode()


def test_it_is_read_only(client, ledger) -> None:
    assert client.post(URL, {"leaf": "1"}).status_code == 405


# --- the SVG helpers ---------------------------------------------------------------------------


def _leaves(n: int) -> list[bytes]:
    return [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(n)]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 12, 33])
def test_inclusion_path_computes_the_nodes_rfc9162_verification_does(size: int) -> None:
    leaves = _leaves(size)
    root = merkle.root_hash(leaves)
    for index in range(size):
        proof = merkle.inclusion_proof(index, leaves)
        steps = charts.inclusion_path(index, size, leaves[index], proof)
        assert len(steps) == len(proof)
        assert (steps[-1].parent if steps else leaves[index]) == root
        for step in steps:
            lo, hi = step.node_range
            s_lo, s_hi = step.sibling_range
            assert step.node == merkle.root_hash(leaves[lo:hi])
            assert step.sibling == merkle.root_hash(leaves[s_lo:s_hi])
            assert step.sibling_side == ("left" if s_hi <= lo else "right")
        assert steps == [] or steps[-1].node_range[0] <= index < steps[-1].node_range[1]


def test_inclusion_path_refuses_a_proof_of_the_wrong_length() -> None:
    leaves = _leaves(6)
    proof = merkle.inclusion_proof(2, leaves)
    with pytest.raises(merkle.ProofError):
        charts.inclusion_path(2, 6, leaves[2], proof[:-1])
    with pytest.raises(merkle.ProofError):
        charts.inclusion_path(6, 6, leaves[2], proof)


def test_inclusion_path_svg_draws_each_level_and_the_full_hashes() -> None:
    leaves = _leaves(12)
    proof = merkle.inclusion_proof(5, leaves)
    svg = charts.inclusion_path_svg(5, 12, leaves[5], proof, verified=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('<g class="level"') == len(proof) == 4
    for h in proof:
        assert h.hex() in svg  # in full, in a <title>
        assert charts.short_hash(h) in svg
    assert merkle.root_hash(leaves).hex() in svg
    assert "✓ verified" in svg
    assert "mismatch" in charts.inclusion_path_svg(5, 12, leaves[5], proof, verified=False)


def test_inclusion_path_svg_of_a_one_leaf_tree_is_just_the_root() -> None:
    leaf = merkle.leaf_hash(b"only")
    svg = charts.inclusion_path_svg(0, 1, leaf, [], verified=True)
    assert '<g class="level"' not in svg
    assert "root of 1 leaf ✓ verified" in svg


def test_size_chart_has_a_point_per_checkpoint_and_labelled_axes() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    points = [(t0 + timedelta(minutes=i), size) for i, size in enumerate([0, 40, 40, 130])]
    svg = charts.size_chart_svg(points)
    assert svg.count('class="point"') == 4
    assert "tree size (leaves)" in svg and "time (UTC)" in svg
    assert "size 130 at 2026-01-01 00:03:00 UTC" in svg
    assert ">200<" in svg  # the y axis ends at a round number above the largest size
    steps = re.search(r'<polyline[^>]*points="([^"]+)"', svg).group(1).split()
    assert len(steps) == 2 * len(points) - 1  # a step chart: one corner between points


def test_size_chart_copes_with_one_point_and_with_none() -> None:
    one = charts.size_chart_svg([(datetime(2026, 1, 1, tzinfo=UTC), 0)])
    assert one.count('class="point"') == 1
    assert "No checkpoints yet" in charts.size_chart_svg([])
