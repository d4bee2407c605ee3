"""LangGraph's own checkpointer conformance suite, every capability, on every backend.

`langgraph-checkpoint-conformance` checks the async methods; `SyncDriven`
routes each async method to its sync twin, so the same suite also checks
the sync methods.
"""

import asyncio
import uuid

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from inmem.langgraph import InmemSaver


class SyncDriven(InmemSaver):
    """The sync methods, seen by the suite through async names."""

    async def aput(self, config, checkpoint, metadata, new_versions):
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config, writes, task_id, task_path=""):
        return self.put_writes(config, writes, task_id, task_path)

    async def aget_tuple(self, config):
        return self.get_tuple(config)

    async def alist(self, config, *, filter=None, before=None, limit=None):
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def adelete_thread(self, thread_id):
        return self.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids):
        return self.delete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id, target_thread_id):
        return self.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids, *, strategy="keep_latest"):
        return self.prune(thread_ids, strategy=strategy)


def _validate(open_db, saver_class):
    databases = []

    @checkpointer_test(name=saver_class.__name__)
    async def factory():
        db = open_db()
        databases.append(db)
        yield saver_class(db)

    report = asyncio.run(validate(factory))
    return report


def _check(report):
    assert {c.value for c in ALL_CAPABILITIES} == set(report.results)
    problems = {name: (r.detected, r.failures) for name, r in report.results.items()
                if not (r.detected and r.passed is True)}
    assert not problems, problems
    assert report.conformance_level() == "FULL"
    assert sum(r.tests_passed for r in report.results.values()) >= 80


def test_async_methods_pass_every_capability(open_db):
    _check(_validate(open_db, InmemSaver))


def test_sync_methods_pass_every_capability(open_db):
    _check(_validate(open_db, SyncDriven))


@pytest.mark.parametrize("kind", ["async-embedded", "async-cluster"])
def test_every_capability_on_an_asyncio_database(kind):
    # An AsyncDatabase belongs to the event loop that opened it: each saver's
    # database is opened inside the suite's loop, and closed there.
    import inmem.asyncio

    @checkpointer_test(name=f"InmemSaver-{kind}")
    async def factory():
        if kind == "async-embedded":
            db = await inmem.asyncio.open(None)
        else:
            from cluster.shared import shared_cluster
            db = await inmem.asyncio.connect(shared_cluster().endpoint, timeout=10.0)
        try:
            # A prefix of its own: the shared cluster's other savers are not seen.
            yield InmemSaver(db, prefix=f"conf-{uuid.uuid4().hex[:12]}:")
        finally:
            await db.close()

    _check(asyncio.run(validate(factory)))
