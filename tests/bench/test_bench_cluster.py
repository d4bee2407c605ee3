"""The cluster tier's moving parts with real processes: the floor, the client pool, the groups.

Sizes are tiny and no timing is judged: these count frames, operations,
rounds and processes, and check the rows' fields. Redis is not selected
(`Peers(())`), so its entries must say why it was skipped.
"""

from __future__ import annotations

import os
import time

import pytest
import zmq

import inmem
from inmem.bench.clients import ClientPool
from inmem.bench.context import Context, scaled_sizes
from inmem.bench import floor as floor_module
from inmem.bench.floor import EchoServer, FloorClient, batch_frames, put_frames
from inmem.bench.peers import Peers
from inmem.bench.tiers import cluster as cluster_tier
from inmem.client import BATCH_CHUNK_OPS
from inmem.ops import OPS
from inmem.protocol import decode_batch, decode_op, parse_header

pytestmark = pytest.mark.slow


def _ctx(tmp_path):
    return Context(quick=True, sizes=scaled_sizes(True, 0.001),
                   peers=Peers((), install=False, scratch_dir=str(tmp_path)),
                   scratch_dir=str(tmp_path), progress=False,
                   ran_on={"commit": "c" * 40, "host": "h", "cpu": "cpu", "cores": 2})


