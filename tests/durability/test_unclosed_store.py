"""A durable embedded store that is never closed: an interpreter exit closes it (every
acknowledged write of a buffered store reaches the WAL), and one that is garbage-collected
closes itself, releasing its threads, descriptors and directory lock."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import psutil
import pytest

import inmem

from . import harness

ROOT = Path(__file__).resolve().parents[2]
#: no flush and no snapshot happens on its own while a test runs
QUIET = {"flush_interval_ms": 600_000, "max_pending_writes": 1_000_000,
         "snapshot_interval_s": None}


def run_script(body: str, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `body` in a fresh interpreter (the bound is a hang detector only)."""
    code = "import os, sys, gc, threading, inmem\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                          env={**harness.child_env(), "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=timeout)


WRITE_AND_LEAVE = f"""
QUIET = {QUIET!r}
def main():
    db = inmem.open(sys.argv[1], durability="buffered", **QUIET)
    run = db.begin_run(run_id="r")
    for i in range(500):
        db.kv.put(run, f"k{{i}}", i)
    db.events.append(run, "done", {{"n": 500}})
    assert db._backend.store.writer.pending_records or db._backend.store.engine.log
    if {{keep}}:
        global keep
        keep = db  # still referenced when the interpreter exits
    {{leave}}
main()
"""


def check_every_write(path) -> None:
    with inmem.open(path, durability="buffered") as db:
        assert [db.kv.get("r", f"k{i}") for i in range(500)] == list(range(500))
        assert [e.payload for e in db.events.by_type("r", "done")] == [{"n": 500}]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("keep", [True, False], ids=["held", "dropped"])
@pytest.mark.parametrize("leave", ["return", "sys.exit(0)", "sys.exit(3)",
                                   "raise RuntimeError('the caller failed')"])
def test_an_exit_without_close_keeps_every_acknowledged_buffered_write(tmp_path, leave, keep):
    path = tmp_path / "store"
    proc = run_script(WRITE_AND_LEAVE.replace("{leave}", leave).replace("{keep}", str(keep)),
                      path)
    expected = {"return": 0, "sys.exit(0)": 0, "sys.exit(3)": 3}.get(leave, 1)
    assert proc.returncode == expected, proc.stderr
    assert "Traceback" not in proc.stderr or leave.startswith("raise"), proc.stderr
    # The exit wrote the WAL; it took no snapshot (the reopen replays the WAL).
    assert not list((path / "snapshots").glob("*.snap"))
    check_every_write(path)


@pytest.mark.timeout(120)
def test_an_exit_while_a_daemon_thread_writes_does_not_hang(tmp_path):
    path = tmp_path / "store"
    proc = run_script(f"""
        import time
        db = inmem.open(sys.argv[1], durability="buffered", flush_interval_ms=5)
        run = db.begin_run(run_id="r")
        acked = open(sys.argv[2], "w")
        def writer():
            i = 0
            try:
                while True:
                    db.kv.put(run, "n", i)
                    acked.write(f"{{i}}\\n"); acked.flush()
                    i += 1
            except inmem.InmemError:
                pass  # closed under it at exit
        threading.Thread(target=writer, daemon=True).start()
        time.sleep(0.3)
    """, path, tmp_path / "acked")
    assert proc.returncode == 0, proc.stderr
    last = int((tmp_path / "acked").read_text().split()[-1])
    with inmem.open(path, durability="buffered") as db:
        assert db.kv.get("r", "n") >= last


@pytest.mark.timeout(120)
def test_a_forked_child_that_exits_normally_leaves_the_parents_store_alone(tmp_path):
    path = tmp_path / "store"
    proc = run_script(f"""
        QUIET = {QUIET!r}
        db = inmem.open(sys.argv[1], durability="buffered", **QUIET)
        run = db.begin_run(run_id="r")
        for i in range(100):
            db.kv.put(run, f"k{{i}}", i)  # pending in memory when the child is forked
        dropped = inmem.open(sys.argv[1] + "-dropped", durability="buffered", **QUIET)
        dropped.kv.put(dropped.begin_run(run_id="d"), "k", 1)
        pid = os.fork()
        if pid == 0:
            del dropped
            gc.collect()
            sys.exit(0)  # a normal exit: the child's exit handlers run
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        for i in range(100, 200):
            db.kv.put(run, f"k{{i}}", i)
        db.close()
        dropped.close()
    """, path)
    assert proc.returncode == 0, proc.stderr
    with inmem.open(path, durability="buffered") as db:
        assert [db.kv.get("r", f"k{i}") for i in range(200)] == list(range(200))
        # Each key written once: a child's flush would have logged the first 100 twice.
        assert [db.kv.get_versioned("r", f"k{i}").version for i in (0, 99, 100)] == [1, 1, 1]
    with inmem.open(f"{path}-dropped", durability="buffered") as db:
        assert db.kv.get("d", "k") == 1


