"""The tolerant reader on byte-level fixtures: clean end, torn tail, corruption, skipping."""

from __future__ import annotations

import os
import tracemalloc

import pytest

from inmem.wal.reader import CleanEnd, Corruption, TornTail, WalReader, find_record
from walfix import flip_bit, payloads, read_back, rec, write_segment


def lsns_and_payloads(records):
    return [(lsn, payload) for lsn, _, payload in records]


def test_round_trip_one_segment(tmp_path):
    ps = payloads(5)
    write_segment(tmp_path, 0, b"".join(rec(p) for p in ps))
    records, reader = read_back(tmp_path)
    assert records == [(i, 1, p) for i, p in enumerate(ps)]
    assert reader.outcome == CleanEnd()
    assert reader.next_lsn == 5 and reader.first_lsn == 0
    assert all(type(p) is bytes for _, _, p in records)


def test_round_trip_across_segments_with_types(tmp_path):
    write_segment(tmp_path, 100, rec(b"a") + rec(b"b", rtype=9))
    write_segment(tmp_path, 102, rec(b""))
    write_segment(tmp_path, 103, rec(b"d" * 300))
    records, reader = read_back(tmp_path)
    assert records == [(100, 1, b"a"), (101, 9, b"b"), (102, 1, b""), (103, 1, b"d" * 300)]
    assert isinstance(reader.outcome, CleanEnd)
    assert reader.next_lsn == 104 and reader.first_lsn == 100


def test_start_lsn_skips_earlier_records(tmp_path):
    ps = payloads(10)
    write_segment(tmp_path, 0, b"".join(rec(p) for p in ps[:4]))
    write_segment(tmp_path, 4, b"".join(rec(p) for p in ps[4:]))
    records, reader = read_back(tmp_path, start_lsn=6)
    assert lsns_and_payloads(records) == [(i, ps[i]) for i in range(6, 10)]
    assert reader.next_lsn == 10 and isinstance(reader.outcome, CleanEnd)
    records, reader = read_back(tmp_path, start_lsn=50)
    assert records == [] and reader.next_lsn == 10


def test_a_segment_wholly_before_start_lsn_is_not_read(tmp_path):
    write_segment(tmp_path, 0, b"garbage that is not a record")
    write_segment(tmp_path, 3, rec(b"x") + rec(b"y"))
    records, reader = read_back(tmp_path, start_lsn=3)
    assert lsns_and_payloads(records) == [(3, b"x"), (4, b"y")]
    assert isinstance(reader.outcome, CleanEnd)
    # From the start, the same garbage is corruption (a segment that is not the newest).
    records, reader = read_back(tmp_path)
    assert records == [] and isinstance(reader.outcome, Corruption)


def test_missing_directory_and_empty_directory_are_clean(tmp_path):
    for directory in (tmp_path / "nope", tmp_path):
        records, reader = read_back(directory, start_lsn=7)
        assert records == [] and reader.outcome == CleanEnd()
        assert reader.next_lsn == 7 and reader.first_lsn is None


# -- torn tails --------------------------------------------------------------

def test_torn_tail_at_every_offset_of_the_last_record(tmp_path):
    ps = payloads(3, size=40)
    head = rec(ps[0]) + rec(ps[1])
    last = rec(ps[2])
    for cut in range(0, len(last) + 1):
        path = write_segment(tmp_path, 0, head + last[:cut])
        records, reader = read_back(tmp_path)
        if cut == len(last):
            assert lsns_and_payloads(records) == [(0, ps[0]), (1, ps[1]), (2, ps[2])]
            assert reader.outcome == CleanEnd()
        elif cut == 0:
            assert lsns_and_payloads(records) == [(0, ps[0]), (1, ps[1])]
            assert reader.outcome == CleanEnd()
        else:
            assert lsns_and_payloads(records) == [(0, ps[0]), (1, ps[1])], cut
            assert reader.outcome == TornTail(path, len(head), cut), cut
            assert reader.next_lsn == 2


def test_torn_tail_followed_by_zero_fill(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"ok") + rec(b"partial record")[:9] + bytes(4096))
    records, reader = read_back(tmp_path)
    assert lsns_and_payloads(records) == [(0, b"ok")]
    assert reader.outcome == TornTail(path, 12, 9 + 4096)


