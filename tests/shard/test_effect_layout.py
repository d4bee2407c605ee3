"""The effect layout is the on-disk format: its bytes are pinned, its field names checked.

The expected bytes were recorded from the engine as it was before it was
split into one module per job; the split (and any later refactor) must
leave every WAL group and snapshot section byte for byte the same. The field
constants of `inmem.shard.effects` are checked against the effects the engine
really builds, through the values its operations return.
"""

from __future__ import annotations

import hashlib
import io
import itertools

import msgpack
import pytest

from inmem.shard import effects as fx
from inmem.shard.engine import Engine
from inmem.shard.entries import unpack_entry
from inmem.shard.snapshot_codec import dump

START_US = 1_000_000

#: (run id, effect count, packed effects) of every group `build` logs, in order
WAL_GROUPS = [
    ("r1", 1, "9701a27231a16ec091a174c40481a16d01ce000f4240"),  # run.begin
    ("r1", 1, "960aa16bc403c4017601ce000f4241c0"),  # kv.put
    ("r1", 1, "960aa16bc402a17702ce000f4242ce005b8d82"),  # kv.put with a ttl
    ("r1", 1, "960ba16bc003ce000f4244c0"),  # kv.delete
    ("r1", 1, "971400a46e6f7465c40782a16101a16202ce000f4245c420000000000000000000000000000000"
              "0000000000000000000000000000000000c420aa74e1f9b96ae11e8e16d43884b359e4fbf038abd4"
              "2940b603901f1518599b96"),  # ev.append
    ("r1", 1, "951ea173c4010101ce000f4246"),  # st.init
    ("r1", 1, "951fa173c002ce000f4247"),  # st.delete
    ("r1", 1, "9828a3746964c0a774686f75676874c40481a1780191a27467c40481a17902ce000f4248"),  # tr
    ("r1", 1, "9532a164c40581a161910101ce000f4249"),  # js.put
    ("r1", 1, "9533a164c002ce000f424a"),  # js.delete
    ("r1", 2, "960aa26b32c4010701ce000f424bc0971401a174c40101ce000f424cc420aa74e1f9b96ae11e8e"
              "16d43884b359e4fbf038abd42940b603901f1518599b96c4205c732174dda5629c016e90b184dfd5"
              "fa57fe2e58d873c74ea11b12d56f92c5f7"),  # tx.commit: kv.put + ev.append
    ("r1", 1, "9402a9636f6d706c65746564ce000f424dc0"),  # run.end
    ("r2", 1, "9701a27232c0c090c0ce000f424e"),  # run.begin
    ("r2", 1, "9303a27232ce000f424f"),  # run.delete
]

#: sha256 of each snapshot section `dump` makes of the same engine, by section type
SNAPSHOT_SECTIONS = {
    8: "878cb62f86f7e145b76f556d921fc8ba5377e3d7a6fccc59b23afc337ff07d05",
    1: "cc1dd5236e597ffb80e28eca97069847d957f89bb0378c4b855d62fd8cdfaa48",
    2: "8ed54b4947764ef4967927e8cb11472db9941dc3a3e31d2be0fe0bbb208ed6d6",
    3: "7f95e051020290f9779a1014c26a8ab2f9ad9b98cfe717de83b1e1404a63c9e2",
    4: "b21876c22432c9ae0b69ae2b45acc5dcdd393f514fb40be99fdb265bb9219429",
    5: "0214dac5617a510c70d259acf6baec81995f5ed3e9f95fb52cb4b72f82f6e1b4",
    6: "76b39e5a0938f35873d695fdd0ffc447d1a8031956ab3e333fa6f922207bd44e",
}


def build() -> Engine:
    """An engine with a WAL queue that wrote one effect of every kind, on a clock that ticks by 1."""
    ticks = itertools.count(START_US)
    e = Engine(clock=lambda: next(ticks), log=True)
    e.begin_run("n", "r1", None, ["t"], {"m": 1})
    e.kv_put("r1", "k", b"v")
    e.kv_put("r1", "k", "w", 5)
    e.kv_delete("r1", "k")
    e.ev_append("r1", "note", {"b": 2, "a": 1})
    e.st_init("r1", "s", 1)
    e.st_delete("r1", "s")
    e.tr_record("r1", "thought", {"x": 1}, None, ["tg"], {"y": 2}, "tid")
    e.js_put("r1", "d", {"a": [1]})
    e.js_delete("r1", "d")
    e.tx_commit("r1", [["kv", "k", 3]], [["kv.put", ["r1", "k2", 7]], ["ev.append", ["r1", "t", 1]]])
    e.set_status("r1", "completed")
    e.begin_run(None, "r2")
    e.run_delete("r2")
    return e


def test_every_logged_group_keeps_its_bytes():
    got = [(run_id, n, data.hex()) for run_id, n, data in build().take_log()]
    assert got == [(run_id, n, data) for run_id, n, data in WAL_GROUPS]


def test_every_snapshot_section_keeps_its_bytes():
    counts, sections = dump(build())
    assert counts == {"runs": 1, "keys": 2, "events": 2, "traces": 1, "state": 1, "json": 1,
                      "journal": 13}
    assert {t: hashlib.sha256(body).hexdigest() for t, body in sections} == SNAPSHOT_SECTIONS


