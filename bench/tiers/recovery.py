"""Tier recovery: snapshot write and load, the serving pause, WAL replay, full recovery.

All on one embedded shard in buffered mode, with 16-byte keys and 100-byte
values (1M keys in a full run), our side of each case in a fresh process.

Every row that has Redis as its peer is measured in alternating rounds
(`recovery_rounds`, 5 in a full run): the data is built once on each side,
then each round times our side and Redis's on it, one after the other,
starting with the other side each round. A row's value is the median of our
rounds, Redis's figure the median of its rounds, and `ratio_spread` the
spread of the per-round ratios, as the cluster tier does: on a machine whose
speed drifts, two sides timed seconds apart are the comparison.
Reopening is timed from `inmem.open` to the moment it returns, which
includes the recovery sequence, index rebuild and the GC freeze after it.

- `recovery.snapshot_write`: `db.snapshot()` wall time (the file written and
  durable); peer Redis SAVE of the same data.
- `recovery.snapshot_pause`: the longest gap a reader thread, calling kv.get
  in a loop, sees while that snapshot runs; the reader's longest gap over a
  quiet window of the same length is kept beside it, and our fork's own time
  (`fork_ms`: the engine's lock held for hand-over, position and fork). Peer:
  Redis's own fork time for BGSAVE (`latest_fork_usec`), which is what its
  clients wait for.
- `recovery.snapshot_load`: reopen with a snapshot and an empty WAL; peers
  Redis RDB load (the load time Redis logs when it restarts on the file) and
  SQLite open + count(*) of the same rows.
- `recovery.wal_replay`: reopen with only a WAL of N single-put records (the
  store was opened with snapshot_on_close=False and thresholds that never
  trigger, then closed); peer Redis AOF load of N SET commands.
- `recovery.full`: a snapshot of N keys plus a WAL of N/10 more puts; peers
  Redis AOF with an RDB preamble plus N/10 commands after it, and SQLite.
- `recovery.full.text`: the same store with text values of ~100 B (words
  drawn, seeded, from a pseudo-word vocabulary), which the search index
  covers; its "peer" is the same case with binary values (`ours.binary`):
  both stores are built once, then reopened in turn, round after round, so
  the ratio says what text costs readiness (target <= 1.2x). The first
  search after the text store's first `open` returns is timed and
  checked: every hit holds the query word; flagged `index_complete` or, if
  complete, identical to the answer once the background rebuild is done.
  `extra.index_rebuild_ms` is how long after `open` returned the index
  became complete.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

from ..context import (Context, error_row, make_row, peer_skip_reason, peer_value, skipped_row,
                       target)
from ..harness import gc_paused, time_once
from ..machine import REPO_ROOT
from ..rounds import spread
from ..workloads import (VALUE_BYTES, load_items, load_ours, make_keys, make_texts, make_value,
                         make_vocabulary, sqlite_file_opener)
from .durability import DurableUnavailable, open_durable

TIER = "recovery"
MODE = "buffered"
MILLION = 1_000_000
NEVER = {"snapshot_on_close": False, "snapshot_wal_bytes": 1 << 60,
         "snapshot_interval_s": 10.0 ** 9}

TARGETS = {
    "recovery.snapshot_write": target("< 300 ms", "goal: recovery", max_ms=300,
                                      for_n=MILLION),
    "recovery.snapshot_pause": target("< 20 ms", "goal: recovery", max_ms=20),
    "recovery.snapshot_load": target("< 1 s", "goal: recovery", max_ms=1000,
                                     for_n=MILLION),
    "recovery.wal_replay": target("< 1 s", "goal: recovery", max_ms=1000,
                                  for_n=MILLION),
    "recovery.full": target("< 500 ms (acceptable < 2 s)", "baseline",
                            max_ms=500, for_n=MILLION),
}
ROW_PEERS = {
    "recovery.snapshot_write": ("redis",),
    "recovery.snapshot_pause": ("redis",),
    "recovery.snapshot_load": ("redis", "sqlite"),
    "recovery.wal_replay": ("redis",),
    "recovery.full": ("redis", "sqlite"),
    "recovery.full.text": ("ours.binary",),
}
#: text values: 9-14 words of a 4000-word vocabulary, ~100 bytes
TEXT_WORDS = (9, 14)
TEXT_VOCABULARY = 4000
TEXT_SEED = 41
#: when the index of the reopened text store counts as stuck (seconds after open)
REBUILD_WAIT_S = 600


def run(ctx: Context) -> None:
    n = ctx.sizes["recovery_keys"]
    records = ctx.sizes["wal_records"]
    rounds = ctx.sizes.get("recovery_rounds", 1)
    value = make_value(VALUE_BYTES)
    keys = make_keys(n)
    # snapshot_write, snapshot_pause and snapshot_load share one data set.
    _guard(ctx, ("recovery.snapshot_write", "recovery.snapshot_pause",
                 "recovery.snapshot_load"), lambda: _snapshot_rows(ctx, keys, value, rounds))
    _guard(ctx, ("recovery.wal_replay",), lambda: _wal_replay(ctx, records, value, rounds))
    _guard(ctx, ("recovery.full",), lambda: _full(ctx, keys, value, rounds))
    _guard(ctx, ("recovery.full.text",), lambda: _full_text(ctx, n, rounds))


def _guard(ctx, names, fn) -> None:
    with ctx.case(f"recovery: {', '.join(names)}"):
        _guarded(ctx, names, fn)


def _guarded(ctx, names, fn) -> None:
    done = len(ctx.rows)
    try:
        fn()
        return
    except DurableUnavailable as exc:
        def make(name, exc=exc):
            return skipped_row(name, TIER, MODE, "ms", str(exc), peers=ROW_PEERS[name],
                               target=TARGETS.get(name))
    except Exception as exc:  # one broken case must not cost the others
        def make(name, exc=exc):
            return error_row(name, TIER, MODE, "ms", exc, peers=ROW_PEERS[name],
                             target=TARGETS.get(name))
    have = {r["name"] for r in ctx.rows[done:]}
    for name in names:
        if name not in have:
            ctx.add(make(name))


# -- our side runs in a fresh process ------------------------------------------------
#
# Fork time, which is the snapshot's serving pause, grows with the size of the
# forking process; the benchmark's own process carries whatever earlier tiers
# allocated, so our side of every case runs in a fresh interpreter that holds
# only the store, as a shard process would.

CHILD_TIMEOUT_S = 3600


def run_child(case: str, n: int, path: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "inmem.bench.tiers.recovery", case, str(n), path],
                          cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"recovery child {case} failed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    if "skipped" in result:
        raise DurableUnavailable(result["skipped"])
    return result


def child(case: str, n: int, path: str) -> dict:
    value = make_value(VALUE_BYTES)
    try:
        if case == "open":
            return _child_open(path)
        if case == "wal":
            return _child_wal(make_keys(n, prefix="w"), value, path)
        if case == "build-full":
            return _child_build_full(make_keys(n), value, path)
        if case == "full":
            return _child_full(make_keys(n), value, path)
        if case == "fulltext":
            return _child_full_text(make_keys(n), path)
    except DurableUnavailable as exc:
        return {"skipped": str(exc)}
    raise SystemExit(f"unknown recovery case {case!r}")


class _Served:
    """Our side of the snapshot rows: a child process that holds the store between rounds.

    It builds the store, answers one JSON line per command on stdin
    ("snapshot": one timed snapshot with its serving pause), and closes the
    store on "quit", leaving the directory with its newest snapshot.
    """

    def __init__(self, n: int, path: str):
        import tempfile
        self._err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inmem.bench.tiers.recovery", "serve", str(n), path],
            cwd=str(REPO_ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._err, text=True)
        self.ready = self.ask(None)

    def ask(self, command: str | None) -> dict:
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(timeout=CHILD_TIMEOUT_S)
                self._err.seek(0)
                tail = (self._err.read().strip().splitlines() or ["no output"])[-1]
                raise RuntimeError(f"the recovery child exited ({self.proc.returncode}): {tail}")
            if line.startswith("{"):
                result = json.loads(line)
                if "skipped" in result:
                    raise DurableUnavailable(result["skipped"])
                return result

    def close(self) -> dict | None:
        try:
            if self.proc.poll() is None:
                return self.ask("quit")
            return None
        finally:
            try:
                self.proc.wait(timeout=CHILD_TIMEOUT_S)
            finally:
                self._err.close()


def serve(n: int, path: str) -> None:
    """The body of a `_Served` child."""
    def say(obj) -> None:
        print(json.dumps(obj), flush=True)

    keys = make_keys(n)
    value = make_value(VALUE_BYTES)
    try:
        db = open_durable(path, "buffered", **NEVER)
    except DurableUnavailable as exc:
        say({"skipped": str(exc)})
        return
    try:
        run = db.begin_run(name="bench")
        load_ours(db, run, keys, value)
        reader = _Reader(db, run, keys)
        reader.start()
        store = getattr(getattr(db, "_backend", None), "store", None)
        say({"ready": True, "keys": n})
        try:
            for line in sys.stdin:
                command = line.strip()
                if command == "quit":
                    break
                if command != "snapshot":
                    say({"error": f"unknown command {command!r}"})
                    continue
                snap_ms = [0.0]

                def snapshot():
                    snap_ms[0], infos = time_once(db.snapshot)
                    return infos

                pause_ms, infos = reader.measure_window(snapshot)
                # A quiet window as long as the snapshot: the gaps a reader sees
                # anyway (thread switches, a busy machine), to read the pause against.
                quiet_ms, _ = reader.measure_window(
                    lambda: time.sleep(max(snap_ms[0], 1) / 1000))
                say({"snapshot_ms": snap_ms[0], "pause_ms": pause_ms, "quiet_ms": quiet_ms,
                     "fork_ms": getattr(store, "last_snapshot_pause_ms", None),
                     "rss_bytes": _rss(), "snapshot_bytes": infos[0].bytes if infos else None})
        finally:
            reader.stop()
    finally:
        db.close()
    say({"closed": True, "reads": reader.reads})


def _child_open(path) -> dict:
    """One timed reopen of a store another child built (a round of a load row).

    The modules opening a store needs are imported first, untimed, by opening
    an empty store beside it: the row is the recovery, as Redis's logged load
    time is, not this interpreter's first imports.
    """
    import tempfile
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as warm:
        open_durable(os.path.join(warm, "db"), "buffered", **NEVER).close()
    ms, db = time_once(lambda: open_durable(path, "buffered", **NEVER))
    try:
        return {"ms": ms, "recovery_report": _report(db),
                "keys": sum(s.get("keys", 0) for s in db.info()["shards"])}
    finally:
        db.close()


def alternate(ctx, label: str, rounds: int, ours, peer) -> dict:
    """Our side and the peer's in turn, `rounds` times, each round led by the other side.

    `ours(r)` and `peer(r)` return (ms, detail). A peer that fails is skipped
    for the rest (its reason kept); ours raises. Returns the per-round values,
    details and order, and the spread of the per-round ratios.
    """
    out = {"ours": [], "ours_detail": [], "peer": [], "peer_detail": [], "order": [],
           "peer_skipped": None}
    for r in range(rounds):
        order = ("ours", "peer") if r % 2 == 0 else ("peer", "ours")
        ran = []
        for side in order:
            if side == "ours":
                ms, detail = ours(r)
            elif out["peer_skipped"] is None:
                try:
                    ms, detail = peer(r)
                except Exception as exc:  # a peer's failure must not take our row down
                    out["peer_skipped"] = peer_skip_reason(exc)
                    continue
            else:
                continue
            out[side].append(ms)
            out[f"{side}_detail"].append(detail)
            ran.append(side)
        out["order"].append(ran)
        ctx.log(f"  {label} round {r + 1}/{rounds}: " + ", ".join(
            f"{side} {out[side][-1]:,.1f} ms" for side in ran))
    ratios = [a / b for a, b in zip(out["ours"], out["peer"]) if b]
    out["ratio_spread"] = spread(ratios)
    return out


def _median(values):
    return statistics.median(values) if values else None


def _peer_figure(alt: dict):
    return alt["peer_skipped"] or _median(alt["peer"])


def _row(name, ms, n, peers, extra, ratio_spread=None):
    return make_row(name, TIER, MODE, "ms", value=ms, n=n, peers=peers,
                    target=TARGETS.get(name), extra=extra, ratio_spread=ratio_spread)


# -- snapshot write / pause / load -------------------------------------------------

class _Reader:
    """A thread calling kv.get in a loop; records the longest gap while `window` is set."""

    def __init__(self, db, run, keys):
        self.db, self.run, self.keys = db, run, keys
        self.window = False
        self.max_gap_ns = 0
        self.reads = 0
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="bench-reader", daemon=True)

    def _loop(self):
        get, run, keys = self.db.kv.get, self.run, self.keys
        nk = len(keys)
        ns = time.perf_counter_ns
        last = ns()
        i = 0
        while not self._stop:
            get(run, keys[i % nk])
            i += 1
            now = ns()
            if self.window and now - last > self.max_gap_ns:
                self.max_gap_ns = now - last
            last = now
        self.reads = i

    def start(self):
        self._thread.start()
        time.sleep(0.05)

    def measure_window(self, fn):
        self.max_gap_ns = 0
        self.window = True
        try:
            result = fn()
        finally:
            self.window = False
        return self.max_gap_ns / 1e6, result

    def stop(self):
        self._stop = True
        self._thread.join(timeout=30)


def _rss():
    import psutil
    return psutil.Process().memory_info().rss


def _snapshot_rows(ctx, keys, value, rounds):
    n = len(keys)
    path = ctx.scratch("ours-snapshot")
    redis_save = _redis_snapshot(ctx, keys, value)
    try:
        served = _Served(n, path)
        try:
            # Redis's keys are loaded before the first round, outside the timing.
            _peer_ready(redis_save)

            def ours_write(_r):
                got = served.ask("snapshot")
                return got["snapshot_ms"], got

            def redis_write(_r):
                save_ms, save_detail = redis_save("save")
                fork_ms, fork_detail = redis_save("fork")
                return save_ms, {**save_detail, "fork_ms": fork_ms, **fork_detail}

            writes = alternate(ctx, "snapshot write", rounds, ours_write, redis_write)
        finally:
            closed = served.close() or {}
        loads = alternate(ctx, "snapshot load", rounds,
                           lambda _r: _open_round(path, n), lambda _r: redis_save("load"))
    finally:
        redis_save("close")
        ctx.discard(path)
    details = writes["ours_detail"]
    pauses = [d["pause_ms"] for d in details]
    redis_forks = [d["fork_ms"] for d in writes["peer_detail"]]
    pause_ratios = [a / b for a, b in zip(pauses, redis_forks) if b]
    ctx.add(_row("recovery.snapshot_write", _median(writes["ours"]), n,
                 {"redis": _peer_figure(writes)},
                 {"keys": n, "snapshot_bytes": details[-1]["snapshot_bytes"],
                  "rounds": _rounds_extra(writes),
                  "peer_config": {"redis": "SAVE of the same keys (RDB)"}},
                 {"redis": writes["ratio_spread"]}))
    ctx.add(_row("recovery.snapshot_pause", _median(pauses), n,
                 {"redis": writes["peer_skipped"] or _median(redis_forks)},
                 {"keys": n, "per_round": pauses, "redis_per_round": redis_forks,
                  "quiet_window_max_gap_ms": [d["quiet_ms"] for d in details],
                  "fork_ms": [d["fork_ms"] for d in details],
                  "rss_bytes_at_fork": details[-1]["rss_bytes"], "reads": closed.get("reads"),
                  "peer_config": {"redis": "BGSAVE fork time (latest_fork_usec)"},
                  "note": "longest gap between two kv.get calls of a reader thread "
                          "while db.snapshot() ran"},
                 {"redis": spread(pause_ratios)}))
    details_l: dict = {}
    sqlite = peer_value(lambda: _sqlite_open_count(ctx, keys, value), details_l, "sqlite")
    ctx.add(_row("recovery.snapshot_load", _median(loads["ours"]), n,
                 {"redis": _peer_figure(loads), "sqlite": sqlite},
                 {"keys": n, "recovery_report": loads["ours_detail"][-1]["recovery_report"],
                  "keys_loaded": [d["keys"] for d in loads["ours_detail"]],
                  "rounds": _rounds_extra(loads), "peer_detail": details_l,
                  "peer_config": {"redis": "RDB load on restart (time Redis logs)",
                                  "sqlite": "connect + SELECT count(*) of the same rows "
                                            "(WAL, NORMAL)"}},
                 {"redis": loads["ratio_spread"], "sqlite": None}))


def _peer_ready(step) -> None:
    try:
        step("prepare")
    except Exception:  # the rounds report the peer as skipped, with the reason
        pass


def _open_round(path: str, n: int):
    got = run_child("open", n, path)
    if got["keys"] != n:
        raise RuntimeError(f"the reopened store holds {got['keys']} keys, expected {n}")
    return got["ms"], got


def _rounds_extra(alt: dict) -> dict:
    return {"ours_ms": alt["ours"], "peer_ms": alt["peer"], "order": alt["order"],
            "peer_detail": alt["peer_detail"], "peer_skipped": alt["peer_skipped"]}


def _redis_snapshot(ctx, keys, value):
    """One redis-server with the same keys, used by the three snapshot rows in turn."""
    state: dict = {}

    def step(what):
        if what == "close":
            server = state.pop("server", None)
            if server is not None:
                ctx.peers.release(server)
            return None
        if "error" in state:
            raise state["error"]
        if "server" not in state:
            try:
                server = ctx.peers.redis("inmemory")
                state["server"] = server
                _redis_load(server, keys, value)
            except Exception as exc:
                state["error"] = exc
                raise
        server = state["server"]
        client = server.client
        if what == "prepare":
            return None
        if what == "save":
            ms, _ = time_once(client.save)
            return ms, {"keys": client.dbsize()}
        if what == "fork":
            client.bgsave()
            server.wait_rewrite_done()
            fork_us = client.info("stats").get("latest_fork_usec")
            return fork_us / 1000.0, {"latest_fork_usec": fork_us}
        if what == "load":
            # dump.rdb exists from SAVE; a restart loads it and logs how long that took.
            timing = server.restart()
            loaded = client.dbsize()
            if loaded != len(keys):
                raise RuntimeError(f"redis loaded {loaded} keys, expected {len(keys)}")
            return _load_value(timing), {**timing, "keys": loaded}
        raise ValueError(what)

    return step


def _load_value(timing: dict) -> float:
    return timing["load_ms"] if timing.get("load_ms") is not None else timing["wall_ms"]


def _redis_load(server, keys, value, batch: int = 1000) -> None:
    client = server.client
    for lo in range(0, len(keys), batch):
        pipe = client.pipeline(transaction=False)
        for k in keys[lo:lo + batch]:
            pipe.set(k, value)
        pipe.execute()


def _sqlite_open_count(ctx, keys, value):
    sq_open, sq_clean, path = sqlite_file_opener(ctx, "NORMAL")
    try:
        kv = sq_open()
        kv.load([(k, value) for k in keys])
        kv.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        kv.close()
        ms, count = time_once(lambda: _open_and_count(ctx, path))
        if count != len(keys):
            raise RuntimeError(f"sqlite counted {count} rows, expected {len(keys)}")
        return ms, {"rows": count}
    finally:
        sq_clean()


def _open_and_count(ctx, path):
    kv = ctx.peers.sqlite(path, "NORMAL")
    try:
        return kv.count()
    finally:
        kv.close()


def _report(db) -> dict | None:
    reports = db.recovery_report()
    if not reports:
        return None
    r = reports[0]
    return {"snapshot_used": os.path.basename(r.snapshot_used) if r.snapshot_used else None,
            "records_replayed": r.records_replayed,
            "transactions_recovered": r.transactions_recovered, "seconds": r.seconds}


# -- WAL replay ----------------------------------------------------------------------

def _write_single_puts(db, run, keys, value):
    put = db.kv.put
    with gc_paused():
        for k in keys:
            put(run, k, value)


def _timed_reopen(path):
    """(ms to open the store, its recovery report): the recovery being measured."""
    ms, db = time_once(lambda: open_durable(path, "buffered", **NEVER))
    try:
        return ms, _report(db)
    finally:
        db.close()


def _child_wal(keys, value, path) -> dict:
    db = open_durable(path, "buffered", **NEVER)
    try:
        run = db.begin_run(name="bench")
        _write_single_puts(db, run, keys, value)
        wal_bytes = db.info()["shards"][0].get("wal_bytes")
    finally:
        db.close()  # snapshot_on_close=False: only the WAL is left
    return {"wal_bytes": wal_bytes}


def _wal_replay(ctx, records, value, rounds):
    keys = make_keys(records, prefix="w")
    path = ctx.scratch("ours-wal")
    redis = _RedisAof(ctx, keys, value, preamble=False, tail=0)
    try:
        built = run_child("wal", records, path)
        redis.prepare()
        alt = alternate(ctx, "wal replay", rounds, lambda _r: _open_round(path, records),
                         lambda _r: redis.restart())
    finally:
        redis.close()
        ctx.discard(path)
    ctx.add(_row("recovery.wal_replay", _median(alt["ours"]), records,
                 {"redis": _peer_figure(alt)},
                 {"puts_written": records, "wal_bytes": built["wal_bytes"],
                  "recovery_report": alt["ours_detail"][-1]["recovery_report"],
                  "rounds": _rounds_extra(alt),
                  "note": "n single-put transactions, one engine operation each; the WAL "
                          "writer frames what is pending at each flush as one record",
                  "peer_config": {"redis": "AOF of the same SETs (no RDB preamble), load "
                                           "time Redis logs on restart"}},
                 {"redis": alt["ratio_spread"]}))


class _RedisAof:
    """A redis-server with appendonly, loaded once, restarted once per round."""

    def __init__(self, ctx, keys, value, *, preamble: bool, tail: int):
        self.ctx, self.keys, self.value = ctx, keys, value
        self.preamble, self.tail = preamble, tail
        self.server = None
        self.error: Exception | None = None

    def prepare(self) -> None:
        try:
            self.server = self.ctx.peers.redis("buffered", extra_args=[
                "--aof-use-rdb-preamble", "yes" if self.preamble else "no"])
            server = self.server
            _redis_load(server, self.keys, self.value)
            if self.preamble:
                # The rewrite turns what is loaded so far into an RDB base file,
                # like our snapshot; the tail goes after it as commands.
                server.client.bgrewriteaof()
                time.sleep(0.01)
                server.wait_rewrite_done()
            if self.tail:
                _redis_load(server, self.keys[:self.tail], self.value[::-1])
        except Exception as exc:  # reported as the peer's skip reason by the rounds
            self.error = exc

    def restart(self):
        if self.error is not None:
            raise self.error
        timing = self.server.restart()
        loaded = self.server.client.dbsize()
        if loaded != len(self.keys):
            raise RuntimeError(f"redis loaded {loaded} keys, expected {len(self.keys)}")
        return _load_value(timing), {**timing, "keys": loaded}

    def close(self) -> None:
        if self.server is not None:
            self.ctx.peers.release(self.server)
            self.server = None


# -- full recovery -------------------------------------------------------------------

def _child_build_full(keys, value, path) -> dict:
    tail = max(1, len(keys) // 10)
    db = open_durable(path, "buffered", **NEVER)
    try:
        run = db.begin_run(name="bench")
        load_ours(db, run, keys, value)
        db.snapshot()
        _write_single_puts(db, run, keys[:tail], value[::-1])
    finally:
        db.close()
    return {"tail": tail}


def _child_full(keys, value, path) -> dict:
    built = _child_build_full(keys, value, path)
    ms, report = _timed_reopen(path)
    return {"ms": ms, "tail": built["tail"], "recovery_report": report}


def _full(ctx, keys, value, rounds):
    n = len(keys)
    path = ctx.scratch("ours-full")
    redis = None
    try:
        tail = run_child("build-full", n, path)["tail"]
        redis = _RedisAof(ctx, keys, value, preamble=True, tail=tail)
        redis.prepare()
        alt = alternate(ctx, "full recovery", rounds, lambda _r: _open_round(path, n),
                         lambda _r: redis.restart())
    finally:
        if redis is not None:
            redis.close()
        ctx.discard(path)
    details: dict = {}
    sqlite = peer_value(lambda: _sqlite_open_count(ctx, keys, value), details, "sqlite")
    ctx.add(_row("recovery.full", _median(alt["ours"]), n,
                 {"redis": _peer_figure(alt), "sqlite": sqlite},
                 {"keys": n, "wal_tail_puts": tail,
                  "recovery_report": alt["ours_detail"][-1]["recovery_report"],
                  "rounds": _rounds_extra(alt), "peer_detail": details,
                  "peer_config": {"redis": "AOF with RDB preamble + the same tail of SETs, "
                                           "load time Redis logs on restart",
                                  "sqlite": "connect + SELECT count(*)"}},
                 {"redis": alt["ratio_spread"], "sqlite": None}))


# -- full recovery of text values --------------------------------------------------------

def _child_full_text(keys, path) -> dict:
    n = len(keys)
    tail = max(1, n // 10)
    vocabulary = make_vocabulary(TEXT_VOCABULARY)
    rng = random.Random(TEXT_SEED)
    value_bytes = 0
    db = open_durable(path, "buffered", **NEVER)
    try:
        run = db.begin_run(name="bench")
        chunk = 50_000
        for lo in range(0, n, chunk):
            # A chunk at a time: a million strings at once would double the child's peak.
            texts = make_texts(min(chunk, n - lo), vocabulary, rng, TEXT_WORDS)
            value_bytes += sum(map(len, texts))
            load_items(db, [(run, k, t) for k, t in zip(keys[lo:lo + chunk], texts)])
        db.snapshot()
        tail_texts = make_texts(tail, vocabulary, rng, TEXT_WORDS)
        put = db.kv.put
        with gc_paused():
            for k, t in zip(keys, tail_texts):
                put(run, k, t)
    finally:
        db.close()
    word = tail_texts[0].split()[0]  # the newest value of the first key: from the WAL
    ms, db = time_once(lambda: open_durable(path, "buffered", **NEVER))
    opened = time.perf_counter()
    try:
        report = _report(db)
        first_ms, first = time_once(lambda: db.search(word, limit=10))
        while not all(s.get("index_complete", True) for s in db.info()["shards"]):
            if time.perf_counter() - opened > REBUILD_WAIT_S:
                raise RuntimeError(f"the index was not complete {REBUILD_WAIT_S} s after open")
            time.sleep(0.005)
        rebuild_ms = (time.perf_counter() - opened) * 1000
        final = db.search(word, limit=10)
        get = db.kv.get
        hits_hold_word = all(word in get(run, h.ref).split() for h in first.results)
        same = [(h.ref, h.score) for h in first.results] == [(h.ref, h.score) for h in final.results]
    finally:
        db.close()
    return {"ms": ms, "tail": tail, "recovery_report": report, "query": word,
            "first_search_ms": first_ms, "first_index_complete": first.index_complete,
            "first_matches": first.total_matches, "final_matches": final.total_matches,
            "first_hits_hold_word": hits_hold_word, "first_same_as_final": same,
            "index_rebuild_ms": rebuild_ms, "mean_value_bytes": value_bytes / max(n, 1)}


def _full_text(ctx, n, rounds):
    # The text store is built once (its child also times the first open and
    # checks the first search against the finished index), the same store
    # with binary values beside it; then both are reopened in turn, `rounds`
    # times, so the ratio compares neighbours in time, as the peers' rows do.
    text_path, binary_path = ctx.scratch("ours-fulltext"), ctx.scratch("ours-full-binary")
    try:
        first = run_child("fulltext", n, text_path)
        if not first["first_hits_hold_word"]:
            raise RuntimeError("the first search after recovery returned a hit without the word")
        if first["first_index_complete"] and not first["first_same_as_final"]:
            raise RuntimeError("the first search said its index was complete, but its answer "
                               "differs from the answer after the rebuild")
        run_child("build-full", n, binary_path)
        alt = alternate(ctx, "full recovery, text and binary", rounds,
                        lambda _r: _open_round(text_path, n),
                        lambda _r: _open_round(binary_path, n))
    finally:
        ctx.discard(text_path)
        ctx.discard(binary_path)
    ctx.add(_row("recovery.full.text", _median(alt["ours"]), n,
                 {"ours.binary": _peer_figure(alt)},
                 {"keys": n, "wal_tail_puts": first["tail"], "text": first,
                  "recovery_report": alt["ours_detail"][-1]["recovery_report"],
                  "binary_recovery_report": alt["peer_detail"][-1]["recovery_report"]
                  if alt["peer_detail"] else None,
                  "rounds": _rounds_extra(alt),
                  "first_open_ms": first["ms"], "first_search_ms": first["first_search_ms"],
                  "first_index_complete": first["first_index_complete"],
                  "index_rebuild_ms": first["index_rebuild_ms"],
                  "target": "ready within 1.2x of the same store with binary values",
                  "peer_config": {"ours.binary": "the same case with 100-byte binary values "
                                                 "(recovery.full's store), reopened in turn "
                                                 "with the text store"}},
                 {"ours.binary": alt["ratio_spread"]}))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: python -m inmem.bench.tiers.recovery CASE N DIR")
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        print(json.dumps(child(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
