"""The add-checkpoint wire format's proof lines: exactly the canonical base64 of 32 bytes."""

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import tlog_witness


def _canonical_hash(line: str) -> bytes | None:
    """The definition: decodes strictly to 32 bytes, and encodes back to the same line."""
    try:
        raw = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 and base64.b64encode(raw).decode() == line else None


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=tlog_witness.MAX_PROOF_LINES))
def test_a_formatted_request_parses_back_to_its_proof(proof):
    body = tlog_witness.format_request(7, proof, "log\n9\nroot\n\n— log sig\n")
    assert tlog_witness.parse_request(body).proof == proof


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@given(
    st.one_of(
        st.text(alphabet=_B64, min_size=40, max_size=48),
        st.binary(min_size=30, max_size=34).map(lambda b: base64.b64encode(b).decode()),
        st.text(max_size=50),
    )
)
def test_a_proof_line_is_accepted_exactly_when_it_is_canonical_base64_of_32_bytes(line):
    expected = _canonical_hash(line)
    body = f"old 1\n{line}\n\nlog\n2\nroot\n\n— log sig\n".encode()
    if "\n" in line or line == "":
        return  # not one line
    if expected is None:
        with pytest.raises(tlog_witness.WireError):
            tlog_witness.parse_request(body)
    else:
        assert tlog_witness.parse_request(body).proof == [expected]


def test_the_last_character_of_a_hash_carries_no_stray_bits():
    good = base64.b64encode(bytes(32)).decode()  # ...AAA=
    assert tlog_witness.parse_request(f"old 1\n{good}\n\nx\n".encode()).proof == [bytes(32)]
    stray = good[:-2] + "B="  # decodes to the same 32 bytes in a lenient decoder
    with pytest.raises(tlog_witness.WireError, match="not the base64 of a 32-byte hash"):
        tlog_witness.parse_request(f"old 1\n{stray}\n\nx\n".encode())
