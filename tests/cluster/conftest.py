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
from polling import wait_for  # noqa: F401  (the cluster tests import it from here)


def _group_members(pgids) -> list:
    """Live (not zombie) processes in the given process groups."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if os.getpgid(p.info["pid"]) in pgids and p.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (ProcessLookupError, psutil.Error):
            continue
    return found


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
            cluster._first_pid = cluster.proc.pid
        return cluster

    yield make
    # Each cluster runs in its own process group (its coordinator's pid), so
    # what a test left behind is found by group, never confused with a
    # cluster someone else in this process is running.
    groups = set()
    for cluster in started:
        pid = cluster.proc.pid if cluster.proc is not None else None
        if pid is not None:
            groups.add(pid)
        try:
            cluster.stop(timeout=20)
        except Exception:
            cluster.kill()
        if pid is not None:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    groups |= {pid for pid in (getattr(c, "_first_pid", None) for c in started) if pid}
    deadline = time.monotonic() + 10
    while _group_members(groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _group_members(groups)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    assert not left, f"processes left behind: {[p.info for p in left]}"


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