def test_flipped_bit_in_the_last_record_is_a_torn_tail(tmp_path):
    head = rec(b"first") + rec(b"second")
    last = rec(b"third record")
    for index in range(len(last)):
        path = write_segment(tmp_path, 0, head + flip_bit(last, index, bit=index % 8))
        records, reader = read_back(tmp_path)
        assert lsns_and_payloads(records) == [(0, b"first"), (1, b"second")], index
        assert reader.outcome == TornTail(path, len(head), len(last)), index


def test_torn_tail_in_a_segment_that_is_not_the_newest_is_corruption(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"a") + rec(b"b") + rec(b"torn")[:7])
    write_segment(tmp_path, 2, rec(b"c"))
    records, reader = read_back(tmp_path)
    assert lsns_and_payloads(records) == [(0, b"a"), (1, b"b")]
    outcome = reader.outcome
    assert isinstance(outcome, Corruption)
    assert (outcome.segment, outcome.offset) == (path, 22)
    assert "not the newest" in outcome.reason
    assert reader.next_lsn == 2


# -- corruption ----------------------------------------------------------------

FIELDS = {  # field name -> byte indexes inside a record with a 12-byte payload
    "length": range(0, 4),
    "type": range(4, 5),
    "version": range(5, 6),
    "payload": range(6, 18),
    "crc": range(18, 22),
}


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_flipped_bit_in_each_field_of_a_middle_record_is_corruption(tmp_path, field):
    first, middle, last = rec(b"first"), rec(b"middle-12345"), rec(b"last")
    assert len(middle) == 22
    for index in FIELDS[field]:
        for bit in (0, 7):
            path = write_segment(tmp_path, 5, first + flip_bit(middle, index, bit) + last)
            records, reader = read_back(tmp_path)
            assert lsns_and_payloads(records) == [(5, b"first")], (field, index, bit)
            outcome = reader.outcome
            assert isinstance(outcome, Corruption), (field, index, bit, outcome)
            assert outcome.segment == path and outcome.offset == len(first)
            assert f"valid record at offset {len(first) + len(middle)}" in outcome.reason
            assert reader.next_lsn == 6


def test_corruption_reasons_name_the_damage(tmp_path):
    good = rec(b"good")
    cases = {
        "crc32c mismatch": rec(b"payload", crc=123),
        "record type 0": rec(b"payload", rtype=0),
        "bad record format version 0": rec(b"payload", version=0),
        "runs past the end": rec(b"payload", length=10**6),
        "zero-filled bytes": bytes(64),
    }
    for needle, bad in cases.items():
        write_segment(tmp_path, 0, good + bad + good)
        records, reader = read_back(tmp_path)
        assert len(records) == 1
        assert isinstance(reader.outcome, Corruption)
        assert needle in reader.outcome.reason, (needle, reader.outcome.reason)


def test_length_beyond_the_file_allocates_nothing_big(tmp_path):
    huge = rec(b"tiny", length=0xFFFFFFF0)
    path = write_segment(tmp_path, 0, rec(b"a") + huge)
    tracemalloc.start()
    try:
        records, reader = read_back(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert lsns_and_payloads(records) == [(0, b"a")]
    assert reader.outcome == TornTail(path, 11, len(huge))
    # The same header in the middle, with a good record after it, is corruption.
    path = write_segment(tmp_path, 0, rec(b"a") + huge + rec(b"b"))
    records, reader = read_back(tmp_path)
    assert isinstance(reader.outcome, Corruption) and reader.outcome.offset == 11


def test_length_beyond_record_bytes_max_is_rejected(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"a") + rec(b"x" * 2000))
    records, reader = read_back(tmp_path, record_bytes_max=1000)
    assert lsns_and_payloads(records) == [(0, b"a")]
    assert reader.outcome == TornTail(path, 11, 2010)
    write_segment(tmp_path, 0, rec(b"a") + rec(b"x" * 2000) + rec(b"b"))
    records, reader = read_back(tmp_path, record_bytes_max=1000)
    assert isinstance(reader.outcome, Corruption)
    assert "exceeds the record limit of 1000" in reader.outcome.reason


