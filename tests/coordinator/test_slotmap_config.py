"""The slot map file and the cluster configs, without processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import inmem
from inmem.coordinator import config
from inmem.coordinator.slotmap import SlotMap
from inmem.protocol import SLOT_COUNT

ROOT = Path(__file__).resolve().parents[2]


# -- slot map --------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 7, 1024])
def test_even_map_gives_every_shard_a_contiguous_share(n):
    m = SlotMap.even(n)
    ranges = m.ranges()
    assert [r[2] for r in ranges] == list(range(n))
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOT_COUNT - 1
    sizes = [r[1] - r[0] + 1 for r in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert SlotMap.from_ranges(ranges, n).owners == m.owners


def test_a_new_data_directory_gets_a_persisted_map_that_restarts_keep(tmp_path):
    m = SlotMap.load_or_create(str(tmp_path), 3, count_is_auto=False)
    doc = json.loads((tmp_path / "slotmap.json").read_text())
    assert doc == {"format": 1, "slot_count": 4096, "shard_count": 3, "ranges": m.ranges()}
    assert not list(tmp_path.glob("*.tmp"))
    # "auto" on a machine with another CPU count keeps the recorded shards.
    again = SlotMap.load_or_create(str(tmp_path), 8, count_is_auto=True)
    assert again.owners == m.owners and again.shard_count == 3
    with pytest.raises(config.ConfigError, match="records 3 shards"):
        SlotMap.load_or_create(str(tmp_path), 4, count_is_auto=False)


def test_moving_slots_needs_no_format_change(tmp_path):
    m = SlotMap.even(2)
    m.owners[0:10] = [1] * 10  # what resharding would do
    m.save(str(tmp_path))
    back = SlotMap.read(str(tmp_path))
    assert back.owners == m.owners
    assert back.ranges()[:2] == [[0, 9, 1], [10, 2047, 0]]


@pytest.mark.parametrize("doc, words", [
    ("not json", "not JSON"),
    ({"format": 2, "slot_count": 4096, "shard_count": 1, "ranges": [[0, 4095, 0]]}, "format"),
    ({"format": 1, "slot_count": 16, "shard_count": 1, "ranges": [[0, 15, 0]]}, "slot_count"),
    ({"format": 1, "slot_count": 4096, "shard_count": 0, "ranges": []}, "shard_count"),
    ({"format": 1, "slot_count": 4096, "shard_count": 2, "ranges": [[0, 4000, 0]]}, "cover"),
    ({"format": 1, "slot_count": 4096, "shard_count": 2,
      "ranges": [[0, 10, 0], [5, 4095, 1]]}, "gap or overlaps"),
    ({"format": 1, "slot_count": 4096, "shard_count": 2,
      "ranges": [[0, 10, 0], [12, 4095, 1]]}, "gap or overlaps"),
    ({"format": 1, "slot_count": 4096, "shard_count": 2, "ranges": [[0, 4095, 2]]}, "outside"),
    ({"format": 1, "slot_count": 4096, "shard_count": 2, "ranges": [[0, "x", 0]]}, "first, last"),
    ({"format": 1, "slot_count": 4096, "shard_count": 2, "ranges": {}}, "not a list"),
])
def test_a_damaged_map_is_refused_not_recreated(tmp_path, doc, words):
    text = doc if isinstance(doc, str) else json.dumps(doc)
    (tmp_path / "slotmap.json").write_text(text)
    with pytest.raises(inmem.CorruptionError, match=words):
        SlotMap.load_or_create(str(tmp_path), 2, count_is_auto=True)
    assert (tmp_path / "slotmap.json").read_text() == text


# -- configs ---------------------------------------------------------------------


def test_the_packaged_defaults_are_configs_default_toml():
    assert (ROOT / "configs" / "default.toml").read_text() == \
        (ROOT / "inmem" / "default.toml").read_text()
    assert config.load(None) == config.load(ROOT / "configs" / "default.toml")


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = config.load(None)
    assert spec["data_dir"] == str(tmp_path / "data")
    assert spec["durability"] == "buffered"
    assert len(spec["shards"]) == config.cpu_count()
    assert spec["client_endpoint"] == f"ipc://{tmp_path / 'data' / 'coordinator.sock'}"
    assert spec["shards"][0]["endpoint"] == f"ipc://{tmp_path / 'data' / 'shard-0.sock'}"
    assert spec["max_message_bytes"] == 64 * 2**20
    assert spec["options"]["snapshot_on_close"] is True
    assert spec["test_hooks"] is False


def test_overrides_and_their_errors(tmp_path):
    spec = config.load(None, data_dir=str(tmp_path), shards=3, durability="strict",
                       flush_interval_ms=5, endpoint="tcp://127.0.0.1:7700", insecure=True)
    assert (len(spec["shards"]), spec["durability"]) == (3, "strict")
    assert spec["options"]["flush_interval_ms"] == 5
    assert spec["client_endpoint"] == "tcp://127.0.0.1:7700"
    with pytest.raises(config.ConfigError, match="unknown setting"):
        config.load(None, nonsense=1)
    with pytest.raises(config.ConfigError, match="mode must be one of"):
        config.load(None, durability="sometimes")
    with pytest.raises(config.ConfigError, match="shards must be"):
        config.load(None, shards=0)
    with pytest.raises(config.ConfigError, match="must be a bool"):
        config.load(None, snapshot_on_close=1)


def test_killing_an_unresponsive_shard_is_off_by_default_and_never_within_the_timeout():
    sup = config.load(None)["supervisor"]
    assert sup["restart_unresponsive_after_s"] == 0
    assert config.load(None, restart_unresponsive_after_s=60)["supervisor"][
        "restart_unresponsive_after_s"] == 60
    for limit in (5, 1, -1):  # the heartbeat timeout is 5 s
        with pytest.raises(config.ConfigError, match="above heartbeat_timeout_s"):
            config.load(None, restart_unresponsive_after_s=limit)
    with pytest.raises(config.ConfigError, match="heartbeat_timeout_s must be above 0"):
        config.load(None, heartbeat_timeout_s=0)


def test_bad_files_name_the_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster\n")
    with pytest.raises(config.ConfigError, match="not valid TOML"):
        config.load(bad)
    bad.write_text("[clutser]\nshards = 2\n")
    with pytest.raises(config.ConfigError, match=r"unknown section \[clutser\]"):
        config.load(bad)
    bad.write_text("[cluster]\nshard = 2\n")
    with pytest.raises(config.ConfigError, match="unknown setting 'shard'"):
        config.load(bad)
    with pytest.raises(config.ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml")


def test_strict_config():
    spec = config.load(ROOT / "configs" / "strict.toml")
    assert spec["durability"] == "strict"


def test_multihost_example_lists_remote_tcp_shards():
    spec = config.load(ROOT / "configs" / "multihost.example.toml")
    remote = [s for s in spec["shards"] if s["remote"]]
    assert remote and all(s["endpoint"].startswith("tcp://") for s in remote)
    assert spec["client_endpoint"].startswith("tcp://")
    assert [s["id"] for s in spec["shards"]] == list(range(len(spec["shards"])))
    assert spec["keys"] and not spec["insecure"]  # tcp across hosts: Curve, not the clear


def test_a_long_data_directory_keeps_sockets_under_the_kernel_limit(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    spec = config.load(None, data_dir=str(deep), shards=2)
    for endpoint in [spec["client_endpoint"]] + [s["endpoint"] for s in spec["shards"]]:
        assert len(endpoint[len("ipc://"):]) <= config.IPC_PATH_MAX
    # The same directory always gets the same socket directory (so status finds it).
    assert config.load(None, data_dir=str(deep))["client_endpoint"] == spec["client_endpoint"]
    assert config.load(None, data_dir=str(deep / "x"))["client_endpoint"] != spec["client_endpoint"]


def test_shard_tables_are_checked(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[[shard]]\nid = 0\n[[shard]]\nid = 2\nendpoint = "tcp://h:1"\nremote = true\n')
    with pytest.raises(config.ConfigError, match="ids must be"):
        config.load(f)
    f.write_text('[[shard]]\nid = 0\nremote = true\n')
    with pytest.raises(config.ConfigError, match="needs a tcp endpoint"):
        config.load(f)
    f.write_text('[cluster]\nshards = 3\n[[shard]]\nid = 0\n')
    with pytest.raises(config.ConfigError, match="make them agree"):
        config.load(f)


def test_bind_endpoint():
    from inmem.transport import bind_endpoint
    # The address given, never every interface unless it says so.
    assert bind_endpoint("tcp://db-2.internal:7711") == "tcp://db-2.internal:7711"
    assert bind_endpoint("tcp://*:7711") == "tcp://*:7711"
    assert bind_endpoint("tcp://10.0.0.2:7711") == "tcp://10.0.0.2:7711"
    assert bind_endpoint("ipc:///x/y.sock") == "ipc:///x/y.sock"


@pytest.mark.parametrize("key, value", [("flush_interval_ms", 0), ("max_pending_writes", 0),
                                        ("snapshot_retention", 0), ("segment_bytes_max", -1),
                                        ("snapshot_on_close", 1), ("fsync_slow_ms", -5)])
def test_durability_options_are_checked_against_the_shared_table(key, value):
    with pytest.raises(config.ConfigError, match=f"\\[durability\\] {key} must be"):
        config.load(None, **{key: value})
    assert os.path.isabs(config.socket_dir("/tmp/x"))


INF = float("inf")


@pytest.mark.parametrize("key, value", [
    ("flush_interval_ms", INF), ("flush_interval_ms", 1e30), ("commit_wait_us", INF),
    ("commit_wait_us", 5e6), ("snapshot_interval_s", INF), ("fsync_slow_ms", INF),
    ("segment_bytes_max", 2**80), ("max_pending_writes", 2**80), ("snapshot_wal_bytes", 2**80),
    ("dead_key_retention_s", INF), ("malloc_mmap_threshold", 2**80),
    ("max_corrupt_entries", 2**80), ("snapshot_retention", 2**80)])
def test_durability_options_have_an_upper_bound_too(key, value, tmp_path):
    # An infinite flush interval killed the WAL flusher (acknowledged writes never
    # written); an infinite commit wait hung a strict shard; a cluster's shard
    # crash-looped on them. Each is refused, in a config and by inmem.open alike.
    with pytest.raises(config.ConfigError, match=f"\\[durability\\] {key} must be .* at most"):
        config.load(None, **{key: value})
    with pytest.raises(inmem.InvalidOption, match=f"{key} must be .* at most"):
        inmem.open(tmp_path / "db", **{key: value})


def test_history_limits_inmemory_shards_and_is_checked():
    assert config.load(None)["history"] == "full"
    assert config.load(None, durability="inmemory", history=100)["history"] == 100
    assert config.load(None, durability="inmemory", history="none")["history"] == "none"
    with pytest.raises(config.ConfigError, match=r"\[durability\] history must be"):
        config.load(None, durability="inmemory", history="some")
    with pytest.raises(config.ConfigError, match="keeps every run's history on disk"):
        config.load(None, durability="buffered", history=100)
    for bad in (0, 1.5):
        with pytest.raises(config.ConfigError, match="history_compact_dead_fraction must be"):
            config.load(None, history_compact_dead_fraction=bad)


def _store(path: Path) -> None:
    (path / "wal").mkdir(parents=True)
    (path / "wal" / "00000000000000000001.wal").write_bytes(b"x")


def test_shard_stores_without_a_map_are_refused_for_another_shard_count(tmp_path):
    # slotmap.json lost (a restore that left it out): a new map for another number of
    # shards would route runs to stores that do not hold them.
    for n in (0, 1):
        _store(tmp_path / f"shard-{n}")
    with pytest.raises(config.ConfigError, match=r"shards \[0, 1\].*shards = 2"):
        SlotMap.load_or_create(str(tmp_path), 3, False)
    assert SlotMap.read(str(tmp_path)) is None  # nothing written
    # "auto" takes the count the stores were made with; the same count is the same map.
    assert SlotMap.load_or_create(str(tmp_path), 8, True).shard_count == 2
    os.unlink(SlotMap.path(str(tmp_path)))
    assert SlotMap.load_or_create(str(tmp_path), 2, False).owners == SlotMap.even(2).owners


def test_an_embedded_stores_directory_is_not_made_a_cluster(tmp_path):
    db = inmem.open(tmp_path / "store")
    db.kv.put(db.begin_run(), "k", 1)
    db.close()
    with pytest.raises(config.ConfigError, match="embedded store"):
        SlotMap.load_or_create(str(tmp_path / "store"), 2, False)
    cluster = inmem.Cluster(data_dir=tmp_path / "store", shards=1, ready_timeout=20)
    try:
        with pytest.raises(inmem.InmemError, match="embedded store"):
            cluster.start()
    finally:
        cluster.stop()
    with inmem.open(tmp_path / "store") as db:  # the store is as it was
        assert len(db.runs.list()) == 1


def test_a_start_that_cannot_serve_leaves_the_shard_count_open(tmp_path):
    # Its endpoint is taken: the start fails, and the corrected one may choose the
    # number of shards again (the failed start's shards made stores, and left them empty).
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    data = tmp_path / "data"
    failed = inmem.Cluster(data_dir=data, shards=3, durability="strict", ready_timeout=20,
                           endpoint=f"tcp://127.0.0.1:{port}", insecure=True)
    try:
        with pytest.raises(inmem.InmemError, match="cannot listen"):
            failed.start()
    finally:
        failed.stop()
        taken.close()
    assert not (data / "slotmap.json").exists()
    with inmem.Cluster(data_dir=data, shards=2, durability="strict") as cluster:
        db = cluster.connect()
        assert db.kv.put(db.begin_run(), "k", 1) == 1
        db.close()
    assert SlotMap.read(str(data)).shard_count == 2
