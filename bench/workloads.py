"""Data and loops shared by the tiers: keys, values, text, bulk loads, and KV loops for every peer.

Keys are 16-byte strings and values raw bytes, the shape every peer is measured with
(16 B keys, 100 B values). The same index-to-key mapping (`keys[i % len]`)
drives our loop and every peer's, so all of them touch the same key sequence.

Text for the search rows comes from a seeded pseudo-word vocabulary: every
word is one token for the search tokenizer (lowercase letters only) and the
same seed always gives the same words, documents and queries.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from .harness import measure
from .peers import tmpfs_dir

KEY_BYTES = 16
VALUE_BYTES = 100
LOAD_BATCH = 1000


def make_keys(n: int, prefix: str = "k") -> list[str]:
    width = KEY_BYTES - len(prefix)
    return [f"{prefix}{i:0{width}d}" for i in range(n)]


def make_value(size: int) -> bytes:
    # Not all one byte, so nothing along the way can shortcut a run of zeros.
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def load_ours(db, run: str, keys, value, batch: int = LOAD_BATCH) -> None:
    """Bulk-load keys through pipelines (one engine batch, one WAL record per batch)."""
    for lo in range(0, len(keys), batch):
        with db.pipeline() as p:
            put = p.kv.put
            for k in keys[lo:lo + batch]:
                put(run, k, value)
            results = p.execute()
        for r in results:
            if isinstance(r, BaseException):
                raise r


def load_items(db, items, batch: int = LOAD_BATCH) -> int:
    """Bulk-load (run, key, value) triples through pipelines; how many were written."""
    done = 0
    for lo in range(0, len(items), batch):
        with db.pipeline() as p:
            put = p.kv.put
            for run, k, v in items[lo:lo + batch]:
                put(run, k, v)
            results = p.execute()
        for r in results:
            if isinstance(r, BaseException):
                raise r
        done += len(results)
    return done


_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "ch", "dr", "gl", "kr", "pl", "sh", "st", "th", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou")


def make_vocabulary(n: int, seed: int = 5) -> list[str]:
    """`n` distinct pseudo-words of 2-4 syllables, the same list for the same seed."""
    rng = random.Random(seed)
    words: dict[str, None] = {}
    while len(words) < n:
        syllables = rng.randint(2, 4)
        words["".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))] = None
    return list(words)


def make_texts(n: int, vocabulary: list[str], rng: random.Random,
               words: tuple[int, int] = (4, 10)) -> list[str]:
    """`n` strings of `words` (min, max) words drawn uniformly from `vocabulary`."""
    lo, hi = words
    choices, randint = rng.choices, rng.randint
    return [" ".join(choices(vocabulary, k=randint(lo, hi))) for _ in range(n)]


def measure_stats(m) -> dict:
    return {"p50_us": m.p50_us, "p99_us": m.p99_us, "ops_per_s": m.ops_per_s,
            "best_ops_per_s": m.best_ops_per_s}


def kv_loop(kind: str, put, get, keys, value):
    """The op(i) for a get or put loop over `keys` — one shape for us and every peer."""
    nk = len(keys)
    if kind == "get":
        return lambda i: get(keys[i % nk])
    if kind == "put":
        return lambda i: put(keys[i % nk], value)
    raise ValueError(kind)


def measure_peer_kv(open_kv, kind: str, keys: list[str], value: bytes, n: int, *, repeats: int,
                    bytes_keys: bool = False, cleanup=None):
    """Open a peer's KV, preload it for gets, run the same loop we run; (ops/s, details)."""
    kv = open_kv()
    try:
        ks = [k.encode() for k in keys] if bytes_keys else keys
        if kind == "get":
            kv.load([(k, value) for k in ks])
        put, get = kv.ops()
        m = measure(kv_loop(kind, put, get, ks, value), n, repeats=repeats)
        return m.ops_per_s, measure_stats(m)
    finally:
        kv.close()
        if cleanup is not None:
            cleanup()


def lmdb_opener(ctx, *, sync: bool, value_bytes: int, nkeys: int, on_tmpfs: bool):
    """(open_kv, cleanup) for an LMDB environment sized for `nkeys` values."""
    base = tmpfs_dir() if on_tmpfs else None
    path = tempfile.mkdtemp(prefix="lmdb-", dir=base or ctx.scratch_dir)
    # A put-heavy loop rewrites pages copy-on-write: leave generous headroom.
    map_size = max(1 << 30, 8 * nkeys * (value_bytes + 64))

    def open_kv():
        return ctx.peers.lmdb(path, sync=sync, map_size=map_size)

    def cleanup():
        shutil.rmtree(path, ignore_errors=True)

    if on_tmpfs and base is None:
        where = "temp dir on disk (no tmpfs)"
    else:
        where = "tmpfs" if on_tmpfs else "disk"
    return open_kv, cleanup, where


def sqlite_file_opener(ctx, synchronous: str):
    path_dir = tempfile.mkdtemp(prefix="sqlite-", dir=ctx.scratch_dir)
    path = os.path.join(path_dir, "bench.db")

    def open_kv():
        return ctx.peers.sqlite(path, synchronous)

    def cleanup():
        shutil.rmtree(path_dir, ignore_errors=True)

    return open_kv, cleanup, path


__all__ = ["make_keys", "make_value", "load_ours", "load_items", "make_vocabulary", "make_texts",
           "kv_loop", "measure_peer_kv", "measure_stats", "lmdb_opener", "sqlite_file_opener",
           "KEY_BYTES", "VALUE_BYTES"]
