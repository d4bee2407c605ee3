"""Packed entries: every field an effect gives a keyed entry comes back out of its bytes."""

from __future__ import annotations

import sys

from hypothesis import given, strategies as st

from inmem.shard import effects as fx
from inmem.shard.entries import (DELETED, PLAIN_AT, entry_expires, entry_of, entry_ts,
                                 entry_value, entry_version, live_value, pack_entry, unpack_entry)

values = st.one_of(st.none(), st.binary(max_size=300))
versions = st.integers(min_value=0, max_value=2**64 - 1)
times = st.integers(min_value=-(2**63), max_value=2**63 - 1)
expiries = st.one_of(st.none(), times)


@given(values, versions, times, expiries)
def test_every_field_round_trips(value, version, ts, expires):
    e = pack_entry(value, version, ts, expires)
    assert type(e) is bytes
    assert unpack_entry(e) == (value, version, ts, expires)
    assert (entry_value(e), entry_version(e), entry_ts(e), entry_expires(e)) == \
        (value, version, ts, expires)
    assert bool(e[0] & DELETED) == (value is None)


@given(values, versions, times, expiries, times)
def test_live_value_judges_deletes_and_expiry(value, version, ts, expires, now):
    e = pack_entry(value, version, ts, expires)
    live = value is not None and (expires is None or expires > now)
    assert live_value(e, now) == (value if live else None)


def test_the_common_entry_is_the_value_behind_a_nine_byte_header():
    value = b"\xc4\x64" + bytes(100)
    e = pack_entry(value, 3, 1_700_000_000_000_000)
    assert len(e) == 9 + len(value) and PLAIN_AT[e[0]] == 9 and e[9:] == value
    # The value keeps the allocation size class a bare bytes of it would have.
    assert sys.getsizeof(e) <= sys.getsizeof(value) + 16


def test_entry_of_takes_an_effect():
    kv = (fx.KV_PUT, "k", b"\x01", 4, 10, 99)
    st_ = (fx.ST_DEL, "c", None, 2, 11)
    assert unpack_entry(entry_of(kv)) == (b"\x01", 4, 10, 99)
    assert unpack_entry(entry_of(st_)) == (None, 2, 11, None)
