"""``claimproof verify leaf | procedure``: offline proof that a leaf is in the consortium's log.

Trust comes only from the keys given on the command line: the checkpoint must carry the log
operator's signature and at least ``--quorum`` cosignatures from the witness keys, and the
inclusion proof must lead from the leaf hash to the checkpoint's root (RFC 9162 2.1.3.2). The
node is only asked for the proof (or not even that, with ``--proof FILE``); it is never trusted.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from claimproof_cli import OK, REFUSED, CliError, usage
from claimproof_cli.context import Context, read_bytes, read_json
from ledger import anchor, merkle, note
from ledger.checkpoint import Checkpoint


class Failed(Exception):
    """The verification does not hold: the sentence says which step failed."""


@dataclass
class Verdict:
    leaf_index: int
    tree_size: int | None = None
    leaf_hash: str | None = None
    root_hash: str | None = None
    origin: str | None = None
    cosigners: list[str] = field(default_factory=list)
    quorum: int = 0
    procedure: str | None = None
    reason: str | None = None

    def data(self) -> dict[str, Any]:
        return {"verified": self.reason is None, **self.__dict__}

    def human(self) -> str:
        what = (
            f"procedure {self.procedure!r} (leaf {self.leaf_index})"
            if self.procedure
            else (f"leaf {self.leaf_index}")
        )
        if self.reason:
            return f"NOT VERIFIED: {what}: {self.reason}"
        return (
            f"VERIFIED: {what} is in the log {self.origin} at tree size {self.tree_size}\n"
            f"  leaf hash  {self.leaf_hash}\n"
            f"  root hash  {self.root_hash}\n"
            f"  signed by the log key, cosigned by {len(self.cosigners)} witness(es) "
            f"(quorum {self.quorum}): {', '.join(self.cosigners) or '-'}"
        )


def _keys(values: list[str], what: str) -> list[str]:
    """Verifier key strings, given inline or as files (one key a line)."""
    out: list[str] = []
    for value in values:
        path = Path(value)
        lines = (
            read_bytes(path, what).decode("utf-8", "replace").split() if path.is_file() else [value]
        )
        for line in lines:
            if line.startswith("PRIVATE+KEY+"):
                raise usage(f"{what} {value!r} is a private signer key; give the verifier key")
            try:
                note.parse_verifier_key(line)
            except note.NoteError as exc:
                raise usage(f"{what} {value!r} is not a verifier key: {exc}") from None
            out.append(line)
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _hash(value: object, what: str) -> bytes:
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise Failed(f"{what} is not a 32-byte base64 hash")
    return raw


def _checkpoint(ctx: Context, log_key: str, witnesses: list[str], verdict: Verdict) -> Checkpoint:
    if ctx.args.checkpoint:
        text = read_bytes(ctx.args.checkpoint, "the checkpoint file")
    else:
        text = ctx.client.get("/api/v1/ledger/checkpoint").body
    try:
        opened = note.verify(text, [log_key])
        checkpoint = Checkpoint.parse(opened.text)
    except note.NoteError as exc:
        raise Failed(f"the checkpoint does not verify under the log key: {exc}") from None
    origin = note.parse_verifier_key(log_key).name
    if checkpoint.origin != origin:
        raise Failed(f"the checkpoint is of the log {checkpoint.origin!r}, not {origin!r}")
    verdict.origin, verdict.tree_size = checkpoint.origin, checkpoint.size
    verdict.root_hash = _b64(checkpoint.root_hash)
    if witnesses:
        try:
            verdict.cosigners = sorted(note.verify_cosignature(text, witnesses))
        except note.NoteError as exc:
            if "no verifiable" not in str(exc):
                raise Failed(f"a cosignature is invalid: {exc}") from None
    if len(verdict.cosigners) < verdict.quorum:
        raise Failed(
            f"only {len(verdict.cosigners)} of the witness keys cosigned the checkpoint "
            f"({', '.join(verdict.cosigners) or 'none'}); the quorum is {verdict.quorum}"
        )
    return checkpoint


def _proof(ctx: Context, index: int, size: int) -> dict[str, Any]:
    if ctx.args.proof:
        proof = read_json(ctx.args.proof, "the proof file")
    else:
        proof = ctx.client.get_json("/api/v1/ledger/proofs/inclusion", index=index, tree_size=size)
    if not isinstance(proof, dict) or not isinstance(proof.get("hashes"), list):
        raise Failed("the inclusion proof is not {leaf_index, tree_size, leaf_hash, hashes}")
    if proof.get("leaf_index") != index:
        raise Failed(f"the proof is for leaf {proof.get('leaf_index')}, not {index}")
    if proof.get("tree_size") != size:
        raise Failed(
            f"the proof is for tree size {proof.get('tree_size')}, the checkpoint's is {size}: "
            f"get the proof for size {size}"
        )
    return proof


def _verify(ctx: Context, verdict: Verdict, expected_leaf_hash: bytes | None) -> int:
    args = ctx.args
    log_key = _keys([args.log_key], "--log-key")
    if len(log_key) != 1:
        raise usage("--log-key takes exactly one verifier key")
    witnesses = _keys(args.witness_key or [], "--witness-key")
    if args.quorum < 0 or args.quorum > len(witnesses):
        raise usage(f"--quorum {args.quorum} needs at least that many --witness-key")
    verdict.quorum = args.quorum
    try:
        checkpoint = _checkpoint(ctx, log_key[0], witnesses, verdict)
        proof = _proof(ctx, verdict.leaf_index, checkpoint.size)
        leaf_hash = _hash(proof.get("leaf_hash"), "the proof's leaf hash")
        if expected_leaf_hash is not None and leaf_hash != expected_leaf_hash:
            raise Failed(
                f"the log's leaf {verdict.leaf_index} has hash {_b64(leaf_hash)}, "
                f"not {_b64(expected_leaf_hash)}"
            )
        verdict.leaf_hash = _b64(leaf_hash)
        hashes = [_hash(h, "a proof hash") for h in proof["hashes"]]
        merkle.verify_inclusion(
            verdict.leaf_index, checkpoint.size, leaf_hash, hashes, checkpoint.root_hash
        )
    except (Failed, merkle.ProofError) as exc:
        verdict.reason = str(exc)
    except CliError as exc:
        if exc.exit_code != REFUSED:
            raise
        verdict.reason = exc.message
    ctx.emit(verdict.data(), verdict.human())
    return REFUSED if verdict.reason else OK


def leaf(ctx: Context) -> int:
    expected = None
    if ctx.args.leaf_hash:
        try:
            expected = _hash(ctx.args.leaf_hash, "--leaf-hash")
        except Failed as exc:
            raise usage(str(exc)) from None
    return _verify(ctx, Verdict(leaf_index=ctx.args.index), expected)


def procedure(ctx: Context) -> int:
    """The store's Procedure and salt give the commitment, which the stored statement carries;
    the statement's hash must be the leaf the log holds at the stored index."""
    record = ctx.store.procedure(ctx.args.id)
    if record is None:
        raise usage(f"no procedure {ctx.args.id!r} in the store")
    if record.leaf_index is None:
        raise CliError(f"procedure {ctx.args.id!r} was never acknowledged by the node")
    verdict = Verdict(leaf_index=record.leaf_index, procedure=record.ref)
    statement = anchor.statement_parse(record.statement)
    if statement.commitment != anchor.commitment(record.salt, record.procedure):
        verdict.reason = "the stored Procedure and salt do not give the anchored commitment"
        ctx.emit(verdict.data(), verdict.human())
        return REFUSED
    return _verify(ctx, verdict, merkle.leaf_hash(record.statement))
