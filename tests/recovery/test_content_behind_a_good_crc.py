"""Files whose checksums verify but whose contents are not what this build wrote.

A crash cannot produce them and damage fails the crc32c, so they come from a
different or faulty release, or from a file that does not belong to the
store. Opening such a store must refuse with a CorruptionError that names
the file and the offset of what it could not use, never leak a TypeError,
KeyError or msgpack error, and never open a store that answers wrong.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import inmem
from inmem.recovery import snapshot_format as fmt
from inmem.recovery.errors import (RecordContentError, SnapshotContentError,
                                   SnapshotUnsupported)
from inmem.wal.record import encode
from inmem.wal.segment import list_segments

OPTIONS = {"snapshot_on_close": False, "snapshot_interval_s": None}


def pinned_clock():
    ticks = itertools.count(1_700_000_000_000_000, 7)
    return lambda: next(ticks)


def fill(db) -> None:
    run = db.begin_run(run_id="r1")
    db.kv.put(run, "k", 1)
    db.events.append(run, "e", {"a": 1})
    db.state.set(run, "c", 2)
    db.json.put(run, "d", {"x": [1]})
    db.traces.record(run, "thought", {"t": 1})


@pytest.fixture(scope="module")
def wal_store(tmp_path_factory):
    """A WAL-only store holding one run of every kind of write."""
    path = tmp_path_factory.mktemp("content") / "wal_only"
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        fill(db)
    return path


@pytest.fixture(scope="module")
def snapshot_store(tmp_path_factory):
    """A store whose state is all in one snapshot (and its history in the WAL records)."""
    path = tmp_path_factory.mktemp("content") / "snapshotted"
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        fill(db)
        db.snapshot()
    return path


def copy_of(source, target) -> str:
    shutil.copytree(source, target)
    os.unlink(os.path.join(target, "LOCK"))
    return str(target)


def with_record(store, target, payload: bytes) -> tuple[str, str, int]:
    """A copy of `store` whose newest segment ends with one more record holding `payload`."""
    path = copy_of(store, target)
    segment = list_segments(os.path.join(path, "wal"))[-1][1]
    with open(segment, "rb") as f:
        data = f.read().rstrip(b"\0")  # strict mode preallocates: drop the zero fill
    with open(segment, "wb") as f:
        f.write(data + encode(payload))
    return path, segment, len(data)


def packed(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


KV_PUT_FIELDS = [10, "k2", packed("v"), 1, 1_700_000_000_000_999, None]

# Payloads that are not a batch record as the engine writes them.
BAD_RECORDS = {
    "not msgpack": b"\xc1",
    "empty": b"",
    "an int": packed(5),
    "a map": packed({"a": 1}),
    "one item": packed([1]),
    "extra bytes": packed([1, []]) + b"\x00",
    "batches not a list": packed([1, 7]),
    "a batch that is an int": packed([1, [5]]),
    "a batch without effects": packed([1, [["r1"]]]),
    "effects not a list": packed([1, [["r1", 7]]]),
    "an effect that is an int": packed([1, [["r1", [7]]]]),
    "an empty effect": packed([1, [["r1", [[]]]]]),
    "an unknown effect code": packed([1, [["r1", [[999, "x"]]]]]),
    "a write to a run never created": packed([1, [["nope", [KV_PUT_FIELDS]]]]),
    "a run id that is an int": packed([1, [[5, [KV_PUT_FIELDS]]]]),
    "a short kv put": packed([1, [["r1", [[10]]]]]),
    "two short kv puts": packed([1, [["r1", [[10], [10]]]]]),
    "kv fields of the wrong types": packed([1, [["r1", [[10, "k2", "v", "x", "y", None]]]]]),
    "a short status change": packed([1, [["r1", [[2]]]]]),
    "a status that is not one": packed([1, [["r1", [[2, 5, 1_700_000_000_000_999, None]]]]]),
    "a short run creation": packed([1, [["r9", [[1]]]]]),
    "a run creation without tags": packed([1, [["r9", [[1, "r9", None, None, None, None, 1]]]]]),
    "a run created under another id": packed(
        [1, [["r9", [[1, "r8", None, None, [], None, 1_700_000_000_000_999]]]]]),
    "a short run deletion": packed([1, [["r1", [[3]]]]]),
    "a run deletion of another run": packed([1, [["r1", [[3, "r2", 1_700_000_000_000_999]]]]]),
    "a short event": packed([1, [["r1", [[20, 1]]]]]),
    "a short trace": packed([1, [["r1", [[40, "t"]]]]]),
    "a group count that is a str": packed(["x", []]),
    "nested too deep": b"\x91" * 100_000 + b"\x00",
}


@pytest.mark.parametrize("payload", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_a_record_that_is_not_a_batch_is_refused_naming_its_file_and_offset(
        wal_store, tmp_path, payload):
    path, segment, offset = with_record(wal_store, tmp_path / "db", payload)
    with pytest.raises(RecordContentError) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    err = caught.value
    assert isinstance(err, inmem.CorruptionError)
    assert (err.path, err.offset) == (segment, offset)
    assert os.path.basename(segment) in str(err)
    # Nothing was cut or renamed: the next attempt says the same.
    with pytest.raises(RecordContentError):
        inmem.open(path, "strict", **OPTIONS).close()


def test_a_record_that_is_not_a_batch_is_never_skipped(wal_store, tmp_path):
    # The skip budget is for damage the checksum caught; what this record says is unknown.
    path, segment, offset = with_record(wal_store, tmp_path / "db", packed([1, [["r1", [[3]]]]]))
    with pytest.raises(RecordContentError):
        inmem.open(path, "strict", max_corrupt_entries=5, **OPTIONS).close()


msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.text(max_size=8)
    | st.binary(max_size=8) | st.sampled_from([1, 2, 3, 10, 11, 20, 30, 31, 40, 50, 51, "r1"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner,
                                                                max_size=3),
    max_leaves=12)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.tuples(st.integers(0, 3), st.lists(st.tuples(st.sampled_from(["r1", "r2"]), st.lists(
    msgpack_values, max_size=3)), max_size=3)) | msgpack_values)
def test_any_record_of_the_wrong_shape_opens_or_is_refused_with_a_typed_error(wal_store, value):
    with tempfile.TemporaryDirectory() as tmp:
        path, segment, offset = with_record(wal_store, os.path.join(tmp, "db"), packed(value))
        try:
            db = inmem.open(path, "strict", **OPTIONS)
        except RecordContentError as exc:
            assert (exc.path, exc.offset) == (segment, offset)
            return
        # It happened to be a record the engine applies (a write of the right shape, which
        # recovery trusts): reading the store back raises nothing untyped.
        try:
            for info in db.runs.list():
                for read in (db.kv.items, db.events.verify_chain, db.replay_run):
                    try:
                        read(info.run_id)
                    except inmem.InmemError:
                        pass
        finally:
            db.close()


# -- snapshots ---------------------------------------------------------------------


def with_sections(store, target, change) -> tuple[str, str]:
    """A copy of `store` whose snapshot has its sections changed by `change(dict)`, crc valid."""
    path = copy_of(store, target)
    sdir = os.path.join(path, "snapshots")
    (name,) = [n for n in os.listdir(sdir) if n.endswith(".snap")]
    file = os.path.join(sdir, name)
    snap = fmt.read_snapshot_file(file)
    sections = {t: bytes(body) for t, body in snap.sections.items()}
    change(sections)
    with open(file, "wb") as f:
        fmt.write_snapshot_file(f, created_at=snap.created_at, wal_position=snap.wal_position,
                                shard=snap.header.shard, counts=snap.counts,
                                sections=sorted(sections.items()))
    return path, file


def set_section(type_id, body):
    return lambda sections: sections.__setitem__(type_id, body)


def keep_only_meta(sections):
    for t in list(sections):
        if t != fmt.META:
            del sections[t]


def journal_names(names):
    """Replace the file table of the JOURNAL section (its history index's file names)."""
    def change(sections):
        _names, journals = msgpack.unpackb(sections[fmt.JOURNAL], raw=False)
        sections[fmt.JOURNAL] = packed([names, journals])
    return change


def run_floor(floor):
    """Set the first run's KV version floor (the eighth field of a run, from codec 3 on)."""
    def change(sections):
        runs = msgpack.unpackb(sections[fmt.RUNS], raw=False)
        runs[0][7] = floor
        sections[fmt.RUNS] = packed(runs)
    return change


BAD_SECTIONS = {
    "meta not msgpack": set_section(fmt.META, b"\xc1"),
    "meta an int": set_section(fmt.META, packed(5)),
    "runs not msgpack": set_section(fmt.RUNS, b"\xc1"),
    "runs an int": set_section(fmt.RUNS, packed(5)),
    "a run of one field": set_section(fmt.RUNS, packed([[1]])),
    "a run's kv floor below 0": run_floor(-1),
    "a run's kv floor not an int": run_floor("3"),
    "a run without its creation": set_section(
        fmt.RUNS, packed([["r1", [9], "active", 1, None, None, False]])),
    "no runs": set_section(fmt.RUNS, packed([])),
    "kv of a run not there": set_section(fmt.KV, packed([["zz", ["a"], [b"x"]]])),
    "kv an int": set_section(fmt.KV, packed(7)),
    "events an int": set_section(fmt.EVENTS, packed([["r1", 5]])),
    "a short trace": set_section(fmt.TRACES, packed([["r1", [[1]]]])),
    "journal an int": set_section(fmt.JOURNAL, packed(5)),
    "a short journal": set_section(fmt.JOURNAL, packed([[], [["r1"]]])),
    "only meta": keep_only_meta,
    "a history file outside history/": journal_names(["../wal/00000000000000000000.wal"]),
    "a history file name that is not one": journal_names(["notes.txt"]),
    "a history file named twice": journal_names(["00000000000000000000.wal"] * 2),
}


@pytest.mark.parametrize("change", BAD_SECTIONS.values(), ids=BAD_SECTIONS.keys())
def test_a_snapshot_whose_sections_are_not_a_state_is_refused_naming_it(
        snapshot_store, tmp_path, change):
    path, file = with_sections(snapshot_store, tmp_path / "db", change)
    with pytest.raises(SnapshotContentError) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    err = caught.value
    assert isinstance(err, inmem.CorruptionError)
    assert err.path == file and os.path.basename(file) in str(err)
    assert os.path.exists(file)  # not renamed away: the next open says the same
    with pytest.raises(SnapshotContentError):
        inmem.open(path, "strict", **OPTIONS).close()


def test_a_snapshot_of_a_newer_codec_is_unsupported_not_damage(snapshot_store, tmp_path):
    path, file = with_sections(snapshot_store, tmp_path / "db",
                               set_section(fmt.META, packed({"codec": 99})))
    with pytest.raises(SnapshotUnsupported) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    assert caught.value.path == file and caught.value.version == 99
    assert "99" in str(caught.value)
    assert os.path.exists(file)


# -- history records -----------------------------------------------------------------

RECORD_HEADER_BYTES = 6


def history_store(tmp_path) -> tuple[str, str]:
    """A store whose run's history is in a file in history/ (its WAL let go after snapshots)."""
    path = str(tmp_path / "db")
    with inmem.open(path, "strict", clock=pinned_clock(), segment_bytes_max=600,
                    **OPTIONS) as db:
        run = db.begin_run(run_id="r1")
        for i in range(30):
            db.kv.put(run, f"k{i % 3}", {"i": i})
        db.snapshot()
        db.kv.put(run, "more", 1)
        db.snapshot()
    hdir = os.path.join(path, "history")
    return path, os.path.join(hdir, sorted(os.listdir(hdir))[0])


def replace_second_record(file: str, payload_of) -> int:
    """Put a record holding `payload_of(length)` where the file's second record is; its offset."""
    with open(file, "rb") as f:
        data = bytearray(f.read())
    first_length = int.from_bytes(data[0:4], "little")
    offset = RECORD_HEADER_BYTES + first_length + 4
    length = int.from_bytes(data[offset:offset + 4], "little")
    record = encode(payload_of(length))
    assert len(record) == RECORD_HEADER_BYTES + length + 4  # every later offset stays right
    data[offset:offset + len(record)] = record
    with open(file, "wb") as f:
        f.write(data)
    return offset


def padded_to(n: int, make) -> bytes:
    """`packed(make(pad))` for the str pad that makes it exactly n bytes long."""
    for size in range(n):
        body = packed(make("x" * size))
        if len(body) == n:
            return body
    raise AssertionError(f"no padding makes {n} bytes")


HISTORY_PAYLOADS = {
    "not msgpack": lambda n: b"\xc1" * n,
    "msgpack and more": lambda n: packed(5) + b"\x00" * (n - 1),
    "effects that are not tuples": lambda n: padded_to(n, lambda pad: [1, [["r1", [5, pad]]]]),
    "no effects of the run": lambda n: padded_to(n, lambda pad: [1, [["zz", [[10, pad]]]]]),
}


@pytest.mark.parametrize("payload_of", HISTORY_PAYLOADS.values(), ids=HISTORY_PAYLOADS.keys())
def test_a_history_record_that_is_not_the_runs_is_a_corruption_error_naming_it(
        tmp_path, payload_of):
    path, file = history_store(tmp_path)
    offset = replace_second_record(file, payload_of)
    with inmem.open(path, "strict", **OPTIONS) as db:
        with pytest.raises(inmem.CorruptionError) as caught:
            db.replay_run("r1")
    assert caught.value.path == file and caught.value.offset == offset
    assert os.path.basename(file) in str(caught.value)


def test_without_history_files_the_record_that_does_not_decode_is_the_one_named():
    # The plain path merges a block's records before applying them; the error
    # must still point at the record, not the block.
    from inmem.recovery.errors import UnreadableContent
    from inmem.shard.engine import Engine
    from inmem.shard.recovery_apply import EngineRecovery

    create = [1, "r1", None, None, [], None, 1_700_000_000_000_000]
    good = packed([1, [["r1", [create]]]])
    put = packed([1, [["r1", [KV_PUT_FIELDS]]]])
    target = EngineRecovery(Engine())
    with pytest.raises(UnreadableContent) as caught:
        target.apply_records([good, put, b"\xc1", put])
    assert caught.value.index == 2
    target = EngineRecovery(Engine())
    with pytest.raises(UnreadableContent) as caught:
        target.apply_records([good, packed([1, [["nope", [KV_PUT_FIELDS]]]])])
    assert "nope" in caught.value.reason


def test_an_error_without_a_message_is_named_once(wal_store, tmp_path):
    # msgpack's FormatError has no text: "(FormatError)", not "(FormatError: FormatError)".
    path, _segment, _offset = with_record(wal_store, tmp_path / "db", b"\xc1")
    with pytest.raises(RecordContentError) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    assert "(FormatError)" in str(caught.value)
