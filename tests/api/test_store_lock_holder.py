"""Who holds a store's directory: the lock file names its holder, the refusal says it.

A durable store's directory is held by an flock on its LOCK file; the
holder writes its pid and what it is into the file, so that a second open
is refused with who has it. The file's content is only read for that
message: a file another program wrote, or one not written yet, gives the
plain message.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import inmem
from inmem.errors import InmemError
from inmem.files import lock_file_pid, lock_holder, try_lock
from inmem.processes import child_env, lasting_failure


def test_a_second_open_in_this_process_names_the_embedded_store(tmp_path):
    with inmem.open(tmp_path / "db"):
        with pytest.raises(InmemError) as caught:
            inmem.open(tmp_path / "db")
    assert str(caught.value) == (f"{tmp_path / 'db'} is already open by an embedded store "
                                 "in this process; close it first")
    assert lasting_failure(caught.value) is True
    # Closed, it opens again.
    with inmem.open(tmp_path / "db") as db:
        db.begin_run()


def test_a_store_open_in_another_process_is_named_by_its_pid(tmp_path):
    path = str(tmp_path / "db")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, inmem; db = inmem.open(sys.argv[1]); "
         "print('open', flush=True); sys.stdin.read()", path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(InmemError, match=f"already open by an embedded store in process "
                                             f"{holder.pid}; close it first"):
            inmem.open(path)
    finally:
        holder.stdin.close()
        assert holder.wait(30) == 0


def test_a_lock_file_without_a_holder_gives_the_plain_message(tmp_path):
    path = tmp_path / "db"
    path.mkdir()
    fd = try_lock(str(path / "LOCK"))  # another program's lock: nothing written
    try:
        with pytest.raises(InmemError) as caught:
            inmem.open(path)
    finally:
        os.close(fd)
    assert "already open (in this process or another); close it first" in str(caught.value)
    assert lasting_failure(caught.value) is False


@pytest.mark.parametrize("content, found", [
    (b"123 shard 1 of a cluster\n", (123, "shard 1 of a cluster")),
    (b"123\n", None),
    (b"", None),
    (b"\xff\xfe garbage", None),
    (b"-5 shard", None),
])
def test_lock_holder_reads_what_try_lock_wrote_and_nothing_else(tmp_path, content, found):
    lock = tmp_path / "LOCK"
    lock.write_bytes(content)
    assert lock_holder(lock) == found


def test_try_lock_writes_the_holder_and_lock_file_pid_still_reads_it(tmp_path):
    lock = str(tmp_path / "LOCK")
    fd = try_lock(lock, "an embedded store")
    try:
        assert lock_holder(lock) == (os.getpid(), "an embedded store")
        assert lock_file_pid(lock) == os.getpid()
        assert try_lock(lock) is None
    finally:
        os.close(fd)
    # A bare pid (the coordinator's lock file) reads as before.
    (tmp_path / "coord").write_bytes(b"4321\n")
    assert lock_file_pid(tmp_path / "coord") == 4321
    (tmp_path / "junk").write_bytes(b"x1\n")
    assert lock_file_pid(tmp_path / "junk") is None
