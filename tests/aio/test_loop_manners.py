"""The asyncio cluster client's manners towards the event loop it lives in.

What asyncio itself reports about a library that leaves things behind: a
task whose exception nobody retrieved (logged through the loop's exception
handler when the task is collected), an asyncio transport collected unclosed
(ResourceWarning), a socket of one loop touched from another thread. Each
test makes the situation with real coordinator and shard processes, then
collects garbage and looks at what the loop and the warnings saw.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import uuid
import warnings

import pytest

import inmem
import inmem.asyncio
from inmem.protocol import slot_of

pytestmark = pytest.mark.slow


@pytest.fixture(params=["stream", "zmq"])
def stream(request):
    return request.param == "stream"


def _run_on(owners, shard: int) -> str:
    prefix = uuid.uuid4().hex[:8]
    return next(r for r in (f"{prefix}-{i}" for i in range(10_000))
                if owners[slot_of(r)] == shard)


def _record_loop_errors() -> list:
    """Collect what the running loop's exception handler is given (each a context dict)."""
    seen: list = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
    return seen


def _messages(seen: list) -> list:
    return [f"{ctx.get('message')}: {ctx.get('exception')!r}" for ctx in seen]


def _continue(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


@pytest.mark.timeout(120)
def test_calls_cancelled_while_a_dead_shard_is_dialled_leave_no_unretrieved_error(tmp_path,
                                                                                   stream):
    # An agent framework cancels calls (wait_for, task groups) all the time; a
    # connection attempt shared by the calls that found the shard's connection
    # missing must not be left failing with nobody to hear it.
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2, durability="inmemory",
                       restart_backoff_ms=60_000,
                       restart_backoff_max_ms=60_000) as cluster:
        async def main():
            seen = _record_loop_errors()
            db = await inmem.asyncio.connect(cluster.endpoint, stream=stream,
                                             request_timeout=2)
            run = _run_on(db._backend.owners, 0)
            await db.begin_run(run_id=run)
            os.kill(cluster.pids()["shards"][0], signal.SIGKILL)
            # The connection to the dead shard breaks; the next call dials it again.
            with pytest.raises(inmem.ShardUnavailable):
                await db.kv.put(run, "k", 0)
            for turns in range(4):
                for _ in range(5):
                    call = asyncio.create_task(db.kv.put(run, "k", 1))
                    for _ in range(turns):
                        await asyncio.sleep(0)
                    call.cancel()
                    with pytest.raises((asyncio.CancelledError, inmem.InmemError)):
                        await call
            await asyncio.sleep(0.3)
            await db.close()
            del db  # what it holds is collected, and any unretrieved error logged
            gc.collect()
            await asyncio.sleep(0)
            assert _messages(seen) == []
        asyncio.run(main())


@pytest.mark.timeout(120)
def test_a_call_cancelled_while_its_shard_is_asked_after_and_then_close_leave_no_error(
        tmp_path, stream):
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2, durability="inmemory",
                       heartbeat_timeout_s=60) as cluster:
        pids = cluster.pids()
        try:
            async def main():
                seen = _record_loop_errors()
                db = await inmem.asyncio.connect(cluster.endpoint, stream=stream,
                                                 request_timeout=30)
                run = _run_on(db._backend.owners, 0)
                await db.begin_run(run_id=run)
                # Neither the shard nor the coordinator answers: a late call asks
                # the coordinator after its shard, and that question waits too.
                os.kill(pids["shards"][0], signal.SIGSTOP)
                os.kill(pids["coordinator"], signal.SIGSTOP)
                call = asyncio.create_task(db.kv.put(run, "k", 1))
                await asyncio.sleep(0.8)
                assert not call.done()
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
                await db.close()
                await asyncio.sleep(0.1)
                del db  # what it holds is collected, and any unretrieved error logged
                gc.collect()
                await asyncio.sleep(0)
                assert _messages(seen) == []
            asyncio.run(main())
        finally:
            _continue(pids["shards"][0])
            _continue(pids["coordinator"])


def test_a_database_closed_or_dropped_after_its_loop_ended_leaves_no_unclosed_transport(
        tmp_path, stream):
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2,
                       durability="inmemory") as cluster:
        async def first():
            db = await inmem.asyncio.connect(cluster.endpoint, stream=stream)
            run = await db.begin_run()
            assert await db.kv.put(run, "k", 1) == 1
            return db

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            closed = asyncio.run(first())
            dropped = asyncio.run(first())

            async def second():
                await closed.close()
            asyncio.run(second())
            closed = dropped = None  # noqa: F841 (the second one is never closed)
            gc.collect()
        assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.timeout(120)
def test_close_from_another_thread_is_done_by_the_loop_that_owns_the_connection(tmp_path,
                                                                                stream):
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=1, durability="inmemory",
                       heartbeat_timeout_s=60) as cluster:
        victim = cluster.pids()["shards"][0]
        ready, finished = threading.Event(), threading.Event()
        box: dict = {}

        def owner():
            async def main():
                loop = asyncio.get_running_loop()
                loop.set_debug(True)  # refuses loop calls made from another thread
                box["seen"] = _record_loop_errors()
                db = box["db"] = await inmem.asyncio.connect(cluster.endpoint, stream=stream,
                                                             request_timeout=60)
                run = await db.begin_run()
                os.kill(victim, signal.SIGSTOP)
                call = asyncio.create_task(db.kv.put(run, "k", 1))
                await asyncio.sleep(0.1)
                ready.set()
                try:
                    await call
                except BaseException as exc:  # noqa: BLE001 (handed to the test's thread)
                    box["call"] = exc
                await asyncio.to_thread(finished.wait, 60)
                box["left"] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            try:
                asyncio.run(main())
            except BaseException as exc:  # noqa: BLE001
                box["failed"] = exc
                ready.set()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            thread = threading.Thread(target=owner)
            thread.start()
            try:
                assert ready.wait(60)
                assert "failed" not in box, box.get("failed")

                async def elsewhere():
                    await box["db"].close()
                asyncio.run(elsewhere())
            finally:
                finished.set()
                thread.join(60)
                _continue(victim)
            box.pop("db", None)
            gc.collect()
        assert "failed" not in box, box["failed"]
        err = box["call"]
        assert type(err) is inmem.InmemError and "closed" in str(err), repr(err)
        assert box["left"] == []
        assert _messages(box["seen"]) == []
        assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_a_close_that_is_cancelled_still_releases_the_connection(tmp_path, stream):
    # `await asyncio.wait_for(db.close(), t)` in a shutdown path: the close
    # may be cancelled part way, and the next close() must not find nothing to do.
    with inmem.Cluster(data_dir=str(tmp_path / "c"), shards=2,
                       durability="inmemory") as cluster:
        async def main():
            seen = _record_loop_errors()
            db = await inmem.asyncio.connect(cluster.endpoint, stream=stream)
            run = await db.begin_run()
            assert await db.kv.put(run, "k", 1) == 1
            backend = db._backend
            socks = [c.sock for c in backend._channels] + [s for _, s in backend._streams]
            closing = asyncio.create_task(db.close())
            await asyncio.sleep(0)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            await db.close()
            with pytest.raises(inmem.InmemError, match="closed"):
                await db.kv.get(run, "k")
            assert [s for s in socks if not (s.closed if hasattr(s, "closed")
                                              else s.fileno() == -1)] == []
            assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
            assert _messages(seen) == []
        asyncio.run(main())