def test_missing_middle_segment_is_corruption(tmp_path):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"b"))
    write_segment(tmp_path, 2, rec(b"c") + rec(b"d"))
    third = write_segment(tmp_path, 4, rec(b"e"))
    os.unlink(tmp_path / "00000000000000000002.wal")
    records, reader = read_back(tmp_path)
    assert lsns_and_payloads(records) == [(0, b"a"), (1, b"b")]
    assert reader.outcome.kind == "corruption"
    assert (reader.outcome.segment, reader.outcome.offset) == (third, 0)
    assert "missing" in reader.outcome.reason and "expected LSN 2" in reader.outcome.reason
    assert reader.next_lsn == 2


def test_overlapping_segments_are_corruption(tmp_path):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"b") + rec(b"c"))
    write_segment(tmp_path, 2, rec(b"c"))
    records, reader = read_back(tmp_path)
    assert len(records) == 3
    assert isinstance(reader.outcome, Corruption) and "overlapping" in reader.outcome.reason


def test_zero_filled_region_followed_by_records_is_corruption(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"a") + bytes(100) + rec(b"b"))
    records, reader = read_back(tmp_path)
    assert lsns_and_payloads(records) == [(0, b"a")]
    # a damaged stretch inside a segment: a budget would skip it
    assert reader.outcome == Corruption(path, 11, reader.outcome.reason, skippable=True)
    assert "zero-filled" in reader.outcome.reason


def test_unknown_format_version_stops_even_with_a_skip_budget(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"a") + rec(b"future", version=3))
    records, reader = read_back(tmp_path, max_corrupt_entries=5)
    assert lsns_and_payloads(records) == [(0, b"a")]
    assert isinstance(reader.outcome, Corruption) and reader.outcome.skippable is False
    assert (reader.outcome.segment, reader.outcome.offset) == (path, 11)
    assert "format version 3" in reader.outcome.reason
    assert reader.corrupt_skipped == 0


def test_records_of_the_previous_format_version_are_read_beside_current_ones(tmp_path):
    # A log written before version 2 goes on in version 2 after an upgrade.
    old = [rec(b"v1-%d" % i, version=1) for i in range(3)]
    write_segment(tmp_path, 0, b"".join(old) + rec(b"v2-a") + rec(b"v1-late", version=1))
    records, reader = read_back(tmp_path)
    assert [p for _lsn, _t, p in records] == [b"v1-0", b"v1-1", b"v1-2", b"v2-a", b"v1-late"]
    assert reader.outcome == CleanEnd()
    # Resynchronising past damage finds a record of either version.
    data = b"\x07" * 9 + old[1] + rec(b"v2-b")
    assert find_record(data, 0, len(data)) == 9
    data = b"\x07" * 9 + rec(b"v2-b") + old[1]
    assert find_record(data, 0, len(data)) == 9


# -- zero fill and empty segments ----------------------------------------------

def test_empty_segment_file(tmp_path):
    write_segment(tmp_path, 42, b"")
    records, reader = read_back(tmp_path)
    assert records == [] and reader.outcome == CleanEnd()
    assert reader.next_lsn == 42 and reader.first_lsn == 42
    write_segment(tmp_path, 40, rec(b"a") + rec(b"b"))
    records, reader = read_back(tmp_path)
    assert lsns_and_payloads(records) == [(40, b"a"), (41, b"b")]
    assert reader.outcome == CleanEnd() and reader.next_lsn == 42


def test_segment_of_zeros_is_a_clean_end(tmp_path):
    write_segment(tmp_path, 0, bytes(8192))
    records, reader = read_back(tmp_path)
    assert records == [] and reader.outcome == CleanEnd() and reader.next_lsn == 0
    for tail in (1, 5, 6, 9, 10, 4096):
        write_segment(tmp_path, 0, rec(b"a") + rec(b"b") + bytes(tail))
        records, reader = read_back(tmp_path)
        assert lsns_and_payloads(records) == [(0, b"a"), (1, b"b")], tail
        assert reader.outcome == CleanEnd() and reader.next_lsn == 2


