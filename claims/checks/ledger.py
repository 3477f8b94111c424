"""``procedure:<fullUrl>``: each disclosed Procedure is anchored, and the anchor is in a final
checkpoint.

Per Procedure: the commitment recomputed from salt + JCS(Procedure) is the one in the leaf at the
disclosed index, whose hash is the disclosed leaf hash; an inclusion proof from the stored tree
verifies against the root of a checkpoint the log operator signed and a quorum of members
cosigned. A leaf that is anchored but not in a final checkpoint yet *waits*; a checkpoint that is
not the log's (not signed by the operator, or whose root is not the stored tree's) *fails*.

Cost: one query for every leaf of the claim, one or two for the checkpoints and their
cosignatures, one round trip for all the proofs (through the tile cache: every proof is verified
against the signed root before it counts). Checkpoint signatures are verified once per process
per checkpoint state (:func:`_judge` is cached on the exact note, lines and keys). A batch of
claims (``claim_verify_many``) makes these reads once for all its claims (:func:`prefetch`).

A checkpoint that fork evidence held by this node's witness contradicts (``ledger.forks``) is
forked, whatever its cosignatures (no extra round trip unless such evidence exists: the
newest-checkpoint query says whether any does). With ``LEDGER_MIRROR_URL``
set, every leaf is proven through that log's C2SP tlog-tiles instead (``ledger.mirror_source``):
of this node's ledger tables only the members' anchor keys and the fork evidence are read.
docs/verification.md, "Forks and mirrors".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from django.conf import settings
from django.db import connection
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce

from claims.checks import FAIL, PASS, WAIT, Context, Result, b64, iso
from ledger import anchor, forks, keys, merkle, mirror, mirror_source, note, proofs
from ledger.checkpoint import Checkpoint as CheckpointBody
from ledger.checkpoint import CheckpointError
from ledger.models import Checkpoint, Cosignature, ForkEvidence, Leaf, MemberKey

PREFIX = "procedure:"
NAME_MAX = 80  # ClaimCheck.name


def check_name(full_url: str, position: int) -> str:
    name = PREFIX + full_url
    return name if len(name) <= NAME_MAX else f"{PREFIX}#{position}"


@dataclass(frozen=True, slots=True)
class LeafRow:
    index: int
    leaf_hash: bytes
    commitment: bytes
    member_id: int
    member: str
    data: bytes
    received_at: datetime


@dataclass(frozen=True)
class Judged:
    """A checkpoint row as verification sees it."""

    size: int
    root_hash: bytes
    forked: str | None  # why this is not the log's checkpoint; None when it is
    cosigners: tuple[tuple[str, int], ...]  # (member, cosignature timestamp) that verified
    ignored: tuple[str, ...]  # cosignatures that do not count, and why
    fork_evidence: dict | None = None  # the ForkEvidence row that contradicts this tree

    @property
    def final(self) -> bool:
        return self.forked is None and len(self.cosigners) >= settings.LEDGER_QUORUM

    def evidence(self) -> dict:
        return {
            "size": self.size,
            "root_hash": b64(self.root_hash),
            "origin": settings.LEDGER_ORIGIN,
            "cosigners": [{"member": m, "timestamp": t} for m, t in self.cosigners],
            "quorum": settings.LEDGER_QUORUM,
            "final": self.final,
            **({"forked": self.forked} if self.forked else {}),
            **({"not_counted": list(self.ignored)} if self.ignored else {}),
            **({"fork_evidence": self.fork_evidence} if self.fork_evidence else {}),
        }


def check(ctx: Context) -> list[Result]:
    disclosed = ctx.disclosed
    if not disclosed:
        return []
    source = mirror_source.mirror_source()
    if source is not None:
        return _check_mirror(ctx, source)
    pre = ctx.prefetched
    leaves = pre.leaves if pre is not None else _leaves(disclosed)
    evidences, problems, good = [], [], []
    for d in disclosed:
        evidence = {
            "full_url": d.full_url,
            "entry": d.entry,
            "commitment": b64(d.commitment),
            "leaf_index": d.leaf_index,
            "leaf_hash": b64(d.leaf_hash),
        }
        row = leaves.get(d.leaf_index)
        problem = _leaf_problem(d, row, leaves, evidence)
        if problem is None and row is not None:
            ctx.leaves[d.full_url] = row
            good.append(row)
        evidences.append(evidence)
        problems.append(problem)
    if pre is not None:
        head, target, paths = pre.head, pre.target, pre.paths
    else:
        head, target = _head_and_target(min(d.leaf_index for d in disclosed))
        paths = _proofs(target, good)

    results = []
    for position, (d, evidence, problem) in enumerate(
        zip(disclosed, evidences, problems, strict=True), start=1
    ):
        if problem is None:
            outcome, sentence = _inclusion(d.leaf_index, head, target, paths, evidence)
        else:
            outcome, sentence = FAIL, problem
        if outcome == FAIL:
            ctx.fail_procedure(d.full_url, "procedure-not-proven")
        results.append(Result(check_name(d.full_url, position), outcome, sentence, evidence))
    return results


def prefetch(disclosed) -> tuple[dict, Judged | None, Judged | None, dict]:
    """For a batch of claims (all their disclosures): the leaves, the newest and the target
    checkpoint and the proof of every leaf found, in as many queries as one claim needs.

    The target is chosen for the smallest disclosed index; a claim whose leaves it does not
    cover waits, as it would alone (the newest final checkpoint is the same for every claim).

    Against a mirror (``LEDGER_MIRROR_URL``) no own table is read: every disclosed leaf is
    proven through the mirror once for the batch, and ``paths`` holds what it said
    (:class:`Mirrored`, keyed by ``(leaf index, leaf hash)``).
    """
    if not disclosed:
        return {}, None, None, {}
    source = mirror_source.mirror_source()
    if source is not None:
        return {}, None, None, _mirror_read(source, disclosed)
    leaves = _leaves(disclosed)
    head, target = _head_and_target(min(d.leaf_index for d in disclosed))
    rows = {r.index: r for r in leaves.values()}
    return leaves, head, target, _proofs(target, list(rows.values()))


def _head_and_target(min_index: int) -> tuple[Judged | None, Judged | None]:
    """The newest checkpoint (it says what is sealed) and the checkpoint proofs go to: the
    newest if it is final or forked, else the newest final one (it covers every leaf that any
    final checkpoint covers); None when no final checkpoint covers ``min_index``."""
    latest, candidate = _checkpoints(min_index)
    if latest is None:
        return None, None
    head = _judge_row(latest)
    forked = latest["forks"]  # some fork evidence exists: look up the trees judged here
    if head.final or head.forked:
        # a final head's root is checked against the stored tree by the proofs
        [head] = _contradicted([head], forked)
        return head, head
    stored = _stored_root(head.size)  # a head witnesses will not cosign: an equivocating log?
    if stored is not None and stored != head.root_hash:
        return _forked(head, stored), _forked(head, stored)
    if candidate is None or candidate["pk"] == latest["pk"]:
        [head] = _contradicted([head], forked)
        return head, None
    head, target = _contradicted([head, _judge_row(candidate)], forked)
    return head, target if target.final or target.forked else None


def _contradicted(judged: list[Judged], any_evidence: bool) -> list[Judged]:
    """``judged`` with every tree that fork evidence held by this node's witness contradicts
    marked forked (:func:`forks.checkpoints_contradicted`: one query for all of them, and none
    when ``any_evidence`` says the table holds no row of this node's witness for this log)."""
    if not any_evidence:
        return judged
    trees = [(j.size, j.root_hash) for j in judged if j.forked is None]
    found = forks.checkpoints_contradicted(settings.LEDGER_ORIGIN, trees) if trees else {}
    out = []
    for j in judged:
        row = found.get((j.size, j.root_hash)) if j.forked is None else None
        if row is not None:
            j = replace(j, forked=fork_sentence(row), fork_evidence=fork_evidence(row))
        out.append(j)
    return out


def fork_sentence(row: ForkEvidence) -> str:
    """Why fork evidence ``row`` says a tree is not the history the witnesses cosigned."""
    cosigned = f"cosigned size {row.cosigned_size}"
    if row.cosigned_root is not None:
        cosigned += f" root {b64(bytes(row.cosigned_root))}"
    return (
        f"contradicted by fork evidence #{row.pk}: witness {row.witness} {cosigned} and refused "
        f"size {row.conflicting_size} root {b64(bytes(row.conflicting_root))}"
    )


def fork_evidence(row: ForkEvidence) -> dict:
    """The evidence row as a check records it (both notes stay in the table, by id)."""
    return {
        "id": row.pk,
        "witness": row.witness,
        "kind": row.kind,
        "reported_by": row.reported_by,
        "cosigned_size": row.cosigned_size,
        "cosigned_root": b64(bytes(row.cosigned_root)) if row.cosigned_root is not None else None,
        "conflicting_size": row.conflicting_size,
        "conflicting_root": b64(bytes(row.conflicting_root)),
        "detected_at": iso(row.detected_at),
    }


# --- the leaf -----------------------------------------------------------------------------------


def _leaves(disclosed) -> dict[int | bytes, LeafRow]:
    """Leaves at the disclosed indexes and, to explain a mismatch, wherever a disclosed
    commitment is anchored instead: one query. Keyed by index and by commitment."""
    rows = Leaf.objects.filter(
        Q(index__in=[d.leaf_index for d in disclosed])
        | Q(commitment__in=[d.commitment for d in disclosed])
    ).values_list("index", "leaf_hash", "commitment", "member_id", "member__name", "data",
                  "received_at")  # fmt: skip
    out: dict[int | bytes, LeafRow] = {}
    for index, leaf_hash, commitment, member_id, member, data, received_at in rows:
        row = LeafRow(index, bytes(leaf_hash), bytes(commitment), member_id, member, bytes(data),
                      received_at)  # fmt: skip
        out[index] = row
        out[row.commitment] = row
    return out


def _leaf_problem(d, row: LeafRow | None, leaves: dict, evidence: dict) -> str | None:
    """Why leaf ``d.leaf_index`` is not this Procedure's anchor; None when it is."""
    elsewhere = leaves.get(d.commitment)
    if elsewhere is not None and elsewhere.index != d.leaf_index:
        evidence["anchored_at_index"] = elsewhere.index
    if row is None:
        return (
            f"No leaf {d.leaf_index} exists on the ledger: this Procedure was never anchored "
            "there." + _elsewhere(evidence)
        )
    evidence.update(member=row.member, anchored_at=iso(row.received_at))
    if row.commitment != d.commitment:
        evidence["leaf_commitment"] = b64(row.commitment)
        return (
            f"Leaf {d.leaf_index} anchors another commitment: the disclosed Procedure and salt "
            "are not what was anchored there (a wrong salt, or a Procedure changed since)."
            + _elsewhere(evidence)
        )
    if row.leaf_hash != d.leaf_hash or merkle.leaf_hash(row.data) != row.leaf_hash:
        evidence["stored_leaf_hash"] = b64(row.leaf_hash)
        return f"Leaf {d.leaf_index} does not have the disclosed leaf hash."
    try:
        statement = anchor.statement_parse(row.data)
    except anchor.AnchorError as exc:
        return f"Leaf {d.leaf_index} does not hold a readable anchor statement ({exc})."
    evidence["statement_timestamp"] = iso(statement.timestamp)
    if statement.commitment != d.commitment or statement.member != row.member:
        return f"Leaf {d.leaf_index}'s signed statement does not match its row."
    return None


def _elsewhere(evidence: dict) -> str:
    index = evidence.get("anchored_at_index")
    return f" (This commitment is anchored at leaf {index}.)" if index is not None else ""


# --- checkpoints --------------------------------------------------------------------------------


# The newest checkpoint with every stored cosignature and its key: one round trip.
# Also whether any fork evidence of this node's witness exists for the log (nearly always not:
# then no checkpoint needs the evidence looked up, and the lookup costs no round trip).
_LATEST_SQL = """
SELECT c.id, c.size, c.root_hash, c.note, c.forks,
       s.line, k.verifier_key, m.name, k.purpose, k.revoked_at
FROM (SELECT id, size, root_hash, note,
             EXISTS(SELECT 1 FROM ledger_forkevidence WHERE origin = %s AND reported_by = %s)
             AS forks
      FROM ledger_checkpoint ORDER BY size DESC LIMIT 1) AS c
LEFT JOIN ledger_cosignature AS s ON s.checkpoint_id = c.id
LEFT JOIN ledger_memberkey AS k ON k.id = s.key_id
LEFT JOIN ledger_member AS m ON m.id = s.member_id
"""


def _checkpoints(min_index: int) -> tuple[dict | None, dict | None]:
    """The newest checkpoint and the newest one whose stored cosignatures from live keys reach
    the quorum (a candidate: :func:`_judge` decides), both as dicts with their cosignatures.
    When the newest reaches the quorum (the usual case) this is one round trip."""
    latest = _latest_checkpoint()
    if latest is None:
        return None, None
    if latest["n"] >= settings.LEDGER_QUORUM:
        return latest, latest
    live = (
        Cosignature.objects.filter(
            checkpoint=OuterRef("pk"),
            key__purpose=MemberKey.Purpose.COSIGN,
            key__revoked_at__isnull=True,
        )
        .order_by()
        .values("checkpoint")
        .annotate(n=Count("pk"))
        .values("n")
    )
    # scans back from the head and stops at the first; bounded by the leaf's index
    fallback = (
        Checkpoint.objects.annotate(n=Coalesce(Subquery(live, output_field=IntegerField()), 0))
        .order_by("-size")
        .filter(size__gt=min_index, n__gte=settings.LEDGER_QUORUM)
        .values("pk", "size", "root_hash", "note", "n")
        .first()
    )
    if fallback is not None:
        fallback["cosignatures"] = tuple(sorted(
            Cosignature.objects.filter(checkpoint_id=fallback["pk"]).values_list(
                "line", "key__verifier_key", "member__name", "key__purpose", "key__revoked_at"
            )
        ))  # fmt: skip
    return latest, fallback


def _latest_checkpoint() -> dict | None:
    with connection.cursor() as cursor:
        cursor.execute(_LATEST_SQL, [settings.LEDGER_ORIGIN, ForkEvidence.Reporter.WITNESS])
        rows = cursor.fetchall()
    if not rows:
        return None
    pk, size, root_hash, note_text, any_forks = rows[0][:5]
    cosignatures = tuple(sorted(tuple(r[5:]) for r in rows if r[5] is not None))
    live = sum(1 for *_, purpose, revoked in cosignatures
               if purpose == MemberKey.Purpose.COSIGN and revoked is None)  # fmt: skip
    return {"pk": pk, "size": size, "root_hash": root_hash, "note": note_text, "n": live,
            "cosignatures": cosignatures, "forks": bool(any_forks)}  # fmt: skip


def _judge_row(row: dict) -> Judged:
    cosigs = tuple(
        (line, vkey, member, purpose == MemberKey.Purpose.COSIGN and revoked is None)
        for line, vkey, member, purpose, revoked in row["cosignatures"]
    )
    return _judge(
        row["note"], row["size"], bytes(row["root_hash"]), settings.LEDGER_ORIGIN,
        keys.operator_verifier_key(), cosigs,
    )  # fmt: skip


@lru_cache(maxsize=256)
def _judge(
    note_text: str,
    size: int,
    root_hash: bytes,
    origin: str,
    operator_key: str,
    cosigs: tuple[tuple[str, str, str, bool], ...],
) -> Judged:
    """Verify a checkpoint's operator signature, body and cosignatures (pure: cached)."""
    try:
        body = CheckpointBody.parse(note.verify(note_text, [operator_key]).text)
    except (note.NoteError, CheckpointError) as exc:
        return Judged(size, root_hash, f"not signed by the log operator's key ({exc})", (), ())
    if (body.origin, body.size, body.root_hash) != (origin, size, root_hash):
        return Judged(
            size,
            root_hash,
            f"not what its row says: the signed body has {body.origin} size {body.size} root "
            f"{b64(body.root_hash)}, the row {origin} size {size} root {b64(root_hash)}",
            (),
            (),
        )
    cosigners: dict[str, int] = {}
    ignored: list[str] = []
    for line, vkey, member, live in cosigs:
        if not live:
            ignored.append(f"{member}: its cosigning key is revoked")
            continue
        try:
            verified = note.verify_cosignature(note.add_signatures(note_text, [line]), [vkey])
        except note.NoteError as exc:
            ignored.append(f"{member}: the cosignature does not verify ({exc})")
            continue
        if member in verified:
            cosigners.setdefault(member, verified[member])
        else:
            ignored.append(f"{member}: the cosignature is under another member's name")
    return Judged(size, root_hash, None, tuple(sorted(cosigners.items())), tuple(ignored))


# --- proofs -------------------------------------------------------------------------------------


def _proofs(target: Judged | None, rows: list[LeafRow]) -> dict[int, list[bytes] | str]:
    """Inclusion proof of each leaf in ``target``, verified against its signed root; a string
    says why a proof fails. All proofs are read in one round trip."""
    if target is None or target.forked:
        return {}
    indexes = sorted({r.index for r in rows if r.index < target.size})
    if not indexes:
        return {}
    hashes = {r.index: r.leaf_hash for r in rows}
    cache = proofs.shared_cache()
    readers = ([proofs.TileReader(tiles=cache)] if cache else []) + [proofs.HashReader()]
    for reader in readers:
        try:
            paths = _paths(reader, indexes, target.size)
        except proofs.SizeError as exc:
            paths = {i: f"the stored tree cannot prove it ({exc})" for i in indexes}
        out: dict[int, list[bytes] | str] = {}
        for index, path in paths.items():
            if isinstance(path, str):
                out[index] = path
                continue
            try:
                merkle.verify_inclusion(index, target.size, hashes[index], path,
                                        target.root_hash)  # fmt: skip
                out[index] = path
            except merkle.ProofError as exc:
                out[index] = f"the inclusion proof does not verify ({exc})"
        if all(not isinstance(p, str) for p in out.values()):
            return out
        if isinstance(reader, proofs.TileReader) and cache is not None:
            cache.clear()  # a bad tile must not serve anyone again; read from the database
    stored_root = _stored_root(target.size)
    if stored_root is not None and stored_root != target.root_hash:
        reason = (
            f"forked checkpoint: checkpoint {target.size} is {_forked(target, stored_root).forked}"
        )
        return {i: reason for i in indexes}
    return out


def _forked(judged: Judged, stored_root: bytes) -> Judged:
    return replace(
        judged,
        forked=f"signed over root {b64(judged.root_hash)}, which is not the root of the stored "
        f"tree of that size ({b64(stored_root)})",
    )


def _paths(reader: proofs.HashReader, indexes: list[int], size: int) -> dict[int, list[bytes]]:
    plans = [merkle.inclusion_proof_ranges(i, size) for i in indexes]
    hashes = reader.range_hashes([r for plan in plans for r in plan])
    out, at = {}, 0
    for index, plan in zip(indexes, plans, strict=True):
        out[index] = hashes[at : at + len(plan)]
        at += len(plan)
    return out


def _stored_root(size: int) -> bytes | None:
    try:
        return proofs.HashReader().range_hashes([(0, size)])[0]
    except proofs.SizeError:
        return None


def _inclusion(
    index: int,
    head: Judged | None,
    target: Judged | None,
    paths: dict[int, list[bytes] | str],
    evidence: dict,
) -> tuple[str, str]:
    if head is not None and head.forked:
        evidence["checkpoint"] = head.evidence()
        return FAIL, f"Forked checkpoint: the log's newest checkpoint {head.size} is {head.forked}."
    if head is None or index >= head.size:
        evidence["sealed_size"] = head.size if head else 0
        return WAIT, (
            f"Leaf {index} is anchored but not sealed into a checkpoint yet: waiting for the "
            "next seal."
        )
    if target is None or index >= target.size:
        evidence["checkpoint"] = head.evidence()
        return WAIT, (
            f"Leaf {index} is in checkpoint {head.size}, which has "
            f"{len(head.cosigners)} of the {settings.LEDGER_QUORUM} cosignatures that make it "
            "final: waiting for the quorum."
        )
    evidence["checkpoint"] = target.evidence()
    if target.forked:
        return FAIL, f"Forked checkpoint: checkpoint {target.size} is {target.forked}."
    path = paths.get(index)
    if isinstance(path, str) or path is None:
        evidence["problem"] = path
        fork = path is not None and path.startswith("forked")
        return FAIL, (("Forked checkpoint: " if fork else "") + f"leaf {index}: {path}.")
    evidence["proof"] = [b64(h) for h in path]
    names = ", ".join(m for m, _ in target.cosigners)
    return PASS, (
        f"Anchored by {evidence['member']} at leaf {index} on {evidence['anchored_at'][:10]}; "
        f"included in checkpoint {target.size} (proof of {len(path)} hashes), signed by the log "
        f"and cosigned by {names} ({len(target.cosigners)} of quorum {settings.LEDGER_QUORUM})."
    )


# --- against a mirror of another node's log (LEDGER_MIRROR_URL) ----------------------------------


@dataclass(frozen=True)
class Mirrored:
    """What the mirror said about one disclosed ``(leaf index, leaf hash)``."""

    outcome: str | None  # WAIT or FAIL when the mirror did not prove the leaf; None when it did
    sentence: str
    proof: mirror_source.MirrorProof | None = None
    row: LeafRow | None = None  # the leaf as its signed statement says (the binding check's)
    problem: str | None = None  # why the statement is not its member's (fail)
    unreadable: bool = False  # the mirror could not be read (or its answer did not check out)


def _check_mirror(ctx: Context, source: mirror_source.MirrorSource) -> list[Result]:
    """Each disclosed Procedure proven through the mirror's tiles and cosigned checkpoint."""
    pre = ctx.prefetched
    said = pre.paths if pre is not None else {}
    missing = [d for d in ctx.disclosed if not isinstance(said.get(_key(d)), Mirrored)]
    if missing:
        said = {**said, **_mirror_read(source, missing)}
    results = []
    for position, d in enumerate(ctx.disclosed, start=1):
        evidence = {
            "full_url": d.full_url,
            "entry": d.entry,
            "commitment": b64(d.commitment),
            "leaf_index": d.leaf_index,
            "leaf_hash": b64(d.leaf_hash),
            "source": settings.LEDGER_MIRROR_URL,
        }
        got = said[_key(d)]
        outcome, sentence = _mirror_outcome(d, got, evidence)
        if got.row is not None and got.problem is None and got.row.commitment == d.commitment:
            ctx.leaves[d.full_url] = got.row
        if outcome == FAIL:
            ctx.fail_procedure(d.full_url, "procedure-not-proven")
        results.append(Result(check_name(d.full_url, position), outcome, sentence, evidence))
    return results


def _key(d) -> tuple[int, bytes]:
    return d.leaf_index, bytes(d.leaf_hash)


def _mirror_read(
    source: mirror_source.MirrorSource, disclosed
) -> dict[tuple[int, bytes], Mirrored]:
    """Prove every distinct disclosed leaf through the mirror, then check each statement's
    signature under its member's anchor key (one query for all the keys). Once the mirror
    cannot be read, the remaining leaves wait with the same sentence without asking again: a
    down mirror costs a claim (or a batch) one timeout, not one per leaf."""
    out: dict[tuple[int, bytes], Mirrored] = {}
    unreadable: Mirrored | None = None
    for d in disclosed:
        if _key(d) not in out:
            got = unreadable or _mirror_prove(source, d.leaf_index, bytes(d.leaf_hash))
            if got.unreadable:
                unreadable = got
            out[_key(d)] = got
    names = {m.proof.statement.member for m in out.values() if m.proof is not None}
    known: dict[tuple[str, str], tuple[int, str, datetime | None]] = {}
    if names:
        rows = MemberKey.objects.filter(
            purpose=MemberKey.Purpose.ANCHOR, member__name__in=names
        ).values_list("member_id", "member__name", "key_id", "verifier_key", "revoked_at")
        for member_id, name, key_id, vkey, revoked_at in rows:
            known[(name, key_id)] = (member_id, vkey, revoked_at)
    return {k: _mirror_statement(m, known) if m.proof else m for k, m in out.items()}


def _mirror_prove(source: mirror_source.MirrorSource, index: int, leaf_hash: bytes) -> Mirrored:
    try:
        got = mirror_source.mirror_prove_leaf(source, index, leaf_hash)
    except mirror.NotFinal as exc:
        return Mirrored(WAIT, (
            f"The mirror cannot prove leaf {index} yet ({exc}): waiting for a cosigned "
            "checkpoint that covers it."
        ))  # fmt: skip
    except mirror.MirrorFork as exc:
        return Mirrored(FAIL, f"Forked checkpoint: the mirrored log signed two histories ({exc}).")
    except mirror.LeafMismatch:
        return Mirrored(FAIL, f"Leaf {index} does not have the disclosed leaf hash.")
    except mirror.MirrorError as exc:
        return Mirrored(WAIT, (
            f"The mirror could not be read or gave an answer that does not check out ({exc}): "
            "waiting to try again."
        ), unreadable=True)  # fmt: skip
    except anchor.AnchorError as exc:
        return Mirrored(FAIL, f"Leaf {index} does not hold a readable anchor statement ({exc}).")
    return Mirrored(None, "", proof=got)


def _mirror_statement(m: Mirrored, known: dict) -> Mirrored:
    """Check the statement's signature: this node did not append it, the log's operator did."""
    p = m.proof
    st = p.statement
    key_id = f"{st.key_id:08x}"
    member_id, problem = 0, None
    found = known.get((st.member, key_id))
    if found is None:
        problem = f"its statement is signed with anchor key {key_id} of {st.member}, unknown here"
    else:
        member_id, vkey, revoked_at = found
        try:
            anchor.statement_verify(st, vkey)
        except anchor.AnchorError as exc:
            problem = f"its statement does not verify ({exc})"
        else:
            if revoked_at is not None and st.timestamp >= revoked_at:
                problem = f"its statement is dated after anchor key {key_id} was revoked"
    row = LeafRow(p.index, p.leaf_hash, st.commitment, member_id, st.member, st.canonical(),
                  st.timestamp)  # fmt: skip
    return replace(m, row=row, problem=problem)


def _mirror_outcome(d, m: Mirrored, evidence: dict) -> tuple[str, str]:
    if m.proof is None:
        return m.outcome or WAIT, m.sentence
    p, row = m.proof, m.row
    evidence.update(member=row.member, anchored_at=iso(row.received_at),
                    statement_timestamp=iso(row.received_at))  # fmt: skip
    if row.commitment != d.commitment:
        evidence["leaf_commitment"] = b64(row.commitment)
        return FAIL, (
            f"Leaf {d.leaf_index} anchors another commitment: the disclosed Procedure and salt "
            "are not what was anchored there (a wrong salt, or a Procedure changed since)."
        )
    if m.problem is not None:
        return FAIL, f"Leaf {d.leaf_index} is not its member's anchor: {m.problem}."
    cosigners = sorted(p.cosigners.items())
    checkpoint = {
        "size": p.size,
        "root_hash": b64(p.root_hash),
        "origin": p.checkpoint_text.split("\n", 1)[0],
        "cosigners": [{"member": n, "timestamp": t} for n, t in cosigners],
        "quorum": settings.LEDGER_QUORUM,
        "final": p.contradicted is None,
        "note": p.checkpoint_text,
        "source": settings.LEDGER_MIRROR_URL,
    }
    evidence["checkpoint"] = checkpoint
    if p.contradicted is not None:
        checkpoint["forked"] = fork_sentence(p.contradicted)
        checkpoint["fork_evidence"] = fork_evidence(p.contradicted)
        return (
            FAIL,
            f"Forked checkpoint: the mirror's checkpoint {p.size} is {checkpoint['forked']}.",
        )
    evidence["proof"] = [b64(h) for h in p.proof]
    names = ", ".join(n for n, _ in cosigners)
    return PASS, (
        f"Anchored by {row.member} at leaf {d.leaf_index} on {evidence['anchored_at'][:10]}; "
        f"included in checkpoint {p.size} of the mirror {settings.LEDGER_MIRROR_URL} (proof of "
        f"{len(p.proof)} hashes), signed by the log and cosigned by {names} ({len(cosigners)} of "
        f"quorum {settings.LEDGER_QUORUM})."
    )
