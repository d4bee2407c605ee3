"""A shard that cannot start: the cluster's start fails at once, saying which shard, where and why.

A shard whose data cannot be opened (a file where its wal/, snapshots/ or
history/ directory should be, ...) fails the same way on every try, so the
first start of a cluster that has one ends in a ClusterNotReady naming the
shard, the path and the cause, long before the ready timeout; `inmem serve`
says it in one line and exits non-zero. A failure a later try may not meet
(the shard's directory still locked by an old process) is retried as before,
and a start that times out says what each shard is waiting on. A shard's
directory held by an embedded store (`inmem.open` on it, in any process) is
no passing failure: the start ends at once naming the store's process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import psutil
import pytest

import inmem
from inmem.files import try_lock
from inmem.processes import child_env

from .conftest import wait_for

pytestmark = [pytest.mark.slow]

#: what a failing first start may take at most: far below the ready timeout it must not wait
QUICK_S = 15.0
READY_TIMEOUT_S = 25.0


def _stopped_cluster(make_cluster, **kwargs) -> str:
    """The data directory of a 2-shard strict cluster started once (making its shard
    directories) and stopped."""
    cluster = make_cluster(shards=2, durability="strict", **kwargs)
    cluster.stop()
    return cluster.data_dir


def _failed_start(make_cluster, data):
    """(the ClusterNotReady of a first start on `data`, the cluster): a start ended by a
    shard's failure, not by the ready timeout. The message tells them apart ("shard N
    cannot start: ..." against "... was not ready within N s"), so no clock is read."""
    cluster = make_cluster(data_dir=data, start=False, shards=2, durability="strict",
                           ready_timeout=READY_TIMEOUT_S)
    with pytest.raises(inmem.ClusterNotReady) as caught:
        cluster.start()
    err = caught.value
    assert str(err).startswith("shard ") and " cannot start: " in str(err), str(err)
    assert "not ready within" not in str(err), str(err)
    return err, cluster


def _replace_with_file(path: str) -> None:
    shutil.rmtree(path)
    with open(path, "w") as f:
        f.write("x")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ["wal", "snapshots", "history"])
def test_a_shard_directory_that_is_a_file_fails_the_start_at_once(make_cluster, name):
    data = _stopped_cluster(make_cluster)
    bad = os.path.join(data, "shard-1", name)
    _replace_with_file(bad)
    err, cluster = _failed_start(make_cluster, data)
    text = str(err)
    assert text.startswith("shard 1 cannot start: "), text
    assert f"{bad} is a file, not a directory" in text, text
    assert "\n" not in text.strip(), text
    assert (err.shard, err.path) == (1, bad)
    assert cluster.proc is None
    # Nothing was changed: the file is still there for the operator to look at.
    assert os.path.isfile(bad)


@pytest.mark.timeout(120)
def test_damage_recovery_may_not_skip_fails_the_start_at_once(make_cluster):
    cluster = make_cluster(shards=1, durability="strict")
    with cluster.connect() as db:
        run = db.begin_run()
        for i in range(100):
            db.kv.put(run, f"k{i}", "v" * 100)
    cluster.kill()  # no final snapshot: the records are in the WAL only
    wal_dir = os.path.join(cluster.data_dir, "shard-0", "wal")
    (segment,) = [os.path.join(wal_dir, n) for n in os.listdir(wal_dir)]
    with open(segment, "r+b") as f:  # one flipped byte well before the log's end
        f.seek(3000)
        byte = f.read(1)[0]
        f.seek(3000)
        f.write(bytes([byte ^ 0xFF]))
    again = make_cluster(data_dir=cluster.data_dir, start=False, shards=1, durability="strict",
                         ready_timeout=READY_TIMEOUT_S)
    t0 = time.monotonic()
    with pytest.raises(inmem.ClusterNotReady) as caught:
        again.start()
    assert time.monotonic() - t0 < QUICK_S
    err = caught.value
    assert str(err).startswith(f"shard 0 cannot start: WAL corruption in {segment}"), str(err)
    assert (err.shard, err.path, err.cause) == (0, segment, "CorruptionError")


@pytest.mark.timeout(120)
def test_a_start_that_failed_succeeds_once_the_cause_is_fixed(make_cluster):
    data = _stopped_cluster(make_cluster)
    bad = os.path.join(data, "shard-0", "wal")
    _replace_with_file(bad)
    first = make_cluster(data_dir=data, start=False, shards=2, durability="strict",
                         ready_timeout=READY_TIMEOUT_S)
    with pytest.raises(inmem.ClusterNotReady, match="shard 0 cannot start"):
        first.start()
    os.unlink(bad)
    again = make_cluster(data_dir=data, shards=2, durability="strict")
    assert again.status()["ready"] is True


