"""Proofs from the database in one round trip, and through the tile cache (ledger/tiles.py).

Every proof, cached or not, must equal ledger.merkle's in-memory proof of the same leaves; the
cache must stay within its bound; and a cache that no longer matches the database (here: poisoned,
or left over from a database that was emptied and refilled, as a restored backup would) must never
serve a wrong proof: the served path checks against signed checkpoints and heals itself.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from ledger import merkle, proofs, services
from ledger.models import Leaf, Member
from ledger.tiles import HASH_SIZE, TileCache
from tests.ledger.helpers import init_ledger, signed_anchor

pytestmark = pytest.mark.django_db

INCLUSION = "/api/v1/ledger/proofs/inclusion"
CONSISTENCY = "/api/v1/ledger/proofs/consistency"
EDGES = (1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 255, 256, 257, 300)


@pytest.fixture(autouse=True)
def fresh_shared_cache(settings):
    """Each test starts with an empty process-wide cache (others' databases are not ours)."""
    settings.LEDGER_TILE_CACHE_MB = 64
    cache = proofs.shared_cache()
    cache.clear()
    yield cache
    cache.clear()


def grow(to: int, tag: str = "") -> list[bytes]:
    """Synthetic leaves up to ``to`` (one bulk insert: sealing does not parse leaf data); the
    leaf hashes of the whole log."""
    member = Member.objects.order_by("name").first()
    start = Leaf.objects.count()
    when = datetime(2026, 1, 1, tzinfo=UTC)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                """INSERT INTO ledger_leaf ("index", leaf_hash, commitment, member_id, data,
                                            received_at)
                   SELECT i, sha256('\\x00'::bytea || d), sha256(d), %s, d, %s
                   FROM generate_series(%s::bigint, %s::bigint - 1) AS i,
                        LATERAL convert_to(format('{"leaf":%%s,"tag":"%%s"}', i, %s), 'UTF8') d""",
                [member.pk, when, start, to, tag],
            )
    else:
        rows = []
        for i in range(start, to):
            data = f'{{"leaf":{i},"tag":"{tag}"}}'.encode()
            h, c = merkle.leaf_hash(data), hashlib.sha256(data).digest()
            rows.append(Leaf(i, h, c, member.pk, data, when))
        Leaf.objects.bulk_create(rows, batch_size=5000)
    first = Leaf.objects.filter(index=start).first()
    assert first is None or bytes(first.leaf_hash) == merkle.leaf_hash(bytes(first.data))
    return [bytes(h) for h in Leaf.objects.order_by("index").values_list("leaf_hash", flat=True)]


def sealed_log(sizes: tuple[int, ...], tag: str = "") -> list[bytes]:
    """A log with a checkpoint at each of ``sizes`` (ascending); its leaf hashes."""
    init_ledger()
    hashes: list[bytes] = []
    for size in sizes:
        hashes = grow(size, tag)
        services.ledger_seal(max_leaves=size - services.sealed_size())
    assert services.sealed_size() == sizes[-1]
    return hashes


def readers(tile_bits: int) -> list[proofs.HashReader]:
    return [proofs.HashReader(), proofs.TileReader(tiles=TileCache(2**20, tile_bits=tile_bits))]


# --- the same proofs as ledger.merkle, cached or not ---------------------------------------------


@pytest.mark.parametrize("tile_bits", [2, 8])
def test_inclusion_proofs_equal_merkle_at_every_size_and_tile_edge(tile_bits):
    hashes = sealed_log((300,))
    cache_reader = proofs.TileReader(tiles=TileCache(2**20, tile_bits=tile_bits))  # shared: warm
    rng = random.Random(tile_bits)
    for size in EDGES:
        indexes = (
            range(size) if size <= 33 else {0, 1, size - 1, size - 2, *rng.sample(range(size), 8)}
        )
        root = merkle.root_hash(hashes[:size])
        for index in indexes:
            expected = (merkle.inclusion_proof(index, hashes[:size]), root)
            for reader in [proofs.HashReader(), cache_reader]:
                assert proofs.inclusion_with_root(index, size, sealed_size=300, reader=reader) == (
                    expected
                ), (index, size, type(reader).__name__)


