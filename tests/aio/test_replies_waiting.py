"""A reply already in the socket when the call looks: taken without a turn of the loop.

Real coordinator and shard processes. Each request's write is made to wait
(in the test, by polling the socket) until the shard's reply has arrived, so
every call finds its reply waiting: the case a call takes without letting the
loop turn. What must still hold: the replies are right, other tasks still
run, and a caller in a loop of such calls can still be cancelled or timed out.
"""

from __future__ import annotations

import asyncio
import select
import uuid

import pytest

import inmem
import inmem.asyncio
from inmem.async_client import _INLINE_RUN
from inmem.async_stream import StreamConnection

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with inmem.Cluster(data_dir=str(tmp_path_factory.mktemp("waiting")), shards=2,
                       durability="inmemory") as c:
        yield c


@pytest.fixture
def replies_waiting(monkeypatch):
    """Every request written at once returns only once its connection has bytes to read."""
    send = StreamConnection.send

    def send_and_wait(self, head, body):
        sent = send(self, head, body)
        if sent and self.sock is not None and not self._out:
            ready = select.poll()
            ready.register(self.sock, select.POLLIN)
            assert ready.poll(10_000), "no reply within 10 s"  # (a hang detector)
        return sent
    monkeypatch.setattr(StreamConnection, "send", send_and_wait)


def test_calls_whose_replies_are_waiting_are_right_and_still_let_other_tasks_run(
        cluster, replies_waiting):
    async def main():
        db = await inmem.asyncio.connect(cluster.endpoint)
        run = await db.begin_run(run_id=f"w-{uuid.uuid4().hex[:8]}")
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                await asyncio.sleep(0)
                ticks += 1
        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        calls = 20 * _INLINE_RUN
        ticks = 0
        for i in range(calls // 2):
            assert await db.kv.put(run, f"k{i}", i) == 1
            assert await db.kv.get(run, f"k{i}") == i
        seen = ticks
        other.cancel()
        # Mostly taken without the loop turning (a turn per call, and more, otherwise),
        # yet the loop turned at least once every _INLINE_RUN calls.
        assert calls // _INLINE_RUN - 1 <= seen < calls // 2
        await db.close()
    asyncio.run(main())


@pytest.mark.timeout(120)
def test_a_loop_of_calls_whose_replies_are_waiting_can_be_timed_out_and_cancelled(
        cluster, replies_waiting):
    async def main():
        db = await inmem.asyncio.connect(cluster.endpoint)
        run = await db.begin_run(run_id=f"w-{uuid.uuid4().hex[:8]}")
        done = 0

        async def forever():
            nonlocal done
            while True:
                await db.kv.put(run, "n", done)
                done += 1
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(forever(), 0.3)
        task = asyncio.create_task(forever())
        while done < 3 * _INLINE_RUN:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The connection is in step: the next call gets its own reply (the last
        # put, cancelled while it waited, may or may not have been applied).
        assert await db.kv.get(run, "n") in (done - 1, done)
        assert await db.kv.put(run, "m", "x") == 1
        await db.close()
    asyncio.run(main())
