"""Thread ids, checkpoint namespaces and store keys with unusual characters, and the
errors for ones too long to be stored: every name that can be stored reads back as it
was, and one that cannot is refused saying which name and why."""

from __future__ import annotations

import pytest
from langgraph.checkpoint.base import empty_checkpoint

import inmem
from inmem.langgraph import InmemSaver, InmemStore

NAMES = ["", "ünïcødé 🎉", "a/b", "a:b", "%2F", 'q"]x', "back\\slash", "$.a[0]", "a\nb",
         "x" * 900]


def _config(thread, ns=""):
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


@pytest.mark.parametrize("thread", NAMES)
def test_unusual_thread_ids_round_trip(db, thread):
    saver = InmemSaver(db)
    checkpoint = empty_checkpoint()
    saved = saver.put(_config(thread), checkpoint,
                      {"source": "input", "step": -1, "run_id": "run-1"}, {})
    saver.put_writes(saved, [("ch", 1)], "task-1")
    got = saver.get_tuple(_config(thread))
    assert got.config == saved and got.pending_writes == [("task-1", "ch", 1)]
    assert [t.config for t in saver.list(_config(thread))] == [saved]
    assert thread in {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    saver.copy_thread(thread, thread + "-copy")
    assert saver.get_tuple(_config(thread + "-copy")).checkpoint["id"] == checkpoint["id"]
    saver.delete_for_runs(["run-1"])
    assert saver.get_tuple(_config(thread)) is None
    assert saver.get_tuple(_config(thread + "-copy")) is None


@pytest.mark.parametrize("ns", [n for n in NAMES if n] + ["sub:1|inner:2"])
def test_unusual_namespaces_round_trip_and_list_apart(db, ns):
    saver = InmemSaver(db)
    root = saver.put(_config("t"), empty_checkpoint(), {"source": "input", "step": -1}, {})
    inner = saver.put(_config("t", ns), empty_checkpoint(), {"source": "input", "step": -1}, {})
    assert saver.get_tuple(_config("t", ns)).config == inner
    assert [t.config for t in saver.list(_config("t", ns))] == [inner]
    assert [t.config for t in saver.list(_config("t"))] == [root]
    everything = saver.list({"configurable": {"thread_id": "t"}})
    assert {t.config["configurable"]["checkpoint_ns"] for t in everything} == {"", ns}


def test_names_too_long_are_refused_naming_them(db):
    saver = InmemSaver(db)
    for thread in ("x" * 2000, "é" * 600):
        with pytest.raises(inmem.InvalidKey, match=r"thread id .* is too long: it makes the "
                                                   r"run id 'langgraph:thread:"):
            saver.put(_config(thread), empty_checkpoint(), {}, {})
        assert saver.get_tuple(_config(thread)) is None
    with pytest.raises(inmem.InvalidKey, match=r"checkpoint_ns 'nnnn.* is too long"):
        saver.put(_config("t", "n" * 1100), empty_checkpoint(), {}, {})
    saved = saver.put(_config("t"), empty_checkpoint(), {}, {})
    with pytest.raises(inmem.InvalidKey, match="thread id"):
        saver.copy_thread("t", "y" * 2000)
    store = InmemStore(db)
    with pytest.raises(inmem.InvalidKey, match=r"namespace \('aaaa.* and key 'k' are too long"):
        store.put(("a" * 600, "b" * 600), "k", {"v": 1})
    assert saver.get_tuple(_config("t")).config == saved
