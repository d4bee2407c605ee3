"""The table of operations (inmem.ops) agrees with the engine that runs them and the wire that carries them."""

from __future__ import annotations

import inspect

import pytest

from inmem import ops, protocol
from inmem.shard.engine import Engine


def test_every_operation_has_an_engine_handler_and_the_engine_dispatches_only_those():
    engine = Engine()
    assert set(engine.ops) == set(ops.OPS)
    for name, op in ops.OPS.items():
        assert engine.ops[name] == getattr(engine, op.handler), name


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_value_positions_are_arguments_of_the_handler(name):
    op = ops.OPS[name]
    params = list(inspect.signature(getattr(Engine(), op.handler)).parameters)
    for i in op.values:
        assert i < len(params), (name, i, params)


def test_transaction_writes_are_writes_and_every_write_with_values_says_where():
    assert ops.TX_WRITE_OPS <= ops.WRITE_OPS
    assert "tx.commit" in ops.WRITE_OPS and "tx.commit" not in ops.TX_WRITE_OPS
    for name in ("kv.put", "ev.append", "st.set", "js.set", "tr.record", "run.begin"):
        assert ops.VALUE_ARGS[name], name


def test_fanned_out_operations_are_reads_the_coordinator_can_merge():
    assert ops.FANOUT_OPS <= ops.FANOUT_READ_OPS
    assert not ops.FANOUT_OPS & ops.WRITE_OPS
    for name in ops.FANOUT_OPS:
        protocol.merge_fanout(name, [[], []])  # a merge rule exists


def test_the_client_refuses_an_out_of_model_value_at_every_listed_position():
    for name, positions in ops.VALUE_ARGS.items():
        args = [None] * (max(positions) + 1)
        for i in positions:
            bad = list(args)
            bad[i] = bytearray(b"x")  # msgpack would carry it as if it were bytes
            with pytest.raises(Exception) as err:
                protocol.op_body(name, bad)
            assert type(err.value).__name__ == "InvalidValue", (name, i)


def test_the_client_fast_path_sets_agree_with_route_run_and_shape():
    from inmem.ops import OPS, REPLY_SHAPES, ROUTE_BY_FIRST, route_run
    for name, spec in OPS.items():
        args = ("the-run", "b", "c")
        assert (route_run(name, args) == "the-run") == (name in ROUTE_BY_FIRST), name
        assert (name in REPLY_SHAPES) == (spec.reply is not None), name
