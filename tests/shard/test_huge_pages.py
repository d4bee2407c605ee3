"""The heap gathered into huge pages: contents unchanged, paused during a fork, off when told.

Whether the kernel can collapse at all depends on the host (Linux 6.1+,
transparent huge pages not disabled); where it cannot, the tests that need
it are skipped and say why, and the store must behave exactly as before.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import inmem
import inmem.shard.huge_pages as huge_pages
from inmem.errors import InvalidOption
from inmem.shard.huge_pages import HeapPages, _rss_bytes, heap_pages

GATHER_CHILD = r"""
import json, os, sys
from inmem.shard.huge_pages import HeapPages

def huge_kb():
    with open('/proc/self/smaps_rollup') as f:
        return sum(int(l.split()[1]) for l in f if l.startswith('AnonHugePages'))

# 64 MB of small objects, as a store's heap holds them
data = {os.urandom(8).hex(): os.urandom(100) for _ in range(400_000)}
digest = hash(tuple(sorted(data.items())))
heap = HeapPages()
before = huge_kb()
done = heap.gather() if heap.usable else 0
print(json.dumps({"usable": heap.usable, "collapsed": done, "refused": heap.refused,
                  "before_kb": before,
                  "after_kb": huge_kb(),
                  "same": hash(tuple(sorted(data.items()))) == digest}))
"""


def _gather_in_child() -> dict:
    out = subprocess.run([sys.executable, "-c", GATHER_CHILD], capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_gather_collapses_the_heap_and_keeps_its_contents():
    got = _gather_in_child()
    if not got["usable"]:
        pytest.skip("this kernel cannot collapse memory into huge pages (MADV_COLLAPSE)")
    assert got["same"]
    if got["collapsed"] == 0 and got["refused"] > 0:
        pytest.skip("the kernel had no free huge page to collapse into (memory fragmented)")
    assert got["collapsed"] > 0
    assert got["after_kb"] > got["before_kb"]


def test_a_pass_stops_while_paused_or_while_a_child_shares_the_heap():
    heap = HeapPages()
    if not heap.usable:
        pytest.skip("this kernel cannot collapse memory into huge pages (MADV_COLLAPSE)")
    with heap.paused():
        assert heap.gather() == 0
    heap.forked()
    assert heap.gather() == 0
    heap._last_rss = _rss_bytes()  # settled
    heap._dirty = True  # and a snapshot to gather after
    heap.upkeep()  # no pass may start either
    assert not heap._wake.is_set()
    heap.reaped()
    assert heap._children == 0 and heap._dirty


def test_paused_waits_for_the_stretch_being_collapsed():
    heap = HeapPages()
    order = []
    heap._lock.acquire()  # a stretch being collapsed
    t = threading.Thread(target=lambda: (heap.paused().__enter__(), order.append("fork")))
    t.start()
    t.join(timeout=0.2)
    order.append("collapsed")
    heap._lock.release()
    t.join(timeout=10)
    assert order == ["collapsed", "fork"]


def test_snapshot_forks_with_huge_pages_and_recovers_the_same(tmp_path):
    path = tmp_path / "db"
    with inmem.open(path, durability="buffered", snapshot_on_close=False) as db:
        run = db.begin_run(name="r")
        for i in range(2000):
            db.kv.put(run, f"k{i}", b"v" * 100)
        store = db._backend.store
        assert store.heap is heap_pages()
        for _ in range(2):
            infos = db.snapshot()
            assert infos and infos[0].bytes > 0
        assert store.heap._children == 0  # every fork was reaped
    with inmem.open(path, durability="buffered") as db:
        assert db.kv.get(run, "k1999") == b"v" * 100


def test_the_option_turns_it_off_and_is_checked(tmp_path):
    with inmem.open(tmp_path / "a", durability="buffered", snapshot_huge_pages=False) as db:
        assert db._backend.store.heap is None
        assert db.snapshot()
    with pytest.raises(InvalidOption):
        inmem.open(tmp_path / "b", durability="buffered", snapshot_huge_pages="yes")


@given(st.binary(max_size=1024))
def test_resident_pages_are_the_bytes_with_their_low_bit_set(vec):
    # mincore's other bits are reserved: only bit 0 says a page is resident.
    assert huge_pages.resident(vec) == sum(b & 1 for b in vec)
