"""Synthetic ledger content, loaded fast: the seal and proof benchmarks need a million leaves.

The leaves are canonical anchor statements (the leaf format of ledger/anchor.py) with random
commitments and random 64-byte "signatures": they look like real leaves, byte for byte, but are
not signed, since only sealing and proving are measured. They go into ``ledger_leaf`` as pending
leaves with one ``COPY``.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger import merkle

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
LEDGER_TABLES = ["ledger_cosignature", "ledger_checkpoint", "ledger_treenode", "ledger_leaf"]


@dataclass
class MemberRef:
    id: int
    name: str
    key_id: str


@dataclass
class Pending:
    """Synthetic leaves: the leaf data and, per leaf, its commitment and member."""

    data: list[bytes]
    commitments: list[bytes]
    member_ids: list[int]


@dataclass
class SealedLog:
    """A log sealed in the bench database, and what the benchmarks compare it with."""

    size: int
    root: bytes
    data: list[bytes]
    leaf_hashes: list[bytes]
    pymerkle_tree: Any = field(repr=False)


def anchor_members() -> list[MemberRef]:
    """The members ``ledger_init`` registered, with their live anchor key ids."""
    from ledger.models import MemberKey

    keys = MemberKey.objects.filter(
        purpose=MemberKey.Purpose.ANCHOR, revoked_at__isnull=True
    ).select_related("member")
    return [MemberRef(k.member_id, k.member.name, k.key_id) for k in keys.order_by("member_id")]


def synthetic_leaves(n: int, members: list[MemberRef], seed: int = 9162) -> Pending:
    """``n`` canonical anchor statements (RFC 8785 key order), spread over ``members``."""
    rng = random.Random(seed)
    b64 = base64.b64encode
    data, commitments, member_ids = [], [], []
    for i in range(n):
        m = members[i % len(members)]
        commitment = rng.randbytes(32)
        when = (EPOCH + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
        data.append(
            (
                f'{{"commitment":"{b64(commitment).decode()}","key_id":"{m.key_id}",'
                f'"member":"{m.name}","signature":"{b64(rng.randbytes(64)).decode()}",'
                f'"timestamp":"{when}","version":1}}'
            ).encode()
        )
        commitments.append(commitment)
        member_ids.append(m.id)
    return Pending(data, commitments, member_ids)


def copy_pending(pending: Pending, start: int = 0) -> list[bytes]:
    """Insert ``pending`` as leaves ``start, start + 1, ...`` with one COPY; their leaf hashes."""
    from django.db import connection, transaction

    leaf_hash = merkle.leaf_hash
    hashes = [leaf_hash(d) for d in pending.data]
    received = EPOCH
    columns = '"index", leaf_hash, commitment, member_id, data, received_at'
    with (
        transaction.atomic(),
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ledger_leaf ({columns}) FROM STDIN") as copy,
    ):
        rows = zip(hashes, pending.commitments, pending.member_ids, pending.data, strict=True)
        for i, (h, c, member_id, data) in enumerate(rows, start):
            copy.write_row((i, h, c, member_id, data, received))
    return hashes


def settle() -> None:
    """What a database in steady state has: fresh planner statistics, dirty pages written."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_leaf")
        cursor.execute("ANALYZE ledger_treenode")
        cursor.execute("CHECKPOINT")


def reset_ledger() -> None:
    """Empty the ledger tables (the triggers allow TRUNCATE only with ledger.allow_truncate)
    and seal the checkpoint of the empty log, as ``ledger_init`` does."""
    from django.db import connection, transaction

    from ledger import services

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL ledger.allow_truncate = 'on'")
        cursor.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)}")
        # audit entries left by an earlier benchmark would be anchored by the next seal
        cursor.execute("TRUNCATE audit_auditentry, audit_chainanchor")
        cursor.execute("DELETE FROM ledger_ledgerlock WHERE name = 'append'")
    services.ledger_seal()


def pymerkle_tree() -> Any:
    """An empty pymerkle 7 in-memory tree hashing exactly as RFC 9162 does.

    ``algorithm='sha256'``; security mode stays on (the default, ``disable_security=False``),
    which prefixes leaves with 0x00 and interior nodes with 0x01.
    """
    from pymerkle import InmemoryTree

    tree = InmemoryTree(algorithm="sha256", disable_security=False)
    if (tree.leaf_prefix, tree.node_prefix) != (b"\x00", b"\x01"):
        raise RuntimeError("pymerkle does not hash with the RFC 9162 prefixes")
    return tree


def build_sealed_log(size: int) -> SealedLog:
    """A fresh log of ``size`` synthetic leaves, sealed in one checkpoint (nothing timed)."""
    from ledger import services

    reset_ledger()
    pending = synthetic_leaves(size, anchor_members())
    hashes = copy_pending(pending)
    checkpoint = services.ledger_seal(max_leaves=size)
    settle()
    tree = pymerkle_tree()
    tree.append_entries(pending.data)
    root = bytes(checkpoint.root_hash)
    if tree.get_root() != root:
        raise RuntimeError("pymerkle and the sealed log disagree on the root hash")
    return SealedLog(size, root, pending.data, hashes, tree)
