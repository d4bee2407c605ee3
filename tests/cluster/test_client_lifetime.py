"""A client dropped without close() gives back its sockets, descriptors and threads.

Counted, not timed: the process's open descriptors and threads (psutil) before
and after many connections that are dropped without close(), against the
shared 2-shard cluster.
"""

from __future__ import annotations

import gc
import threading

import psutil
import pytest

import inmem

from .shared import shared_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: growth allowed after every dropped client is gone (imports, caches, the
#: interpreter's own lazily opened descriptors); a leak is 5 fds and 2 threads
#: per client
FDS_SLACK = 20
THREADS_SLACK = 5


def _counts(collect: bool = True) -> tuple[int, int]:
    if collect:
        gc.collect()
    proc = psutil.Process()
    return proc.num_fds(), proc.num_threads()


def _assert_bounded(base, what: str, collect: bool = True) -> None:
    fds, threads = _counts(collect)
    grew = (fds - base[0], threads - base[1])
    assert grew[0] < FDS_SLACK and grew[1] < THREADS_SLACK, \
        f"{what}: {grew[0]} more fds and {grew[1]} more threads"


@pytest.fixture(scope="module")
def endpoint() -> str:
    url = shared_cluster().endpoint
    inmem.connect(url).close()  # warm up: imports and anything made once per process
    return url


def test_a_thousand_clients_dropped_without_close_leak_nothing(endpoint):
    base = _counts()
    for i in range(1000):
        inmem.connect(endpoint)
        if i % 100 == 99:  # fail early, before a leak runs out of descriptors
            _assert_bounded(base, f"after {i + 1} clients")
    _assert_bounded(base, "after 1000 clients")


def _use(db) -> None:
    """Every path that makes a socket or holds the client: threads, batches, errors."""
    run = db.begin_run()
    db.kv.put(run, "k", 1)
    worker = threading.Thread(target=lambda: db.kv.get(run, "k"))
    worker.start()
    worker.join()
    p = db.pipeline()
    p.kv.get(run, "k")
    p.kv.get(run, ["not", "a", "key"])
    p.execute(raise_on_error=False)
    with db.transaction(run) as tx:
        tx.kv.put("k", tx.kv.get("k") + 1)
    try:
        db.kv.get("no-such-run", "k")
    except inmem.RunNotFound:
        pass


@pytest.mark.parametrize("direct", [False, True])
def test_used_clients_are_released_as_soon_as_they_are_dropped(endpoint, direct):
    # No garbage collection: released by reference counting alone, so no
    # reference cycle keeps a dropped client (and its context) alive.
    base = _counts()
    gc.disable()
    try:
        for _ in range(40):
            _use(inmem.connect(endpoint, direct=direct))
        _assert_bounded(base, "with the cycle collector off", collect=False)
    finally:
        gc.enable()


def test_a_client_inside_a_reference_cycle_is_released_by_the_collector(endpoint):
    # The collector clears the weak references through which a ZeroMQ context
    # knows its sockets before it runs finalizers: ending that context with a
    # socket open would hang here (the timeout marker turns that into a failure).
    base = _counts()
    for _ in range(40):
        holder: dict = {}
        holder["self"] = holder
        holder["db"] = inmem.connect(endpoint, direct=True)
        _use(holder["db"])
        del holder
    _assert_bounded(base, "after collecting clients held in cycles")


def test_close_releases_at_once_and_later_calls_say_closed(endpoint):
    base = _counts()
    db = inmem.connect(endpoint)
    _use(db)
    db.close()
    _assert_bounded(base, "after close()", collect=False)
    with pytest.raises(inmem.InmemError, match="closed"):
        db.info()


def test_a_cluster_never_started_says_so_at_once(tmp_path):
    # status(), pids() and connect() on a Cluster nobody started waited 10 s each and
    # raised Timeout; ready_timeout=-1 was taken.
    cluster = inmem.Cluster(data_dir=tmp_path / "data", shards=1)
    for call in (cluster.status, cluster.pids, cluster.connect):
        with pytest.raises(inmem.ClusterNotReady, match="was not started"):
            call()
    for bad in (-1, 0, float("inf"), "60"):
        with pytest.raises(inmem.InvalidOption, match="ready_timeout"):
            inmem.Cluster(data_dir=tmp_path / "data", shards=1, ready_timeout=bad)