@pytest.mark.parametrize("tile_bits", [2, 8])
def test_consistency_proofs_equal_merkle_between_sizes_at_tile_edges(tile_bits):
    hashes = sealed_log((300,))
    cache_reader = proofs.TileReader(tiles=TileCache(2**20, tile_bits=tile_bits))
    sizes = (0, *EDGES)
    for new in sizes:
        for old in (s for s in sizes if s <= new):
            expected = (
                merkle.consistency_proof(old, hashes[:new]),
                merkle.root_hash(hashes[:old]),
                merkle.root_hash(hashes[:new]),
            )
            for reader in [proofs.HashReader(), cache_reader]:
                got = proofs.consistency_with_roots(old, new, sealed_size=300, reader=reader)
                assert got == expected, (old, new, type(reader).__name__)


def test_proofs_at_the_65536_tile_edges_equal_merkle():
    """Sizes 65535, 65536, 65537 (level 16 starts, level-0 tile 256 fills), default tiles."""
    hashes = sealed_log((65535, 65536, 65537))
    cached = proofs.TileReader(tiles=TileCache(2**22))
    for size in (65535, 65536, 65537):
        leaves = hashes[:size]
        root = merkle.root_hash(leaves)
        for index in {0, 255, 256, 65279, 65280, 65534, size - 1}:
            expected = (merkle.inclusion_proof(index, leaves), root)
            for reader in (proofs.HashReader(), cached):
                got = proofs.inclusion_with_root(index, size, sealed_size=65537, reader=reader)
                assert got == expected, (index, size)
    for old, new in [(256, 65537), (65535, 65536), (65536, 65537), (65535, 65537), (257, 65536)]:
        expected = merkle.consistency_proof(old, hashes[:new])
        for reader in (proofs.HashReader(), cached):
            assert proofs.consistency(old, new, sealed_size=65537, reader=reader) == expected


def test_a_tile_read_narrow_is_read_again_wider_once_the_log_grows():
    sealed_log((5,))
    cache = TileCache(2**20)
    reader = proofs.TileReader(tiles=cache)
    proofs.inclusion_with_root(0, 5, sealed_size=5, reader=reader)
    assert len(cache._tiles[(1, 0)]) == 2 * HASH_SIZE  # nodes (1, 0) and (1, 1) exist at size 5
    hashes = grow(12)
    services.ledger_seal()
    got = proofs.inclusion_with_root(11, 12, sealed_size=12, reader=proofs.TileReader(tiles=cache))
    assert got == (merkle.inclusion_proof(11, hashes), merkle.root_hash(hashes))  # needs (1, 4)
    assert len(cache._tiles[(1, 0)]) == 6 * HASH_SIZE


# --- one round trip, O(log n) rows ---------------------------------------------------------------


@pytest.mark.postgres
def test_a_proof_and_its_roots_are_one_round_trip(django_assert_num_queries):
    sealed_log((3, 100, 257))
    with django_assert_num_queries(1):
        proofs.inclusion_with_root(77, 257, sealed_size=257)
    with django_assert_num_queries(1):
        proofs.consistency_with_roots(100, 257, sealed_size=257)
    with django_assert_num_queries(1):
        signed = proofs.signed_roots([100], leaf_index=77)
    assert set(signed.roots) == {100, 257} and signed.sealed_size == 257
    assert signed.leaf_hash == bytes(Leaf.objects.get(index=77).leaf_hash)
    cache = TileCache(2**20)
    with django_assert_num_queries(1):  # cold: every missing tile in one UNION ALL
        proofs.inclusion_with_root(77, 257, sealed_size=257, reader=proofs.TileReader(tiles=cache))
    with django_assert_num_queries(0):  # warm
        proofs.inclusion_with_root(78, 257, sealed_size=257, reader=proofs.TileReader(tiles=cache))


def test_rows_read_grow_as_log2_n():
    sealed_log((65537,))
    rng = random.Random(7)
    for size in (16, 256, 4096, 65537):
        rows = []
        for index in rng.sample(range(size), 16):
            reader = proofs.HashReader()
            path, _ = proofs.inclusion_with_root(index, size, sealed_size=65537, reader=reader)
            assert len(path) <= reader.rows_read <= 2 * size.bit_length()
            rows.append(reader.rows_read)
        assert sum(rows) / len(rows) <= 1.5 * size.bit_length()  # mean: about 1.3 log2 n


# --- the bound -----------------------------------------------------------------------------------


