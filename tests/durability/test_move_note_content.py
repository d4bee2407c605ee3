"""History move notes whose checksum holds but whose contents cannot be what a compaction wrote.

A note says where a compaction moved a history file's records; a reopen from
a snapshot taken before the compaction follows it. A note naming its own
source as its target (or two notes naming each other) sent that walk round
for good, a target with a directory in its name was read outside history/,
and offsets out of order pointed places at other records. Each must be a
CorruptionError naming the note, raised while the store opens.
"""

from __future__ import annotations

import itertools
import os
import struct
from array import array

import msgpack
import pytest

import inmem
from inmem.checksum import crc32c

MAGIC = b"IMHMOVE1"  # shard.history_files: a note's first bytes
OPTIONS = {"snapshot_on_close": False, "snapshot_interval_s": None, "segment_bytes_max": 600,
           "history_compact_dead_fraction": None}


def pinned_clock():
    ticks = itertools.count(1_700_000_000_000_000, 7)
    return lambda: next(ticks)


@pytest.fixture
def moved(tmp_path):
    """A store reopened from a snapshot older than a compaction: its notes are followed."""
    path = tmp_path / "db"
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        for run in ("a", "b"):
            db.begin_run(run_id=run)
        for i in range(12):
            db.kv.put("a", f"k{i % 3}", {"i": i})
            db.kv.put("b", f"k{i % 3}", {"i": i, "pad": "y" * 30})
        db.snapshot()
        db.snapshot()
        db.runs.delete("b")
        db.snapshot()  # its index names the files the compaction moves records out of
        assert db.compact_history()[0]["files"] >= 1
    hdir = path / "history"
    notes = sorted(n for n in os.listdir(hdir) if n.endswith(".moved"))
    assert notes
    return path, hdir / notes[0]


def read_note(file) -> list:
    data = file.read_bytes()
    source, target, old, new = msgpack.unpackb(data[len(MAGIC):-4], raw=False)
    return [source, target, list(array("q", old)), list(array("q", new))]


def write_note(file, source, target, old, new) -> None:
    body = MAGIC + msgpack.packb([source, target, array("q", old).tobytes(),
                                  array("q", new).tobytes()], use_bin_type=True)
    file.write_bytes(body + struct.pack("<I", crc32c(body)))


def refused(path, note) -> inmem.CorruptionError:
    with pytest.raises(inmem.CorruptionError) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    assert str(note) in str(caught.value), caught.value
    return caught.value


def test_the_fixture_reopens_through_its_notes(moved):
    path, _note = moved
    with inmem.open(path, "strict", **OPTIONS) as db:
        assert db.replay_run("a").kv["k2"] == {"i": 11}


@pytest.mark.timeout(60)
def test_a_note_whose_target_is_its_source_is_refused_not_followed_for_good(moved):
    path, note = moved
    source, _target, old, _new = read_note(note)
    write_note(note, source, source, old, old)
    refused(path, note)


@pytest.mark.timeout(60)
def test_two_notes_naming_each_other_are_refused_not_followed_for_good(moved):
    path, note = moved
    source, target, old, new = read_note(note)
    write_note(note.parent / (target + ".moved"), target, source, new, old)
    with pytest.raises(inmem.CorruptionError) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    assert ".moved" in str(caught.value)


@pytest.mark.parametrize("target", ["../wal/00000000000000000000.wal", "", ".hidden.hist",
                                    "sub/x.hist", "notes.txt"])
def test_a_target_that_is_not_a_history_file_name_is_refused(moved, target):
    path, note = moved
    source, _target, old, new = read_note(note)
    write_note(note, source, target, old, new)
    refused(path, note)


@pytest.mark.parametrize("change", ["new rotated", "old reversed", "negative", "too far"])
def test_offsets_a_compaction_cannot_have_written_are_refused(moved, change):
    path, note = moved
    source, target, old, new = read_note(note)
    if change == "new rotated":
        new = new[1:] + new[:1]
    elif change == "old reversed":
        old = old[::-1]
    elif change == "negative":
        new = [-1] * len(new)
    else:
        new = [1 << 41] * len(new)
    write_note(note, source, target, old, new)
    refused(path, note)
