"""Closing a cluster Database while other threads (or asyncio tasks) are calling it.

Every other thread's call, in flight when close() runs or made after it,
ends with the closed error (InmemError "the database is closed...") or,
for one already answered, its result; nothing aborts the process or hangs,
and close() itself returns promptly. That holds for a call waiting on a
shard that does not answer (stopped with SIGSTOP), whose 60 s timeout is
never waited for. The race runs in a child process, so that an abort inside
ZeroMQ (SIGABRT) shows as a failed return code rather than killing the test
run, and is repeated to make it reliable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import runs_on_each_shard

pytestmark = [pytest.mark.slow]

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_ROOT = os.path.dirname(_TESTS)

#: how long close() or a thread may take before it counts as hung (a hang detector only)
HANG_S = 20.0

TRANSPORTS = {
    "stream": {"direct": True, "stream": True},
    "zeromq": {"direct": True, "stream": False},
    "proxied": {"direct": False, "stream": True},
    "proxied-zeromq": {"direct": False, "stream": False},
}


def _child(url: str, options: dict, runs: list, stalled: list, victim: int | None,
           iterations: int) -> None:
    """The race, in a process of its own: one JSON line per iteration on stdout.

    With `stalled` runs (on the shard whose pid is `victim`), one thread's
    call waits for a reply that does not come: the shard is stopped once that
    thread's connection to it is up, and continued after the iteration.
    """
    import random
    import threading
    import time

    import inmem

    rng = random.Random(1234)
    hung = False
    for i in range(iterations):
        db = inmem.connect(url, request_timeout=60.0, **options)
        outcomes: dict = {}
        started = threading.Barrier(2)
        stopped = threading.Event()

        def hammer(name, step):
            n = 0
            try:
                while True:
                    step(n)
                    n += 1
            except inmem.InmemError as exc:
                outcomes[name] = [type(exc).__name__, str(exc), n]
            except BaseException as exc:  # the test fails on these
                outcomes[name] = ["unexpected " + type(exc).__name__, repr(exc), n]

        def pipeline(n):
            p = db.pipeline()
            for k in range(64):
                p.kv.put(runs[k % len(runs)], f"p{k}", n)
            p.execute(raise_on_error=True)

        def stalled_put(n):
            if n == 0:
                db.kv.put(stalled[0], "warm", i)  # connected before the shard stops
                started.wait(HANG_S)
                stopped.wait(HANG_S)
            db.kv.put(stalled[0], "stalled", n)

        steps = {
            "put": lambda n: db.kv.put(runs[0], f"k{n % 50}", n),
            "get": lambda n: db.kv.get(runs[-1], f"k{n % 50}"),
            "spread": lambda n: db.kv.put(runs[n % len(runs)], "s", n),
            "pipeline": pipeline,
            "info": lambda n: db.info(),
        }
        if stalled:
            steps["stalled"] = stalled_put
        threads = [threading.Thread(target=hammer, args=(name, step), daemon=True)
                   for name, step in steps.items()]
        for t in threads:
            t.start()
        if stalled:
            started.wait(HANG_S)
            os.kill(victim, signal.SIGSTOP)
            stopped.set()
            time.sleep(0.3)  # the stalled put is then surely waiting for its reply
        else:
            time.sleep(rng.uniform(0.0, 0.15))
        t0 = time.monotonic()
        db.close()
        close_s = time.monotonic() - t0
        # A thread whose first call comes only after close().
        late = threading.Thread(target=hammer, args=("late", steps["put"]), daemon=True)
        late.start()
        threads.append(late)
        end = time.monotonic() + HANG_S
        for t in threads:
            t.join(max(end - time.monotonic(), 0))
        alive = [t.name for t in threads if t.is_alive()]
        if stalled:
            os.kill(victim, signal.SIGCONT)
        hung = hung or bool(alive) or close_s > HANG_S
        print(json.dumps({"iteration": i, "close_s": close_s, "outcomes": outcomes,
                          "alive": len(alive)}), flush=True)
        if alive:
            break
    if hung:
        os._exit(3)  # not through interpreter exit with threads still inside the client


def _async_child(url: str, options: dict, runs: list, stalled: list, victim: int,
                 iterations: int) -> None:
    """The same race for the asyncio client: tasks calling while close() is awaited."""
    import asyncio
    import random
    import time

    import inmem
    import inmem.asyncio

    rng = random.Random(1234)

    async def iteration(i):
        db = await inmem.asyncio.connect(url, request_timeout=60.0, **options)
        await db.kv.put(stalled[0], "warm", i)  # connected before the shard stops
        outcomes: dict = {}

        async def hammer(name, step):
            n = 0
            try:
                while True:
                    await step(n)
                    n += 1
            except inmem.InmemError as exc:
                outcomes[name] = [type(exc).__name__, str(exc), n]
            except BaseException as exc:  # the test fails on these
                outcomes[name] = ["unexpected " + type(exc).__name__, repr(exc), n]

        async def pipeline(n):
            p = db.pipeline()
            for k in range(64):
                p.kv.put(runs[k % len(runs)], f"p{k}", n)
            await p.execute(raise_on_error=True)

        async def many(n):
            await asyncio.gather(*(db.kv.put(runs[k % len(runs)], f"m{k}", n)
                                   for k in range(100)))

        steps = {
            "put": lambda n: db.kv.put(runs[0], f"k{n % 50}", n),
            "get": lambda n: db.kv.get(runs[-1], f"k{n % 50}"),
            "pipeline": pipeline,
            "many": many,
            "info": lambda n: db.info(),
            "stalled": lambda n: db.kv.put(stalled[0], "stalled", n),
        }
        os.kill(victim, signal.SIGSTOP)
        try:
            tasks = [asyncio.create_task(hammer(name, step)) for name, step in steps.items()]
            await asyncio.sleep(rng.uniform(0.05, 0.2))
            t0 = time.monotonic()
            await asyncio.wait_for(db.close(), HANG_S)
            close_s = time.monotonic() - t0
            tasks.append(asyncio.create_task(hammer("late", steps["put"])))
            done, waiting = await asyncio.wait(tasks, timeout=HANG_S)
        finally:
            os.kill(victim, signal.SIGCONT)
        print(json.dumps({"iteration": i, "close_s": close_s, "outcomes": outcomes,
                          "alive": len(waiting)}), flush=True)
        return not waiting

    async def main():
        for i in range(iterations):
            if not await iteration(i):
                return False
        return True

    if not asyncio.run(main()):
        os._exit(3)


def _race(url: str, transport: str, runs: list, stalled: list = (), victim: int | None = None,
          iterations: int = 20, child: str = "_child"):
    code = ("import sys; sys.path[:0] = [%r, %r]; import cluster.test_close_while_calling as t; "
            "t.%s(%r, %r, %r, %r, %r, %d)" % (_ROOT, _TESTS, child, url, TRANSPORTS[transport],
                                              list(runs), list(stalled), victim, iterations))
    try:
        # (within the tests' own timeout, so that the child is ended here if it hangs)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=240)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the child hung: {exc.stdout!s:.2000} {exc.stderr!s:.2000}")
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, (
        f"the child ended with {proc.returncode} "
        f"({signal.Signals(-proc.returncode).name if proc.returncode < 0 else 'exit'}) after "
        f"{len(lines)} iterations; stderr: {proc.stderr[-3000:]}; last: {lines[-1:]}")
    assert len(lines) == iterations
    for line in lines:
        assert line["close_s"] < HANG_S, line
        assert line["alive"] == 0, line
        for name, (kind, message, _calls) in line["outcomes"].items():
            assert kind == "InmemError" and message.startswith("the database is closed"), \
                (name, kind, message, line["iteration"])
    return lines


@pytest.fixture(scope="module")
def busy_cluster(tmp_path_factory):
    import inmem
    cluster = inmem.Cluster(data_dir=tmp_path_factory.mktemp("close-race"), shards=2,
                            durability="inmemory", ready_timeout=45.0)
    cluster.start()
    try:
        db = cluster.connect()
        runs = [r for rs in runs_on_each_shard(db, 2, per_shard=2, prefix="race").values()
                for r in rs]
        for r in runs:
            db.begin_run(run_id=r)
        db.close()
        yield cluster, runs
    finally:
        cluster.stop(timeout=20)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_close_while_other_threads_call_ends_their_calls_with_the_closed_error(busy_cluster,
                                                                                transport):
    cluster, runs = busy_cluster
    lines = _race(cluster.endpoint, transport, runs)
    # The threads were calling when close() came (not all ended before it).
    assert sum(c for line in lines for _, _, c in line["outcomes"].values()) > 0


@pytest.mark.timeout(300)
def _race_with_a_stopped_shard(make_cluster, transport, prefix, **race):
    """`_race` with shard 0 stopped (SIGSTOP) for the calls to its runs; continued after."""
    cluster = make_cluster(shards=2, durability="inmemory")
    db = cluster.connect()
    ids = runs_on_each_shard(db, 2, per_shard=2, prefix=prefix)
    for r in ids[0] + ids[1]:
        db.begin_run(run_id=r)
    db.close()
    victim = cluster.pids()["shards"][0]
    try:
        return _race(cluster.endpoint, transport, ids[1], stalled=ids[0], victim=victim, **race)
    finally:
        os.kill(victim, signal.SIGCONT)


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_close_interrupts_a_call_waiting_on_a_stopped_shard(make_cluster, transport):
    # A call whose shard does not answer would wait for its 60 s deadline;
    # close() ends it at once instead.
    lines = _race_with_a_stopped_shard(make_cluster, transport, "stall", iterations=4)
    for line in lines:
        assert line["outcomes"]["stalled"][2] == 0, line  # it never had an answer


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_asyncio_close_ends_the_calls_of_every_task_with_the_closed_error(make_cluster,
                                                                          transport):
    lines = _race_with_a_stopped_shard(make_cluster, transport, "aio", iterations=20,
                                       child="_async_child")
    for line in lines:
        assert line["outcomes"]["stalled"][2] == 0, line


_EXIT_WHILE_CALLING = r"""
import sys, threading, time
import inmem

url, options, runs = sys.argv[1], eval(sys.argv[2]), eval(sys.argv[3])
db = inmem.connect(url, **options)
calls = [0] * 4

def hammer(i):
    run = runs[i % len(runs)]
    while True:
        db.kv.put(run, f"k{i}", i)
        db.kv.get(run, f"k{i}")
        calls[i] += 1

for i in range(4):
    threading.Thread(target=hammer, args=(i,), daemon=True).start()
while sum(calls) < 200:
    time.sleep(0.001)
# The main thread ends without close(): the client's exit-time clean-up runs while
# the daemon threads are inside calls.
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_an_exit_while_daemon_threads_are_calling_ends_cleanly(busy_cluster, transport):
    cluster, runs = busy_cluster
    for _ in range(6):
        done = subprocess.run([sys.executable, "-c", _EXIT_WHILE_CALLING, cluster.endpoint,
                               repr(TRANSPORTS[transport]), repr(runs)],
                              capture_output=True, text=True, timeout=HANG_S * 3)
        assert done.returncode == 0, done.stderr[-2000:]
