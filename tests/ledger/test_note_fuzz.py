"""Properties of ledger.note: round trips, tamper evidence, hostile input only raises NoteError."""

from __future__ import annotations

import base64
import contextlib
import time
from functools import cache

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ledger import note
from ledger.checkpoint import Checkpoint
from ledger.note import NoteError

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Note text: any Unicode but surrogates and ASCII controls other than newline.
_text_chars = st.characters(
    blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(32) if c != 10]
)
bodies = st.text(_text_chars, max_size=200).map(lambda s: s + "\n")
# Key names: Go's rule (no Unicode space, no '+') without controls.
names = st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="+"),
    min_size=1,
    max_size=30,
)
checkpoint_bodies = st.builds(
    lambda origin, size, root: Checkpoint(origin, size, root).body(),
    names,
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
)
timestamps = st.integers(0, 2**63 - 1)


@cache
def _key(name: str, cosigner: bool = False) -> tuple[str, str]:
    return note.generate_cosigner_key(name) if cosigner else note.generate_key(name)


def _flip_payload_byte(line: str, index: int) -> str:
    prefix, b64 = line.rstrip("\n").rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[index % len(raw)] ^= 1 << (index % 8)
    return f"{prefix} {base64.b64encode(bytes(raw)).decode()}\n"


# --- round trips ---------------------------------------------------------------------------------


@FAST
@given(bodies, names)
def test_it_verifies_what_it_signs(body: str, name: str) -> None:
    skey, vkey = _key(name)
    signed = note.sign(body, skey)
    opened = note.verify(signed, [vkey])
    assert opened.text == body
    assert opened.names == (name,)
    assert note.verify(signed.encode("utf-8"), (vkey,)) == opened
    assert note.split_note(signed) == (body, (signed[len(body) + 1 :],))


@FAST
@given(checkpoint_bodies, names, timestamps)
def test_it_verifies_the_cosignatures_it_makes(body: str, name: str, ts: int) -> None:
    log_skey, log_vkey = _key("log.example/log")
    skey, vkey = _key(name, cosigner=True)
    cosigned = note.add_signatures(note.sign(body, log_skey), [note.cosign(body, skey, ts)])
    assert note.verify_cosignature(cosigned, [vkey]) == {name: ts}
    assert note.verify(cosigned, [log_vkey]).names == ("log.example/log",)