def test_effect_codes_keep_their_numbers():
    assert (fx.RUN_CREATE, fx.RUN_STATUS, fx.RUN_DELETE, fx.KV_PUT, fx.KV_DEL, fx.EV_APPEND,
            fx.ST_PUT, fx.ST_DEL, fx.TR_ADD, fx.JS_PUT, fx.JS_DEL) == (1, 2, 3, 10, 11, 20, 30, 31,
                                                                       40, 50, 51)


class Clock:
    """A clock the test sets: every effect's timestamp is known exactly."""

    def __init__(self):
        self.now = START_US

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def engine(clock):
    e = Engine(clock=clock)
    e.begin_run("name", "r", "parent", ["a", "b"], {"m": 1})
    return e


def _last_write(engine, table: str, key: str) -> tuple:
    """The run's last effect, after checking the table's entry for `key` packs the same fields."""
    r = engine.runs["r"]
    eff = r.journal[-1]
    value, version, ts, expires = unpack_entry(getattr(r, table)[key])
    assert (value, version, ts) == (eff[fx.VALUE], eff[fx.VERSION], eff[fx.TS])
    assert expires == (eff[fx.EXPIRES] if table == "kv" else None)
    return eff


def test_keyed_entry_fields(engine, clock):
    engine.kv_put("r", "k", "v1")
    clock.now = START_US + 7
    engine.kv_put("r", "k", "v2", 2)
    e = _last_write(engine, "kv", "k")
    assert (e[fx.CODE], e[fx.KEY], e[fx.VALUE], e[fx.VERSION], e[fx.TS], e[fx.EXPIRES]) == \
        (fx.KV_PUT, "k", b"\xa2v2", 2, START_US + 7, START_US + 7 + 2_000_000)
    clock.now = START_US + 9
    engine.kv_delete("r", "k")
    e = _last_write(engine, "kv", "k")
    assert (e[fx.CODE], e[fx.KEY], e[fx.VALUE], e[fx.VERSION], e[fx.TS], e[fx.EXPIRES]) == \
        (fx.KV_DEL, "k", None, 3, START_US + 9, None)

    engine.st_set("r", "cell", 5)
    engine.st_set("r", "cell", 6)
    e = _last_write(engine, "state", "cell")
    assert (e[fx.CODE], e[fx.KEY], e[fx.VALUE], e[fx.VERSION], e[fx.TS]) == \
        (fx.ST_PUT, "cell", b"\x06", 2, START_US + 9)
    engine.js_put("r", "doc", {"a": 1})
    e = _last_write(engine, "json", "doc")
    assert (e[fx.CODE], e[fx.KEY], e[fx.VALUE], e[fx.VERSION], e[fx.TS]) == \
        (fx.JS_PUT, "doc", b"\x81\xa1a\x01", 1, START_US + 9)


def test_event_fields(engine, clock):
    first = engine.ev_append("r", "first", 1)
    clock.now = START_US + 3
    engine.ev_append("r", "second", {"p": 2})
    e = engine.runs["r"].events[1]
    assert (e[fx.CODE], e[fx.EV_SEQ], e[fx.EV_TYPE], e[fx.EV_PAYLOAD], e[fx.EV_TS]) == \
        (fx.EV_APPEND, 1, "second", b"\x81\xa1p\x02", START_US + 3)
    assert e[fx.EV_PREV_HASH] == first.hash == engine.runs["r"].events[0][fx.EV_HASH]
    assert len(e[fx.EV_HASH]) == 32 and e[fx.EV_HASH] != first.hash


def test_trace_fields(engine, clock):
    engine.tr_record("r", "thought", {"x": 1}, trace_id="root")
    clock.now = START_US + 4
    engine.tr_record("r", "decision", {"y": 2}, "root", ["t1"], {"m": 3}, "child")
    e = engine.runs["r"].traces["child"]
    assert (e[fx.CODE], e[fx.TR_ID], e[fx.TR_PARENT], e[fx.TR_TYPE], e[fx.TR_DATA],
            tuple(e[fx.TR_TAGS]), e[fx.TR_METADATA], e[fx.TR_TS]) == \
        (fx.TR_ADD, "child", "root", "decision", b"\x81\xa1y\x02", ("t1",), b"\x81\xa1m\x03",
         START_US + 4)


def test_run_fields(engine, clock):
    clock.now = START_US + 5
    engine.abort_run("r", "boom")
    create, status = engine.runs["r"].journal
    assert (create[fx.CODE], create[fx.CREATE_RUN], create[fx.CREATE_NAME],
            create[fx.CREATE_PARENT], tuple(create[fx.CREATE_TAGS]), create[fx.CREATE_METADATA],
            create[fx.CREATE_TS]) == \
        (fx.RUN_CREATE, "r", "name", "parent", ("a", "b"), b"\x81\xa1m\x01", START_US)
    assert (status[fx.CODE], status[fx.STATUS], status[fx.STATUS_TS], status[fx.STATUS_ERROR]) == \
        (fx.RUN_STATUS, "failed", START_US + 5, "boom")


def test_every_code_names_where_its_timestamp_is():
    effects = []
    for _run_id, _n, data in build().take_log():
        effects += msgpack.Unpacker(io.BytesIO(data), raw=False, use_list=False)
    assert {eff[fx.CODE] for eff in effects} == set(fx.TS_FIELD)
    stamps = [eff[fx.TS_FIELD[eff[fx.CODE]]] for eff in effects]
    # The build's clock ticks by one per reading: each effect's time is a later tick.
    assert all(START_US <= a < b < START_US + 100 for a, b in zip(stamps, stamps[1:])), stamps