@pytest.mark.timeout(120)
def test_a_shard_whose_directory_is_locked_is_retried_not_refused(make_cluster):
    """An old process still holding a shard's directory goes away: the start waits for it."""
    data = _stopped_cluster(make_cluster, restart_backoff_ms=20, restart_backoff_max_ms=100)
    fd = try_lock(os.path.join(data, "shard-1", "LOCK"))
    assert fd is not None
    cluster = make_cluster(data_dir=data, start=False, shards=2, durability="strict",
                           restart_backoff_ms=20, restart_backoff_max_ms=100)
    try:
        cluster.start(wait=False)
        wait_for(lambda: cluster.log_tail(200).count("shard 1 exited") >= 3, 30,
                 "shard 1 to fail its start three times")
        assert cluster.proc.poll() is None, cluster.log_tail()
    finally:
        os.close(fd)
    status = cluster.wait_ready(30)
    assert status["ready"] is True


@pytest.mark.timeout(120)
def test_a_start_that_times_out_says_what_each_shard_waits_on(make_cluster):
    data = _stopped_cluster(make_cluster, restart_backoff_ms=20, restart_backoff_max_ms=100)
    fd = try_lock(os.path.join(data, "shard-1", "LOCK"))
    try:
        cluster = make_cluster(data_dir=data, start=False, shards=2, durability="strict",
                               restart_backoff_ms=20, restart_backoff_max_ms=100,
                               ready_timeout=3.0)
        with pytest.raises(inmem.ClusterNotReady) as caught:
            cluster.start()
    finally:
        os.close(fd)
    text = str(caught.value)
    first = text.splitlines()[0]
    assert "was not ready within 3 s: " in first, text
    assert not first.rstrip().endswith(":"), text
    assert "shard 1" in first and "already open" in first, text


# -- inmem serve ------------------------------------------------------------------


def _serve(data: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inmem", "serve", "--data-dir", data,
                           "--shards", "2", "--durability", "strict"],
                          env=child_env(), capture_output=True, text=True, timeout=90,
                          start_new_session=True)


def _processes_in(data: str) -> list:
    """Live processes whose command line names `data` (a shard of a cluster on it)."""
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if (p.info["status"] != psutil.STATUS_ZOMBIE
                    and any(data in part for part in p.info["cmdline"] or ())):
                found.append(p)
        except psutil.Error:
            continue
    return found


@pytest.mark.timeout(150)
def test_inmem_serve_says_in_one_line_why_a_shard_cannot_start(make_cluster):
    data = _stopped_cluster(make_cluster)
    bad = os.path.join(data, "shard-1", "wal")
    _replace_with_file(bad)
    t0 = time.monotonic()
    done = _serve(data)
    took = time.monotonic() - t0
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert took < 45, f"serve took {took:.1f} s to give up on a shard that cannot start"
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (f"inmem serve: ClusterNotReady: shard 1 cannot start: {bad} is a "
                         "file, not a directory"), done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert _processes_in(data) == []


# -- after the cluster was ready ----------------------------------------------------

FAST_RESTARTS = {"restart_backoff_ms": 50, "restart_backoff_max_ms": 400}


def _break_a_serving_shard(cluster, db) -> tuple[str, str]:
    """Make shard 1's wal/ a file under the running shard, then kill it: every restart then
    fails at start-up. Returns (a run on shard 1, the wal path)."""
    from .conftest import runs_on_each_shard
    run = runs_on_each_shard(db, 2, prefix="broken")[1][0]
    db.begin_run(run_id=run)
    db.kv.put(run, "kept", 1)
    wal = os.path.join(cluster.data_dir, "shard-1", "wal")
    os.rename(wal, wal + ".aside")  # the live shard keeps its open segment
    with open(wal, "w") as f:
        f.write("x")
    os.kill(cluster.pids()["shards"][1], 9)
    wait_for(lambda: cluster.status()["shards"][1]["start_failures"] >= 2, 30,
             "shard 1's restarts to fail twice")
    return run, wal


