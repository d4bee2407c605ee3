"""A data directory inside another's is refused: a cluster's inside another cluster's data
directory or inside one of its shard directories, an embedded store inside a shard's or
another store's directory. The refusal names both paths and comes before anything is made.
(An embedded store inside a *running* cluster's directory is refused by inmem.open itself;
beside the shards of a stopped one it opens, see tests/api/test_cluster_directory.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import inmem
from inmem.coordinator.config import ConfigError
from inmem.processes import child_env

pytestmark = [pytest.mark.slow]


@pytest.fixture
def stopped_cluster(make_cluster) -> str:
    cluster = make_cluster(shards=2, durability="strict")
    cluster.stop()
    return cluster.data_dir


@pytest.mark.timeout(120)
def test_a_cluster_inside_another_clusters_data_directory_is_refused(make_cluster,
                                                                     stopped_cluster):
    inner = os.path.join(stopped_cluster, "inner")
    cluster = make_cluster(data_dir=inner, start=False, shards=2, durability="strict")
    with pytest.raises(ConfigError) as caught:
        cluster.start()
    text = str(caught.value)
    assert f"{inner} is inside {stopped_cluster}, the data directory of a cluster" in text, text
    assert cluster.proc is None
    assert not os.path.exists(inner)


@pytest.mark.timeout(120)
def test_a_cluster_inside_a_shard_directory_is_refused(make_cluster, stopped_cluster):
    shard = os.path.join(stopped_cluster, "shard-0")
    inner = os.path.join(shard, "inner")
    cluster = make_cluster(data_dir=inner, start=False, shards=1, durability="strict")
    with pytest.raises(ConfigError) as caught:
        cluster.start()
    text = str(caught.value)
    assert (f"{inner} is inside {shard}, the directory of shard 0 of the cluster at "
            f"{stopped_cluster}") in text, text
    assert not os.path.exists(inner)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("where", ["shard-1/store", "shard-1/wal/store"])
def test_an_embedded_store_inside_a_shard_directory_is_refused(stopped_cluster, where):
    path = os.path.join(stopped_cluster, where)
    with pytest.raises(inmem.StoreOpenError) as caught:
        inmem.open(path, durability="strict")
    text = str(caught.value)
    assert (f"{path} is inside {stopped_cluster}/shard-1, the directory of shard 1 of the "
            f"cluster at {stopped_cluster}") in text, text
    assert not os.path.exists(path)


def test_an_embedded_store_inside_another_store_is_refused(tmp_path):
    outer = tmp_path / "outer"
    inmem.open(outer, durability="strict").close()
    with pytest.raises(inmem.StoreOpenError) as caught:
        inmem.open(outer / "inner", durability="strict")
    text = str(caught.value)
    assert f"{outer}/inner is inside {outer}, the directory of a store" in text
    # the refusal as it was made, not wrapped in advice about permissions
    assert "you may write to" not in text and caught.value.path == str(outer / "inner")


@pytest.mark.timeout(120)
def test_what_is_not_nested_still_opens(make_cluster, stopped_cluster, tmp_path):
    # The cluster again on its own directory, and a shard's directory opened as a store
    # (to look at a stopped cluster's data).
    again = make_cluster(data_dir=stopped_cluster, shards=2, durability="strict")
    again.stop()
    inmem.open(os.path.join(stopped_cluster, "shard-1"), durability="strict").close()
    beside = make_cluster(data_dir=os.path.join(os.path.dirname(stopped_cluster), "beside"),
                          shards=1, durability="strict")
    assert beside.status()["ready"] is True


@pytest.mark.timeout(120)
def test_inmem_serve_refuses_a_nested_data_directory_in_one_line(stopped_cluster):
    inner = os.path.join(stopped_cluster, "shard-1", "inner")
    done = subprocess.run([sys.executable, "-m", "inmem", "serve", "--data-dir", inner],
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"inmem serve: --data-dir: [cluster] data_dir {inner} is inside "
                               f"{stopped_cluster}/shard-1, the directory of shard 1"), lines
    assert not os.path.exists(inner)