@pytest.mark.timeout(120)
def test_a_close_that_fails_at_exit_logs_one_line(tmp_path):
    path = tmp_path / "store"
    proc = run_script("""
        db = inmem.open(sys.argv[1], durability="buffered")
        db.kv.put(db.begin_run(run_id="r"), "k", 1)
        store = db._backend.store
        def broken():
            raise OSError(5, "Input/output error")
        store.flush = broken
    """, path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert str(path) in proc.stderr and "Input/output error" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    with inmem.open(path, durability="buffered"):
        pass  # the lock went with the process


def open_fds() -> int:
    return psutil.Process().num_fds()


@pytest.mark.timeout(120)
def test_dropped_stores_release_their_threads_and_descriptors(tmp_path):
    gc.collect()
    threads0, fds0 = threading.active_count(), open_fds()
    for n in range(50):
        db = inmem.open(tmp_path / f"s{n}", durability="buffered", **QUIET)
        db.kv.put(db.begin_run(run_id="r"), "k", n)
        del db
    gc.collect()
    # A few threads of the process (the huge-page gatherer) may start once and stay.
    assert threading.active_count() <= threads0 + 2, threading.enumerate()
    assert open_fds() <= fds0 + 3
    for n in (0, 25, 49):  # each dropped store flushed its WAL when it was collected
        with inmem.open(tmp_path / f"s{n}", durability="buffered") as again:
            assert again.kv.get("r", "k") == n


@pytest.mark.timeout(60)
@pytest.mark.parametrize("durability", ["buffered", "strict"])
def test_a_dropped_store_releases_its_directory_lock(tmp_path, durability):
    path = tmp_path / "store"
    db = inmem.open(path, durability=durability, **QUIET)
    run = db.begin_run(run_id="r")
    db.kv.put(run, "k", 1)
    db.kv.put_many(run, {"a": 1, "b": 2})
    with db.transaction(run) as tx:
        tx.kv.put("t", 3)
    db.self = db  # a reference cycle: only the collector frees it
    del db, tx
    gc.collect()
    with inmem.open(path, durability=durability) as again:
        assert [again.kv.get("r", k) for k in ("k", "a", "b", "t")] == [1, 1, 2, 3]


@pytest.mark.timeout(60)
def test_a_store_collected_on_its_own_flusher_thread_closes_without_deadlock(tmp_path):
    path = tmp_path / "store"
    db = inmem.open(path, durability="buffered", flush_interval_ms=5)
    db.kv.put(db.begin_run(run_id="r"), "k", 1)
    store = db._backend.store
    writer = store.writer
    real = writer.before_flush
    collected = threading.Event()

    def collect_here():
        # The collector may run on any thread; here it runs on the flusher itself.
        if not collected.is_set():
            collected.set()
            gc.collect()
        real()
    writer.before_flush = collect_here
    db.self = db
    del db, store
    collected.wait(30)
    from polling import wait_for
    wait_for(lambda: not writer._thread.is_alive(), timeout=30, what="the flusher to stop")
    with inmem.open(path, durability="buffered") as again:
        assert again.kv.get("r", "k") == 1


def test_a_store_closed_by_its_user_is_left_alone_by_the_collector(tmp_path):
    path = tmp_path / "store"
    db = inmem.open(path, durability="buffered")
    db.kv.put(db.begin_run(run_id="r"), "k", 1)
    db.close()
    other = inmem.open(path, durability="buffered")  # the directory's new owner
    del db
    gc.collect()
    other.kv.put("r", "k", 2)
    other.close()
    with inmem.open(path, durability="buffered") as again:
        assert again.kv.get("r", "k") == 2
