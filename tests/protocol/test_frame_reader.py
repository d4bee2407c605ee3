"""FrameReader: frames of any size, cut into reads anywhere, come out whole and in order;
a large frame is kept as its reads (never re-joined per read), and nothing is held that
did not arrive."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from inmem.protocol import HEADER_BYTES
from inmem.stream import READ_BYTES, FrameReader, FrameTooLarge, frame

LIMIT = 8 * READ_BYTES


def _frames(sizes):
    return [(bytes([i % 256]) * HEADER_BYTES, bytes([(i * 7) % 256]) * size)
            for i, size in enumerate(sizes)]


def _feed(reader, data: bytes, cuts: list, peer=None) -> list:
    out, at = [], 0
    for cut in sorted(set(cuts)) + [len(data)]:
        if cut > at:
            reader.feed(data[at:cut], out, peer)
            at = cut
    return out


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.one_of(st.integers(0, 300), st.integers(READ_BYTES - 40, 3 * READ_BYTES)),
                      min_size=1, max_size=6),
       cuts=st.lists(st.integers(0, 16 * READ_BYTES), max_size=40))
def test_frames_cut_anywhere_come_out_whole_and_in_order(sizes, cuts):
    frames = _frames(sizes)
    data = b"".join(frame(h, b) for h, b in frames)
    reader = FrameReader(LIMIT)
    got = _feed(reader, data, [c for c in cuts if c < len(data)], peer="p")
    assert got == [["p", h, b] for h, b in frames]
    assert reader.buf == b"" and reader.parts is None  # nothing left over


def test_a_large_frame_is_kept_as_its_reads_and_joined_once():
    (head, body), = _frames([5 * READ_BYTES])
    data = frame(head, body) + frame(b"h" * HEADER_BYTES, b"next")
    reader, out = FrameReader(LIMIT), []
    reader.feed(data[:1000], out)
    assert reader.parts == [data[:1000]] and out == []
    step = READ_BYTES
    at = 1000
    while at < len(data):
        reader.feed(data[at:at + step], out)
        at += step
        if reader.parts is not None:
            # What is held is what arrived, as the reads that brought it.
            assert sum(map(len, reader.parts)) == reader.have == min(at, reader.need)
    assert out == [[head, body], [b"h" * HEADER_BYTES, b"next"]]


def test_an_announced_frame_that_never_comes_holds_nothing_more():
    reader, out = FrameReader(LIMIT), []
    start = frame(b"h" * HEADER_BYTES, b"x" * (LIMIT - 100))[:64]
    reader.feed(start, out)
    assert out == [] and sum(map(len, reader.parts)) == 64


def test_a_frame_over_the_limit_is_refused():
    with pytest.raises(FrameTooLarge):
        FrameReader(1000).feed(frame(b"h" * HEADER_BYTES, b"x" * 1001)[:40], [])
