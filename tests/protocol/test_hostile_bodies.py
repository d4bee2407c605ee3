"""Hostile message bodies cost a bounded amount of memory to refuse. No processes.

Each case decodes a body the way a shard or the coordinator does and measures
the peak of Python allocations while it does (tracemalloc counts bytes, so
nothing here depends on timing). A body of N bytes must be refused with a
ProtocolError (or come out as values the engine refuses) for less than
8 N + 1 MiB.
"""

from __future__ import annotations

import struct
import tracemalloc

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inmem
from inmem import protocol
from inmem.errors import ProtocolError
from inmem.shard.engine import Engine

KNOWN = Engine().ops
MiB = 2**20


def _peak(fn, *args):
    """(result or exception, peak bytes allocated while fn ran)."""
    tracemalloc.start()
    try:
        try:
            out = fn(*args)
        except Exception as exc:  # the outcome is asserted by the caller
            out = exc
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _array32(count: int, items: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", count) + items


def _op(value_bytes: bytes) -> bytes:
    """["kv.put", ["r", "k", <value>, None]] around raw msgpack bytes."""
    return b"\x92" + msgpack.packb("kv.put") + b"\x94" + msgpack.packb("r") \
        + msgpack.packb("k") + value_bytes + b"\xc0"


def _nested_claims(levels: int, claim: int, size: int) -> bytes:
    """`levels` arrays, each the first element of the one before, each claiming `claim` items."""
    body = _array32(claim, b"") * levels
    return body + b"\xc0" * max(0, size - len(body))


N8 = 8 * MiB
HOSTILE = {
    # the finding (at 1 MiB; the 8 MiB body has its own test): empty arrays or maps
    "empty arrays": _array32(MiB, b"\x90" * MiB),
    "empty maps": _array32(MiB, b"\x80" * MiB),
    "empty array16s": _array32(MiB // 3, b"\xdc\x00\x00" * (MiB // 3)),
    "empty arrays in an op": _op(_array32(MiB, b"\x90" * MiB)),
    "empty arrays in a value in a map": _op(b"\x81\xa1a" + _array32(MiB, b"\x90" * MiB)),
    # headers that claim far more than the body holds
    "array claims 2**32-1": b"\xdd\xff\xff\xff\xff",
    "map claims 2**32-1": b"\xdf\xff\xff\xff\xff",
    "str claims 2**32-1": b"\xdb\xff\xff\xff\xff" + b"x" * 1000,
    "bin claims 2**32-1": b"\xc6\xff\xff\xff\xff" + b"x" * 1000,
    "ext claims 2**32-1": b"\xc9\xff\xff\xff\xff\x05" + b"x" * 1000,
    "array claims 2**32-1 in a big body": _array32(2**32 - 1, b"\xc0" * MiB),
    # nesting: as deep as msgpack's stack and deeper, and nested arrays that each
    # claim (and so preallocate) many elements the body does not hold
    "nested 8 MiB deep": b"\x91" * N8,
    "nested 1024 deep, no leaf": b"\x91" * 1024,
    "1024 nested claims of 10000 in 10 KB": _nested_claims(1024, 10_000, 10_000),
    "1024 nested claims of 2**20 in 1 MiB": _nested_claims(1024, 2**20, MiB),
    "300 nested claims in 1 KiB": _nested_claims(300, 1024, 1024),
    "nested maps claiming 10000": (b"\xdf" + struct.pack(">I", 10_000) + b"\xa0") * 1000,
    # broken bodies of every size
    "truncated big op": _op(_array32(MiB, b"\xc0" * MiB))[:-10],
    "trailing junk": _op(b"\xc0") + b"\x90" * MiB,
    "reserved byte": _array32(MiB, b"\xc0" * (MiB - 1) + b"\xc1"),
    "invalid utf-8": _op(b"\xa2\xff\xfe"),
    "bad utf-8 in a big body": _op(_array32(MiB, b"\xa2\xff\xfe" * MiB)),
    "empty body": b"",
    # extension types where values go
    "error ext in a request": _op(msgpack.packb(msgpack.ExtType(protocol.EXT_ERROR, b"\x90"))),
    "oversized bigint": _op(msgpack.packb(msgpack.ExtType(protocol.EXT_BIGINT, b"9" * 100))),
    "bigint not a number": _op(msgpack.packb(msgpack.ExtType(protocol.EXT_BIGINT, b"1e5"))),
    "opaque not a triple": _op(msgpack.packb(msgpack.ExtType(protocol.EXT_OPAQUE,
                                                             msgpack.packb(7)))),
    "opaque junk": _op(msgpack.packb(msgpack.ExtType(protocol.EXT_OPAQUE, b"\xc1\xc1"))),
    "opaque of 8 MiB empty arrays": _op(msgpack.packb(msgpack.ExtType(
        protocol.EXT_OPAQUE, _array32(N8, b"\x90" * N8)))),
    "timestamp of a bad length": _op(b"\xc7\x05\xff12345"),
    # the wrong types where the envelope wants an op
    "a map": msgpack.packb({"op": "kv.get"}),
    "an int": msgpack.packb(2**64 - 1),
    "op not a str": msgpack.packb([7, []]),
    "args not a list": msgpack.packb(["kv.get", None]),
}


def test_8_mib_of_empty_arrays_are_refused_within_8n_plus_1mib():
    body = _array32(N8, b"\x90" * N8)
    out, peak = _peak(protocol.decode_batch, body, KNOWN)
    assert isinstance(out, ProtocolError)
    assert peak < 8 * len(body) + MiB, peak


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("decode", ["op", "batch"])
def test_a_hostile_request_is_refused_within_8n_plus_1mib(name, decode):
    body = HOSTILE[name]
    fn = protocol.decode_op if decode == "op" else protocol.decode_batch
    out, peak = _peak(fn, body, KNOWN)
    if decode == "batch" and isinstance(out, list):
        out = next((x for x in out if isinstance(x, ProtocolError)), out)
    assert isinstance(out, ProtocolError), (name, out)
    assert peak < 8 * len(body) + MiB, (name, peak, len(body))


@pytest.mark.parametrize("name", sorted(k for k in HOSTILE if not k.startswith("empty")))
def test_a_hostile_reply_is_a_protocol_error_within_8n_plus_1mib(name):
    # A reply is not held to the budget of empty containers (a run may hold
    # nothing but empty values), but everything else is bounded the same way.
    body = HOSTILE[name]
    out, peak = _peak(protocol.unpack_reply, body)
    assert peak < 8 * len(body) + MiB, (name, peak, len(body))
    if name not in ("a map", "an int", "op not a str", "args not a list",
                    "opaque not a triple", "opaque junk", "oversized bigint",
                    "bigint not a number", "error ext in a request",
                    "opaque of 8 MiB empty arrays"):
        assert type(out) is ProtocolError, (name, out)


def test_an_error_reply_with_a_hostile_payload_is_bounded():
    payload = _array32(N8, b"\x90" * N8)[:-1]  # truncated
    body = msgpack.packb(msgpack.ExtType(protocol.EXT_ERROR, payload))
    out, peak = _peak(protocol.unpack_reply, body)
    assert type(out) is ProtocolError and "malformed error" in str(out)
    assert peak < 8 * len(body) + MiB


def test_an_unknown_extension_reaches_the_engine_which_refuses_it():
    body = _op(msgpack.packb(msgpack.ExtType(42, b"x" * 100)))
    op, args = protocol.decode_op(body, KNOWN)
    engine = Engine()
    engine.begin_run(run_id="r")
    with pytest.raises(inmem.InvalidValue, match="ExtType"):
        engine.execute(op, args)


def test_the_refusals_say_what_was_wrong():
    def error(body):
        with pytest.raises(ProtocolError) as info:
            protocol.decode_op(body, KNOWN)
        return str(info.value)

    assert "more empty lists and maps than it may" in error(HOSTILE["empty arrays"])
    assert "ends inside a value" in error(HOSTILE["truncated big op"])
    assert "deeper than 1024" in error(HOSTILE["nested 8 MiB deep"])
    assert "bytes after the value" in error(HOSTILE["trailing junk"])
    assert "exceeds max_array_len" in error(HOSTILE["array claims 2**32-1"])
    assert "opaque" in error(HOSTILE["opaque of 8 MiB empty arrays"])
    assert "empty" in error(b"")


# -- what must still decode ---------------------------------------------------------


def _ops_batch(count: int, op):
    return msgpack.packb([op(i) for i in range(count)])


@pytest.mark.parametrize("name, body", [
    # dense but ordinary: many one-entry maps, pairs, short strings, empty tags
    ("a value of 200k one-entry maps", _op(msgpack.packb([{"id": i} for i in range(200_000)]))),
    ("a value of 200k pairs", _op(msgpack.packb([[i % 100, i % 7] for i in range(200_000)]))),
    ("a batch of 20k ops with empty lists and maps",
     _ops_batch(20_000, lambda i: ["tr.record", [f"{i:032x}", "thought", {}, None, [], None]])),
    ("a batch of 20k traces with a little data and no tags",
     _ops_batch(20_000, lambda i: ["tr.record", ["r1", "thought", {"step": i}, None, [],
                                                 None]])),
    ("a value with some empty lists",
     _op(msgpack.packb([[] if i % 20 == 0 else i for i in range(500_000)]))),
    ("records with an empty field each",
     _op(msgpack.packb([{"id": i, "name": f"item {i}", "tags": []} for i in range(100_000)]))),
    ("1000 levels deep", _op(b"\x91" * 1000 + b"\xc0")),
    ("a big string", _op(msgpack.packb("é" * MiB))),
    ("a big binary of the bytes that look like empties",
     _op(msgpack.packb(b"\x90\x80" * MiB))),
])
def test_ordinary_bodies_still_decode(name, body):
    out = protocol.decode_batch(body, KNOWN) if body[:1] != b"\x92" else \
        protocol.decode_op(body, KNOWN)
    assert not isinstance(out, ProtocolError), name
    if isinstance(out, list):
        assert not any(isinstance(x, ProtocolError) for x in out), name


def test_a_reply_of_nothing_but_empty_values_decodes():
    body = msgpack.packb([[f"k{i}", []] for i in range(300_000)])
    out = protocol.unpack_reply(body)
    assert type(out) is list and len(out) == 300_000


def test_the_empties_budget_is_exact_at_its_edge():
    def body(empties, pad):
        return _op(msgpack.packb([[]] * empties + ["x" * pad]))

    def allowed(b):
        return len(b) * protocol.EMPTIES_BYTES_PER_BYTE + protocol.EMPTIES_FREE_BYTES

    k = 50_000
    cost = k * protocol.EMPTY_LIST_BYTES
    pad = (cost - protocol.EMPTIES_FREE_BYTES) // protocol.EMPTIES_BYTES_PER_BYTE - k - 100
    # The first padding at which k empty lists fit and one more (one byte longer) does not.
    while allowed(body(k, pad)) < cost:
        pad += 1
    assert allowed(body(k + 1, pad)) < cost + protocol.EMPTY_LIST_BYTES
    assert protocol.decode_op(body(k, pad), KNOWN)[0] == "kv.put"
    with pytest.raises(ProtocolError, match="more empty lists and maps than it may"):
        protocol.decode_op(body(k + 1, pad), KNOWN)


# -- the client's side of the wire ---------------------------------------------------


def _deep(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("args", [
    ("r", 5, []),                                  # reads not a list
    ("r", [7, "x"], [["kv.put", ("r", "k", 1, None)]]),
    ("r", [], [["kv.put", 5]]),                    # a write's arguments not a list
    ("r", [], [[["not", "an", "op"], []]]),
    ("r", _deep(1000), []),                        # refused by the engine, not here
])
def test_odd_transaction_arguments_go_to_the_engine_as_they_are(args):
    body = protocol.op_body("tx.commit", args)
    op, got = protocol.decode_op(protocol.pack_checked(protocol.new_packer(), body, 2**20),
                                 KNOWN)
    assert op == "tx.commit" and len(got) == 3 and type(got[1]) is type(args[1])


def test_a_malformed_transaction_write_too_deep_to_show_is_an_invalid_value():
    with pytest.raises(inmem.InvalidValue, match="malformed transaction write"):
        protocol.op_body("tx.commit", ("r", [], [_deep(1000)]))


def _empties_cost(value) -> int:
    if type(value) is list:
        return (protocol.EMPTY_LIST_BYTES if not value else 0) + sum(map(_empties_cost, value))
    if type(value) is dict:
        return (protocol.EMPTY_MAP_BYTES if not value else 0) + sum(
            map(_empties_cost, value.values()))
    return 0


_values = st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=40) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=20),
    max_leaves=200)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_the_empties_bound_never_under_counts(value):
    body = msgpack.packb(value, use_bin_type=True)
    assert protocol._empties_bound(body) >= _empties_cost(value)


def test_the_empties_bound_counts_every_encoding_of_an_empty():
    lists = b"\x90" + b"\xdc\x00\x00" + b"\xdd\x00\x00\x00\x00"
    maps = b"\x80" + b"\xde\x00\x00" + b"\xdf\x00\x00\x00\x00"
    assert protocol._empties_bound(b"\x93" + lists) == 3 * protocol.EMPTY_LIST_BYTES
    assert protocol._empties_bound(b"\x93" + maps) == 3 * protocol.EMPTY_MAP_BYTES
    assert protocol._empties_bound(msgpack.packb("no empties here")) == 0
