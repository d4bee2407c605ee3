"""A run's KV version floor is durable: snapshots keep it, a store reopened from one goes on
above it, and a snapshot of the previous codec (no floor) still opens, as its tools say.

Reclaiming is not logged: a store reopened from the WAL alone gets the dead entries back,
with their versions, and reclaims them again.
"""

from __future__ import annotations

import contextlib
import io
import os

import msgpack
import pytest

import inmem
from inmem.cli import main as cli
from inmem.recovery import snapshot_format as fmt
from inmem.shard.dead_keys import BUCKET_SHIFT
from inmem.shard.snapshot_codec import CODEC_VERSION

from polling import wait_for
from set_clock import Clock

BUCKET_S = (1 << BUCKET_SHIFT) / 1e6
QUIET = {"snapshot_interval_s": None, "snapshot_wal_bytes": 1 << 40}


def reclaimed(db) -> int:
    return db.info()["shards"][0]["kv_reclaimed"]


def snapshot_files(path) -> list[str]:
    sdir = os.path.join(path, "snapshots")
    return sorted(os.path.join(sdir, n) for n in os.listdir(sdir) if n.endswith(".snap"))


def rewrite(file, change) -> None:
    """Change a snapshot file's sections with `change(dict)`, its checksum made valid again."""
    snap = fmt.read_snapshot_file(file)
    sections = {t: bytes(body) for t, body in snap.sections.items()}
    change(sections)
    with open(file, "wb") as f:
        fmt.write_snapshot_file(f, created_at=snap.created_at, wal_position=snap.wal_position,
                                shard=snap.header.shard, counts=snap.counts,
                                sections=sorted(sections.items()))


def as_codec_2(sections: dict) -> None:
    """What the previous build wrote: META says codec 2, and a run has no floor field."""
    meta = msgpack.unpackb(sections[fmt.META], raw=False)
    runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
    sections[fmt.META] = msgpack.packb({**meta, "codec": 2})
    sections[fmt.RUNS] = msgpack.packb([row[:7] for row in runs], use_bin_type=True)


def verify(file) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli(["snapshot", "verify", file])
    return code, out.getvalue()


def test_the_floor_survives_a_snapshot_and_a_reopen(tmp_path):
    clock = Clock()
    path = tmp_path / "store"
    with inmem.open(path, "strict", clock=clock, dead_key_retention_s=0, **QUIET) as db:
        run = db.begin_run(run_id="r")
        for i in range(3):
            db.kv.put(run, "a", i)
        db.kv.delete(run, "a")  # version 4
        db.kv.put(run, "t", "x", ttl=1)
        clock.advance(1 + BUCKET_S)
        # The store's scheduler thread sweeps (on the store's clock) every upkeep round.
        wait_for(lambda: reclaimed(db) == 2, timeout=30, what="the sweep")
        assert db.kv.keys(run) == []
        db.snapshot()
    with inmem.open(path, "strict", clock=clock, dead_key_retention_s=0, **QUIET) as db:
        assert db.info()["shards"][0]["keys"] == 0
        assert db.kv.put("r", "a", "again") == 5
        assert db.kv.put("r", "brand-new", 1) == 5
        with pytest.raises(inmem.VersionMismatch):
            db.kv.cas("r", "a", 4, "stale")


def test_reopened_from_the_wal_alone_the_dead_entries_come_back_and_go_again(tmp_path):
    clock = Clock()
    path = tmp_path / "store"
    options = dict(clock=clock, dead_key_retention_s=0, snapshot_on_close=False, **QUIET)
    with inmem.open(path, "strict", **options) as db:
        run = db.begin_run(run_id="r")
        db.kv.put(run, "a", 1)
        db.kv.delete(run, "a")
        clock.advance(BUCKET_S)
        wait_for(lambda: reclaimed(db) == 1, timeout=30, what="the sweep")
        assert db.kv.put(run, "a", 2) == 3  # handed out after the reclaim, logged as given
        db.kv.delete(run, "a")  # version 4
    assert not os.path.isdir(path / "snapshots") or not snapshot_files(path)
    with inmem.open(path, "strict", **options) as db:
        assert db.info()["shards"][0]["keys"] == 1  # the tombstone, back from the WAL
        clock.advance(BUCKET_S)
        wait_for(lambda: reclaimed(db) == 1, timeout=30, what="the sweep after recovery")
        assert db.info()["shards"][0]["keys"] == 0
        assert db.kv.put("r", "a", 3) == 5


def test_a_snapshot_of_the_previous_codec_opens_with_floor_0(tmp_path):
    clock = Clock()
    path = tmp_path / "store"
    options = dict(clock=clock, snapshot_on_close=False, **QUIET)
    with inmem.open(path, "strict", **options) as db:  # the default retention: nothing goes
        run = db.begin_run(run_id="r")
        db.kv.put(run, "a", 1)
        db.kv.delete(run, "a")
        db.kv.put(run, "b", 1)
        db.snapshot()
    (file,) = snapshot_files(path)
    assert verify(file)[0] == 0
    rewrite(file, as_codec_2)
    code, out = verify(file)
    assert code == 0, out
    with inmem.open(path, "strict", **options) as db:
        assert db.kv.put("r", "a", 2) == 3  # its tombstone, kept by the old build
        assert db.kv.put("r", "c", 1) == 1
        assert db.kv.get("r", "b") == 1


def test_a_snapshot_of_a_newer_codec_is_refused_by_opening_and_by_verify(tmp_path):
    path = tmp_path / "store"
    options = dict(snapshot_on_close=False, **QUIET)
    with inmem.open(path, "strict", **options) as db:
        db.kv.put(db.begin_run(run_id="r"), "a", 1)
        db.snapshot()
    (file,) = snapshot_files(path)

    newer = CODEC_VERSION + 1

    def as_newer(sections):
        meta = msgpack.unpackb(sections[fmt.META], raw=False)
        sections[fmt.META] = msgpack.packb({**meta, "codec": newer})
    rewrite(file, as_newer)
    code, out = verify(file)
    assert code != 0 and f"codec version {newer}" in out, out
    with pytest.raises(inmem.InmemError, match=f"codec version {newer}"):
        inmem.open(path, "strict", **options)