def _inmem_status(cluster, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inmem", "status", "--endpoint",
                           cluster.endpoint, "--timeout", "20", *args], env=child_env(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(120)
def test_a_shard_whose_restarts_fail_is_shown_down_with_why(make_cluster):
    cluster = make_cluster(shards=2, durability="strict", **FAST_RESTARTS)
    db = cluster.connect(timeout=10, request_timeout=20)
    routed = cluster.connect(timeout=10, request_timeout=20, direct=False)
    run, wal = _break_a_serving_shard(cluster, db)
    reason = f"{wal} is a file, not a directory"
    # Down at every look, between tries and during them, the cluster still serving shard 0.
    restarts = set()
    for _ in range(20):
        status = cluster.status()
        entry = status["shards"][1]
        assert (status["ready"], entry["state"], entry["last_error"]) == (False, "down", reason)
        assert status["shards"][0]["state"] == "ready"
        restarts.add(entry["restarts"])
        time.sleep(0.05)
    wait_for(lambda: cluster.status()["shards"][1]["restarts"] > max(restarts), 30,
             "another restart: the shard is tried again")
    info = db.info()["shards"][1]
    assert (info["state"], info["last_error"]) == ("down", reason)

    t0 = time.monotonic()
    with pytest.raises(inmem.ShardUnavailable) as caught:
        routed.kv.put(run, "more", 2)
    assert time.monotonic() - t0 < 10, "the request waited for its timeout"
    assert "shard 1 is down: its restarts fail at start-up" in str(caught.value)
    assert reason in str(caught.value)

    shown = _inmem_status(cluster)
    assert shown.returncode == 1, shown
    (line,) = [l for l in shown.stdout.splitlines() if l.startswith("  shard 1:")]
    assert f"last error: {reason}" in line, line
    as_json = _inmem_status(cluster, "--json")
    assert as_json.returncode == 1, as_json
    doc = __import__("json").loads(as_json.stdout)
    assert (doc["shards"][1]["state"], doc["shards"][1]["last_error"]) == ("down", reason)
    assert doc["shards"][1]["start_failures"] >= 2

    # Fixed: the next try recovers what the shard had acknowledged.
    os.unlink(wal)
    os.rename(wal + ".aside", wal)
    wait_for(lambda: cluster.status()["ready"], 30, "shard 1 to come back")
    entry = cluster.status()["shards"][1]
    assert (entry["state"], entry["last_error"], entry["start_failures"]) == ("ready", None, 0)
    assert routed.kv.get(run, "kept") == 1


@pytest.mark.timeout(120)
def test_a_direct_request_to_a_shard_whose_restarts_fail_names_why(make_cluster):
    cluster = make_cluster(shards=2, durability="strict", **FAST_RESTARTS)
    db = cluster.connect(timeout=10, request_timeout=20)
    run, wal = _break_a_serving_shard(cluster, db)
    with pytest.raises(inmem.ShardUnavailable) as caught:
        db.kv.put(run, "more", 2)
    assert f"{wal} is a file, not a directory" in str(caught.value)


# -- permissions ----------------------------------------------------------------------


@pytest.fixture
def immutable():
    """Make files immutable (chattr +i: not even root may write them), undone at the end."""
    made = []

    def make(path: str) -> None:
        done = subprocess.run(["chattr", "+i", path], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")
        made.append(path)

    yield make
    for path in made:
        subprocess.run(["chattr", "-i", path], check=True)


@pytest.mark.timeout(120)
def test_a_shard_file_this_user_may_not_write_fails_the_start_at_once(make_cluster,
                                                                      immutable):
    data = _stopped_cluster(make_cluster)
    lock = os.path.join(data, "shard-1", "LOCK")
    immutable(lock)
    err, cluster = _failed_start(make_cluster, data)
    assert str(err).startswith(
        f"shard 1 cannot start: permission denied on {lock}: this user (uid {os.geteuid()}) "
        "may not use it"), str(err)
    assert err.path == lock


@pytest.mark.timeout(120)
def test_a_data_directory_lock_this_user_may_not_write_is_one_clear_error(make_cluster,
                                                                          immutable):
    data = _stopped_cluster(make_cluster)
    lock = os.path.join(data, "coordinator.lock")
    immutable(lock)
    cluster = make_cluster(data_dir=data, start=False, shards=2, durability="strict")
    with pytest.raises(inmem.InmemError) as caught:
        cluster.start()
    assert str(caught.value).startswith(f"permission denied on {lock}"), str(caught.value)
    done = _serve(data)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.strip().splitlines()[-1].startswith(
        f"inmem serve: permission denied on {lock}"), done.stderr


@pytest.mark.timeout(120)
def test_a_coordinator_that_cannot_start_says_why_without_its_traceback(make_cluster, tmp_path):
    from inmem import keys as keyfiles
    keyfiles.generate(tmp_path / "keys", 1)
    os.unlink(tmp_path / "keys" / "coordinator.key_secret")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(inmem.ClusterNotReady) as caught:
        make_cluster(shards=1, durability="inmemory", endpoint=f"tcp://127.0.0.1:{port}",
                     keys=str(tmp_path / "keys"), ready_timeout=20)
    err = caught.value
    assert str(err) == (f"no key file {tmp_path}/keys/coordinator.key_secret; `inmem keys "
                        "generate` writes it"), str(err)
    assert err.cause == "ConfigError"


@pytest.mark.timeout(120)
def test_a_shard_directory_held_by_an_embedded_store_fails_the_start_at_once(make_cluster):
    data = _stopped_cluster(make_cluster)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, inmem; db = inmem.open(sys.argv[1]); "
         "print('open', flush=True); sys.stdin.read()", os.path.join(data, "shard-1")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert holder.stdout.readline().strip() == "open"
        err, cluster = _failed_start(make_cluster, data)
    finally:
        holder.stdin.close()
        holder.wait(30)
    text = str(err)
    assert text.startswith("shard 1 cannot start: "), text
    assert f"already open by an embedded store in process {holder.pid}" in text, text
    assert err.shard == 1
    # Closed, the directory is the shard's again.
    again = make_cluster(data_dir=data, shards=2, durability="strict")
    assert again.status()["ready"] is True


@pytest.mark.timeout(120)
def test_a_missing_shard_directory_of_a_cluster_that_served_fails_the_start(make_cluster):
    """A disk not mounted, or a restore that left a shard out: starting the shard empty would
    serve without its runs and take new writes under their ids."""
    cluster = make_cluster(shards=2, durability="strict")
    with cluster.connect() as db:
        runs = [db.begin_run() for _ in range(10)]
        for run in runs:
            db.kv.put(run, "k", run)
    cluster.stop()
    data = cluster.data_dir
    missing = os.path.join(data, "shard-1")
    os.rename(missing, missing + ".away")
    err, again = _failed_start(make_cluster, data)
    assert str(err).startswith(f"shard 1 cannot start: its directory {missing} is missing"), err
    assert (err.shard, err.path) == (1, missing)
    assert not os.path.exists(missing)  # nothing made in its place
    # Restored, every run is there again.
    os.rename(missing + ".away", missing)
    back = make_cluster(data_dir=data, shards=2, durability="strict")
    with back.connect() as db:
        assert [db.kv.get(run, "k") for run in runs] == runs
    back.stop()
    # An operator who means to start the shard empty makes its directory.
    shutil.rmtree(missing)
    os.mkdir(missing)
    empty = make_cluster(data_dir=data, shards=2, durability="strict")
    with empty.connect() as db:
        assert sum(db.run_status(run) == "not_found" for run in runs) > 0


@pytest.mark.timeout(120)
def test_a_first_start_that_failed_leaves_no_slot_map_to_call_it_served(make_cluster, tmp_path):
    # The slot map was saved once the coordinator bound its endpoints, before the shards had
    # recovered: a first start ended by a shard ("shard-1 is a file") left it, and the start
    # after the cause was removed said shard 1's directory was missing "though this data
    # directory has served with it", which it never had.
    data = str(tmp_path / "data")
    os.mkdir(data)
    open(os.path.join(data, "shard-1"), "w").close()
    err, _ = _failed_start(make_cluster, data)
    assert "is a file, not a directory" in str(err), err
    assert not os.path.exists(os.path.join(data, "slotmap.json"))
    os.unlink(os.path.join(data, "shard-1"))
    again = make_cluster(data_dir=data, shards=2, durability="strict")
    assert again.status()["ready"] is True
    assert os.path.isfile(os.path.join(data, "slotmap.json"))  # saved once it was ready


@pytest.mark.timeout(120)
def test_an_inmemory_cluster_starts_again_on_its_data_directory(make_cluster, tmp_path):
    # An inmemory shard makes no directory, so once the first start had saved the slot map
    # every later start on the directory (`inmem serve --durability inmemory` run twice)
    # ended at once: "shard 0 cannot start: its directory ... is missing, though this data
    # directory has served with it".
    # Its slot map is not kept either (its shards keep nothing to route to), so a later
    # durable start on the directory is a first one, not one missing every shard.
    data = str(tmp_path / "data")
    first = make_cluster(data_dir=data, shards=2, durability="inmemory")
    first.stop()
    assert not os.path.exists(os.path.join(data, "slotmap.json"))
    again = make_cluster(data_dir=data, shards=3, durability="inmemory")
    assert again.status()["ready"] is True
    again.kill()
    durable = make_cluster(data_dir=data, shards=2, durability="buffered")
    with durable.connect() as db:
        assert db.kv.put(db.begin_run(), "k", 1) == 1
    durable.stop()
    # On a directory that has served durably, an inmemory start (which starts empty, and
    # says so) needs no shard directory either.
    shutil.rmtree(os.path.join(data, "shard-1"))
    once_more = make_cluster(data_dir=data, shards=2, durability="inmemory")
    with once_more.connect() as db:
        assert db.kv.put(db.begin_run(), "k", 1) == 1
