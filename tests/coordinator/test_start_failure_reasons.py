"""What a shard's exit note says when it cannot start: one clear line, the path, and whether
another try could help (the coordinator ends a first start on a lasting failure only)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from inmem.errors import CorruptionError, InmemError, StoreOpenError
from inmem.files import NotADirectory, NotRegularFile, describe_os_error, make_dirs
from inmem.processes import (SHARD_EXIT_STARTUP, failure_facts, lasting_failure, read_exit_note,
                             write_exit_note)
from inmem.recovery.errors import SnapshotCorrupt
from inmem.shard import worker


def test_the_start_up_exit_code_is_the_workers():
    assert SHARD_EXIT_STARTUP == worker.EXIT_STARTUP


def test_make_dirs_over_a_file_says_so(tmp_path):
    (tmp_path / "wal").write_text("x")
    with pytest.raises(FileExistsError) as caught:
        make_dirs(tmp_path / "wal")
    assert isinstance(caught.value, NotADirectory)
    assert str(caught.value) == f"{tmp_path}/wal is a file, not a directory"
    assert caught.value.filename == f"{tmp_path}/wal"


def test_make_dirs_under_a_file_names_the_file(tmp_path):
    (tmp_path / "shard-1").write_text("x")
    with pytest.raises(NotADirectory, match=f"^{tmp_path}/shard-1 is a file, not a directory$"):
        make_dirs(tmp_path / "shard-1" / "wal")


def test_make_dirs_over_a_fifo_says_fifo(tmp_path):
    os.mkfifo(tmp_path / "wal")
    with pytest.raises(NotADirectory, match="is a FIFO, not a directory"):
        make_dirs(tmp_path / "wal")


@pytest.mark.parametrize("exc, expected", [
    (PermissionError(errno.EACCES, "Permission denied", "/d/shard-1/wal"),
     "permission denied on /d/shard-1/wal: this user (uid {uid}) may not use it; fix its "
     "owner or mode"),
    (OSError(errno.EROFS, "Read-only file system", "/d/shard-1/wal"),
     "/d/shard-1/wal is on a read-only file system"),
    (OSError(errno.ENOSPC, "No space left on device", "/d/shard-1/wal/1.log"),
     "no space left on the device holding /d/shard-1/wal/1.log"),
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/d/shard-1/LOCK"),
     "/d/shard-1/LOCK is a directory, not a regular file"),
    (NotRegularFile("/d/shard-1/snapshots/1.snap", "a FIFO"),
     "/d/shard-1/snapshots/1.snap is a FIFO, not a regular file"),
    (OSError(errno.EIO, "Input/output error", "/d/x"), "/d/x: Input/output error"),
])
def test_file_system_errors_read_as_what_is_wrong_and_where(exc, expected):
    assert describe_os_error(exc) == expected.format(uid=os.geteuid())


def test_a_path_through_a_file_names_the_file(tmp_path):
    (tmp_path / "a").write_text("x")
    exc = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "a" / "b"))
    assert describe_os_error(exc) == (f"{tmp_path}/a/b is under {tmp_path}/a, which is a "
                                      "file, not a directory")


@pytest.mark.parametrize("exc, lasting", [
    (NotADirectory("/d/wal", "a file"), True),
    (PermissionError(errno.EACCES, "Permission denied", "/d/wal"), True),
    (OSError(errno.EROFS, "Read-only file system", "/d"), True),
    (CorruptionError("damaged record", path="/d/wal/1.log", offset=12), True),
    (SnapshotCorrupt.__new__(SnapshotCorrupt), True),
    (StoreOpenError("cannot open", path="/d"), True),
    # another process still holds the directory: it may be ending
    (InmemError("/d is already open (in this process or another); close it first"), False),
    (OSError(errno.EADDRINUSE, "Address already in use"), False),
    (OSError(errno.EIO, "Input/output error", "/d/wal/1.log"), False),
])
def test_which_failures_another_try_cannot_pass(exc, lasting):
    assert lasting_failure(exc) is lasting


def test_an_exit_note_carries_the_reason_the_path_and_lasting(tmp_path):
    exc = NotADirectory(str(tmp_path / "shard-1" / "wal"), "a file")
    write_exit_note(str(tmp_path), 1, exc)
    note = read_exit_note(str(tmp_path), 1)
    assert note["reason"] == f"{tmp_path}/shard-1/wal is a file, not a directory"
    assert note["path"] == f"{tmp_path}/shard-1/wal"
    assert note["lasting"] is True
    assert note["error"] == "NotADirectory"
    assert stat.S_IMODE(os.stat(tmp_path / "shard-1.exit.json").st_mode) == 0o600


def test_the_facts_of_an_error_without_a_path():
    reason, path, lasting = failure_facts(InmemError("no keys\n  for tcp"))
    assert (reason, path, lasting) == ("no keys for tcp", None, False)
