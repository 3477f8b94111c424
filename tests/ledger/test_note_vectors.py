"""ledger.note against published vectors (tests/vectors/*.json, sources cited inside)."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import nacl.signing
import pytest

from ledger import note
from ledger.checkpoint import Checkpoint
from ledger.note import NoteError

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
GO = json.loads((VECTORS / "go_sumdb_note.json").read_text("utf-8"))
SUMDB = json.loads((VECTORS / "sumdb_checkpoints.json").read_text("utf-8"))
COSIG = json.loads((VECTORS / "c2sp_cosignature.json").read_text("utf-8"))

PETER_SKEY = GO["keys"]["signer_keys"]["PeterNeumann"]
PETER_VKEY = GO["keys"]["verifier_keys"]["PeterNeumann"]
OPEN_CASES = GO["open"]


def _note(case: dict) -> str:
    if "note" in case:
        return case["note"]
    parts = []
    for part in case["note_parts"]:
        parts.append(part["repeat"] * part["times"] if isinstance(part, dict) else part)
    return "".join(parts)


def _sigs(want: list[dict]) -> tuple[note.Signature, ...]:
    return tuple(note.Signature(s["name"], int(s["key_id"], 16), s["base64"]) for s in want)


def test_it_signs_the_go_example_note_byte_for_byte() -> None:
    case = GO["sign"][0]
    assert note.sign(case["text"], case["signer_key"]) == case["want"]


def test_it_refuses_to_sign_text_without_a_final_newline() -> None:
    case = GO["sign"][1]
    with pytest.raises(NoteError):
        note.sign(case["text"], case["signer_key"])


def test_it_derives_the_go_verifier_key_from_the_go_signer_key() -> None:
    assert note.verifier_key(PETER_SKEY) == PETER_VKEY


@pytest.mark.parametrize("case", OPEN_CASES, ids=[c["test"] for c in OPEN_CASES])
def test_it_opens_notes_as_go_does(case: dict) -> None:
    text = _note(case)
    if "want_error" in case:
        with pytest.raises(NoteError):
            note.verify(text, case["verifier_keys"])
        return
    opened = note.verify(text, case["verifier_keys"])
    assert opened.text == case["want_text"]
    assert opened.signatures == _sigs(case["want_signatures"])
    assert opened.unverified == _sigs(case["want_unverified"])
    assert opened.names == tuple(s["name"] for s in case["want_signatures"])
    assert note.verify(text.encode("utf-8"), case["verifier_keys"]) == opened


def _bad_notes() -> list[bytes]:
    out = []
    for item in GO["bad_notes"]["notes"]:
        if isinstance(item, dict):
            out.append(bytes.fromhex(item["hex_prefix"]) + item["rest"].encode("utf-8"))
        else:
            out.append(item.encode("utf-8"))
    return out


@pytest.mark.parametrize("raw", _bad_notes())
def test_it_rejects_go_malformed_notes(raw: bytes) -> None:
    keys = GO["bad_notes"]["verifier_keys"]
    with pytest.raises(NoteError):
        note.verify(raw, keys)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "surrogateescape")  # a str that is not valid UTF-8
    with pytest.raises(NoteError):
        note.verify(text, keys)


@pytest.mark.parametrize("case", GO["keys"]["bad_verifier_keys"], ids=lambda c: c["why"])
def test_it_rejects_go_bad_verifier_keys(case: dict) -> None:
    with pytest.raises(NoteError):
        note.verify(GO["sign"][0]["want"], [case["key"]])


def _manglings(key: str) -> set[str]:
    raw = key.encode("utf-8")
    out = {raw[i:j] for i in range(len(raw) + 1) for j in range(i + 1, len(raw) + 1)}
    out |= {raw[:i] + bytes([raw[i] + 1]) + raw[i + 1 :] for i in range(len(raw))}
    out.discard(raw)
    return {m.decode("utf-8", "surrogateescape") for m in out}


def test_it_rejects_every_mangling_of_the_go_verifier_key() -> None:
    signed = GO["sign"][0]["want"]
    for mangled in _manglings(PETER_VKEY):
        with pytest.raises(NoteError):
            note.verify(signed, [mangled])


def test_it_rejects_every_mangling_of_the_go_signer_key() -> None:
    for mangled in _manglings(PETER_SKEY):
        with pytest.raises(NoteError):
            note.sign("hello\n", mangled)


# --- real sum.golang.org checkpoints -----------------------------------------------------------


@pytest.mark.parametrize("case", SUMDB["checkpoints"], ids=lambda c: str(c["size"]))
def test_it_verifies_real_sum_golang_org_checkpoints(case: dict) -> None:
    opened = note.verify(case["note"], [SUMDB["verifier_key"]])
    assert opened.names == ("sum.golang.org",)
    checkpoint = Checkpoint.parse(opened.text)
    assert checkpoint.origin == case["origin"]
    assert checkpoint.size == case["size"]
    assert checkpoint.root_hash == base64.b64decode(case["root_hash_base64"])
    assert checkpoint.body() == opened.text


@pytest.mark.parametrize("case", SUMDB["checkpoints"], ids=lambda c: str(c["size"]))
def test_it_rejects_a_real_checkpoint_with_a_changed_size(case: dict) -> None:
    forged = case["note"].replace(f"\n{case['size']}\n", f"\n{case['size'] + 1}\n", 1)
    with pytest.raises(NoteError):
        note.verify(forged, [SUMDB["verifier_key"]])


# --- C2SP tlog-cosignature -----------------------------------------------------------------------


def test_it_reads_the_layout_of_the_spec_example_cosignature() -> None:
    example = COSIG["spec_example"]
    body, lines = note.split_note(example["note"])
    assert body == example["body"]
    want = example["cosignature"]
    line = next(x for x in lines if x.startswith(f"\u2014 {want['name']} "))
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 8 + 64
    assert raw[:4].hex() == want["key_id"]
    assert struct.unpack(">Q", raw[4:12])[0] == want["timestamp"]


def test_it_signs_the_spec_message_bytes_when_cosigning() -> None:
    example = COSIG["spec_example"]
    ts = example["cosignature"]["timestamp"]
    skey, vkey = note.generate_cosigner_key(example["cosignature"]["name"])
    line = note.cosign(example["body"], skey, ts)
    raw = base64.b64decode(line.split(" ")[2])
    public = base64.b64decode(vkey.split("+", 2)[2])[1:]
    assert raw[:4] == bytes.fromhex(vkey.split("+")[1])
    assert struct.unpack(">Q", raw[4:12])[0] == ts
    message = example["signed_message_at_1679315147"].encode("utf-8")
    nacl.signing.VerifyKey(public).verify(message, raw[12:])  # raises if the bytes differ


def test_it_ignores_the_spec_cosignature_whose_key_id_is_unknown() -> None:
    example = COSIG["spec_example"]
    name = example["cosignature"]["name"]
    skey, vkey = note.generate_cosigner_key(name)
    with pytest.raises(NoteError):
        note.verify_cosignature(example["note"], [vkey])
    cosigned = note.add_signatures(example["note"], [note.cosign(example["body"], skey, 42)])
    assert note.verify_cosignature(cosigned, [vkey]) == {name: 42}


def test_it_emits_the_published_cosignature_layout() -> None:
    published = base64.b64decode(COSIG["timestamps"][0]["base64"])
    assert struct.unpack(">Q", published[4:12])[0] == COSIG["timestamps"][0]["timestamp"]
    skey, _ = note.generate_cosigner_key("w")
    ours = base64.b64decode(note.cosign("o\n1\nh\n", skey, 1727964367).split(" ")[2])
    assert len(ours) == len(published)
    assert ours[4:12] == published[4:12]


def test_it_does_not_take_a_plain_note_signature_for_a_cosignature() -> None:
    published = base64.b64decode(COSIG["timestamps"][1]["base64"])
    assert len(published) == 4 + 64  # an 0x01 signature: no timestamp
    skey, vkey = note.generate_key("log")
    signed = note.sign("o\n1\nh\n", skey)
    with pytest.raises(NoteError):
        note.verify_cosignature(signed, [vkey])


def test_it_accepts_published_verifier_keys_for_their_own_algorithm_only() -> None:
    cosigner = COSIG["verifier_keys"]["cosigner"][0]["key"]
    plain = COSIG["verifier_keys"]["ed25519"][0]["key"]
    skey, vkey = note.generate_cosigner_key("w")
    cosigned = note.add_signatures(note.sign("o\n1\nh\n", note.generate_key("l")[0]), [])
    cosigned = note.add_signatures(cosigned, [note.cosign("o\n1\nh\n", skey, 7)])
    assert note.verify_cosignature(cosigned, [cosigner, vkey]) == {"w": 7}
    with pytest.raises(NoteError):
        note.verify(cosigned, [cosigner])
    with pytest.raises(NoteError):
        note.verify_cosignature(cosigned, [plain, vkey])
    with pytest.raises(NoteError):  # parses as a key, but signed nothing here
        note.verify(cosigned, [plain])


@pytest.mark.parametrize("case", COSIG["verifier_keys"]["invalid"], ids=lambda c: c["from"])
def test_it_rejects_published_invalid_verifier_keys(case: dict) -> None:
    with pytest.raises(NoteError):
        note.verify(GO["sign"][0]["want"], [case["key"]])
    with pytest.raises(NoteError):
        note.verify_cosignature(GO["sign"][0]["want"], [case["key"]])
