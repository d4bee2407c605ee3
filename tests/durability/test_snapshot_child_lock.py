"""A store killed while its snapshot child runs can be reopened at once.

The directory lock (one process per WAL) is held through an open file
description that fork shares with the snapshot child. The child closes its
copy first thing, so the lock goes with the parent: a kill -9 of the store
leaves no orphan child between the data and the next opener.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

import inmem
from polling import wait_for

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent("""
    import sys, time
    import inmem
    import inmem.shard.durable as durable

    real_dump = durable.dump

    def slow_dump(engine):
        time.sleep(30)  # runs in the snapshot child only
        return real_dump(engine)

    durable.dump = slow_dump
    db = inmem.open(sys.argv[1], "strict", snapshot_on_close=False)
    run = db.begin_run(run_id="kept")
    db.kv.put(run, "k", "acknowledged")
    pid = db._backend.store._start_snapshot()
    print(pid, flush=True)
    time.sleep(60)
""")


def holds_lock(pid: int, path) -> bool:
    """Whether process `pid` has the directory's LOCK file open."""
    lock = os.path.realpath(os.path.join(path, "LOCK"))
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        try:
            if os.readlink(os.path.join(fds, fd)) == lock:
                return True
        except OSError:
            continue
    return False


def test_a_killed_store_reopens_while_its_snapshot_child_still_runs(tmp_path):
    path = tmp_path / "db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE,
                            text=True)
    child = None
    try:
        line = proc.stdout.readline()
        assert line.strip().isdigit(), f"the store did not fork a snapshot child: {line!r}"
        child = int(line)
        # The child closes its copy of the lock first thing once it runs; on
        # a loaded machine it may not have run yet when the parent printed.
        wait_for(lambda: not holds_lock(child, path), 30, "the snapshot child to drop the lock")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        os.kill(child, 0)  # the snapshot child outlives its parent for now
        with inmem.open(path, "strict", snapshot_on_close=False) as db:
            assert db.kv.get("kept", "k") == "acknowledged"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