@FAST
@given(checkpoint_bodies, timestamps)
def test_it_adds_signatures_idempotently(body: str, ts: int) -> None:
    log_skey, _ = _key("log")
    skey, vkey = _key("w1", cosigner=True)
    line = note.cosign(body, skey, ts)
    once = note.add_signatures(note.sign(body, log_skey), [line])
    assert note.add_signatures(once, [line]) == once
    assert note.add_signatures(once, [line.rstrip("\n")]) == once
    newer = note.cosign(body, skey, ts // 2)
    replaced = note.add_signatures(once, [newer])
    assert note.split_note(replaced)[1].count(newer) == 1
    assert note.verify_cosignature(replaced, [vkey]) == {"w1": ts // 2}


def test_it_counts_a_quorum_of_distinct_cosigners() -> None:
    body = Checkpoint("example.com/log", 3, bytes(32)).body()
    signed = note.sign(body, _key("example.com/log")[0])
    members = [_key(f"member{i}.example", cosigner=True) for i in range(5)]
    lines = [note.cosign(body, skey, 1000 + i) for i, (skey, _) in enumerate(members[:3])]
    cosigned = note.add_signatures(signed, lines)
    got = note.verify_cosignature(cosigned, [vkey for _, vkey in members])
    assert got == {"member0.example": 1000, "member1.example": 1001, "member2.example": 1002}


def test_it_ignores_a_known_name_with_an_unknown_key_id() -> None:
    old_skey, old_vkey = note.generate_key("example.com/log")
    new_skey, new_vkey = note.generate_key("example.com/log")
    body = "rotate\n"
    both = note.add_signatures(
        note.sign(body, old_skey), [note.sign(body, new_skey).split("\n\n")[1]]
    )
    opened = note.verify(both, [new_vkey])
    assert opened.names == ("example.com/log",)
    assert len(opened.unverified) == 1
    assert note.verify(both, [old_vkey, new_vkey]).names == ("example.com/log", "example.com/log")


def test_it_rejects_a_note_whose_known_signature_is_invalid() -> None:
    skey, vkey = _key("example.com/log")
    other_skey, other_vkey = _key("other.example")
    body = "a\n"
    bad = _flip_payload_byte(note.sign(body, skey).split("\n\n")[1], 10)
    forged = note.add_signatures(note.sign(body, other_skey), [bad])
    assert note.verify(forged, [other_vkey]).names == ("other.example",)  # bad line unknown
    with pytest.raises(NoteError):
        note.verify(forged, [other_vkey, vkey])


# --- tamper evidence -----------------------------------------------------------------------------


@FAST
@given(bodies, st.data())
def test_it_rejects_any_changed_character_in_the_body(body: str, data) -> None:
    skey, vkey = _key("signer")
    signed = note.sign(body, skey)
    i = data.draw(st.integers(0, len(body) - 1))
    new = data.draw(st.characters(blacklist_categories=("Cs",)))
    assume(new != body[i])
    with pytest.raises(NoteError):
        note.verify(signed[:i] + new + signed[i + 1 :], [vkey])


@FAST
@given(bodies, st.integers(0, 2**16))
def test_it_rejects_any_changed_byte_in_the_signature(body: str, index: int) -> None:
    skey, vkey = _key("signer")
    signed = note.sign(body, skey)
    forged = body + "\n" + _flip_payload_byte(signed[len(body) + 1 :], index)
    with pytest.raises(NoteError):
        note.verify(forged, [vkey])


@FAST
@given(checkpoint_bodies, timestamps, st.integers(0, 2**16), st.data())
def test_it_rejects_any_change_to_a_cosigned_checkpoint(
    body: str, ts: int, index: int, data
) -> None:
    skey, vkey = _key("w", cosigner=True)
    line = note.cosign(body, skey, ts)
    with pytest.raises(NoteError):
        note.verify_cosignature(body + "\n" + _flip_payload_byte(line, index), [vkey])
    i = data.draw(st.integers(0, len(body) - 1))
    new = data.draw(st.characters(blacklist_categories=("Cs",)))
    assume(new != body[i])
    with pytest.raises(NoteError):
        note.verify_cosignature(body[:i] + new + body[i + 1 :] + "\n" + line, [vkey])


def test_it_rejects_every_truncation_of_a_signed_note() -> None:
    skey, vkey = _key("signer")
    signed = note.sign("line one\n\nline three\n", skey)
    for end in range(len(signed)):
        with pytest.raises(NoteError):
            note.verify(signed[:end], [vkey])
    body, (line,) = note.split_note(signed)
    b64 = line.rstrip("\n").rsplit(" ", 1)[1]
    for cut in range(1, len(b64)):
        with pytest.raises(NoteError):
            note.verify(body + "\n" + line.replace(b64, b64[:-cut]), [vkey])


# --- hostile input -------------------------------------------------------------------------------


def _only_note_errors(fn, *args) -> None:
    with contextlib.suppress(NoteError):
        fn(*args)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.none(), st.integers(), st.lists(st.text())))
def test_it_raises_only_note_errors_on_random_notes(data: object) -> None:
    _, vkey = _key("signer")
    _, ckey = _key("w", cosigner=True)
    _only_note_errors(note.verify, data, [vkey])
    _only_note_errors(note.verify_cosignature, data, [ckey])
    _only_note_errors(note.split_note, data)
    _only_note_errors(note.add_signatures, data, ["\u2014 a AAAAAAA=\n"])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.lists(st.text(), max_size=3), st.none(), st.integers()))
def test_it_raises_only_note_errors_on_random_keys(keys: object) -> None:
    skey, _ = _key("signer")
    signed = note.sign("a\nb\nc\n", skey)
    _only_note_errors(note.verify, signed, keys)
    _only_note_errors(note.verify_cosignature, signed, keys)
    _only_note_errors(note.sign, "a\n", keys)
    _only_note_errors(note.cosign, "a\nb\nc\n", keys, 1)
    _only_note_errors(note.verifier_key, keys)


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=120), st.text(max_size=120))
def test_it_raises_only_note_errors_on_random_signature_lines(name: str, b64: str) -> None:
    skey, vkey = _key("signer")
    body = "a\nb\nc\n"
    signed = note.sign(body, skey)
    for lines in ([f"\u2014 {name} {b64}\n"], [f"{name} {b64}"], [name]):
        _only_note_errors(note.add_signatures, signed, lines)
        _only_note_errors(note.verify, signed + lines[0], [vkey])
    _only_note_errors(note.generate_key, name)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.one_of(st.integers(), st.floats(), st.none(), st.text()))
def test_it_raises_only_note_errors_on_bad_cosign_arguments(body: str, ts: object) -> None:
    skey, _ = _key("w", cosigner=True)
    _only_note_errors(note.cosign, body, skey, ts)


