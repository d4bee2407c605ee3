"""kv.get_linked answered packed (the shard's reply): the same bytes as packing its decoded answer."""

from __future__ import annotations

import msgpack
import pytest

from inmem import protocol
from inmem.errors import InvalidValue, RunNotFound
from inmem.shard.engine import Engine


class Clock:
    def __init__(self):
        self.now = 1_700_000_000_000_000

    def __call__(self):
        return self.now


def _same(engine, *args):
    packed = engine.execute_packed("kv.get_linked", args)
    expected = protocol.new_reply_packer().pack(engine.execute("kv.get_linked", args))
    assert packed == expected
    assert protocol.unpack_reply(packed) == \
        msgpack.unpackb(expected, raw=False, strict_map_key=False)
    return packed


@pytest.mark.parametrize("count", [0, 1, 15, 16, 17, 300])
def test_the_packed_answer_is_the_answer_packed(count):
    clock = Clock()
    e = Engine(clock=clock)
    run = e.execute("run.begin", [None, "r", None, [], None])
    e.execute("kv.put", [run, "blob/a", {"x": [1, 2.5, "é", b"\x00"]}, None])
    e.execute("kv.put", [run, "blob/b", "text", 1.0])  # expiring
    e.execute("kv.put", [run, "blob/c", None, None])
    e.execute("kv.put", [run, "blob/d", 1, None])
    e.execute("kv.delete", [run, "blob/d"])
    e.execute("js.put", [run, "doc", {"w": {"n": 1}}])
    names = ["blob/a", ["kv", "blob/b"], "blob/c", "blob/d", ["json", "doc"], "gone",
             ["json", "gone"]]
    refs = [names[i % len(names)] for i in range(count)]
    e.execute("kv.put", [run, "head", [b"\x01" * 40, refs], None])
    _same(e, run, "head", 1)
    clock.now += 2_000_000  # blob/b has expired
    _same(e, run, "head", 1)
    e.execute("kv.put", [run, "dict", {"refs": refs, "n": 3}, None])
    _same(e, run, "dict", "refs")
    _same(e, run, "dict", "nothing")
    assert _same(e, run, "absent", 1) == b"\xc0"


def test_the_packed_answer_refuses_what_the_answer_refuses():
    e = Engine()
    run = e.execute("run.begin", [None, "r", None, [], None])
    e.execute("kv.put", [run, "head", {"refs": [["state", "x"]]}, None])
    with pytest.raises(InvalidValue):
        e.execute_packed("kv.get_linked", [run, "head", "refs"])
    with pytest.raises(RunNotFound):
        e.execute_packed("kv.get_linked", ["no-such-run", "head", "refs"])
    with pytest.raises(InvalidValue, match="bad arguments"):
        e.execute_packed("kv.get_linked", [run, "head"])
