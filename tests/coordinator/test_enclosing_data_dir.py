"""Which directory encloses a would-be data directory: a cluster's, a shard's, a store's."""

from __future__ import annotations

import pytest

from inmem.coordinator.config import ConfigError, check_not_nested
from inmem.files import enclosing_data_dir


def _store(path):
    path.mkdir(parents=True)
    (path / "LOCK").write_text("")
    (path / "wal").mkdir()
    (path / "snapshots").mkdir()


@pytest.fixture
def cluster(tmp_path):
    root = tmp_path / "cluster"
    root.mkdir()
    (root / "coordinator.lock").write_text("")
    _store(root / "shard-0")
    return root


def test_a_clusters_own_directories_are_enclosed_by_nothing(cluster):
    assert enclosing_data_dir(cluster) is None
    assert enclosing_data_dir(cluster / "shard-0") is None
    assert enclosing_data_dir(cluster / "shard-0", clusters=False) is None


def test_inside_a_cluster_or_a_shard(cluster):
    assert enclosing_data_dir(cluster / "x" / "y") == (str(cluster),
                                                       "the data directory of a cluster")
    assert enclosing_data_dir(cluster / "shard-0" / "x") == (
        str(cluster / "shard-0"), f"the directory of shard 0 of the cluster at {cluster}")
    # a store beside the shards is only refused as a cluster's data directory
    assert enclosing_data_dir(cluster / "x", clusters=False) is None
    assert enclosing_data_dir(cluster / "shard-0" / "wal" / "x", clusters=False)[0] == \
        str(cluster / "shard-0")


def test_a_shard_directory_of_a_nested_cluster_is_found_inside_the_outer_one(cluster):
    inner = cluster / "inner"
    inner.mkdir()
    (inner / "coordinator.lock").write_text("")
    assert enclosing_data_dir(inner / "shard-0") == (str(cluster),
                                                     "the data directory of a cluster")


def test_inside_a_store(tmp_path):
    _store(tmp_path / "s")
    assert enclosing_data_dir(tmp_path / "s" / "in") == (str(tmp_path / "s"),
                                                         "the directory of a store")
    # a lock file alone (or beside unrelated directories) makes no store
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "LOCK").write_text("")
    (tmp_path / "t" / "wal").mkdir()
    assert enclosing_data_dir(tmp_path / "t" / "in") is None


def test_check_not_nested_names_both_and_where_the_setting_came_from(cluster):
    with pytest.raises(ConfigError) as caught:
        check_not_nested(str(cluster / "shard-0" / "x"), "--data-dir")
    assert str(caught.value).startswith(
        f"--data-dir: [cluster] data_dir {cluster}/shard-0/x is inside {cluster}/shard-0, the "
        f"directory of shard 0 of the cluster at {cluster}; ")


def test_a_store_or_shard_directory_is_no_data_directory(cluster, tmp_path):
    # A cluster on either would make its shards inside a store's directory, refused there
    # only after the coordinator had written its files among the store's.
    with pytest.raises(ConfigError, match="shard 0 of the cluster at"):
        check_not_nested(str(cluster / "shard-0"), "data_dir")
    _store(tmp_path / "mine")
    with pytest.raises(ConfigError, match="directory of an embedded store"):
        check_not_nested(str(tmp_path / "mine"), "data_dir")
    check_not_nested(str(cluster), "data_dir")  # a cluster's own directory is one
