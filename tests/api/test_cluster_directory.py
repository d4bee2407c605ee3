"""An embedded store is refused inside a running cluster's data directory; a real cluster."""

from __future__ import annotations

import os

import pytest

import inmem
from cluster.conftest import make_cluster  # noqa: F401  (the fixture)
from inmem.files import lock_is_held, serving_cluster_root

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_open_in_or_under_a_running_clusters_directory_is_refused(make_cluster, tmp_path):
    data = tmp_path / "data"
    cluster = make_cluster(data_dir=data, shards=1, durability="buffered")
    pid = cluster.pids()["coordinator"]
    for path in (data, data / "shard-0", data / "mine", str(data)):
        with pytest.raises(inmem.StoreOpenError) as info:
            inmem.open(path)
        message = str(info.value)
        assert "data directory of a running cluster" in message and str(data) in message
        assert f"coordinator pid {pid}" in message and "inmem.connect" in message
    # Nothing was created: the refusal comes before the store touches the directory.
    assert not (data / "mine").exists() and not (data / "wal").exists()
    # The cluster is untouched and still serves.
    with cluster.connect() as db:
        run = db.begin_run()
        assert db.kv.put(run, "k", 1) == 1
    # A sibling directory is fine, and once the cluster stops its directory opens again.
    with inmem.open(tmp_path / "embedded") as db:
        db.kv.put(db.begin_run(), "k", 1)
    cluster.stop()
    assert serving_cluster_root(data) is None
    with inmem.open(data / "mine") as db:
        assert db.runs.list() == []


def test_lock_is_held_only_looks(tmp_path):
    from inmem.files import try_lock
    path = tmp_path / "coordinator.lock"
    assert lock_is_held(path) is False and not path.exists()
    fd = try_lock(path)
    try:
        # flock locks belong to the open file: another open of it sees the lock.
        assert lock_is_held(path) is True
        # No live pid recorded: the lock is not even looked at.
        assert serving_cluster_root(tmp_path / "a" / "b") is None
        os.write(fd, f"{os.getpid()}\n".encode())
        assert serving_cluster_root(tmp_path / "a" / "b") == str(tmp_path)
    finally:
        os.close(fd)
    assert lock_is_held(path) is False and serving_cluster_root(tmp_path) is None


def test_a_stale_lock_file_of_a_stopped_cluster_is_no_refusal(tmp_path):
    # A stopped cluster leaves its lock file (with a pid that may be reused): unlocked, it is
    # no reason to refuse, whoever that pid is now.
    (tmp_path / "coordinator.lock").write_text(f"{os.getpid()}\n")
    with inmem.open(tmp_path / "store") as db:
        db.kv.put(db.begin_run(), "k", 1)


def test_open_of_a_stopped_clusters_data_directory_is_refused(make_cluster, tmp_path):
    # It opened as an empty store (no runs: the data is in the shards' directories) and
    # made wal/, snapshots/ and LOCK there, after which the cluster refused to start
    # ("shard-0 is inside ..., the directory of a store").
    data = tmp_path / "data"
    cluster = make_cluster(data_dir=data, shards=1, durability="buffered")
    with cluster.connect() as db:
        db.kv.put(db.begin_run(run_id="kept"), "k", 1)
    cluster.stop()
    before = sorted(os.listdir(data))
    for path in (data, str(data)):
        with pytest.raises(inmem.StoreOpenError) as info:
            inmem.open(path)
        message = str(info.value)
        assert "data directory of a cluster" in message and str(data) in message
        assert "shard-0" in message
    assert sorted(os.listdir(data)) == before
    # A shard's own directory still opens on its own, to look at the data.
    with inmem.open(data / "shard-0") as db:
        assert db.kv.get("kept", "k") == 1
    cluster.start()
    with cluster.connect() as db:
        assert db.kv.get("kept", "k") == 1
