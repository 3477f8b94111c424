"""Claims verification against a mirror: prove an anchored leaf from another node's C2SP
tlog-tiles and cosigned checkpoint, trusting only the log's key and the witnesses' keys.

A member that is not the log operator (an insurer especially) configures its node with:

==================================  ===============================================================
``LEDGER_MIRROR_URL``               the operator's tlog-tiles prefix, e.g.
                                    ``https://ledger.claimproof.example`` ("" = verify against this
                                    node's own ledger, the default)
``LEDGER_MIRROR_LOG_KEY``           the log's verifier key (Go note format); required with the URL
``LEDGER_MIRROR_WITNESS_KEYS``      JSON list of the witnesses' cosigner verifier keys; default:
                                    this node's live ``MemberKey`` rows of purpose ``cosign``
``LEDGER_QUORUM``                   cosignatures a checkpoint needs (as everywhere)
``LEDGER_MIRROR_CHECKPOINT_TTL_S``  how long a verified checkpoint is reused (default 5 s)
``LEDGER_MIRROR_TIMEOUT_S``         one request's timeout (default 5 s)
==================================  ===============================================================

:func:`mirror_prove_leaf` is the one call a verifier makes. Each checkpoint fetched must extend
the last one this process verified (a consistency proof through the tiles), so a log that shows
this node two histories is caught (:class:`mirror.MirrorFork`). Tiles are immutable: they are
cached per process (every use is still checked against the checkpoint's root).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ledger import anchor, forks, mirror, note
from ledger.models import ForkEvidence, MemberKey

TILE_CACHE_ENTRIES = 2048  # at most 16 MiB of hash tiles (8 KiB each) per process


def cached_fetcher(fetch: mirror.Fetch, entries: int = TILE_CACHE_ENTRIES) -> mirror.Fetch:
    """``fetch`` with an LRU cache of tiles and entry bundles (never of the checkpoint)."""
    cache: OrderedDict[str, bytes] = OrderedDict()
    lock = threading.Lock()

    def get(path: str) -> bytes:
        if not path.startswith("tile/"):
            return fetch(path)
        with lock:
            if path in cache:
                cache.move_to_end(path)
                return cache[path]
        body = fetch(path)
        with lock:
            cache[path] = body
            while len(cache) > entries:
                cache.popitem(last=False)
        return body

    return get


class MirrorSource:
    """One log read through its tiles: the latest verified checkpoint, kept consistent."""

    def __init__(
        self,
        fetch: mirror.Fetch,
        *,
        log_vkey: str,
        witness_vkeys: Iterable[str] | Callable[[], list[str]],
        quorum: int,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.fetch = fetch
        self.log_vkey = log_vkey
        self._witness_vkeys = witness_vkeys if callable(witness_vkeys) else list(witness_vkeys)
        self.quorum = quorum
        self.ttl_s = ttl_s
        self.clock = clock
        self._latest: mirror.VerifiedCheckpoint | None = None
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def witness_vkeys(self) -> list[str]:
        keys = self._witness_vkeys
        return keys() if callable(keys) else keys

    def checkpoint(self, *, covering: int = 0) -> mirror.VerifiedCheckpoint:
        """The latest cosigned checkpoint, fetched again when older than the TTL or smaller than
        ``covering``; raises :class:`mirror.MirrorFork` if it does not extend the last one."""
        with self._lock:
            latest = self._latest
            fresh = self.clock() - self._fetched_at < self.ttl_s
            if latest is not None and fresh and latest.checkpoint.size >= covering:
                return latest
            try:
                got = mirror.fetch_checkpoint(
                    self.fetch, self.log_vkey, self.witness_vkeys(), self.quorum
                )
            except mirror.NotFinal:
                # The log serves only its newest checkpoint; until that one has its quorum, the
                # last final one verified here still proves every leaf it covers.
                if latest is not None and latest.checkpoint.size >= covering:
                    return latest
                raise
            if latest is not None:
                if got.checkpoint.size >= latest.checkpoint.size:
                    mirror.prove_consistency(self.fetch, latest, got)
                else:  # an older copy (a cache): it must still be on the same history
                    mirror.prove_consistency(self.fetch, got, latest)
                    got = latest
            self._latest, self._fetched_at = got, self.clock()
            return got


@dataclass(frozen=True)
class MirrorProof:
    """Leaf ``index`` proven through the mirror: what the ledger check records as evidence."""

    index: int
    leaf_hash: bytes
    statement: anchor.Statement  # parsed from the entry bundle (hashes to the leaf)
    proof: list[bytes]
    checkpoint_text: str  # the cosigned checkpoint note, as served and verified
    size: int
    root_hash: bytes
    cosigners: dict[str, int]  # witness name -> cosignature timestamp
    contradicted: ForkEvidence | None  # fork evidence against this tree (then: not verified)


def mirror_prove_leaf(source: MirrorSource, index: int, leaf_hash: bytes) -> MirrorProof:
    """Prove leaf ``index`` against the mirror's latest cosigned checkpoint and check it is
    ``leaf_hash``. Raises :class:`mirror.NotFinal` (wait: no quorum yet, or the leaf is not
    covered yet), :class:`mirror.MirrorFork` (the log forked: fail), other
    :class:`mirror.MirrorError` (unreachable or a bad answer: wait and retry), or
    :class:`anchor.AnchorError` when the entry is not an anchor statement."""
    cp = source.checkpoint(covering=index + 1)
    got = mirror.prove_inclusion(
        source.fetch,
        index,
        log_vkey=source.log_vkey,
        witness_vkeys=(),
        quorum=source.quorum,
        checkpoint=cp,
    )
    if got.leaf_hash != bytes(leaf_hash):
        raise mirror.LeafMismatch(f"leaf {index} of the log is not the disclosed leaf hash")
    body = cp.checkpoint
    return MirrorProof(
        index=index,
        leaf_hash=got.leaf_hash,
        statement=anchor.statement_parse(got.entry),
        proof=got.proof,
        checkpoint_text=cp.text,
        size=body.size,
        root_hash=body.root_hash,
        cosigners=cp.cosigners,
        contradicted=forks.checkpoint_contradicted(body.origin, body.size, body.root_hash),
    )


# --- the node's configured mirror ---------------------------------------------------------------

_SOURCES: dict[tuple, MirrorSource] = {}
_SOURCES_LOCK = threading.Lock()


def _live_cosign_keys() -> list[str]:
    return list(
        MemberKey.objects.filter(
            purpose=MemberKey.Purpose.COSIGN, revoked_at__isnull=True
        ).values_list("verifier_key", flat=True)
    )


def mirror_source() -> MirrorSource | None:
    """The mirror this node verifies claims against (``LEDGER_MIRROR_URL``), or None when it
    verifies against its own ledger. One per process and configuration."""
    url = getattr(settings, "LEDGER_MIRROR_URL", "") or ""
    if not url:
        return None
    log_vkey = getattr(settings, "LEDGER_MIRROR_LOG_KEY", "") or ""
    raw_keys = getattr(settings, "LEDGER_MIRROR_WITNESS_KEYS", None)
    if isinstance(raw_keys, str):
        raw_keys = json.loads(raw_keys) if raw_keys.strip() else None
    quorum = int(settings.LEDGER_QUORUM)
    ttl = float(getattr(settings, "LEDGER_MIRROR_CHECKPOINT_TTL_S", 5.0))
    timeout = float(getattr(settings, "LEDGER_MIRROR_TIMEOUT_S", 5.0))
    memo = (url, log_vkey, tuple(raw_keys) if raw_keys else None, quorum, ttl, timeout)
    with _SOURCES_LOCK:
        source = _SOURCES.get(memo)
        if source is None:
            try:
                note.parse_verifier_key(log_vkey)
                for vkey in raw_keys or ():
                    note.parse_verifier_key(vkey)
            except note.NoteError as exc:
                raise ImproperlyConfigured(f"LEDGER_MIRROR_*: not a verifier key: {exc}") from exc
            source = MirrorSource(
                cached_fetcher(mirror.http_fetcher(url, timeout=timeout)),
                log_vkey=log_vkey,
                witness_vkeys=list(raw_keys) if raw_keys else _live_cosign_keys,
                quorum=quorum,
                ttl_s=ttl,
            )
            _SOURCES.clear()
            _SOURCES[memo] = source
        return source