def test_the_cache_evicts_least_recently_used_tiles_to_stay_within_its_bytes():
    cache = TileCache(max_bytes=3 * (256 * HASH_SIZE + 160))
    tile = bytes(256 * HASH_SIZE)
    for t in range(3):
        cache.put((0, t), tile)
    cache.lookup([(0, 0)])  # (0, 0) used recently: (0, 1) goes first
    cache.put((0, 3), tile)
    assert set(cache._tiles) == {(0, 0), (0, 2), (0, 3)}
    assert cache.bytes <= cache.max_bytes and cache.evictions == 1
    cache.put((0, 9), bytes(10 * cache.max_bytes))  # larger than the whole cache: not kept
    assert (0, 9) not in cache._tiles


def test_a_lookup_beyond_the_cached_width_is_a_miss():
    cache = TileCache(2**20)
    cache.put((3, 1), bytes(range(32)) * 3)  # indexes 256, 257, 258 of level 3
    found, missing = cache.lookup([(3, 258), (3, 259)])
    assert found == {(3, 258): bytes(range(32))} and missing == {(3, 1)}


def test_proofs_stay_right_through_a_cache_much_smaller_than_the_tree():
    hashes = sealed_log((300,))
    cache = TileCache(max_bytes=4 * (16 * HASH_SIZE + 160), tile_bits=4)
    for index in random.Random(3).sample(range(300), 60):
        got = proofs.inclusion_with_root(
            index, 300, sealed_size=300, reader=proofs.TileReader(tiles=cache)
        )
        assert got == (merkle.inclusion_proof(index, hashes), merkle.root_hash(hashes))
        assert cache.bytes <= cache.max_bytes
    assert cache.evictions > 0


def test_the_cache_is_consistent_under_threads():
    cache = TileCache(max_bytes=20 * (64 * HASH_SIZE + 160), tile_bits=6)

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(2000):
            level, t = rng.randrange(4), rng.randrange(40)
            cache.put((level, t), bytes([t]) * HASH_SIZE * rng.randint(1, 64))
            found, _ = cache.lookup([(level, (t << 6) + rng.randrange(64))])
            assert all(h == bytes([t]) * HASH_SIZE for h in found.values())

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert cache.bytes == sum(len(p) + 160 for p in cache._tiles.values()) <= cache.max_bytes


def test_the_setting_sizes_the_shared_cache_and_zero_disables_it(settings):
    settings.LEDGER_TILE_CACHE_MB = 2
    assert proofs.shared_cache().max_bytes == 2 * 2**20
    settings.LEDGER_TILE_CACHE_MB = 0
    assert proofs.shared_cache() is None
    sealed_log((9,))
    signed = proofs.signed_roots([], leaf_index=4)
    assert proofs.served_inclusion(4, 9, signed)[1] == signed.roots[9]


# --- served proofs: through the cache, checked, self-healing -------------------------------------


def test_served_proofs_come_from_the_cache_the_second_time(fresh_shared_cache, api):
    hashes = sealed_log((3, 12))
    clears = fresh_shared_cache.clears
    for _ in range(2):
        signed = proofs.signed_roots([3], leaf_index=2)
        assert proofs.served_inclusion(2, 3, signed) == (
            merkle.inclusion_proof(2, hashes[:3]),
            merkle.root_hash(hashes[:3]),
        )
        assert proofs.served_consistency(3, 12, signed)[0] == merkle.consistency_proof(3, hashes)
    assert fresh_shared_cache.hits > 0 and len(fresh_shared_cache) > 0
    assert fresh_shared_cache.clears == clears  # every cached proof verified