def test_the_floor_sends_what_our_client_sends_for_a_put_and_a_pipeline():
    head, body = put_frames("run-1", "k" * 16, b"v" * 100)
    assert parse_header(head)[0] == 1
    assert decode_op(body, OPS) == ("kv.put", ["run-1", "k" * 16, b"v" * 100])
    keys = [f"key{i:05d}" for i in range(600)]
    msgs = batch_frames("run-1", keys, b"v")
    assert len(msgs) == -(-600 // BATCH_CHUNK_OPS)
    ops = [op for _head, body in msgs for op in decode_batch(body, OPS)]
    assert [args[1] for _op, args in ops] == keys


def test_the_echo_server_returns_every_message_unchanged_to_its_sender():
    with EchoServer() as server:
        pid = server.pid
        assert server.proc.is_alive()
        ctx = zmq.Context(1)
        socks = []
        try:
            for c in range(3):
                s = ctx.socket(zmq.DEALER)
                s.setsockopt(zmq.LINGER, 0)
                s.setsockopt(zmq.RCVTIMEO, 10_000)
                s.connect(server.endpoint)
                socks.append(s)
            # A burst from each, so the server drains several messages per turn.
            for c, s in enumerate(socks):
                for i in range(50):
                    s.send_multipart([b"h%d" % c, b"body-%d-%d" % (c, i)])
            for c, s in enumerate(socks):
                got = [s.recv_multipart() for _ in range(50)]
                assert got == [[b"h%d" % c, b"body-%d-%d" % (c, i)] for i in range(50)]
            for stream in (True, False):
                floor = FloorClient(server.endpoint, value=b"v" * 100, batch=600, stream=stream)
                try:
                    for i in range(5):
                        floor.single(i)
                        floor.batch(i)
                    if stream:
                        assert not floor.chan.ready() and floor.chan.buf == b""
                        assert floor.chan.recv(time.monotonic() + 0.05, 2**20) is None, \
                            "one echo per message, none left over"
                    else:
                        assert floor.sock.poll(50) == 0, "one echo per message, none left over"
                finally:
                    floor.close()
        finally:
            for s in socks:
                s.close(0)
            ctx.term()
    assert server.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_durable_floor_logs_every_message_before_it_echoes_it(tmp_path):
    # Through both transports: what each echo answered must already be in the log.
    with EchoServer(log_dir=str(tmp_path)) as server:
        log_path = os.path.join(str(tmp_path), "echo.log")
        sent = []
        for stream in (True, False):
            floor = FloorClient(server.endpoint, run=f"run-{stream}", value=b"v" * 100,
                                batch=600, stream=stream)
            try:
                for i in range(3):
                    floor.single(i)
                    sent.append(floor.frames[1])
                    with open(log_path, "rb") as f:
                        assert f.read(sum(map(len, sent))) == b"".join(sent)
                floor.batch(0)
                sent += [body for _head, body in floor.batches]
                with open(log_path, "rb") as f:
                    assert f.read(sum(map(len, sent))) == b"".join(sent)
            finally:
                floor.close()
        # Preallocated as a WAL segment is; the rest of it is still zeros.
        assert os.path.getsize(log_path) == floor_module.LOG_BYTES
        with open(log_path, "rb") as f:
            f.seek(sum(map(len, sent)))
            assert f.read(4096) == bytes(4096)


def test_a_turn_log_wraps_around_at_its_size(tmp_path):
    log = floor_module.TurnLog(str(tmp_path / "t.log"), size=10)
    try:
        log.commit([b"abc", b"def"])
        log.commit([b"ghij"])
        assert (tmp_path / "t.log").read_bytes() == b"abcdefghij"
        log.commit([b"kl"])  # does not fit after "j": it goes to the start
        assert (tmp_path / "t.log").read_bytes() == b"klcdefghij"
        assert log.commits == 3 and log.offset == 2
    finally:
        log.close()


def test_a_client_pool_runs_every_round_in_the_same_processes():
    with EchoServer() as server, ClientPool(2) as pool:
        pids = pool.pids
        spec = {"target": "floor", "endpoint": server.endpoint, "kind": "put", "ops": 30,
                "warmup": 3}
        first = pool.run([spec, spec])
        second = pool.run([{**spec, "batch": 300, "ops": 4, "tag": "r1"}] * 2)
        assert first["ops"] == 60 and first["clients"] == 2
        assert second["ops"] == 2 * 4 * 300
        assert len(first["lat"]) == 60
        assert pool.pids == pids and all(p.is_alive() for p in pool.procs)
        with pytest.raises(RuntimeError, match="unknown target"):
            pool.run([spec, {**spec, "target": "nothing"}])
        # The failed round broke the barrier; the pool is usable again.
        assert pool.run([spec, spec])["ops"] == 60
    assert all(not p.is_alive() for p in pool.procs)


def _rows(ctx):
    return {r["name"]: r for r in ctx.rows}


def test_one_client_rows_run_ours_and_the_floor_in_interleaved_rounds(tmp_path, monkeypatch):
    real_connect = inmem.Cluster.connect
    routes = []

    def connect(self, *args, **kw):
        routes.append(kw.get("direct"))
        return real_connect(self, *args, **kw)

    monkeypatch.setattr(inmem.Cluster, "connect", connect)
    ctx = _ctx(tmp_path)
    cluster_tier._one_client(ctx, 2, 50, 2000)
    # Each route named explicitly, whatever connect() defaults to.
    assert False in routes and True in routes
    rows = _rows(ctx)
    assert list(rows) == ["cluster.kv.put.single", "cluster.kv.put.single.direct",
                          "cluster.floor.single", "asyncio.kv.put.concurrent",
                          "cluster.kv.put.batched", "cluster.kv.put.batched.direct",
                          "cluster.floor.batched"]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["status"])
        assert row["ran_on"]["commit"] == "c" * 40
        assert row["extra"]["rounds"] == 2 and len(row["extra"]["round_order"]) == 2
    single = rows["cluster.kv.put.single"]
    assert single["n"] == 2 * 50
    assert single["extra"]["round_order"] == [["routed", "direct", "asyncio", "floor"],
                                              ["direct", "asyncio", "floor", "routed"]]
    assert single["peers"]["redis"] == "skipped: not selected with --peers"
    assert single["ratio_spread"]["redis"] is None
    assert isinstance(single["peers"]["floor"], float)
    assert single["peers"]["floor"] == rows["cluster.floor.single"]["value"]
    assert single["ratio_spread"]["floor"]["rounds"] == 2
    assert len(single["extra"]["ours"]["per_round"]) == 2
    assert rows["cluster.kv.put.batched.direct"]["n"] == 2 * 2 * cluster_tier.BATCH
    assert rows["cluster.kv.put.batched"]["extra"]["batch_p50_us"] > 0
    # 1,000 asyncio puts in flight, beside the blocking client's single puts.
    concurrent = rows["asyncio.kv.put.concurrent"]
    assert concurrent["n"] == 2 * 4 * cluster_tier.IN_FLIGHT
    assert concurrent["peers"]["sync"] == rows["cluster.kv.put.single.direct"]["value"]
    assert concurrent["ratio_spread"]["sync"]["rounds"] == 2
    assert concurrent["target"]["min_ratio"] == {"sync": 2.0}
    assert concurrent["target_met"] is (concurrent["value"] >= 2 * concurrent["peers"]["sync"])


