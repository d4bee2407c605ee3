"""The protocol module on its own: headers, slots, bodies, errors, shaping, merging. No processes."""

from __future__ import annotations

import msgpack
import pytest

import inmem
from inmem import ops, protocol
from inmem.errors import ProtocolError
from inmem.types import Event, RunInfo, Trace
from inmem.shard.engine import Engine

KNOWN = Engine().ops


def test_header_round_trips():
    head = protocol.header(protocol.KIND_BATCH, 4095, 2**64 - 1)
    assert len(head) == protocol.HEADER_BYTES == 12
    assert head[0] == protocol.VERSION
    assert protocol.parse_header(head) == (protocol.KIND_BATCH, 4095, 2**64 - 1)
    assert protocol.request_id_of(head) == 2**64 - 1


@pytest.mark.parametrize("frame, words", [
    (b"", "12 bytes"),
    (b"\x01" * 11, "12 bytes"),
    (b"\x01" * 13, "12 bytes"),
    (bytes([99, 1, 0, 0]) + bytes(8), "version 99"),
    (bytes([protocol.VERSION, 77, 0, 0]) + bytes(8), "kind 77"),
])
def test_bad_headers_are_protocol_errors(frame, words):
    with pytest.raises(ProtocolError, match=words):
        protocol.parse_header(frame)


def test_request_id_of_reads_any_version_but_not_short_frames():
    assert protocol.request_id_of(bytes([99, 1, 0, 0]) + (7).to_bytes(8, "little")) == 7
    assert protocol.request_id_of(b"short") is None


def test_slot_is_crc32c_mod_4096():
    import crc32c
    for run in ("a", "run-1", "é" * 40, "0" * 1024):
        assert protocol.slot_of(run) == crc32c.crc32c(run.encode()) % 4096
    # A known crc32c vector: "123456789" -> 0xE3069283.
    assert protocol.slot_of("123456789") == 0xE3069283 % 4096
    assert protocol.slot_of(12) == 0 and protocol.slot_of(None) == 0
    assert 0 <= protocol.slot_of("\ud800") < 4096  # a lone surrogate still has a slot


def test_route_run():
    assert ops.route_run("kv.put", ("r", "k", 1, None)) == "r"
    assert ops.route_run("run.begin", ("name", "rid", None, [], None)) == "rid"
    assert ops.route_run("run.list", (None, None, None)) is None
    assert ops.route_run("run.orphaned", ()) is None


def _engine_error(op, args):
    engine = Engine()
    engine.begin_run(run_id="r")
    with pytest.raises(inmem.InmemError) as info:
        engine.execute(op, args)
    return info.value


def _outcome(op, args):
    engine = Engine(clock=lambda: 1)
    engine.begin_run(run_id="r")
    try:
        return ("ok", engine.execute(op, args))
    except inmem.InmemError as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("op, args", [
    ("kv.put", ("r", ("tuple", "key"), 1, None)),   # a tuple key
    ("kv.put", ("r", 2**70, 1, None)),              # a bigint key
    ("kv.get", ("r", frozenset(), None)),
    ("js.get", ("r", "k", ("$",))),
    ("ev.read", ("r", 2**64)),
    ("ev.read", ("r", 2**63)),
    ("ev.range", ("r", 0, -(2**70))),
    ("kv.get", ("r", "\ud800", None)),
    ("kv.keys", ("r", b"bytes-prefix")),
    ("tr.by_tag", ("r", ["unhashable"])),
])
def test_arguments_msgpack_cannot_carry_reach_the_engine_with_the_same_outcome(op, args):
    expected = _outcome(op, args)
    body = protocol.pack_checked(protocol.new_packer(), protocol.op_body(op, args), 2**20)
    got_op, got_args = protocol.decode_op(body, KNOWN)
    assert _outcome(got_op, got_args) == expected


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, bytearray(b"x"), memoryview(b"x"),
                                   {"a": [1, (2,)]}, {"k": object()}])
def test_out_of_model_values_are_refused_by_the_client_like_the_engine(value):
    expected = _engine_error("kv.put", ("r", "k", value, None))
    with pytest.raises(inmem.InvalidValue) as info:
        protocol.op_body("kv.put", ("r", "k", value, None))
    assert str(info.value) == str(expected)


