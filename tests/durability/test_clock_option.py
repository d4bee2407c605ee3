"""The `clock` option of inmem.open: what it returns is what every timestamp becomes,
so a slip there (float microseconds, the usual time.time() * 1e6) must not reach the
store, where it once failed writes half way and left a snapshot that could not load."""

from __future__ import annotations

import time

import pytest

import inmem


def test_a_clock_returning_float_microseconds_is_taken_as_ints(tmp_path):
    path = tmp_path / "db"
    db = inmem.open(path, "strict", clock=lambda: time.time() * 1e6)
    run = db.begin_run(run_id="r")
    db.kv.put(run, "a", 1)
    assert db.state.set(run, "s", 1) == 1
    db.json.put(run, "d", {"x": 1})
    event = db.events.append(run, "e", 1)
    assert type(event.timestamp) is int
    assert type(db.runs.get(run).created_at) is int
    db.close()
    with inmem.open(path) as again:  # the closing snapshot loads
        assert again.kv.get(run, "a") == 1
        assert again.state.read(run, "s").value == 1
        assert again.json.get(run, "d") == {"x": 1}
        assert again.events.verify_chain(run).valid


@pytest.mark.parametrize("bad", [lambda: "now", lambda: None, lambda: -5, lambda: float("nan"),
                                 lambda: True, lambda: 2.0 ** 80])
def test_a_clock_returning_no_time_is_refused_at_open(tmp_path, bad):
    with pytest.raises(inmem.InvalidOption, match="clock"):
        inmem.open(tmp_path / "db", clock=bad)
    with pytest.raises(inmem.InvalidOption, match="clock"):
        inmem.open(clock=bad)
