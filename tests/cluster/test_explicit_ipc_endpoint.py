"""An ipc endpoint named in the config, outside the data directory: one cluster serves it
at a time, its socket files are the owner's only, and a stale one is reused."""

from __future__ import annotations

import os
import signal
import stat

import pytest

import inmem
from inmem.stream import stream_path

pytestmark = pytest.mark.slow


def test_a_second_cluster_on_a_served_endpoint_is_refused_and_takes_nothing(tmp_path):
    shared = tmp_path / "pub"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    endpoint = f"ipc://{shared}/c.sock"
    old = os.umask(0)  # the least restrictive umask: the sockets are private all the same
    try:
        first = inmem.Cluster(data_dir=tmp_path / "a", shards=1, durability="inmemory",
                              endpoint=endpoint)
        first.start()
    finally:
        os.umask(old)
    try:
        for path in (f"{shared}/c.sock", stream_path(endpoint)):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
        db = first.connect()
        run = db.begin_run(run_id="first")
        db.kv.put(run, "k", 1)
        second = inmem.Cluster(data_dir=tmp_path / "b", shards=1, durability="inmemory",
                               endpoint=endpoint, ready_timeout=20)
        with pytest.raises(inmem.InmemError, match="another process is serving it"):
            second.start()
        second.stop()
        # The first cluster still has its sockets and serves on them, old clients and new.
        assert db.kv.get(run, "k") == 1
        again = inmem.connect(endpoint)
        try:
            assert again.kv.get(run, "k") == 1
        finally:
            again.close()
        db.close()
    finally:
        first.stop()
    assert not os.path.exists(f"{shared}/c.sock")


def test_a_socket_file_a_killed_cluster_left_is_reused(tmp_path):
    endpoint = f"ipc://{tmp_path}/c.sock"
    first = inmem.Cluster(data_dir=tmp_path / "a", shards=1, durability="inmemory",
                          endpoint=endpoint)
    first.start()
    pids = first.pids()
    for pid in [pids["coordinator"], *pids["shards"]]:
        os.kill(pid, signal.SIGKILL)
    first.proc.wait(10)
    assert os.path.exists(f"{tmp_path}/c.sock")
    second = inmem.Cluster(data_dir=tmp_path / "b", shards=1, durability="inmemory",
                           endpoint=endpoint)
    with second:
        db = second.connect()
        assert db.kv.put(db.begin_run(), "k", 1) == 1
        db.close()
    first.stop()
