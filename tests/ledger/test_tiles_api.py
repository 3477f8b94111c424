"""C2SP tlog-tiles: the paths, the node's tile endpoints, and the mirror that checks them."""

from __future__ import annotations

import gzip

import pytest
from django.test import Client

from ledger import keys, merkle, mirror, mirror_source, note, proofs, services, tlog_tiles
from ledger.checkpoint import Checkpoint
from ledger.models import Leaf, MemberKey
from tests.ledger.helpers import init_ledger, signed_anchor

URLS = "tests.consortium.urls"  # the node's URLs with the C2SP endpoints at the root


# --- paths (pure) ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "index", "width", "path"),
    [
        (0, 1234067, 256, "tile/0/x001/x234/067"),  # the spec's example
        (0, 0, 256, "tile/0/000"),
        (1, 5, 17, "tile/1/005.p/17"),
        (2, 1000, 1, "tile/2/x001/000.p/1"),
        ("entries", 999, 112, "tile/entries/999.p/112"),
        (63, 10**9, 255, "tile/63/x001/x000/x000/000.p/255"),
    ],
)
def test_tile_paths_follow_the_spec(level, index, width, path):
    assert tlog_tiles.tile_path(level, index, width) == path
    assert tlog_tiles.parse_tile_path(path) == (level, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/5",
        "tile/0/x000/005",  # not canonical
        "tile/00/005",
        "tile/64/000",
        "tile/0/005.p/0",
        "tile/0/005.p/256",
        "tile/0/005.p/012",
        "tile/0/005/",
        "tile/entry/000",
        "tile/0/x5/005",
    ],
)
def test_non_canonical_tile_paths_are_refused(path):
    with pytest.raises(tlog_tiles.TilePathError):
        tlog_tiles.parse_tile_path(path)


def test_tile_widths_match_the_specs_example_of_70000_leaves():
    size = 70_000
    assert [tlog_tiles.tile_width(0, n, size) for n in (0, 272, 273, 274)] == [256, 256, 112, 0]
    assert [tlog_tiles.tile_width(1, n, size) for n in (0, 1, 2)] == [256, 17, 0]
    assert tlog_tiles.tile_width(2, 0, size) == 1
    assert mirror.rightmost_tiles(size) == {(0, 273, 112), (1, 1, 17), (2, 0, 1)}
    assert mirror.rightmost_tiles(256) == {(1, 0, 1)}


def test_entry_bundles_round_trip():
    entries = [b"", b"a", b"x" * 300, bytes(range(256))]
    bundle = tlog_tiles.encode_bundle(entries)
    assert bundle[:3] == b"\x00\x00\x00"
    assert tlog_tiles.decode_bundle(bundle) == entries
    with pytest.raises(ValueError):
        tlog_tiles.decode_bundle(bundle[:-1])


# --- the mirror against an in-memory log (pure) -------------------------------------------------


