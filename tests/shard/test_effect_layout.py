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
from inmem.shard.recovery_apply import EngineRecovery
from inmem.shard.entries import unpack_entry
from inmem.shard.snapshot_codec import dump

START_US = 1_000_000

#: (run id, effect count, packed effects) of every group `build` logs, in order,
#: as WAL record format 1 held them (every effect in its field form)
WAL_GROUPS_V1 = [
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

#: the same in record format 2: a plain kv.put is logged in its entry form,
#: [code, key, entry]; the entry is flags, a 7-byte time, the version, (with a
#: ttl) the expiry as an i64, then the packed value
WAL_GROUPS = [WAL_GROUPS_V1[0],
              ("r1", 1, "930aa16bc40c" "00" "41420f00000000" "01" "c40176"),  # kv.put
              ("r1", 1, "930aa16bc413" "04" "42420f00000000" "02" "828d5b0000000000"
                        "a177"),  # kv.put with a ttl
              *WAL_GROUPS_V1[3:]]

#: sha256 of each snapshot section `dump` makes of the same engine, by section type
#: (snapshot codec 2: the tables as the engine keeps them, and the history index; codec 4
#: writes the same but for META and the runs' floors)
SNAPSHOT_SECTIONS = {
    8: "4747771a36297c5024ddf08bcd1444294a59ba761ec483e4c99d1d34e6315b78",
    1: "f3d0077492177bb37e62809e996774dc2fc9b78555f404b6119b0fd6ca2e5974",
    2: "b4c20517fe1f85dd0dbef804bc4d1222695bbeb8c13abdeac6ec0c3ce538d451",
    3: "2cf86b5bdc7566e8a15f5f18acd30d0374ea7a01373506f7c323c9effc82153a",
    4: "9586730a6513aae442b2a0a6127a127181b28274853ec63bc92e998bf8a81841",
    5: "d7070d26ad33f940bd25b5fa880884c2a33c21821ec39d4cca2dce74b9ab7537",
    6: "39b2b4300e4a78f2242bcb440bd313df6d9bbc0746bcb54524d053effd77cfe4",
    7: "3f87dd02fd4b6178b31eefbd410f52ff465710196e10fbf44b0f2862d44fb5da",
}
#: the META and RUNS sections codec 3 wrote for the same engine (the others are as codec 4
#: writes them): runs with a KV version floor alone
SNAPSHOT_SECTIONS_V3 = {
    8: "919cce0a1a74eee75c74be860d95fc1223cbf2bfef51d80af5ea2aa4210351af",
    1: "7a67f5f57d76d89680e52dce1743f7fced676e0aeda54d064e8c98c66ea665d0",
}
#: the META and RUNS sections codec 2 wrote for the same engine: runs without a floor
SNAPSHOT_SECTIONS_V2 = {
    8: "98d01223ed793af1155017460758b889bef6f06d42341c8c482511068531a735",
    1: "22d644c3d57a215a2ec73cba559d6cf7cb5fce50e12abca5f6d763d687e458ee",
}


def as_codec(sections: dict, codec: int) -> dict:
    """Codec 4 sections as codec 3 or 2 wrote them: META says so, and a run has the KV
    floor alone (3) or no floor (2)."""
    pack = msgpack.Packer(use_bin_type=True).pack
    meta = msgpack.unpackb(sections[8], raw=False)
    runs = msgpack.unpackb(sections[1], raw=False)
    assert meta["codec"] == 4 and all(len(row) == 10 for row in runs)
    fields = {3: 8, 2: 7}[codec]
    return {**sections, 8: pack({**meta, "codec": codec}), 1: pack([row[:fields] for row in runs])}

#: the sections snapshot codec 1 (each run's journal split by primitive) wrote
#: for the same engine: snapshots on disk in that codec must still load
SNAPSHOT_SECTIONS_V1 = {
    8: bytes.fromhex(
        "88a5636f64656301a472756e7301a46b65797302a66576656e747302a674726163657301a5737461"
        "746501a46a736f6e01a76a6f75726e616c0d"),
    1: bytes.fromhex(
        "9195a272310dc408000000000c000000929701a27231a16ec091a174c40481a16d01ce000f424094"
        "02a9636f6d706c65746564ce000f424dc0c2"),
    2: bytes.fromhex(
        "9194a272310dc4100100000002000000030000000a00000094960aa16bc403c4017601ce000f4241"
        "c0960aa16bc402a17702ce000f4242ce005b8d82960ba16bc003ce000f4244c0960aa26b32c40107"
        "01ce000f424bc0"),
    3: bytes.fromhex(
        "9194a272310dc408040000000b00000092971400a46e6f7465c40782a16101a16202ce000f4245c4"
        "200000000000000000000000000000000000000000000000000000000000000000c420aa74e1f9b9"
        "6ae11e8e16d43884b359e4fbf038abd42940b603901f1518599b96971401a174c40101ce000f424c"
        "c420aa74e1f9b96ae11e8e16d43884b359e4fbf038abd42940b603901f1518599b96c4205c732174"
        "dda5629c016e90b184dfd5fa57fe2e58d873c74ea11b12d56f92c5f7"),
    4: bytes.fromhex(
        "9194a272310dc408050000000600000092951ea173c4010101ce000f4246951fa173c002ce000f42"
        "47"),
    5: bytes.fromhex(
        "9194a272310dc40407000000919828a3746964c0a774686f75676874c40481a1780191a27467c404"
        "81a17902ce000f4248"),
    6: bytes.fromhex(
        "9194a272310dc4080800000009000000929532a164c40581a161910101ce000f42499533a164c002"
        "ce000f424a"),
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


@pytest.mark.parametrize("groups", [WAL_GROUPS_V1, WAL_GROUPS], ids=["format1", "format2"])
def test_groups_of_either_record_format_rebuild_the_same_engine(groups):
    live = build()
    rebuilt = Engine()
    target = EngineRecovery(rebuilt)
    for payload, _n in fx.record_payloads([(run_id, n, bytes.fromhex(data), None)
                                           for run_id, n, data in groups]):
        target.apply_records([payload])
    assert {rid: dict(r.kv) for rid, r in rebuilt.runs.items()} == \
        {rid: dict(r.kv) for rid, r in live.runs.items()}
    assert {rid: list(r.journal) for rid, r in rebuilt.runs.items()} == \
        {rid: list(r.journal) for rid, r in live.runs.items()}


def test_every_snapshot_section_keeps_its_bytes():
    counts, sections = dump(build())
    assert counts == {"runs": 1, "keys": 2, "events": 2, "traces": 1, "state": 1, "json": 1,
                      "journal": 13}
    assert {t: hashlib.sha256(body).hexdigest() for t, body in sections} == SNAPSHOT_SECTIONS


@pytest.mark.parametrize("codec,expected", [(2, SNAPSHOT_SECTIONS_V2), (3, SNAPSHOT_SECTIONS_V3)])
def test_older_codec_sections_are_the_bytes_that_codec_wrote(codec, expected):
    old = as_codec(dict(dump(build())[1]), codec)
    assert {t: hashlib.sha256(old[t]).hexdigest() for t in (8, 1)} == expected


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_a_snapshot_of_any_codec_loads_the_same_engine(codec):
    live = build()
    sections = (SNAPSHOT_SECTIONS_V1 if codec == 1 else dict(dump(live)[1]) if codec == 4
                else as_codec(dict(dump(live)[1]), codec))
    rebuilt = Engine()
    EngineRecovery(rebuilt).load_snapshot(sections)
    assert rebuilt.counts() == live.counts()
    r, l = rebuilt.runs["r1"], live.runs["r1"]
    for table in ("kv", "state", "json", "events", "traces"):
        assert getattr(r, table) == getattr(l, table), table
    assert list(r.journal) == list(l.journal)
    assert all(rebuilt.run_replay("r1", k) == live.run_replay("r1", k) for k in range(14))


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


def test_create_flags_are_logged_only_for_an_unsearchable_run(clock):
    # An ordinary run's RUN_CREATE has exactly the seven fields it always had (so a
    # log of ordinary runs reads the same in a release that knows no flags); an
    # unsearchable run's has the flags as an eighth, and survives the log and a snapshot.
    e = Engine(clock=clock)
    e.log = []
    e.begin_run("n", "plain", None, [], None)
    e.begin_run("n", "hidden", None, [], None, False)
    logged = [data for _run, _n, data in e.take_log()]
    plain, hidden = (msgpack.unpackb(data, raw=False) for data in logged)
    assert plain == [fx.RUN_CREATE, "plain", "n", None, [], None, START_US]
    assert hidden == [fx.RUN_CREATE, "hidden", "n", None, [], None, START_US, fx.UNSEARCHABLE]
    assert hidden[fx.CREATE_FLAGS] == fx.UNSEARCHABLE
    assert (e.runs["plain"].searchable, e.runs["hidden"].searchable) == (True, False)
    # What a snapshot keeps of each run packs to the bytes the log holds.
    assert [msgpack.packb(e.runs[r].create_effect()) for r in ("plain", "hidden")] == logged


def test_every_code_names_where_its_timestamp_is():
    effects = []
    for _run_id, _n, data in build().take_log():
        effects += map(fx.effect_of, msgpack.Unpacker(io.BytesIO(data), raw=False, use_list=False))
    assert {eff[fx.CODE] for eff in effects} == set(fx.TS_FIELD)
    stamps = [eff[fx.TS_FIELD[eff[fx.CODE]]] for eff in effects]
    # The build's clock ticks by one per reading: each effect's time is a later tick.
    assert all(START_US <= a < b < START_US + 100 for a, b in zip(stamps, stamps[1:])), stamps
