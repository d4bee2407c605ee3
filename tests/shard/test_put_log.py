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
