"""What a plain kv.put and a put_many queue for the WAL, and what they refuse.

`kv_put` packs its one effect itself (the hot path: no call of `Engine._log`),
so these hold it to `_log`'s contract: the group is the effect in its entry
form, packed as msgpack packs it, counted in `log_writes`; a put whose entry
would not fit one WAL record is refused with `_log`'s ValueTooLarge and leaves
the store, its history and its log as they were.
"""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.errors import InvalidKey, InvalidValue, ValueTooLarge
from inmem.shard.effects import GROUP_BYTES_MAX, KV_PUT
from inmem.shard.engine import Engine
from inmem.shard.entries import entry_version, pack_entry

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
    """kv.put, a series and put_many pack bytes without the general check: the limit is
    still the encoded size's, as `_encode` has it (msgpack adds a 2 to 5 byte header)."""
    limit = 300
    for size in range(limit - 12, limit + 2):
        value = bytes(size)
        fits = len(msgpack.packb(value, use_bin_type=True)) <= limit
        one, series = _engine(max_value_bytes=limit), _engine(max_value_bytes=limit)
        many = _engine(max_value_bytes=limit)
        if fits:
            assert one.kv_put("r", "k", value) == 1
            assert series.kv_put_series("r", [["r", "k", value], ["r", "j", b"x"]]) == [1, 1]
            assert many.kv_put_many("r", [["j", b"x"], ["k", value]]) == [1, 1]
            assert one.runs["r"].kv["k"] == series.runs["r"].kv["k"] == many.runs["r"].kv["k"]
        else:
            with pytest.raises(ValueTooLarge) as in_many:
                many.kv_put_many("r", [["j", b"x"], ["k", value]])
            assert str(in_many.value) == str(pytest.raises(ValueTooLarge, one._encode, value).value)
            assert many.runs["r"].kv == {}
            with pytest.raises(ValueTooLarge) as refused:
                one.kv_put("r", "k", value)
            with pytest.raises(ValueTooLarge) as by_encode:
                one._encode(value)
            assert str(refused.value) == str(by_encode.value)
            answers = series.kv_put_series("r", [["r", "k", value], ["r", "j", b"x"]])
            assert type(answers[0]) is ValueTooLarge and str(answers[0]) == str(by_encode.value)
            assert answers[1] == 1
            assert "k" not in one.runs["r"].kv and "k" not in series.runs["r"].kv


_keys = st.sampled_from(["a", "b", "c", "é", "", "x" * 300])
_values = st.one_of(st.none(), st.binary(max_size=80), st.text(max_size=70), st.integers(),
                    st.just(["msgpack", b"\x01\x02"]), st.just({"k": [1, 2]}), st.just({1, 2}))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_keys, _values, st.booleans()), max_size=8), st.integers(0, 300))
def test_put_many_stores_and_refuses_as_puts_one_by_one(pairs, written):
    """Versions, entries and refusals of a put_many are those of its pairs put one at a
    time (one clock reading for both), whatever the values: the same object twice in a
    row (encoded once), None, bytes at the limit, a key written hundreds of times."""
    many, one = _engine(max_value_bytes=64), _engine(max_value_bytes=64)
    for e in (many, one):
        for _ in range(written):  # a key past a one-byte version (a thread's head)
            e.kv_put("r", "a", 0)
    items, previous = [], None
    for key, value, again in pairs:
        # `again`: the previous pair's very value object, as a record and its head share it
        items.append([key, previous if again and items else value])
        previous = items[-1][1]
    refused = None
    expected = []
    for key, value in items:
        try:
            expected.append(one.kv_put("r", key, value))
        except (InvalidKey, InvalidValue, ValueTooLarge) as exc:
            refused = exc
            break
    before = dict(many.runs["r"].kv)
    if refused is not None:
        with pytest.raises(type(refused)) as got:
            many.kv_put_many("r", items)
        assert str(got.value) == str(refused)
        assert dict(many.runs["r"].kv) == before
    else:
        assert many.kv_put_many("r", items) == expected
        assert dict(many.runs["r"].kv) == dict(one.runs["r"].kv)


@pytest.mark.parametrize("written", [252, 65_532])
def test_versions_crossing_a_width_are_read_and_written_alike_by_every_put_path(written):
    """A key written hundreds (or tens of thousands) of times has a two-byte (four-byte)
    version: kv.put, a series and put_many read it in place and write the entry the
    general packing writes, across each width's edge."""
    engines = [_engine() for _ in range(3)]
    for e in engines:
        e.runs["r"].kv["a"] = pack_entry(b"\xc0", written, NOW)  # as after `written` puts
    one, series, many = engines
    assert [one.kv_put("r", "a", b"x") for _ in range(8)] == list(range(written + 1,
                                                                        written + 9))
    assert series.kv_put_series("r", [["r", "a", b"x"]] * 8) == list(range(written + 1,
                                                                           written + 9))
    assert many.kv_put_many("r", [["a", b"x"]] * 8) == list(range(written + 1, written + 9))
    entry = one.runs["r"].kv["a"]
    assert entry == pack_entry(msgpack.packb(b"x"), written + 8, NOW)
    assert series.runs["r"].kv["a"] == many.runs["r"].kv["a"] == entry
    assert entry_version(entry) == written + 8
