"""A directory or a FIFO where a store expects a file: a typed error naming it, never a hang.

Opening a FIFO for reading blocks until someone writes to it, so a reader
that opens whatever name it finds hangs the open for good; a directory
fails with a bare IsADirectoryError deep in a read. Each case builds a
store, puts a directory or a FIFO under a name the store reads (the newest
WAL segment, an older one, a snapshot, a history file, a move note) and
opens it again, as an application would, and runs the two inspection
commands on it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys

import pytest

import inmem
from inmem.processes import child_env
from inmem.wal.inspect import main as inspect_main
from inmem.recovery.snapshot_format import verify_main
from inmem.wal.segment import list_segments, segment_name

OPTIONS = {"snapshot_on_close": False, "snapshot_interval_s": None, "segment_bytes_max": 1024}
KINDS = ("directory", "fifo")


def pinned_clock():
    ticks = itertools.count(1_700_000_000_000_000, 7)
    return lambda: next(ticks)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A snapshot at op 10 (its WAL in history/ since), and more records in wal/ after it."""
    path = tmp_path_factory.mktemp("nonregular") / "db"
    with inmem.open(path, "strict", clock=pinned_clock(), **OPTIONS) as db:
        run = db.begin_run(run_id="r")
        for i in range(60):
            db.kv.put(run, f"k{i % 4}", {"i": i, "pad": "x" * 20})
            if i == 10:
                db.snapshot()
    assert len(list_segments(path / "wal")) >= 2, "the test needs an older and a newest segment"
    assert os.listdir(path / "history"), "the test needs a history file"
    return path


def copy_of(store, tmp_path) -> str:
    target = tmp_path / "db"
    shutil.copytree(store, target)
    os.unlink(target / "LOCK")
    return str(target)


def replace(path: str, kind: str) -> None:
    """Put a directory or a FIFO under `path` (what was there goes)."""
    if os.path.lexists(path):
        os.unlink(path)
    if kind == "directory":
        os.mkdir(path)
    else:
        os.mkfifo(path)


def newest_segment(path):
    return list_segments(os.path.join(path, "wal"))[-1][1]


def older_segment(path):
    return list_segments(os.path.join(path, "wal"))[0][1]


def history_file(path):
    d = os.path.join(path, "history")
    return os.path.join(d, sorted(os.listdir(d))[0])


def move_note(path):
    return history_file(path) + ".moved"


def open_and_replay(path) -> None:
    """Open the store and read the run's history (which a history file holds)."""
    with inmem.open(path, "strict", **OPTIONS) as db:
        db.replay_run("r")


PLACES = {"newest segment": newest_segment, "older segment": older_segment,
          "history file": history_file, "move note": move_note}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("place", PLACES)
def test_opening_refuses_with_an_error_naming_it(store, tmp_path, place, kind):
    path = copy_of(store, tmp_path)
    where = PLACES[place](path)
    replace(where, kind)
    with pytest.raises(inmem.CorruptionError) as caught:
        open_and_replay(path)
    assert caught.value.path == where
    assert os.path.basename(where) in str(caught.value)
    assert ("directory" if kind == "directory" else "FIFO") in str(caught.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_snapshot_name_that_is_not_a_file_is_set_aside_and_an_older_one_used(
        store, tmp_path, kind):
    path = copy_of(store, tmp_path)
    sdir = os.path.join(path, "snapshots")
    (good,) = os.listdir(sdir)
    bogus = os.path.join(sdir, f"snap-{10**9:020d}-{1:020d}.snap")  # newer than the real one
    replace(bogus, kind)
    with inmem.open(path, "strict", **OPTIONS) as db:
        assert db.kv.get("r", "k3")["i"] == 59
        (report,) = db.recovery_report()
        assert os.path.basename(report.snapshot_used) == good
    assert sorted(os.listdir(sdir)) == sorted([good, os.path.basename(bogus) + ".broken.1"])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_wal_inspect_reports_it_and_exits_2(store, tmp_path, capsys, kind):
    path = copy_of(store, tmp_path)
    where = newest_segment(path)
    replace(where, kind)
    assert inspect_main([os.path.join(path, "wal")]) == 2
    out = capsys.readouterr().out
    assert "CORRUPTION" in out and os.path.basename(where) in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_snapshot_verify_reports_it_and_exits_2(tmp_path, capsys, kind):
    where = str(tmp_path / f"snap-{1:020d}-{1:020d}.snap")
    replace(where, kind)
    assert verify_main([where]) == 2
    out = capsys.readouterr().out
    assert where in out and ("directory" if kind == "directory" else "FIFO") in out


@pytest.mark.timeout(60)
def test_the_commands_exit_without_a_traceback(store, tmp_path):
    path = copy_of(store, tmp_path)
    replace(newest_segment(path), "fifo")
    snap = os.path.join(path, "snapshots", f"snap-{10**9:020d}-{1:020d}.snap")
    replace(snap, "fifo")
    for args in (["wal", "inspect", path], ["snapshot", "verify", snap],
                 ["snapshot", "verify", path]):
        done = subprocess.run([sys.executable, "-m", "inmem", *args], capture_output=True,
                              text=True, timeout=50, env=child_env())
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)