def test_eight_client_rows_cover_both_routes_and_both_modes(tmp_path, monkeypatch):
    # Two client processes stand in for eight: the same code, fewer processes to start.
    monkeypatch.setattr(cluster_tier, "CLIENTS", 2)
    ctx = _ctx(tmp_path)
    cluster_tier._eight_clients(ctx, 2, 20)
    rows = _rows(ctx)
    expected = {"cluster.kv.put.single.8clients": "buffered",
                "cluster.kv.put.single.8clients.direct": "buffered",
                "cluster.kv.put.strict.8clients": "strict",
                "cluster.kv.put.strict.8clients.direct": "strict",
                "cluster.floor.8clients": "echo",
                "cluster.floor.strict.8clients": "echo+fsync"}
    assert {n: r["mode"] for n, r in rows.items()} == expected
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["status"])
        assert row["n"] == 2 * 2 * 20, name
        assert row["extra"]["clients"] == 2
    order = rows["cluster.kv.put.strict.8clients"]["extra"]["round_order"][0]
    assert order == ["buffered.routed", "buffered.direct", "floor", "strict.routed",
                     "strict.direct", "floor.strict"]
    strict = rows["cluster.kv.put.strict.8clients.direct"]
    assert strict["peers"]["redis"].startswith("skipped: ")
    assert strict["ratio_spread"]["floor"]["rounds"] == 2
    # The strict rows' floor is the durable one, its clients split as the direct row's.
    logged = rows["cluster.floor.strict.8clients"]
    assert strict["peers"]["floor"] == logged["value"]
    assert rows["cluster.kv.put.single.8clients"]["peers"]["floor"] == \
        rows["cluster.floor.8clients"]["value"]
    assert logged["extra"]["clients_per_server"] == strict["extra"]["clients_per_shard"]
    assert "fsync" in strict["extra"]["peer_config"]["floor"]
    assert "appendfsync always" in strict["extra"]["peer_config"]["redis"]["workload"]


def test_curve_rows_compare_curve_with_the_clear_over_tcp(tmp_path):
    ctx = _ctx(tmp_path)
    cluster_tier._curve(ctx, 2, 50, 2000)
    rows = _rows(ctx)
    assert list(rows) == ["cluster.kv.put.single.curve", "cluster.kv.put.batched.curve"]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row["status"])
        assert isinstance(row["peers"]["plain"], float)
        assert row["extra"]["transport"] == "tcp loopback"
        cost = row["extra"]["curve_cost"]
        assert cost["slowdown"] > 0 and cost["met"] == (cost["slowdown"] <= cost["target_max"])
    assert rows["cluster.kv.put.single.curve"]["n"] == 2 * 50
    assert rows["cluster.kv.put.single.curve"]["extra"]["curve_cost"]["target_max"] == 1.2
    assert rows["cluster.kv.put.batched.curve"]["extra"]["curve_cost"]["target_max"] == 1.5


def test_cluster_recovery_restarts_after_a_sigkill_with_half_the_keys_on_each_shard(tmp_path):
    ctx = _ctx(tmp_path)
    cluster_tier._recovery(ctx, 4000)
    row = _rows(ctx)["cluster.recovery"]
    assert row["status"] == "ok" and row["unit"] == "ms" and row["value"] > 0
    assert row["n"] == 4000
    split = row["extra"]["keys_per_shard"]
    assert split == [2000, 2000]  # the runs are picked by the slot map: half the keys each
    report = row["extra"]["recovery_report"]
    assert [r["shard"] for r in report] == [0, 1]
    assert all(r["records_replayed"] > 0 or r["snapshot_used"] for r in report)
    assert row["peers"]["redis"] == "skipped: not selected with --peers"
