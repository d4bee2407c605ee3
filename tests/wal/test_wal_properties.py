"""Property tests: whatever was written and however it was cut or damaged,
the reader returns exactly a prefix of the records, and never raises."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given
from hypothesis import strategies as st

from inmem.wal.reader import CleanEnd, Corruption, TornTail
from inmem.wal.record import encode
from inmem.wal.writer import WalWriter
from walfix import read_back, write_segment

payload_lists = st.lists(st.binary(max_size=300), max_size=20)


@given(payload_lists, st.data())
def test_truncation_yields_a_prefix(ps, data):
    encoded = [encode(p) for p in ps]
    blob = b"".join(encoded)
    cut = data.draw(st.integers(0, len(blob)), label="cut")
    with tempfile.TemporaryDirectory() as d:
        path = write_segment(d, 0, blob[:cut])
        records, reader = read_back(d)
    complete, boundary = 0, 0
    while complete < len(encoded) and boundary + len(encoded[complete]) <= cut:
        boundary += len(encoded[complete])
        complete += 1
    assert records == [(i, 1, p) for i, p in enumerate(ps[:complete])]
    assert reader.next_lsn == complete
    if cut == boundary:
        assert reader.outcome == CleanEnd()
    elif isinstance(reader.outcome, CleanEnd):
        # Only a cut that leaves nothing but zero bytes may read as an end.
        assert blob[boundary:cut].count(0) == cut - boundary
    else:
        assert reader.outcome == TornTail(path, boundary, cut - boundary)


@given(st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=12), st.data())
def test_one_flipped_bit_yields_the_records_before_it(ps, data):
    encoded = [encode(p) for p in ps]
    blob = bytearray(b"".join(encoded))
    position = data.draw(st.integers(0, len(blob) - 1), label="position")
    blob[position] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    damaged, start = 0, 0
    while start + len(encoded[damaged]) <= position:
        start += len(encoded[damaged])
        damaged += 1
    with tempfile.TemporaryDirectory() as d:
        path = write_segment(d, 0, bytes(blob))
        records, reader = read_back(d)
    assert [p for _, _, p in records] == ps[:damaged]
    if damaged == len(ps) - 1:
        assert reader.outcome == TornTail(path, start, len(encoded[damaged]))
    else:
        assert isinstance(reader.outcome, Corruption)
        assert (reader.outcome.segment, reader.outcome.offset) == (path, start)


@given(st.lists(st.binary(max_size=120), min_size=1, max_size=30),
       st.integers(40, 400), st.data())
def test_writer_segments_cut_in_the_newest_yield_a_prefix(ps, segment_bytes_max, data):
    with tempfile.TemporaryDirectory() as d:
        with WalWriter(d, "buffered", segment_bytes_max=segment_bytes_max,
                       flush_interval_ms=60_000) as w:
            for p in ps:
                w.append_nowait(p)
            w.sync()
        names = sorted(os.listdir(d))
        newest = os.path.join(d, names[-1])
        size = os.path.getsize(newest)
        cut = data.draw(st.integers(0, size), label="cut")
        os.truncate(newest, cut)
        records, reader = read_back(d)
    got = [p for _, _, p in records]
    assert got == ps[:len(got)]
    assert [lsn for lsn, _, _ in records] == list(range(len(got)))
    assert isinstance(reader.outcome, (CleanEnd, TornTail))
    if cut == size:
        assert got == ps and reader.outcome == CleanEnd()
