"""`inmem wal inspect` and `inmem snapshot verify` say what opening would say about contents.

A WAL record or a snapshot section whose crc32c holds but whose contents are
not what this build writes is refused by `inmem.open` (RecordContentError,
SnapshotContentError, SnapshotUnsupported). The operator's tools must not call
the same files clean: they run the decoding recovery runs, on a read-only pass,
and name the file, the offset, the record or section, and the reason, with a
non-zero exit. The damage is the catalogue of `test_content_behind_a_good_crc`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import tempfile

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

import inmem
from inmem.cli import main
from inmem.recovery import snapshot_format as fmt
from inmem.wal.inspect import format_report, inspect_wal
from inmem.wal.reader import WalReader
from inmem.wal.record import encode
from inmem.wal.segment import list_segments

from test_content_behind_a_good_crc import (  # noqa: F401 (module fixtures)
    BAD_RECORDS, BAD_SECTIONS, OPTIONS, msgpack_values, pinned_clock, set_section,
    snapshot_store, wal_store, with_record, with_sections)


def digest(path) -> dict:
    """Every file under `path` with its mode and a hash of its bytes: what a read-only pass keeps."""
    out = {}
    for dirpath, dirnames, files in os.walk(path):
        for name in dirnames + files:
            full = os.path.join(dirpath, name)
            st_ = os.stat(full)
            body = b""
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    body = f.read()
            out[os.path.relpath(full, path)] = (st_.st_mode, st_.st_size,
                                                hashlib.sha256(body).hexdigest())
    return out


def opens(path) -> bool:
    try:
        inmem.open(path, "strict", **OPTIONS).close()
    except inmem.CorruptionError:
        return False
    except inmem.InmemError:
        return False
    return True


# -- WAL records -----------------------------------------------------------------------


@pytest.mark.parametrize("payload", BAD_RECORDS.values(), ids=BAD_RECORDS.keys())
def test_wal_inspect_names_a_record_opening_refuses(wal_store, tmp_path, capsys, payload):
    path, segment, offset = with_record(wal_store, tmp_path / "db", payload)
    before = digest(path)
    assert main(["wal", "inspect", path]) == 2
    out = capsys.readouterr().out
    assert f"CONTENT in {os.path.basename(segment)} at offset {offset}" in out, out
    assert "outcome: clean" not in out
    assert digest(path) == before  # read only: nothing cut, renamed or created
    assert not opens(path)  # and opening agrees


def test_wal_inspect_json_gives_the_record_and_the_reason(wal_store, tmp_path, capsys):
    payload = BAD_RECORDS["an unknown effect code"]
    path, segment, offset = with_record(wal_store, tmp_path / "db", payload)
    assert main(["wal", "inspect", path, "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    content = report["content"]
    assert content["outcome"]["kind"] == "content"
    assert content["outcome"]["segment"] == os.path.basename(segment)
    assert content["outcome"]["offset"] == offset
    assert content["outcome"]["lsn"] == report["last_lsn"]
    assert "999" in content["outcome"]["reason"]
    assert report["outcome"] == {"kind": "clean"}  # the format is fine: the content is not
    # A script needs one field for what the exit code says.
    assert report["verdict"] == "refused"


def test_wal_inspect_json_verdict_follows_the_exit_code(wal_store, tmp_path, capsys):
    assert main(["wal", "inspect", str(wal_store), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "clean"
    empty = tmp_path / "wal"
    empty.mkdir()
    assert main(["wal", "inspect", str(empty), "--json"]) == 2  # no log at all
    assert json.loads(capsys.readouterr().out)["verdict"] == "refused"


def test_wal_inspect_of_a_good_store_counts_what_it_checked(wal_store, capsys):
    assert main(["wal", "inspect", str(wal_store)]) == 0
    out = capsys.readouterr().out
    report = inspect_wal(os.path.join(wal_store, "wal"))
    assert "content: not checked" in _text(report)  # the WAL layer alone knows no engine
    assert "outcome: clean" in out
    assert "content: ok, 6 records checked from LSN 0 (no snapshot)" in out, out


def test_wal_inspect_starts_where_opening_starts_after_a_snapshot(snapshot_store, tmp_path,
                                                                   capsys):
    # The WAL after the snapshot writes to a run the snapshot created: fine, as for opening.
    path = str(tmp_path / "db")
    shutil.copytree(snapshot_store, path)
    os.unlink(os.path.join(path, "LOCK"))
    with inmem.open(path, "strict", **OPTIONS) as db:
        db.kv.put("r1", "after", 2)
    before = digest(path)
    assert main(["wal", "inspect", path]) == 0
    out = capsys.readouterr().out
    (snap,) = os.listdir(os.path.join(path, "snapshots"))
    assert f"content: ok, 1 records checked from LSN 6 (after snapshot {snap})" in out, out
    assert digest(path) == before


def test_wal_inspect_of_a_record_after_a_snapshot_that_writes_to_no_run(snapshot_store, tmp_path,
                                                                        capsys):
    payload = BAD_RECORDS["a write to a run never created"]
    path, segment, offset = with_record(snapshot_store, tmp_path / "db", payload)
    assert not opens(path)
    assert main(["wal", "inspect", path]) == 2
    out = capsys.readouterr().out
    assert f"CONTENT in {os.path.basename(segment)} at offset {offset}" in out, out
    assert "'nope'" in out


def test_a_torn_tail_after_bad_content_is_still_exit_2(wal_store, tmp_path, capsys):
    path, segment, _offset = with_record(wal_store, tmp_path / "db", BAD_RECORDS["an int"])
    with open(segment, "ab") as f:
        f.write(encode(b"\x90")[:5])
    assert main(["wal", "inspect", path]) == 2
    out = capsys.readouterr().out
    assert "TORN TAIL" in out and "CONTENT in" in out


def _text(report) -> str:
    return format_report(report)


# -- snapshot sections ----------------------------------------------------------------


@pytest.mark.parametrize("change", BAD_SECTIONS.values(), ids=BAD_SECTIONS.keys())
def test_snapshot_verify_names_a_section_opening_refuses(snapshot_store, tmp_path, capsys,
                                                         change):
    path, file = with_sections(snapshot_store, tmp_path / "db", change)
    before = digest(path)
    assert main(["snapshot", "verify", file]) == 2
    out = capsys.readouterr().out
    assert "crc32c: ok" in out  # the format holds: only the content is wrong
    assert "content: BAD at offset" in out, out
    assert "result: INVALID" in out
    assert digest(path) == before
    assert not opens(path)


def test_snapshot_verify_of_a_newer_codec_says_unsupported(snapshot_store, tmp_path, capsys):
    path, file = with_sections(snapshot_store, tmp_path / "db",
                               set_section(fmt.META, msgpack.packb({"codec": 99})))
    assert main(["snapshot", "verify", file]) == 2
    out = capsys.readouterr().out
    assert "content: UNSUPPORTED" in out and "99" in out, out


def test_snapshot_verify_names_the_section_and_its_offset(snapshot_store, tmp_path, capsys):
    path, file = with_sections(snapshot_store, tmp_path / "db", BAD_SECTIONS["kv an int"])
    snap = fmt.read_snapshot_file(file)
    assert main(["snapshot", "verify", file]) == 2
    out = capsys.readouterr().out
    assert f"content: BAD at offset {snap.section_offsets[fmt.KV]}: section KV" in out, out


def test_snapshot_verify_of_a_good_snapshot_counts_what_it_loaded(snapshot_store, capsys):
    (name,) = os.listdir(os.path.join(snapshot_store, "snapshots"))
    assert main(["snapshot", "verify", os.path.join(snapshot_store, "snapshots", name)]) == 0
    out = capsys.readouterr().out
    assert "content: ok (1 run loaded)" in out, out
    assert "result: valid" in out


def test_wal_inspect_says_it_cannot_check_past_a_snapshot_that_does_not_load(
        snapshot_store, tmp_path, capsys):
    path, _file = with_sections(snapshot_store, tmp_path / "db", BAD_SECTIONS["runs an int"])
    assert main(["wal", "inspect", path]) == 2
    out = capsys.readouterr().out
    assert "content: NOT CHECKED" in out and "snapshot verify" in out, out


# -- agreement with opening ------------------------------------------------------------

ops = st.lists(st.sampled_from(["put", "event", "state", "doc", "trace", "end", "snapshot"]),
               min_size=1, max_size=8)


def build(path, steps) -> None:
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        run = db.begin_run(run_id="r1")
        for i, step in enumerate(steps):
            if step == "put":
                db.kv.put(run, f"k{i % 2}", i)
            elif step == "event":
                db.events.append(run, "e", {"i": i})
            elif step == "state":
                db.state.set(run, "c", i)
            elif step == "doc":
                db.json.put(run, "d", {"i": [i]})
            elif step == "trace":
                db.traces.record(run, "thought", {"i": i})
            elif step == "end" and i == len(steps) - 1:
                db.end_run(run)
            elif step == "snapshot":
                db.snapshot()
        if steps[-1] != "end":
            db.kv.put(run, "last", 0)  # the WAL holds a record after any snapshot


def rewrite_record(path, index: int, payload: bytes) -> None:
    """Replace the payload of the index-th record of the WAL (crc recomputed, later records moved)."""
    header = struct.Struct("<IBB")
    for _first, segment in list_segments(os.path.join(path, "wal")):
        with open(segment, "rb") as f:
            data = f.read()
        off = 0
        while off + 10 <= len(data):
            length, rtype, _version = header.unpack_from(data, off)
            if rtype == 0:
                break
            end = off + 6 + length + 4
            if index == 0:
                with open(segment, "wb") as f:
                    f.write(data[:off] + encode(payload, rtype) + data[end:].rstrip(b"\0"))
                return
            index -= 1
            off = end
    raise AssertionError("no such record")


def record_count(path) -> int:
    return sum(1 for _ in WalReader(os.path.join(path, "wal")))


@pytest.mark.timeout(600)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops, data=st.data())
def test_the_tools_verdict_agrees_with_opening(steps, data):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "db")
        build(path, steps)
        index = data.draw(st.integers(0, record_count(path) - 1), label="record")
        value = data.draw(st.tuples(st.integers(0, 3), st.lists(st.tuples(
            st.sampled_from(["r1", "r2"]), st.lists(msgpack_values, max_size=3)), max_size=3))
            | msgpack_values, label="payload")
        rewrite_record(path, index, msgpack.packb(value, use_bin_type=True))
        os.unlink(os.path.join(path, "LOCK"))
        before = digest(path)
        with open(os.devnull, "w") as sink:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                wal_code = main(["wal", "inspect", path])
                snap_codes = [main(["snapshot", "verify", os.path.join(path, "snapshots", n)])
                              for n in sorted(os.listdir(os.path.join(path, "snapshots")))]
        assert digest(path) == before
        tools_clean = wal_code == 0 and not any(snap_codes)
        event(f"the tools say {'clean' if tools_clean else 'not clean'}")
        with tempfile.TemporaryDirectory() as other:
            copy = os.path.join(other, "db")
            shutil.copytree(path, copy)
            assert tools_clean == opens(copy), (wal_code, snap_codes)


# -- where the check starts ---------------------------------------------------------


def test_wal_inspect_falls_back_past_a_damaged_snapshot_as_opening_does(tmp_path, capsys):
    path = str(tmp_path / "db")
    with inmem.open(path, "strict", clock=pinned_clock(), snapshot_retention=2, **OPTIONS) as db:
        run = db.begin_run(run_id="r1")
        db.kv.put(run, "a", 1)
        db.snapshot()
        db.kv.put(run, "b", 2)
        db.snapshot()
        db.kv.put(run, "c", 3)
    older, newer = sorted(os.listdir(os.path.join(path, "snapshots")))
    with open(os.path.join(path, "snapshots", newer), "r+b") as f:
        f.seek(50)
        byte = f.read(1)
        f.seek(50)
        f.write(bytes([byte[0] ^ 1]))  # the crc fails: opening sets it aside, uses the older
    before = digest(path)
    assert main(["wal", "inspect", path]) == 0
    out = capsys.readouterr().out
    assert f"content: ok, 2 records checked from LSN 2 (after snapshot {older})" in out, out
    assert digest(path) == before  # the damaged one was not renamed: that is opening's job
    assert opens(path)


def test_wal_inspect_says_a_gap_behind_the_snapshot_is_refused(tmp_path, capsys):
    # The only snapshot is damaged and the WAL below it was let go: opening refuses (WalGapError).
    path = str(tmp_path / "db")
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        run = db.begin_run(run_id="r1")
        for i in range(5):
            db.kv.put(run, f"k{i}", i)
        db.snapshot()
        db.kv.put(run, "after", 1)
    (snap,) = os.listdir(os.path.join(path, "snapshots"))
    with open(os.path.join(path, "snapshots", snap), "r+b") as f:
        f.seek(20)
        f.write(b"\xff")
    assert main(["wal", "inspect", path]) == 2
    out = capsys.readouterr().out
    assert "content: NOT CHECKED: the log starts at LSN 6" in out and "WalGapError" in out, out
    assert not opens(path)


def test_a_wal_directory_on_its_own_that_starts_late_is_not_checked(tmp_path, capsys):
    # A copy of a wal/ directory alone: what came before its first record is unknown.
    path = str(tmp_path / "db")
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        run = db.begin_run(run_id="r1")
        db.kv.put(run, "a", 1)
        db.snapshot()
        db.kv.put(run, "b", 2)
    alone = tmp_path / "copy" / "wal"
    shutil.copytree(os.path.join(path, "wal"), alone)
    assert main(["wal", "inspect", str(alone)]) == 0
    out = capsys.readouterr().out
    assert "content: not checked: the log starts at LSN 2 and no snapshots/ directory" in out, out
    assert "outcome: clean" in out


def test_snapshot_verify_checks_every_snapshot_of_a_store_on_its_own(snapshot_store, tmp_path,
                                                                     capsys):
    path, _file = with_sections(snapshot_store, tmp_path / "db", BAD_SECTIONS["no runs"])
    assert main(["snapshot", "verify", path]) == 2
    out = capsys.readouterr().out
    assert "content: BAD at offset" in out and "NOT all valid" in out, out


def test_the_tools_check_a_store_that_is_open_without_its_lock(tmp_path, capsys):
    # The store's lock is held (by this process's open store): the tools neither take nor need it.
    path = str(tmp_path / "db")
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        run = db.begin_run(run_id="r1")
        db.kv.put(run, "a", 1)
        db.snapshot()
        db.kv.put(run, "b", 2)
        assert main(["wal", "inspect", path]) == 0
        assert main(["snapshot", "verify", path]) == 0
        db.kv.put(run, "c", 3)  # the store goes on working
    out = capsys.readouterr().out
    assert "content: ok, 1 records checked" in out and "content: ok (1 run loaded)" in out, out


SECTION_TYPES = sorted(fmt.SECTION_NAMES)


@pytest.mark.timeout(600)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(type_id=st.sampled_from(SECTION_TYPES), value=msgpack_values)
def test_snapshot_verify_agrees_with_opening_on_any_section(snapshot_store, type_id, value):
    # A section rewritten with a random msgpack value, the crc recomputed.
    with tempfile.TemporaryDirectory() as tmp:
        path, file = with_sections(snapshot_store, os.path.join(tmp, "db"), set_section(
            type_id, msgpack.packb(value, use_bin_type=True)))
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            verdict = main(["snapshot", "verify", file])
            wal_code = main(["wal", "inspect", path])
        event(f"snapshot verify says {'valid' if verdict == 0 else 'invalid'}")
        with tempfile.TemporaryDirectory() as other:
            copy = os.path.join(other, "db")
            shutil.copytree(path, copy)
            assert (verdict == 0) == opens(copy), (verdict, type_id, value)
        assert (wal_code == 0) == (verdict == 0)  # the WAL's check starts from this snapshot
