"""Fixtures for cluster tests: clusters in temporary directories that are always reaped.

`make_cluster(**kwargs)` starts an `inmem.Cluster` under the test's tmp_path;
teardown stops every cluster it started and then SIGKILLs each one's process
group, and `no_leftover_processes` fails a test that leaves a shard behind.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

import inmem


def _shard_processes(root_pids) -> list:
    """Live processes started from this checkout's shard or coordinator modules."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if "shard.worker" in cmd or "coordinator" in cmd:
            if p.info["pid"] in root_pids or _descends_from(p, root_pids):
                found.append(p)
    return found


def _descends_from(proc, pids) -> bool:
    try:
        return any(parent.pid in pids for parent in proc.parents())
    except psutil.Error:
        return False


@pytest.fixture
def make_cluster(tmp_path):
    started: list = []
    counter = iter(range(1000))

    def make(data_dir=None, start=True, **kwargs) -> inmem.Cluster:
        if data_dir is None:
            data_dir = tmp_path / f"cluster-{next(counter)}"
        kwargs.setdefault("ready_timeout", 45.0)
        cluster = inmem.Cluster(data_dir=data_dir, **kwargs)
        started.append(cluster)
        if start:
            cluster.start()
        return cluster

    yield make
    for cluster in started:
        pid = cluster.proc.pid if cluster.proc is not None else None
        try:
            cluster.stop(timeout=20)
        except Exception:
            cluster.kill()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    me = os.getpid()
    deadline = time.monotonic() + 10
    while _shard_processes({me}) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _shard_processes({me})
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {[p.info for p in left]}"


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll `predicate` until it returns a true value; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def shard_of(cluster_db, run_id: str) -> int:
    """The shard that owns `run_id`, from the slot map the client holds."""
    from inmem.protocol import slot_of
    backend = cluster_db._backend
    if backend.owners is None:
        backend._load_slotmap()
    return backend.owners[slot_of(run_id)]


def runs_on_each_shard(db, shards: int, per_shard: int = 1, prefix: str = "r") -> dict:
    """Run ids (not begun) chosen so that each of `shards` shards owns `per_shard` of them."""
    out = {s: [] for s in range(shards)}
    i = 0
    while any(len(v) < per_shard for v in out.values()):
        rid = f"{prefix}-{i}"
        i += 1
        s = shard_of(db, rid)
        if len(out[s]) < per_shard:
            out[s].append(rid)
    return out