@pytest.mark.parametrize(
    "text",
    [
        "a\n\n\u2014 signer \n",
        "a\n\n\u2014 signer A\n",
        "a\n\n\u2014 signer AAAA\n",
        "a\n\n\u2014 signer AAAAAAA\n",
        "a\n\n\u2014 signer AAAAAAA==\n",
        "a\n\n\u2014 signer AAAAAA==AAAA\n",
        "a\n\n\u2014 signer \u0661\u0662\u0663\u0664\n",
        "a\n\n\u2014  AAAAAAA=\n",
        "a\n\n\u2014 sign+er AAAAAAA=\n",
        "a\n\n\u2014 sign\u00a0er AAAAAAA=\n",
        "a\n\n- signer AAAAAAA=\n",
        "a\n\n\u2014signer AAAAAAA=\n",
        "a\r\n\n\u2014 signer AAAAAAA=\n",
        "a\n\n" + "\u2014 signer AAAAAAA=\n" * 101,
        "\ud800\n\n\u2014 signer AAAAAAA=\n",
        "a\n\n\u2014 signer AAAAAAA=",
    ],
)
def test_it_rejects_malformed_signature_blocks(text: str) -> None:
    with pytest.raises(NoteError):
        note.verify(text, [_key("signer")[1]])
    with pytest.raises(NoteError):
        note.split_note(text)


def test_it_accepts_up_to_one_hundred_signature_lines() -> None:
    skey, vkey = _key("signer")
    signed = note.sign("a\n", skey)
    extra = [f"\u2014 other{i} AAAAAAA=\n" for i in range(99)]
    full = note.add_signatures(signed, extra)
    assert note.verify(full, [vkey]).names == ("signer",)
    with pytest.raises(NoteError):
        note.add_signatures(full, ["\u2014 one-too-many AAAAAAA=\n"])


def test_it_signs_and_verifies_a_one_megabyte_note_quickly() -> None:
    skey, vkey = _key("signer")
    body = ("x" * 99 + "\n") * 10_000  # 1,000,000 bytes
    start = time.perf_counter()
    signed = note.sign(body, skey)
    assert note.verify(signed, [vkey]).text == body
    assert note.verify(signed.encode("utf-8"), [vkey]).text == body
    with pytest.raises(NoteError):
        note.verify(signed.replace("x", "y", 1), [vkey])
    assert time.perf_counter() - start < 2.0


def test_it_rejects_notes_over_the_size_limit() -> None:
    skey, vkey = _key("signer")
    huge = "\u00e9" * (note.MAX_NOTE_BYTES // 2) + "\n"
    with pytest.raises(NoteError):
        note.sign(huge, skey)
    with pytest.raises(NoteError):
        note.verify(huge + "\n\u2014 signer AAAAAAA=\n", [vkey])
    with pytest.raises(NoteError):
        note.verify(b"\xff" * (2 * note.MAX_NOTE_BYTES), [vkey])


def test_it_rejects_invalid_names_when_generating_keys() -> None:
    for name in ["", "a b", "a+b", "a\tb", "a\u3000b", "a\u2028b", "a\x85b", "a\x00b", "\ud800"]:
        with pytest.raises(NoteError):
            note.generate_key(name)
        with pytest.raises(NoteError):
            note.generate_cosigner_key(name)


def test_it_keeps_note_and_cosigner_keys_apart() -> None:
    skey, vkey = note.generate_key("k")
    cskey, cvkey = note.generate_cosigner_key("k")
    body = "a\nb\nc\n"
    with pytest.raises(NoteError):
        note.cosign(body, skey, 1)
    with pytest.raises(NoteError):
        note.sign(body, cskey)
    with pytest.raises(NoteError):
        note.verify(note.sign(body, skey), [cvkey])
    assert note.verifier_key(cskey) == cvkey
    assert base64.b64decode(vkey.split("+", 2)[2])[0] == note.ALG_ED25519
    assert base64.b64decode(cvkey.split("+", 2)[2])[0] == note.ALG_COSIGNATURE_V1


def test_it_builds_go_style_verifier_keys_from_raw_public_keys() -> None:
    _, vkey = note.generate_key("EnochRoot")
    public = base64.b64decode(vkey.split("+", 2)[2])[1:]
    assert note.ed25519_verifier_key("EnochRoot", public) == vkey
    with pytest.raises(NoteError):
        note.ed25519_verifier_key("EnochRoot", public[:-1])
    assert note.key_id("EnochRoot", note.ALG_ED25519, public) == int(vkey.split("+")[1], 16)


def test_it_rejects_cosign_timestamps_out_of_range() -> None:
    skey, _ = _key("w", cosigner=True)
    for ts in (-1, 2**63, True, 1.5, "1"):
        with pytest.raises(NoteError):
            note.cosign("a\nb\nc\n", skey, ts)  # type: ignore[arg-type]
    with pytest.raises(NoteError):
        note.cosign("a\nb\n", skey, 1)
