"""The hand-formatted statement is RFC 8785, for every member name the format allows."""

import base64
from datetime import UTC, datetime

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from ledger import anchor

members = st.from_regex(anchor._MEMBER, fullmatch=True)


@given(
    member=members,
    key_id=st.integers(0, 2**32 - 1),
    commitment=st.binary(min_size=32, max_size=32),
    signature=st.binary(min_size=64, max_size=64),
    seconds=st.integers(0, 253402300799),
)
def test_formatted_statement_is_exactly_rfc8785(member, key_id, commitment, signature, seconds):
    when = datetime.fromtimestamp(seconds, tz=UTC)
    statement = anchor.Statement(member, key_id, commitment, when, signature)
    fields = {
        "commitment": base64.b64encode(commitment).decode(),
        "key_id": f"{key_id:08x}",
        "member": member,
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": 1,
    }
    assert statement.signed_message() == anchor.CONTEXT + rfc8785.dumps(fields)
    signed = {**fields, "signature": base64.b64encode(signature).decode()}
    assert statement.canonical() == rfc8785.dumps(signed)
    parsed = anchor.statement_parse(statement.canonical())
    assert parsed == statement
    assert parsed.signed_message() == statement.signed_message()