class FakeLog:
    """A tiled log served from memory, as a ``mirror.Fetch``."""

    def __init__(
        self,
        n: int,
        witnesses: int = 2,
        *,
        like: FakeLog | None = None,
        prefix: str = "entry",
        cosigned_by: int | None = None,
    ):
        """``like``: the same log's keys (a later or a forked view of it); ``prefix``: other
        entries make another history; ``cosigned_by``: how many witnesses cosigned."""
        self.entries = [f"{prefix} {i}".encode() for i in range(n)]
        self.leaves = [merkle.leaf_hash(e) for e in self.entries]
        self.levels = [self.leaves]  # tile level L: hashes of 256**L leaves
        while len(self.levels[-1]) >= 256:
            below = self.levels[-1]
            self.levels.append(
                [
                    merkle.root_hash(below[i : i + 256])
                    for i in range(0, len(below) // 256 * 256, 256)
                ]
            )
        if like is not None:
            self.log_key, self.witness_keys = like.log_key, like.witness_keys
        else:
            self.log_key = note.generate_key("log.example")
            self.witness_keys = [
                note.generate_cosigner_key(f"w{i}.example") for i in range(witnesses)
            ]
        body = Checkpoint("log.example", n, merkle.root_hash(self.leaves)).body()
        text = note.sign(body, self.log_key[0])
        signing = self.witness_keys[
            : len(self.witness_keys) if cosigned_by is None else cosigned_by
        ]
        self.text = note.add_signatures(text, [note.cosign(body, k[0], 1) for k in signing])
        self.fetched: list[str] = []
        self.tamper: dict[str, bytes] = {}

    def __call__(self, path: str) -> bytes:
        self.fetched.append(path)
        if path in self.tamper:
            return self.tamper[path]
        if path == "checkpoint":
            return self.text.encode()
        level, n, width = tlog_tiles.parse_tile_path(path)
        lo = n * 256
        if level == "entries":
            return tlog_tiles.encode_bundle(self.entries[lo : lo + width])
        hashes = self.levels[level][lo : lo + width]
        assert len(hashes) == width, f"asked for a tile the log does not have: {path}"
        return b"".join(hashes)

    def prove(self, index: int, quorum: int = 2) -> mirror.Inclusion:
        return mirror.prove_inclusion(
            self,
            index,
            log_vkey=self.log_key[1],
            witness_vkeys=[k[1] for k in self.witness_keys],
            quorum=quorum,
        )


@pytest.mark.parametrize("size", [1, 2, 7, 255, 256, 257, 511, 512, 513, 65535, 65536, 65537])
def test_the_mirror_proves_inclusion_from_tiles_at_tile_edges(size):
    log = FakeLog(size)
    for index in sorted({0, 1 % size, size // 2, size - 256 if size > 256 else 0, size - 1}):
        got = log.prove(index)
        assert got.proof == merkle.inclusion_proof(index, log.leaves)
        assert got.leaf_hash == log.leaves[index]
        assert got.entry == log.entries[index]


def test_the_mirror_refuses_a_tampered_tile_anywhere_it_reads():
    log = FakeLog(70_000)
    baseline = log.prove(12_345)
    tiles = [p for p in log.fetched if p.startswith("tile/") and "entries" not in p]
    assert {"tile/0/048", "tile/1/000", "tile/1/001.p/17", "tile/2/000.p/1"} <= set(tiles)
    for path in tiles:
        log.tamper = {path: bytes(32) + log(path)[32:]}
        with pytest.raises(mirror.MirrorError):
            log.prove(12_345)
    log.tamper = {"tile/entries/048": tlog_tiles.encode_bundle([b"forged"] * 256)}
    with pytest.raises(mirror.MirrorError, match="does not hash"):
        log.prove(12_345)
    log.tamper = {}
    assert log.prove(12_345) == baseline


def test_the_mirror_wants_a_quorum_of_known_cosigners():
    log = FakeLog(10)
    with pytest.raises(mirror.MirrorError, match="fewer than the quorum 3"):
        log.prove(3, quorum=3)
    log.tamper = {
        "checkpoint": note.sign(
            log.text.split("\n\n")[0] + "\n", note.generate_key("log.example")[0]
        ).encode()
    }
    with pytest.raises(mirror.MirrorError, match="does not verify"):
        log.prove(3)


# --- the node's tile endpoints -------------------------------------------------------------------


def _log_of(n: int, pending: int = 0) -> list[bytes]:
    """A node whose latest checkpoint has ``n`` leaves (cosigned), then ``pending`` more leaves."""
    init_ledger()
    datas = [signed_anchor(i) for i in range(n)]
    services.anchor_append_many(datas=datas)
    services.ledger_seal_and_cosign()
    services.anchor_append_many(datas=[signed_anchor(n + i) for i in range(pending)])
    return datas


@pytest.mark.django_db
@pytest.mark.urls(URLS)
def test_hash_tiles_are_the_stored_rows_and_cached_by_kind(client: Client):
    datas = _log_of(300, pending=2)
    leaves = [merkle.leaf_hash(d) for d in datas]
    full = client.get("/tile/0/000")
    assert full.status_code == 200
    assert full["Content-Type"] == "application/octet-stream"
    assert full.content == b"".join(leaves[:256])
    assert full["Cache-Control"] == "public, max-age=31536000, immutable"
    partial = client.get("/tile/0/001.p/44")
    assert partial.content == b"".join(leaves[256:300])
    assert partial["Cache-Control"] == "public, max-age=60"
    assert client.get("/tile/0/001.p/10").content == b"".join(leaves[256:266])
    level1 = client.get("/tile/1/000.p/1")
    assert level1.content == merkle.root_hash(leaves[:256])


@pytest.mark.django_db
@pytest.mark.urls(URLS)
@pytest.mark.parametrize(
    "path",
    [
        "/tile/0/001",  # beyond the checkpoint
        "/tile/0/001.p/45",  # leaf 300 is pending: not served
        "/tile/1/000.p/2",
        "/tile/2/000.p/1",
        "/tile/entries/001.p/45",
        "/tile/0/1",  # not canonical
        "/tile/0/x000/000",
        "/tile/entries/000.p/256",
    ],
)
def test_nothing_beyond_the_latest_checkpoint_or_off_the_spec_is_served(client: Client, path):
    _log_of(300, pending=2)
    response = client.get(path)
    assert response.status_code == 404
    assert response["Cache-Control"] == "no-store"


@pytest.mark.django_db
@pytest.mark.urls(URLS)
def test_entry_bundles_hold_the_statements_and_are_gzipped_on_request(client: Client):
    datas = _log_of(300)
    plain = client.get("/tile/entries/000")
    assert tlog_tiles.decode_bundle(plain.content) == datas[:256]
    assert plain["Cache-Control"] == "public, max-age=31536000, immutable"
    zipped = client.get("/tile/entries/001.p/44", HTTP_ACCEPT_ENCODING="gzip, identity")
    assert zipped["Content-Encoding"] == "gzip"
    assert tlog_tiles.decode_bundle(gzip.decompress(zipped.content)) == datas[256:]


@pytest.mark.django_db
@pytest.mark.urls(URLS)
def test_the_checkpoint_is_served_cosigned_and_briefly_cacheable(client: Client):
    _log_of(5)
    response = client.get("/checkpoint")
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Cache-Control"] == "public, max-age=2"
    text = response.content.decode()
    assert Checkpoint.parse(note.verify(text, [keys.operator_verifier_key()]).text).size == 5
    cosigners = MemberKey.objects.filter(purpose="cosign").values_list("verifier_key", flat=True)
    assert len(note.verify_cosignature(text, list(cosigners))) == 3
    assert client.post("/checkpoint").status_code == 405
    assert client.post("/tile/0/000").status_code == 405


# --- a mirror source: the checkpoint kept consistent from one fetch to the next ------------------


class Views:
    """A log whose server shows one FakeLog view at a time (it grows, or forks)."""

    def __init__(self, log: FakeLog):
        self.log = log
        self.now = 0.0

    def __call__(self, path: str) -> bytes:
        return self.log(path)

    def source(self, quorum: int = 2) -> mirror_source.MirrorSource:
        return mirror_source.MirrorSource(
            self,
            log_vkey=self.log.log_key[1],
            witness_vkeys=[k[1] for k in self.log.witness_keys],
            quorum=quorum,
            ttl_s=5.0,
            clock=lambda: self.now,
        )


def test_a_mirror_source_follows_a_growing_log_and_catches_a_fork():
    first = FakeLog(300)
    server = Views(first)
    source = server.source()
    assert source.checkpoint().checkpoint.size == 300
    server.log = FakeLog(700, like=first)  # grown: the same 300 entries, then more
    assert source.checkpoint().checkpoint.size == 300  # within the TTL: no new fetch
    assert source.checkpoint(covering=500).checkpoint.size == 700  # a leaf beyond: fetch now
    server.log = FakeLog(900, like=first, prefix="forked")  # another history, same keys
    server.now += 10
    with pytest.raises(mirror.MirrorFork, match="does not extend"):
        source.checkpoint()
    server.log = FakeLog(700, like=first, prefix="forked")  # a split view of the same size
    with pytest.raises(mirror.MirrorFork, match="two trees of size 700"):
        source.checkpoint()
    assert source._latest.checkpoint.size == 700  # still the honest one


def test_a_mirror_source_keeps_proving_from_the_last_final_checkpoint():
    first = FakeLog(300)
    server = Views(first)
    source = server.source()
    source.checkpoint()
    server.log = FakeLog(400, like=first, cosigned_by=1)  # newer, one cosignature of two
    server.now += 10
    # Leaves the last final checkpoint covers are still proven; newer ones wait.
    assert source.checkpoint(covering=300).checkpoint.size == 300
    with pytest.raises(mirror.NotFinal, match="fewer than the quorum"):
        source.checkpoint(covering=350)


# --- the mirror against this node over HTTP -------------------------------------------------------


@pytest.mark.urls(URLS)
def test_a_mirror_checks_the_nodes_tiles_and_proves_like_the_node(
    live_server, transactional_db, settings
):
    datas = _log_of(300, pending=1)
    fetch = mirror.http_fetcher(live_server.url)
    cosigners = list(
        MemberKey.objects.filter(purpose="cosign").values_list("verifier_key", flat=True)
    )
    checkpoint = mirror.fetch_checkpoint(fetch, keys.operator_verifier_key(), cosigners, 2)
    assert checkpoint.checkpoint.size == 300
    leaves = [bytes(h) for h in Leaf.objects.order_by("index").values_list("leaf_hash", flat=True)]
    for index in (0, 1, 255, 256, 299):
        got = mirror.prove_inclusion(
            fetch,
            index,
            log_vkey=keys.operator_verifier_key(),
            witness_vkeys=cosigners,
            quorum=2,
            checkpoint=checkpoint,
        )
        assert got.entry == datas[index]
        assert got.proof == merkle.inclusion_proof(index, leaves[:300])
        assert got.proof == proofs.inclusion(index, 300, sealed_size=300)
    with pytest.raises(mirror.MirrorError, match="not in the checkpoint"):
        mirror.prove_inclusion(
            fetch, 300, log_vkey=keys.operator_verifier_key(), witness_vkeys=cosigners, quorum=2
        )
    # Claims verification against the mirror: the node configured with the operator's URL and
    # log key (witness keys: its own members') proves each leaf as its own ledger does.
    settings.LEDGER_MIRROR_URL = live_server.url
    settings.LEDGER_MIRROR_LOG_KEY = keys.operator_verifier_key()
    settings.LEDGER_QUORUM = 2
    source = mirror_source.mirror_source()
    assert source is mirror_source.mirror_source()  # one per process and configuration
    for index in (0, 299):
        got = mirror_source.mirror_prove_leaf(source, index, leaves[index])
        assert got.proof == proofs.inclusion(index, 300, sealed_size=300)
        assert got.statement.member == "stmarys.example"
        assert got.statement.canonical() == datas[index]
        assert (got.size, got.root_hash) == (300, checkpoint.checkpoint.root_hash)
        assert len(got.cosigners) >= 2 and got.contradicted is None
    with pytest.raises(mirror.MirrorError, match="not the disclosed leaf hash"):
        mirror_source.mirror_prove_leaf(source, 1, leaves[2])
    with pytest.raises(mirror.NotFinal):
        mirror_source.mirror_prove_leaf(source, 300, leaves[300])  # pending: not sealed yet