def _poison(cache: TileCache) -> None:
    """Replace every cached hash by another of the same width (as a stale database would)."""
    for tile, packed in list(cache._tiles.items()):
        cache.put(tile, hashlib.sha256(packed).digest() * (len(packed) // HASH_SIZE))


def test_a_poisoned_cache_never_serves_a_wrong_proof_and_is_cleared(
    fresh_shared_cache, api, caplog
):
    hashes = sealed_log((3, 7, 12))
    signed = proofs.signed_roots([7], leaf_index=5)
    proofs.served_inclusion(5, 7, signed)
    proofs.served_consistency(3, 12, proofs.signed_roots([3, 12]))
    _poison(fresh_shared_cache)
    clears = fresh_shared_cache.clears
    with caplog.at_level(logging.WARNING, logger="ledger.proofs"):
        body = api.get(INCLUSION, {"index": 5, "tree_size": 7}).json()
    assert [base64.b64decode(h) for h in body["hashes"]] == merkle.inclusion_proof(5, hashes[:7])
    assert fresh_shared_cache.clears == clears + 1
    assert "cache cleared" in caplog.text
    assert len(fresh_shared_cache) == 0  # the retry was answered from the database
    proofs.served_consistency(3, 12, proofs.signed_roots([3, 12]))  # fills the cache again
    _poison(fresh_shared_cache)
    body = api.get(CONSISTENCY, {"old_size": 3, "new_size": 12}).json()
    assert [base64.b64decode(h) for h in body["hashes"]] == merkle.consistency_proof(3, hashes)
    assert fresh_shared_cache.clears == clears + 2


def test_a_cache_left_from_a_replaced_database_heals_itself(fresh_shared_cache, api):
    """The database is emptied and refilled with other leaves while the process lives (what the
    test suite does between tests, and a restored backup in production)."""
    sealed_log((5, 20), tag="before")
    for index in range(20):
        api.get(INCLUSION, {"index": index})
    assert len(fresh_shared_cache) > 0
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # no deferred checks pending
        cursor.execute("SET LOCAL ledger.allow_truncate = 'on'")
        cursor.execute(
            "TRUNCATE ledger_cosignature, ledger_checkpoint, ledger_treenode, ledger_leaf"
        )
    hashes = sealed_log((5, 20), tag="after")
    clears = fresh_shared_cache.clears
    for index in range(20):
        body = api.get(INCLUSION, {"index": index}).json()
        proof = [base64.b64decode(h) for h in body["hashes"]]
        assert proof == merkle.inclusion_proof(index, hashes)
    assert fresh_shared_cache.clears > clears


def _reset_latest():
    proofs._latest = None


def test_latest_proofs_are_served_without_a_query_while_the_checkpoint_is_fresh(
    fresh_shared_cache, settings, django_assert_num_queries
):
    settings.LEDGER_CHECKPOINT_TTL_S = 60
    _reset_latest()
    init_ledger()
    datas = [signed_anchor(n) for n in range(20)]
    for data in datas:
        services.anchor_append(data=data)
    services.ledger_seal()
    hashes = [merkle.leaf_hash(d) for d in datas]
    proofs.served_latest_inclusion(3)  # warms the tiles and the checkpoint
    with django_assert_num_queries(0):
        size, leaf_hash, path, root = proofs.served_latest_inclusion(11)
    assert (size, leaf_hash) == (20, hashes[11])
    assert path == merkle.inclusion_proof(11, hashes)
    assert root == merkle.root_hash(hashes)
    _reset_latest()


def test_a_replaced_database_is_caught_by_the_next_checkpoint_read(fresh_shared_cache, settings):
    settings.LEDGER_CHECKPOINT_TTL_S = 60
    _reset_latest()
    init_ledger()
    for n in range(8):
        services.anchor_append(data=signed_anchor(n))
    services.ledger_seal()
    assert proofs.served_latest_inclusion(2) is not None
    # Another history behind the same process, as after a restore: the tiles are stale.
    proofs._latest = proofs._LatestCheckpoint(8, b"\x07" * 32, proofs._latest.read_at)
    assert proofs.served_latest_inclusion(2) is None  # refused, and the cache cleared
    assert len(fresh_shared_cache) == 0
    _reset_latest()


def test_the_api_answers_the_same_from_the_fast_lane_as_from_the_database(
    fresh_shared_cache, settings
):
    from rest_framework.test import APIClient

    init_ledger()
    for n in range(13):
        services.anchor_append(data=signed_anchor(n))
    services.ledger_seal()
    answers = []
    for ttl in (0, 60, 60):  # the database; the fast lane cold; the fast lane warm
        settings.LEDGER_CHECKPOINT_TTL_S = ttl
        _reset_latest()
        answers.append(APIClient().get("/api/v1/ledger/proofs/inclusion?index=9").json())
    assert answers[0] == answers[1] == answers[2]
    assert answers[0]["tree_size"] == 13 and len(answers[0]["hashes"]) == 4
    _reset_latest()
