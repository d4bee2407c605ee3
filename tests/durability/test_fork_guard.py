"""An embedded durable store does not cross fork(): the child's copy refuses every call
and its close() touches nothing, so the parent's acknowledged writes all survive."""

from __future__ import annotations

import os

import pytest

import inmem


@pytest.mark.parametrize("durability", ["strict", "buffered"])
def test_a_forked_child_cannot_write_the_parents_store(tmp_path, durability):
    path = tmp_path / "store"
    db = inmem.open(path, durability=durability)
    run = db.begin_run(run_id="r")
    db.kv.put(run, "before", 0)
    pid = os.fork()
    if pid == 0:  # the child: every call refused, close() a no-op, nothing written
        code = 1
        try:
            for call in (lambda: db.kv.put(run, "child", 1), lambda: db.kv.get(run, "before"),
                         lambda: db.events.append(run, "t", {}), db.snapshot):
                try:
                    call()
                except inmem.InmemError as exc:
                    assert "before fork()" in str(exc), exc
                else:
                    raise AssertionError("a call in the child was not refused")
            db.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for i in range(10):  # the parent goes on, its writes acknowledged
        db.kv.put(run, f"after{i}", i)
    db.close()
    with inmem.open(path, durability=durability) as again:
        assert again.kv.get(run, "before") == 0
        assert [again.kv.get(run, f"after{i}") for i in range(10)] == list(range(10))
        assert again.kv.get(run, "child") is None


def test_an_in_memory_store_is_a_copy_in_the_child(tmp_path):
    db = inmem.open(None)
    run = db.begin_run(run_id="r")
    db.kv.put(run, "k", 1)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            db.kv.put(run, "k", 2)  # the child's own copy
            code = 0 if db.kv.get(run, "k") == 2 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert db.kv.get(run, "k") == 1
