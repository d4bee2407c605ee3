"""`inmem.Cluster(config=FILE)` keeps its data where the config says, as `inmem serve` does.

Only a cluster given neither a `data_dir` keyword nor a config that names
one runs in a temporary directory removed at stop; what a config names is
never removed.
"""

from __future__ import annotations

import os

import pytest

import inmem

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _config(tmp_path, body: str):
    path = tmp_path / "cluster.toml"
    path.write_text(body)
    return path


def test_the_config_data_dir_is_used_and_kept(tmp_path):
    data = tmp_path / "from-config"
    cfg = _config(tmp_path, f'[cluster]\ndata_dir = "{data}"\nshards = 1\n'
                            '[durability]\nmode = "strict"\n')
    with inmem.Cluster(config=cfg) as cluster:
        assert cluster.data_dir == str(data)
        with cluster.connect() as db:
            run = db.begin_run(run_id="keep-me")
            assert db.kv.put(run, "k", "v") == 1
            db.end_run(run)
    assert os.path.isdir(data / "shard-0")
    with inmem.Cluster(config=cfg) as cluster, cluster.connect() as db:
        assert db.kv.get("keep-me", "k") == "v"
    assert os.path.isdir(data / "shard-0")


def test_the_keyword_overrides_the_config_data_dir(tmp_path):
    named = tmp_path / "from-config"
    cfg = _config(tmp_path, f'[cluster]\ndata_dir = "{named}"\nshards = 1\n')
    mine = tmp_path / "mine"
    with inmem.Cluster(config=cfg, data_dir=mine) as cluster:
        assert cluster.data_dir == str(mine)
    assert os.path.isdir(mine / "shard-0") and not named.exists()


def test_a_config_without_a_data_dir_runs_in_a_temporary_directory(tmp_path):
    cfg = _config(tmp_path, "[cluster]\nshards = 1\n")
    with inmem.Cluster(config=cfg) as cluster:
        used = cluster.data_dir
        assert os.path.isdir(used) and not used.startswith(str(tmp_path))
    assert not os.path.exists(used)


def test_an_unreadable_config_is_refused_as_before(tmp_path):
    cfg = _config(tmp_path, "[cluster\n")
    with pytest.raises(inmem.errors.InmemError, match="not valid TOML"):
        inmem.Cluster(config=cfg)


@pytest.mark.parametrize("store_open", [False, True])
def test_a_cluster_on_an_embedded_stores_directory_is_refused_before_anything_is_made(
        tmp_path, store_open):
    # The start used to go ahead: it failed ("shard-0 is inside ..., the directory of a
    # store"), but left coordinator.lock, slotmap.json and logs in the store's directory,
    # and the next start then said shard 0's directory was missing "though this data
    # directory has served with it".
    from inmem.coordinator.config import ConfigError
    store = tmp_path / "store"
    db = inmem.open(store)
    db.kv.put(db.begin_run(run_id="mine"), "k", 1)
    if not store_open:
        db.close()
    before = sorted(os.listdir(store))
    try:
        for _ in range(2):
            with pytest.raises(ConfigError) as info:
                inmem.Cluster(data_dir=store, shards=1, ready_timeout=30).start()
            assert "directory of an embedded store" in str(info.value)
            assert str(store) in str(info.value)
            assert sorted(os.listdir(store)) == before
    finally:
        if store_open:
            db.close()
    with inmem.open(store) as db:
        assert db.kv.get("mine", "k") == 1


@pytest.mark.parametrize("arguments", [{"config": 5}, {"config": ["a.toml"]},
                                       {"data_dir": 5}, {"data_dir": b"data"}])
def test_a_config_or_data_dir_that_is_no_path_is_invalid_option(tmp_path, arguments):
    # They raised a bare TypeError from open() or os.fspath(), not an inmem error.
    with pytest.raises(inmem.InvalidOption, match=next(iter(arguments))):
        inmem.Cluster(**arguments)


def test_the_methods_refuse_arguments_they_cannot_use(tmp_path):
    # wait_ready(nan) raised ValueError and wait_ready("1") TypeError from inside its loop,
    # log_tail("x") TypeError; log_tail(0) gave the whole tail (lines[-0:] is every line).
    cluster = inmem.Cluster(data_dir=tmp_path / "data", shards=1, durability="inmemory")
    with cluster:
        for bad in (float("nan"), "1", -1, True, float("inf")):
            with pytest.raises(inmem.InvalidOption, match="timeout"):
                cluster.wait_ready(bad)
        for bad in ("x", -1, 1.5, True):
            with pytest.raises(inmem.InvalidOption, match="lines"):
                cluster.log_tail(bad)
        assert cluster.log_tail(0) == ""
        assert cluster.wait_ready(30)["ready"] is True