def test_zero_tail_in_an_older_segment_is_the_end_of_that_segment(tmp_path):
    # A preallocated segment that was rolled before it filled up.
    write_segment(tmp_path, 0, rec(b"a") + bytes(1000))
    write_segment(tmp_path, 1, rec(b"b"))
    records, reader = read_back(tmp_path)
    assert lsns_and_payloads(records) == [(0, b"a"), (1, b"b")]
    assert reader.outcome == CleanEnd()


# -- skipping corrupt records ------------------------------------------------

def test_skip_a_corrupt_middle_record_within_budget(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"a") + rec(b"bad", crc=1) + rec(b"c") + rec(b"d"))
    records, reader = read_back(tmp_path, max_corrupt_entries=1)
    # LSNs count records actually read: "c" takes the LSN the lost record had.
    assert lsns_and_payloads(records) == [(0, b"a"), (1, b"c"), (2, b"d")]
    assert reader.outcome == CleanEnd()
    assert reader.corrupt_skipped == 1
    (region,) = reader.skipped
    assert (region.segment, region.offset, region.length) == (path, 11, 13)
    assert "crc32c mismatch" in region.reason


def test_skip_budget_runs_out(tmp_path):
    data = rec(b"a") + rec(b"x", crc=1) + rec(b"b") + rec(b"y", crc=2) + rec(b"c")
    path = write_segment(tmp_path, 0, data)
    records, reader = read_back(tmp_path, max_corrupt_entries=1)
    assert [p for _, _, p in records] == [b"a", b"b"]
    assert reader.corrupt_skipped == 1
    assert isinstance(reader.outcome, Corruption)
    assert (reader.outcome.segment, reader.outcome.offset) == (path, 33)
    records, reader = read_back(tmp_path, max_corrupt_entries=2)
    assert [p for _, _, p in records] == [b"a", b"b", b"c"]
    assert reader.corrupt_skipped == 2 and reader.outcome == CleanEnd()


def test_skip_resyncs_byte_by_byte_over_garbage(tmp_path):
    garbage = bytes(range(1, 200)) * 3
    write_segment(tmp_path, 0, rec(b"a") + garbage + rec(b"b"))
    records, reader = read_back(tmp_path, max_corrupt_entries=1)
    assert [p for _, _, p in records] == [b"a", b"b"]
    assert reader.skipped[0].length == len(garbage)


def test_skipped_tail_of_an_older_segment_reanchors_on_the_next_name(tmp_path):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"b") + rec(b"lost")[:5])
    write_segment(tmp_path, 3, rec(b"d"))
    records, reader = read_back(tmp_path, max_corrupt_entries=1)
    assert lsns_and_payloads(records) == [(0, b"a"), (1, b"b"), (3, b"d")]
    assert reader.corrupt_skipped == 1 and reader.outcome == CleanEnd()
    assert reader.next_lsn == 4


def test_a_torn_tail_is_not_skipped_or_counted(tmp_path):
    path = write_segment(tmp_path, 0, rec(b"a") + rec(b"torn")[:6])
    records, reader = read_back(tmp_path, max_corrupt_entries=3)
    assert reader.outcome == TornTail(path, 11, 6)
    assert reader.corrupt_skipped == 0


def test_a_missing_segment_is_never_skipped(tmp_path):
    write_segment(tmp_path, 0, rec(b"a"))
    write_segment(tmp_path, 5, rec(b"f"))
    records, reader = read_back(tmp_path, max_corrupt_entries=10)
    assert [p for _, _, p in records] == [b"a"]
    assert isinstance(reader.outcome, Corruption) and "missing" in reader.outcome.reason
    assert reader.outcome.skippable is False  # no budget skips it, and the outcome says so


def test_find_record_locates_the_next_valid_record():
    data = b"\x01" * 30 + rec(b"found") + rec(b"later")
    assert find_record(data, 0, len(data)) == 30
    assert find_record(data, 31, len(data)) == 30 + 15
    assert find_record(data, 0, 40) == -1
    assert find_record(bytes(100), 0, 100) == -1


def test_reader_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        WalReader(tmp_path, start_lsn=-1)
    with pytest.raises(ValueError):
        WalReader(tmp_path, max_corrupt_entries=-1)


