"""A cluster shared by the tests of one process, and a Database factory on it for the API suite.

`open_cluster_db(**options)` takes the options the embedded factory takes
(`clock`, `max_value_bytes`) and returns a Database on one 2-shard inmemory
cluster started on first use and stopped when the process exits. Every call
wipes the cluster first (the `debug.reset` test hook), so each test starts
from an empty store exactly as with `inmem.open(None)`. A FakeClock is
honoured by pinning every shard's clock to it before each call.
"""

from __future__ import annotations

import atexit
import threading

import inmem
from inmem.database import Database
from inmem.sections import KV

_lock = threading.Lock()
_cluster = None


def shared_cluster() -> "inmem.Cluster":
    global _cluster
    with _lock:
        if _cluster is None:
            cluster = inmem.Cluster(shards=2, durability="inmemory", test_hooks=True)
            cluster.start()
            atexit.register(cluster.stop)
            _cluster = cluster
        return _cluster


class ClockedBackend:
    """A cluster backend that pins the shards' clock to a test's clock before each call."""

    def __init__(self, inner, clock):
        self.inner = inner
        self.clock = clock
        self.sent = None

    def _sync(self) -> None:
        now = self.clock()
        if now != self.sent:
            self.inner.cluster("debug.clock", [now])
            self.sent = now

    def call(self, op, args):
        self._sync()
        return self.inner.call(op, args)

    def call_batch(self, ops):
        self._sync()
        return self.inner.call_batch(ops)

    def fanout(self, op, args):
        self._sync()
        return self.inner.fanout(op, args)

    def kv_section(self):
        return KV(self.call)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def open_cluster_db(clock=None, max_value_bytes=None, direct=True, stream=True,
                    **options) -> Database:
    if options:
        raise TypeError(f"the shared test cluster does not take {sorted(options)}")
    db = shared_cluster().connect(direct=direct, stream=stream)
    backend = db._backend
    backend.cluster("debug.reset")
    if max_value_bytes is not None:
        backend.cluster("debug.max_value_bytes", [max_value_bytes])
    if clock is not None:
        db = Database(ClockedBackend(backend, clock))
    return db


def cluster_data_dir(tmp_path, shards: int):
    """A new cluster data directory whose slot map spreads the slots over `shards` shards.

    Shard directories can then be filled in-process before a cluster starts on it.
    """
    from inmem.coordinator.slotmap import SlotMap
    data = tmp_path / "data"
    data.mkdir()
    SlotMap.even(shards).save(str(data))
    return data

