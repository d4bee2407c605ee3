"""copy_thread while the source thread is pruned: the copy holds whole checkpoints.

copy_thread reads the source's records first, then copies their channel values
a batch at a time, then the records. A prune (or delete_for_runs) of the source
in between deletes older checkpoints with the values only they used: the copy
skipped those values and still copied the records, so the target held
checkpoints that read back without some of their channel values.
"""

from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from inmem.langgraph import InmemSaver
from inmem.langgraph.driver import execute_sync


def _fill(saver, thread, n):
    config = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    versions: dict = {}
    for i in range(n):
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=-1))
        checkpoint["channel_values"] = {"messages": [f"m{j}" for j in range(i + 1)], "step": i}
        new = {ch: saver.get_next_version(versions.get(ch), None) for ch in ("messages", "step")}
        versions.update(new)
        checkpoint["channel_versions"] = dict(versions)
        config = saver.put(config, checkpoint, {"source": "loop", "step": i, "run_id": "r"}, new)
    return config


def test_a_copy_while_the_source_is_pruned_holds_only_whole_checkpoints(db):
    saver = InmemSaver(db)
    _fill(saver, "src", 5)
    plan = saver._copy_thread("src", "dst")
    sent, pruned = next(plan), False
    try:
        while True:
            answer = execute_sync(db, sent)
            if not pruned:  # the source read: now pruned to its newest checkpoint
                saver.prune(["src"])
                pruned = True
            sent = plan.send(answer)
    except StopIteration:
        pass
    copied = list(saver.list({"configurable": {"thread_id": "dst"}}))
    assert copied, "the newest checkpoint, which the prune kept, is copied"
    for t in copied:
        assert set(t.checkpoint["channel_values"]) == {"messages", "step"}, t.config
        step = t.checkpoint["channel_values"]["step"]
        assert t.checkpoint["channel_values"]["messages"] == [f"m{j}" for j in range(step + 1)]
    newest = saver.get_tuple({"configurable": {"thread_id": "dst", "checkpoint_ns": ""}})
    assert newest.checkpoint["channel_values"]["step"] == 4
