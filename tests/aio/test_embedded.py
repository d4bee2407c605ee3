"""The embedded AsyncDatabase: durable waits off the event loop, shared fsyncs, asyncio manners.

The API suite already runs every behaviour against `inmem.asyncio` (the
`async-*` backends); these are what only an asyncio store has.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import inmem
import inmem.asyncio
import inmem.wal.writer as writer_mod


def _gate_fsyncs(monkeypatch):
    """Hold every WAL fsync until `release` is set; count them; `entered` once one waits."""
    entered, release = threading.Event(), threading.Event()
    calls: list = []
    real = writer_mod._os_fsync

    def gated(fd):
        calls.append(fd)
        entered.set()
        release.wait(30)
        real(fd)
    monkeypatch.setattr(writer_mod, "_os_fsync", gated)
    return entered, release, calls


async def _until(event: threading.Event) -> None:
    for _ in range(3000):
        if event.is_set():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the event was never set")


def test_a_strict_write_waits_for_its_fsync_without_holding_the_loop(tmp_path, monkeypatch):
    async def main():
        db = await inmem.asyncio.open(tmp_path / "s", "strict")
        run = await db.begin_run()
        entered, release, calls = _gate_fsyncs(monkeypatch)
        put = asyncio.create_task(db.kv.put(run, "k", 1))
        await _until(entered)  # its fsync has begun and is held
        # The loop is free: other calls (reads, and writes that queue for the
        # next fsync) are served meanwhile; the put is still unacknowledged.
        assert await db.kv.get(run, "k") == 1
        assert await db.run_status(run) == "active"
        others = [asyncio.create_task(db.kv.put(run, f"o{i}", i)) for i in range(100)]
        await asyncio.sleep(0.05)
        assert not put.done() and not any(t.done() for t in others)
        held = len(calls)
        release.set()
        assert await put == 1
        assert await asyncio.gather(*others) == [1] * 100
        # The 100 writes queued behind the held fsync shared one more.
        assert len(calls) - held <= 2, calls
        await db.close()
        db = await inmem.asyncio.open(tmp_path / "s", "strict")
        assert await db.kv.get_many(run, [f"o{i}" for i in range(100)]) == list(range(100))
        await db.close()
    asyncio.run(main())


def test_a_failed_fsync_reaches_every_writer_of_its_group(tmp_path, monkeypatch):
    async def main():
        db = await inmem.asyncio.open(tmp_path / "f", "strict")
        run = await db.begin_run()

        def eio(fd):
            raise OSError(5, "Input/output error")
        monkeypatch.setattr(writer_mod, "_os_fsync", eio)
        results = await asyncio.gather(*(db.kv.put(run, f"k{i}", i) for i in range(20)),
                                       return_exceptions=True)
        assert all(isinstance(r, inmem.DurabilityError) for r in results), results
        with pytest.raises(inmem.DurabilityError):
            await db.kv.put(run, "after", 1)
        monkeypatch.undo()
        await db.close()
    asyncio.run(main())


def test_a_cancelled_strict_write_still_lands_and_the_store_goes_on(tmp_path, monkeypatch):
    async def main():
        db = await inmem.asyncio.open(tmp_path / "c", "strict")
        run = await db.begin_run()
        entered, release, _calls = _gate_fsyncs(monkeypatch)
        put = asyncio.create_task(db.kv.put(run, "k", "v"))
        await _until(entered)
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        release.set()
        # Applied before its wait was cancelled: the write stands, as in the
        # blocking store when its caller gives up waiting.
        assert await db.kv.put(run, "k", "w") == 2
        assert await db.kv.get(run, "k") == "w"
        await db.close()
    asyncio.run(main())


@pytest.mark.parametrize("durability", ["inmemory", "buffered", "strict"])
def test_gathered_writes_all_land_with_their_own_versions(tmp_path, durability):
    async def main():
        path = None if durability == "inmemory" else tmp_path / durability
        async with await inmem.asyncio.open(path, durability) as db:
            run = await db.begin_run()
            versions = await asyncio.gather(*(db.kv.put(run, "hot", i) for i in range(500)))
            assert sorted(versions) == list(range(1, 501))
            got = await asyncio.gather(*(db.kv.get(run, "hot") for _ in range(10)))
            assert got == [versions.index(500)] * 10
    asyncio.run(main())


def test_open_is_awaited_and_refuses_what_inmem_open_refuses(tmp_path):
    async def main():
        with pytest.raises(inmem.InvalidOption):
            await inmem.asyncio.open(tmp_path / "x", "strict", no_such_option=1)
        (tmp_path / "file").write_text("x")
        with pytest.raises(inmem.StoreOpenError):
            await inmem.asyncio.open(tmp_path / "file", "buffered")
        db = await inmem.asyncio.open(None)
        assert repr(db) == "<inmem.AsyncDatabase embedded inmemory>"
        await db.close()
        with pytest.raises(inmem.InmemError, match="closed"):
            await db.kv.get("r", "k")
    asyncio.run(main())


def test_async_functions_drive_transactions_and_transitions():
    async def main():
        db = await inmem.asyncio.open(None)
        run = await db.begin_run()
        await db.kv.put(run, "n", 1)

        async def bump(tx):
            n = await tx.kv.get("n")
            await tx.kv.put("n", n + 1)
            await tx.events.append("bumped", {"to": n + 1})
            return n + 1
        assert await db.run_transaction(run, bump) == 2
        assert await db.kv.get(run, "n") == 2
        assert (await db.events.head(run)).payload == {"to": 2}

        await db.state.init(run, "cell", 10)

        async def double(state):
            await asyncio.sleep(0)
            return state.value * 2, "doubled"
        assert await db.state.transition(run, "cell", double) == ("doubled", 2)
        assert (await db.state.read(run, "cell")).value == 20

        async with db.transaction(run) as tx:
            await tx.json.put("doc", {"a": [1]})
            await tx.json.array_push("doc", "$.a", 2)
            assert await tx.json.get("doc", "$.a") == [1, 2]
        assert await db.json.get(run, "doc") == {"a": [1, 2]}

        with pytest.raises(TypeError, match="async with"):
            with db.transaction(run):
                pass
        with pytest.raises(TypeError, match="async with"):
            with db.pipeline():
                pass
        async with db.pipeline() as p:
            p.kv.put(run, "p", 1)
            p.traces.record(run, "thought", {"t": 1})
        assert await db.kv.get(run, "p") == 1
        await db.close()
    asyncio.run(main())


def test_conflicting_async_transactions_retry_until_each_lands():
    async def main():
        db = await inmem.asyncio.open(None)
        run = await db.begin_run()
        await db.kv.put(run, "n", 0)

        async def incr(tx):
            n = await tx.kv.get("n")
            await asyncio.sleep(0)  # let the others read the same n
            await tx.kv.put("n", n + 1)
        await asyncio.gather(*(db.run_transaction(run, incr, retries=100) for _ in range(20)))
        assert await db.kv.get(run, "n") == 20
        await db.close()
    asyncio.run(main())


@pytest.mark.parametrize("durability", ["inmemory", "buffered", "strict"])
def test_an_agent_calling_in_a_loop_lets_the_other_agents_run_and_can_be_cancelled(
        tmp_path, durability):
    # Calls that need no fsync complete without waiting for anything; an agent
    # that makes them one after another must still give the loop back now and
    # then, or every other agent of the loop (and its cancellation) waits
    # until it stops by itself, which a polling agent never does.
    calls = 20_000

    async def main():
        path = None if durability == "inmemory" else tmp_path / durability
        async with await inmem.asyncio.open(path, durability) as db:
            run = await db.begin_run()
            await db.kv.put(run, "tick", -1)
            done: list = []

            async def busy():
                for n in range(calls):
                    # Reads: a strict store's writes wait for their fsync anyway.
                    await db.kv.get(run, "tick")
                    done.append(n)

            async def watcher():
                seen = len(done)
                worker.cancel()  # as a supervisor giving up on a stuck agent
                return seen

            worker = asyncio.create_task(busy())
            seen = await asyncio.create_task(watcher())
            with pytest.raises(asyncio.CancelledError):
                await worker
            assert seen < calls
            assert len(done) < calls
    asyncio.run(main())


def test_an_open_that_is_cancelled_leaves_the_store_closed_and_free_to_open(tmp_path,
                                                                            monkeypatch):
    # Recovery runs in a worker thread and goes on whatever the awaiting task
    # does; what it opens for a caller that gave up (wait_for) must be closed,
    # not left holding the directory for the rest of the process.
    import inmem.shard.durable as durable_mod
    path = tmp_path / "s"

    async def fill():
        async with await inmem.asyncio.open(path, "strict") as db:
            run = await db.begin_run(run_id="r")
            await db.kv.put(run, "k", "v")
    asyncio.run(fill())
    entered, release, opened = threading.Event(), threading.Event(), threading.Event()
    real_open = durable_mod.DurableStore.open

    def slow_open(*args, **kwargs):
        entered.set()
        release.wait(30)
        try:
            return real_open(*args, **kwargs)
        finally:
            opened.set()
    monkeypatch.setattr(durable_mod.DurableStore, "open", staticmethod(slow_open))

    async def main():
        opening = asyncio.create_task(inmem.asyncio.open(path, "strict"))
        await _until(entered)
        opening.cancel()
        asyncio.get_running_loop().call_later(0.05, release.set)
        with pytest.raises(asyncio.CancelledError):
            await opening
        await _until(opened)
        await asyncio.sleep(0.2)
        monkeypatch.setattr(durable_mod.DurableStore, "open", real_open)
        async with await inmem.asyncio.open(path, "strict") as db:
            assert await db.kv.get("r", "k") == "v"
    asyncio.run(main())


def test_a_plain_function_given_to_run_transaction_has_its_writes_committed(recwarn):
    # As docs/api.md says: run_transaction takes an async or a plain fn(tx). A
    # plain one cannot await, so the buffered writes must buffer when called.
    async def main():
        db = await inmem.asyncio.open(None)
        run = await db.begin_run()
        await db.state.init(run, "cell", 0)

        def plain(tx):
            tx.kv.put("a", 1)
            tx.kv.put("gone", 1)
            tx.kv.delete("gone")
            tx.kv.cas("c", 0, 3)
            tx.events.append("step", {"n": 1})
            tx.state.set("cell", 5)
            tx.traces.record("thought", {"why": "plain"})
            tx.json.put("doc", {"x": 1})
            return "done"
        assert await db.run_transaction(run, plain) == "done"
        assert [await db.kv.get(run, k) for k in ("a", "gone", "c")] == [1, None, 3]
        assert await db.events.count(run) == 1
        assert (await db.state.read(run, "cell")).value == 5
        assert await db.json.get(run, "doc") == {"x": 1}

        async def awaited(tx):  # the same writes awaited, as before
            await tx.kv.put("b", 2)
            await tx.events.append("step", {"n": 2})
        await db.run_transaction(run, awaited)
        assert await db.kv.get(run, "b") == 2
        assert await db.events.count(run) == 2
        await db.close()
    asyncio.run(main())
    assert [str(w.message) for w in recwarn if w.category is RuntimeWarning] == []


def test_a_json_edit_left_unawaited_in_a_transaction_is_refused_not_dropped(recwarn):
    # A JSON edit reads its document first, so a plain fn(tx) cannot make it;
    # committing without it (and the fn's other writes) would be silent loss.
    async def main():
        db = await inmem.asyncio.open(None)
        run = await db.begin_run()
        await db.json.put(run, "doc", {"n": 0, "xs": []})

        def plain(tx):
            tx.kv.put("a", 1)
            tx.json.set("doc", "$.n", 1)
            tx.json.array_push("doc", "$.xs", 1)
        with pytest.raises(inmem.InvalidValue, match=r"tx\.json\.array_push\(\), "
                                                       r"tx\.json\.set\(\) was called without "
                                                       r"await"):
            await db.run_transaction(run, plain)
        assert await db.kv.get(run, "a") is None
        assert await db.json.get(run, "doc") == {"n": 0, "xs": []}

        async with db.transaction(run) as tx:  # awaited, and gathered, as before
            await tx.json.set("doc", "$.n", 2)
            await asyncio.gather(tx.json.array_push("doc", "$.xs", 7))
        assert await db.json.get(run, "doc") == {"n": 2, "xs": [7]}
        await db.close()
    asyncio.run(main())
    assert [str(w.message) for w in recwarn if w.category is RuntimeWarning] == []