def test_a_history_record_read_from_wal_is_named_where_it_was_read(store, tmp_path):
    # A name is looked up in wal/ before history/: an empty stray segment there
    # under the retained file's name is what the read met, and what the error names.
    path = copy_of(store, tmp_path)
    stray = os.path.join(path, "wal", os.path.basename(history_file(path)))
    open(stray, "wb").close()
    with pytest.raises(inmem.CorruptionError) as caught:
        open_and_replay(path)
    assert caught.value.path == stray and stray in str(caught.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("place", ["newest segment", "snapshot"])
def test_a_file_that_cannot_be_read_is_named_in_the_error(store, tmp_path, monkeypatch, place):
    # (Tests run as root, whom chmod does not stop: the refusal is made by hand.)
    path = copy_of(store, tmp_path)
    if place == "snapshot":
        sdir = os.path.join(path, "snapshots")
        where = os.path.join(sdir, os.listdir(sdir)[0])
    else:
        where = newest_segment(path)
    real_open = os.open

    def refusing_open(name, *args, **kwargs):
        if os.fspath(name) == where:
            raise PermissionError(13, "Permission denied", where)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    with pytest.raises(inmem.StoreOpenError) as caught:
        inmem.open(path, "strict", **OPTIONS).close()
    assert where in str(caught.value) and "Permission denied" in str(caught.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["wal/00000000000000000099.wal.tmp",
                                   f"snapshots/snap-{99:020d}-{1:020d}.snap.tmp",
                                   "history/00000000000000000099.wal.0123abcd.hist.tmp"])
def test_a_directory_named_like_a_leftover_temp_file_is_left_alone(store, tmp_path, where):
    # Clean-up removes the *.tmp files a crash leaves; a directory under such a
    # name is none of those, and must not stop the store opening or snapshotting.
    path = copy_of(store, tmp_path)
    os.mkdir(os.path.join(path, where))
    with inmem.open(path, "strict", **OPTIONS) as db:
        assert db.kv.get("r", "k3")["i"] == 59
        db.kv.put("r", "after", 1)
        db.snapshot()
        db.snapshot()  # retention runs, history's too
    with inmem.open(path, "strict", **OPTIONS) as db:
        assert db.kv.get("r", "after") == 1
    assert os.path.isdir(os.path.join(path, where))


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_lock_file_that_is_not_a_file_is_named(tmp_path, kind):
    # A FIFO under LOCK opened (O_RDWR does not wait) and then flock failed: StoreOpenError
    # "cannot open the store at DIR: Invalid argument", naming neither the file nor what it
    # is; a cluster's coordinator.lock said only "Invalid argument".
    import socket
    path = tmp_path / "db"
    path.mkdir()
    lock = path / "LOCK"
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(lock))
        sock.close()
    with pytest.raises(inmem.StoreOpenError) as info:
        inmem.open(path)
    message = str(info.value)
    assert str(lock) in message and f"a {kind.upper() if kind == 'fifo' else kind}" in message
    assert "Invalid argument" not in message


def test_a_fifo_named_coordinator_lock_hangs_nothing(tmp_path):
    # Looking for a running cluster above a store read every coordinator.lock on the way
    # with a blocking open: a FIFO under that name hung inmem.open of any directory below
    # it, and `inmem serve` on that data directory, for good.
    os.mkfifo(tmp_path / "coordinator.lock")
    code = ("import inmem, sys\n"
            "db = inmem.open(sys.argv[1]); db.kv.put(db.begin_run(), 'k', 1); db.close()\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "store")],
                          capture_output=True, text=True, timeout=50, env=child_env())
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "inmem", "serve", "--data-dir",
                           str(tmp_path), "--shards", "1"],
                          capture_output=True, text=True, timeout=50, env=child_env())
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "coordinator.lock is a FIFO, not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


_CLUSTER_START = (
    "import sys, inmem\n"
    "try:\n"
    "    inmem.Cluster(data_dir=sys.argv[1], shards=1, ready_timeout=40).start().stop()\n"
    "except inmem.InmemError as exc:\n"
    "    print(type(exc).__name__, exc)\n"
    "    sys.exit(3)\n")


@pytest.mark.parametrize("name", ["coordinator.log", "slotmap.json",
                                  "shard-0/wal/00000000000000000000.wal"])
def test_a_fifo_in_a_clusters_data_directory_hangs_no_start(tmp_path, name):
    # Cluster.start opened coordinator.log for appending and waited for a reader of the FIFO
    # for good; the coordinator read slotmap.json, and looked for records in a WAL segment
    # of a directory without one, with blocking opens: no answer until ready_timeout, and
    # `inmem serve` hung. Each is now a prompt error naming the file.
    data = tmp_path / "data"
    (data / name).parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(data / name)
    done = subprocess.run([sys.executable, "-c", _CLUSTER_START, str(data)],
                          capture_output=True, text=True, timeout=30, env=child_env())
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert f"{data / name}" in done.stdout and "a FIFO" in done.stdout, done.stdout


def test_a_symbolic_link_loop_under_a_store_name_is_called_one(tmp_path):
    # It was "something this user may not look at", which sends the reader to permissions.
    path = tmp_path / "db"
    path.mkdir()
    os.symlink("wal", path / "wal")
    with pytest.raises(inmem.StoreOpenError) as info:
        inmem.open(path)
    assert "a symbolic link loop" in str(info.value) and str(path / "wal") in str(info.value)
    assert "may not look at" not in str(info.value)