def test_iterating_twice_restarts(tmp_path):
    write_segment(tmp_path, 0, rec(b"a") + rec(b"b"))
    reader = WalReader(tmp_path)
    assert len(list(reader)) == 2
    assert len(reader.read_all()) == 2
    assert reader.outcome == CleanEnd()


# -- blocks ------------------------------------------------------------------------


def _flat(reader, max_records):
    out, sizes = [], []
    for first, rtypes, ps in reader.blocks(max_records):
        assert len(rtypes) == len(ps) > 0
        sizes.append(len(ps))
        out += [(first + i, t, p) for i, (t, p) in enumerate(zip(rtypes, ps))]
    return out, sizes


@pytest.mark.parametrize("max_records", [1, 3, 4096])
@pytest.mark.parametrize("damage", ["none", "torn", "skipped", "corrupt"])
def test_blocks_hand_out_the_records_and_outcome_iteration_does(tmp_path, max_records, damage):
    ps = payloads(9)
    first = b"".join(rec(p) for p in ps[:5])
    if damage == "skipped" or damage == "corrupt":
        first += rec(b"bad", crc=1) + rec(b"after")
    write_segment(tmp_path, 0, first)
    tail = b"".join(rec(p) for p in ps[5:])
    if damage == "torn":
        tail += rec(b"torn")[:7]
    write_segment(tmp_path, 6 if damage in ("skipped", "corrupt") else 5, tail)
    budget = 1 if damage == "skipped" else 0
    records, by_records = read_back(tmp_path, max_corrupt_entries=budget, start_lsn=2)
    blocked = WalReader(tmp_path, max_corrupt_entries=budget, start_lsn=2)
    flat, sizes = _flat(blocked, max_records)
    assert flat == records
    assert max(sizes) <= max_records
    for attr in ("outcome", "next_lsn", "first_lsn", "corrupt_skipped", "skipped", "segment",
                 "end_offset"):
        assert getattr(blocked, attr) == getattr(by_records, attr), attr


def test_a_block_spans_about_block_bytes_of_a_segment(tmp_path, monkeypatch):
    from inmem.wal import reader as reader_module
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", 100)
    ps = payloads(20, size=30)
    write_segment(tmp_path, 0, b"".join(rec(p) for p in ps))
    flat, sizes = _flat(WalReader(tmp_path), 4096)
    assert [p for _, _, p in flat] == ps
    assert sizes == [3] * 6 + [2]  # 40 bytes a record: a block ends once it passed 100


@pytest.mark.parametrize("max_records", [1, 3, 4096])
@pytest.mark.parametrize("damage", ["none", "torn", "skipped"])
def test_placed_blocks_say_where_each_record_sits(tmp_path, max_records, damage):
    # Recovery points the runs' histories at these places instead of keeping
    # the records: each must be the header of the very record handed out.
    ps = payloads(9)
    first = b"".join(rec(p) for p in ps[:5])
    if damage == "skipped":
        first += rec(b"bad", crc=1) + rec(b"after")
    write_segment(tmp_path, 0, first)
    tail = b"".join(rec(p) for p in ps[5:])
    if damage == "torn":
        tail += rec(b"torn")[:7]
    second = 6 if damage == "skipped" else 5
    write_segment(tmp_path, second, tail)
    reader = WalReader(tmp_path, max_corrupt_entries=1 if damage == "skipped" else 0, start_lsn=2)
    plain = [b for b in WalReader(tmp_path, max_corrupt_entries=reader.max_corrupt_entries,
                                  start_lsn=2).blocks(max_records)]
    placed = list(reader.placed_blocks(max_records))
    assert [(f, t, p) for f, t, p, _s, _o in placed] == plain
    files = {0: (tmp_path / "00000000000000000000.wal").read_bytes(),
             second: (tmp_path / f"{second:020d}.wal").read_bytes()}
    seen = []
    for _first, rtypes, ps_, segment, offsets in placed:
        assert len(offsets) == len(ps_)
        for rtype, payload, off in zip(rtypes, ps_, offsets):
            assert files[segment][off:off + len(rec(payload, rtype=rtype))] == rec(payload, rtype=rtype)
            seen.append(payload)
    expected = ps[2:5] + ([b"after"] if damage == "skipped" else []) + ps[5:]
    assert seen == expected