def test_transaction_writes_travel_as_lists():
    body = protocol.op_body("tx.commit", ("r", [["kv", "a", 1]], [("kv.put", ("r", "a", 2, None))]))
    data = protocol.pack_checked(protocol.new_packer(), body, 2**20)
    assert protocol.decode_op(data, KNOWN) == ("tx.commit", ["r", [["kv", "a", 1]],
                                                             [["kv.put", ["r", "a", 2, None]]]])


@pytest.mark.parametrize("body, words", [
    (b"\xc1", "malformed"),                                   # never-used msgpack byte
    (msgpack.packb([1, 2, 3]), r"\[op, args\]"),
    (msgpack.packb("kv.get"), r"\[op, args\]"),
    (msgpack.packb(["no.such.op", []]), "unknown operation"),
    (msgpack.packb([5, []]), "unknown operation"),
    (msgpack.packb(["kv.get", {"run": 1}]), "must be a list"),
    (msgpack.packb(["kv.get", ["r"]])[:-2], "malformed"),     # truncated
    (msgpack.packb(["kv.get", [msgpack.ExtType(protocol.EXT_ERROR, b"x")]]), "not a request"),
    (msgpack.packb(["kv.get", [msgpack.ExtType(protocol.EXT_BIGINT, b"9" * 100)]]), "oversized"),
    (msgpack.packb(["kv.get", [msgpack.ExtType(protocol.EXT_BIGINT, b"12x")]]), "malformed"),
])
def test_malformed_bodies_are_protocol_errors(body, words):
    with pytest.raises(ProtocolError, match=words):
        protocol.decode_op(body, KNOWN)


def test_a_batch_keeps_good_operations_and_marks_bad_ones_in_place():
    body = msgpack.packb([["kv.get", ["r", "k", None]], ["nope", []], "junk",
                          ["kv.keys", ["r", ""]]])
    items = protocol.decode_batch(body, KNOWN)
    assert items[0] == ["kv.get", ["r", "k", None]]
    assert isinstance(items[1], ProtocolError) and isinstance(items[2], ProtocolError)
    assert items[3] == ["kv.keys", ["r", ""]]
    with pytest.raises(ProtocolError):
        protocol.decode_batch(msgpack.packb({"not": "a list"}), KNOWN)


def test_errors_cross_as_the_same_class_message_and_fields():
    packer = protocol.new_reply_packer()
    err = inmem.VersionMismatch(3, 5)
    body = protocol.pack_reply(packer, [1, err, inmem.RunNotFound("gone", run_id="r")], 2**20)
    one, back, missing = protocol.unpack_reply(body)
    assert one == 1
    assert type(back) is inmem.VersionMismatch
    assert (str(back), back.expected, back.actual) == (str(err), 3, 5)
    assert type(missing) is inmem.RunNotFound and missing.run_id == "r"


def test_a_version_mismatch_carries_the_current_state_across():
    packer = protocol.new_reply_packer()
    err = inmem.VersionMismatch(3, 5, current=inmem.State({"step": 2}, 5, 1_700_000_000_000_000))
    back = protocol.unpack_reply(protocol.pack_reply(packer, err, 2**20))
    assert type(back) is inmem.VersionMismatch
    assert back.current == inmem.State({"step": 2}, 5, 1_700_000_000_000_000)
    assert type(back.current) is inmem.State
    assert protocol.unpack_reply(protocol.pack_reply(
        packer, inmem.VersionMismatch(1, 0), 2**20)).current is None


@pytest.mark.parametrize("expected", [2**64, 2**70, -2**70])
def test_a_version_mismatch_past_64_bits_comes_back_as_the_int_it_was(expected):
    """msgpack has no ints past 64 bits: the caller's expected version crosses as text
    and is an int again on arrival, as an embedded store gives it."""
    packer = protocol.new_reply_packer()
    back = protocol.unpack_reply(protocol.pack_reply(
        packer, inmem.VersionMismatch(expected, 1), 2**20))
    assert type(back) is inmem.VersionMismatch
    assert (back.expected, back.actual) == (expected, 1)
    assert str(back) == f"expected version {expected}, found 1"


