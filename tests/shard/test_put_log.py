"""What a plain kv.put queues for the WAL, and what it refuses to.

`kv_put` packs its one effect itself (the hot path: no call of `Engine._log`),
so these hold it to `_log`'s contract: the group is the effect in its entry
form, packed as msgpack packs it, counted in `log_writes`; a put whose entry
would not fit one WAL record is refused with `_log`'s ValueTooLarge and leaves
the store, its history and its log as they were.
"""

from __future__ import annotations

import msgpack
import pytest

from inmem.errors import ValueTooLarge
from inmem.shard.effects import GROUP_BYTES_MAX, KV_PUT
from inmem.shard.engine import Engine

NOW = 1_700_000_000_000_000


def _engine(**kw) -> Engine:
    e = Engine(clock=lambda: NOW, log=True, **kw)
    e.execute("run.begin", [None, "r", None, [], None])
    e.take_log()
    return e


def test_a_put_logs_its_entry_form_packed_as_one_group():
    e = _engine()
    assert e.kv_put("r", "k", b"v" * 100) == 1
    assert e.kv_put("r", "k", "again") == 2
    assert e.log_writes == 2
    groups = e.take_log()
    r = e.runs["r"]
    entry = r.kv["k"]
    first, second = groups
    assert second == ("r", 1, msgpack.packb((KV_PUT, "k", entry), use_bin_type=True))
    assert first[:2] == ("r", 1)
    assert msgpack.unpackb(first[2])[:2] == [KV_PUT, "k"]
    # The history holds the very item logged, sharing the table's entry.
    assert r.journal.items[-1] == (KV_PUT, "k", entry)
    assert r.journal.items[-1][2] is entry
    assert e.log_writes == 0


def test_a_put_too_large_for_one_record_is_refused_and_changes_nothing():
    e = _engine(max_value_bytes=GROUP_BYTES_MAX + 1024)
    e.kv_put("r", "k", "small")
    before = (dict(e.runs["r"].kv), list(e.runs["r"].journal.items), list(e.log), e.log_writes)
    with pytest.raises(ValueTooLarge, match="split it"):
        e.kv_put("r", "k", bytes(GROUP_BYTES_MAX))
    r = e.runs["r"]
    assert (dict(r.kv), list(r.journal.items), list(e.log), e.log_writes) == before
    assert e.kv_put("r", "k", "after") == 2  # the store still takes writes


def test_bytes_values_around_the_value_limit_are_taken_or_refused_as_encoded():
    """kv.put and a series pack bytes without the general check: the limit is still the
    encoded size's, as `_encode` has it (msgpack adds a 2 to 5 byte header)."""
    limit = 300
    for size in range(limit - 12, limit + 2):
        value = bytes(size)
        fits = len(msgpack.packb(value, use_bin_type=True)) <= limit
        one, series = _engine(max_value_bytes=limit), _engine(max_value_bytes=limit)
        if fits:
            assert one.kv_put("r", "k", value) == 1
            assert series.kv_put_series("r", [["r", "k", value], ["r", "j", b"x"]]) == [1, 1]
            assert one.runs["r"].kv["k"] == series.runs["r"].kv["k"]
        else:
            with pytest.raises(ValueTooLarge) as refused:
                one.kv_put("r", "k", value)
            with pytest.raises(ValueTooLarge) as by_encode:
                one._encode(value)
            assert str(refused.value) == str(by_encode.value)
            answers = series.kv_put_series("r", [["r", "k", value], ["r", "j", b"x"]])
            assert type(answers[0]) is ValueTooLarge and str(answers[0]) == str(by_encode.value)
            assert answers[1] == 1
            assert "k" not in one.runs["r"].kv and "k" not in series.runs["r"].kv
