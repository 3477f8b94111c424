"""ledger.checkpoint: C2SP tlog-checkpoint bodies, published vectors and properties."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.checkpoint import MAX_TREE_SIZE, Checkpoint, CheckpointError
from ledger.note import NoteError

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "c2sp_checkpoint.json").read_text("utf-8")
)
ROOT = bytes(range(32))

_line_chars = st.characters(blacklist_categories=("Cs", "Cc"))
lines = st.text(_line_chars, min_size=1, max_size=40)
checkpoints = st.builds(
    Checkpoint,
    origin=lines,
    size=st.integers(0, MAX_TREE_SIZE),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(lines, max_size=3).map(tuple),
)


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: c["from"])
def test_it_parses_published_checkpoints(case: dict) -> None:
    checkpoint = Checkpoint.parse(case["body"])
    assert checkpoint.origin == case["origin"]
    assert checkpoint.size == case["size"]
    assert checkpoint.root_hash == base64.b64decode(case["root_hash_base64"])
    assert checkpoint.extensions == tuple(case["extensions"])
    assert checkpoint.body() == case["body"]
    assert Checkpoint.parse(case["body"].encode("utf-8")) == checkpoint


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: c["why"])
def test_it_rejects_published_malformed_checkpoints(case: dict) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(case["body"])


def test_it_makes_checkpoint_errors_note_errors_and_value_errors() -> None:
    assert issubclass(CheckpointError, NoteError)
    assert issubclass(CheckpointError, ValueError)


def test_it_writes_the_c2sp_example_body() -> None:
    root = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert Checkpoint("example.com/behind-the-sofa", 20852163, root).body() == (
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"origin": "tab\there"},
        {"origin": "\ud800"},
        {"origin": 5},
        {"size": -1},
        {"size": MAX_TREE_SIZE + 1},
        {"size": True},
        {"size": "5"},
        {"root_hash": ROOT[:31]},
        {"root_hash": ROOT + b"\x00"},
        {"root_hash": "x" * 32},
        {"extensions": ("",)},
        {"extensions": ("a\nb",)},
        {"extensions": ["list"]},
    ],
)
def test_it_refuses_to_build_an_unwritable_checkpoint(kwargs: dict) -> None:
    fields = {"origin": "example.com/log", "size": 1, "root_hash": ROOT} | kwargs
    with pytest.raises(CheckpointError):
        Checkpoint(**fields)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\n",
        "o\n1\n",
        "o\n+1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n1_0\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n \n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n\u0661\n" + base64.b64encode(ROOT).decode() + "\n",  # Arabic-Indic digit one
        "o\n18446744073709551616\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n1\n" + base64.b64encode(ROOT).decode(),
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\r\n",
        "o\n1\n" + base64.urlsafe_b64encode(b"\xff" * 32).decode() + "\n",
        "o\n1\n" + base64.b64encode(ROOT).decode().rstrip("=") + "\n",
        "o\n1\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=\n",  # non-canonical trailing bits
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",
        "\x00o\n1\n" + base64.b64encode(ROOT).decode() + "\n",
    ],
)
def test_it_rejects_malformed_bodies(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)


def test_it_accepts_the_largest_uint64_size() -> None:
    body = f"o\n{MAX_TREE_SIZE}\n{base64.b64encode(ROOT).decode()}\n"
    assert Checkpoint.parse(body).size == MAX_TREE_SIZE


@given(checkpoints)
def test_it_round_trips_any_checkpoint_through_its_body(checkpoint: Checkpoint) -> None:
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    assert Checkpoint.parse(checkpoint.body().encode("utf-8")) == checkpoint


@settings(max_examples=300)
@given(st.one_of(st.text(), st.binary(), st.none(), st.integers()))
def test_it_raises_only_checkpoint_errors_on_hostile_input(data: object) -> None:
    with contextlib.suppress(CheckpointError):
        Checkpoint.parse(data)  # type: ignore[arg-type]


@given(checkpoints, st.data())
def test_it_raises_only_checkpoint_errors_on_mutated_bodies(checkpoint: Checkpoint, data) -> None:
    raw = bytearray(checkpoint.body().encode("utf-8"))
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] = data.draw(st.integers(0, 255))
    try:
        parsed = Checkpoint.parse(bytes(raw))
    except CheckpointError:
        return
    assert parsed.body().encode("utf-8") == bytes(raw)  # whatever parses is canonical
