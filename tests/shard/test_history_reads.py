"""A run's history read back in stretches: what is held, what went to an extent, and both."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inmem.shard import effects as fx
from inmem.shard.entries import entry_of, plain_kv_entries
from inmem.shard.history import History


def _history(earlier: int, held: int):
    first = (fx.RUN_CREATE, "r", None, None, (), None, 0)
    h = History("r", first)
    effs = [first]
    for i in range(earlier + held):
        if i == earlier:
            h.pin()  # everything so far becomes an in-memory extent below `base`
        eff = (fx.EV_APPEND, i, "t", b"\xc0", i, b"", b"")
        h.append(eff)
        effs.append(eff)
    if not held:
        h.pin()
    return h, effs


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 40), st.integers(0, 40), st.data())
def test_raw_reads_any_stretch_below_above_or_across_base(earlier, held, data):
    h, effs = _history(earlier, held)
    n = len(effs)
    start = data.draw(st.integers(0, n))
    stop = data.draw(st.integers(start, n))
    assert h.raw(start, stop) == effs[start:stop]
    assert h.effects(start, stop) == effs[start:stop]


@given(st.lists(st.tuples(st.integers(0, 300), st.integers(-5, 1 << 57),
                          st.one_of(st.none(), st.integers(1, 1 << 40)),
                          st.one_of(st.none(), st.binary(min_size=1, max_size=5))),
                max_size=20))
def test_plain_kv_entries_are_entry_of_or_refused(rows):
    effs = [(fx.KV_PUT if value is not None else fx.KV_DEL, f"k{i}", value, version, ts, exp)
            for i, (version, ts, exp, value) in enumerate(rows)]
    got = plain_kv_entries(effs)
    if got is not None:
        assert got == [entry_of(e) for e in effs]
    else:
        assert any(v is None or x is not None or not 0 <= ts < 1 << 56 or not 0 <= ver < 256
                   for _c, _k, v, ver, ts, x in effs)
