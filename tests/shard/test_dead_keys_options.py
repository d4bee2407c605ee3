"""`dead_key_retention_s` is taken wherever the engine's options are: inmem.open, a
cluster's config file ([durability]), and the shard that applies it."""

from __future__ import annotations

import pytest

import inmem
from inmem.coordinator import config
from inmem.coordinator.config import ConfigError


def engine_of(db):
    return db._backend.engine


def test_the_default_is_60_seconds(tmp_path):
    with inmem.open(tmp_path / "s", "buffered") as db:
        assert engine_of(db).dead.retention_us == 60_000_000
    with inmem.open() as db:
        assert engine_of(db).dead.retention_us == 60_000_000
    assert config.load(None)["options"]["dead_key_retention_s"] == 60


@pytest.mark.parametrize("durability", ["buffered", "strict"])
def test_a_durable_store_takes_it(tmp_path, durability):
    with inmem.open(tmp_path / "s", durability, dead_key_retention_s=2.5) as db:
        assert engine_of(db).dead.retention_us == 2_500_000


def test_an_in_memory_store_takes_it():
    with inmem.open(None, dead_key_retention_s=0) as db:
        assert engine_of(db).dead.retention_us == 0


@pytest.mark.parametrize("bad", [-1, "60", True, float("nan"), None])
def test_a_retention_that_is_not_seconds_is_refused(tmp_path, bad):
    with pytest.raises(inmem.InvalidOption, match="dead_key_retention_s"):
        inmem.open(None, dead_key_retention_s=bad)
    if bad is not None:  # an override of None leaves the config's value
        with pytest.raises(ConfigError, match="dead_key_retention_s"):
            config.load(None, data_dir=str(tmp_path), dead_key_retention_s=bad)


def test_a_config_file_sets_it(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[durability]\ndead_key_retention_s = 0.5\n")
    assert config.load(path, data_dir=str(tmp_path))["options"]["dead_key_retention_s"] == 0.5