def test_text_that_is_not_a_number_stays_text_in_a_version_field():
    wire = ["VersionMismatch", "m", {"expected": "12a", "actual": 2}]
    assert inmem.errors.from_wire(wire).expected == "12a"


def test_a_malformed_current_state_is_dropped_not_raised():
    wire = ["VersionMismatch", "expected version 1, found 2", {"expected": 1, "actual": 2,
                                                               "current": [1, 2, 3, 4, 5]}]
    err = inmem.errors.from_wire(wire)
    assert type(err) is inmem.VersionMismatch and err.current is None


def test_an_oversized_reply_becomes_an_error():
    body = protocol.pack_reply(protocol.new_reply_packer(), b"x" * 5000, 4096)
    err = protocol.unpack_reply(body)
    assert type(err) is ProtocolError and "max_message_bytes" in str(err)


def test_an_oversized_request_is_refused_before_it_is_sent():
    with pytest.raises(inmem.ValueTooLarge, match="max_message_bytes"):
        protocol.pack_checked(protocol.new_packer(), ["kv.put", ["r", "k", b"x" * 5000, None]],
                              4096)


def test_a_garbage_reply_is_a_protocol_error_not_an_exception():
    assert type(protocol.unpack_reply(b"\xc1\xc1")) is ProtocolError
    bad_error = msgpack.packb(msgpack.ExtType(protocol.EXT_ERROR, b"\xc1"))
    assert type(protocol.unpack_reply(bad_error)) is ProtocolError


def test_results_are_shaped_into_api_types():
    engine = Engine()
    engine.begin_run(run_id="r")
    ev = engine.ev_append("r", "t", {"a": 1})
    root = engine.tr_record("r", "thought", {"x": 1})
    packer = protocol.new_reply_packer()

    def wire(result):
        return protocol.unpack_reply(protocol.pack_reply(packer, result, 2**20))

    assert ops.shape("ev.append", ("r",), wire(ev)) == ev
    assert ops.shape("ev.range", ("r",), wire([ev])) == [ev]
    assert ops.shape("ev.head", ("r",), None) is None
    tree = engine.tr_tree("r", root)  # the subtree's traces, flat; Traces.tree assembles them
    assert ops.shape("tr.tree", ("r", root), wire(tree)) == tree
    assert isinstance(ops.shape("tr.tree", ("r", root), wire(tree))[0], Trace)
    info = engine.run_get("r")
    assert ops.shape("run.get", ("r",), wire(info)) == info
    assert ops.shape("kv.items", ("r",), [["a", 1]]) == [("a", 1)]
    shaped = ops.shape("tx.commit", ("r", [], [["kv.put", ["r"]], ["ev.append", ["r"]]]),
                            [3, wire(ev)])
    assert shaped == [3, ev] and isinstance(shaped[1], Event)
    with pytest.raises(ProtocolError):
        ops.shape("ev.append", (), [1, 2])


def _info(run_id, created):
    return list(RunInfo(run_id, None, None, "active", [], None, created, created, None, None))


def test_fan_out_merges_do_not_depend_on_answer_order():
    a = [_info("b", 2), _info("d", 5)]
    b = [_info("a", 2), _info("c", 1)]
    for parts in ([a, b], [b, a]):
        assert [r[0] for r in protocol.merge_fanout("run.list", parts)] == ["c", "a", "b", "d"]
        assert protocol.merge_fanout("run.orphaned", parts) == ["c", "a", "b", "d"]
    assert protocol.fanout_request("run.orphaned", ()) == ("run.list", ["orphaned", None, None])
    with pytest.raises(ProtocolError):
        protocol.merge_fanout("kv.get", [[], []])


def test_the_slot_map_travels_little_endian_whatever_the_host():
    owners = [i % 3 for i in range(protocol.SLOT_COUNT)]
    data = protocol.pack_owners(owners)
    assert len(data) == 2 * protocol.SLOT_COUNT
    assert data[:6] == bytes([0, 0, 1, 0, 2, 0])  # u16 little-endian, on any host
    assert list(protocol.unpack_owners(data)) == owners
    for bad in (data[:-1], bytearray(data), None):
        with pytest.raises(protocol.ProtocolError):
            protocol.unpack_owners(bad)
