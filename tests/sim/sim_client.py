"""A client process of the fault simulation: seeded random writes on its own runs, journaled.

    python sim_client.py --endpoint URL --seed S --cid C --journal PATH --mode strict|buffered
                         [--hostile KIND,...] [--total-ops N] [--max-value-bytes B]
                         [--max-message-bytes B] [--request-timeout SECONDS]

It prints "ready" once connected. Commands come on stdin, one per line:
"phase P N" (mark phase P, do N operations, then print "done CALLS UNKNOWN
REJECTED") or "stop" (close and exit 0). Every call is journaled before it
is sent and its outcome after it returns (see workload.py); the parent
reads the journal, never this process's memory, so what it checks is what a
client could know.

strict: every primitive, updates of existing keys, compare-and-swap (some
with a wrong version on purpose), deletes, transactions (some made to
conflict), run ends and aborts, and writes that must be refused (a finished
run, an empty key, an unknown trace parent). A slot whose last write has an
unknown outcome is never written again, so the model knows that write is
either the slot's final state or absent.

buffered: writes that each create a fresh slot, and after each one a status
read of its run, journaled: "active" means no restart happened since the
previous read (a recovery marks every active run orphaned), which is how
the model knows which writes belong to one shard lifetime.

With --hostile, the named hostile calls (see HOSTILE) are made at seeded
positions (again while the outcome is unknown, up to HOSTILE_TRIES times);
each must be refused with an InmemError and change nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _p in (_ROOT, _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import inmem  # noqa: E402
from inmem.errors import InmemError  # noqa: E402

from workload import (EVENT_TYPES, LONG_TTL, TRACE_TYPES, UNKNOWN_ERRORS, Journal,  # noqa: E402
                      big_value, hostile_value, value_for)

#: how long a client waits for its run's shard to answer again after an unknown outcome
WAIT_BACK_S = 60.0
#: a phase that takes longer than this stops early (the parent reports it)
PHASE_MAX_S = 240.0
RUNS_PER_CLIENT = 3
HOSTILE_TRIES = 3


class RunState:
    """What a client knows for sure about one of its runs (only acknowledged effects)."""

    def __init__(self, run_id: str):
        self.id = run_id
        self.kv: dict = {}      # key -> [found, version]
        self.st: dict = {}      # name -> [found, version]
        self.js: dict = {}      # key -> [found, version]
        self.traces: list = []  # acknowledged trace ids
        self.fresh_n = 0

    def fresh(self, prefix: str) -> str:
        self.fresh_n += 1
        return f"{prefix}{self.fresh_n}"

    def table(self, p: str) -> dict:
        return {"kv": self.kv, "st": self.st, "js": self.js}[p]


def _normalize(part: dict, result):
    if part["p"] == "ev":
        return result.sequence
    return result


class Client:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(f"{args.seed}-client-{args.cid}")
        self.db = inmem.connect(args.endpoint, timeout=60, request_timeout=args.request_timeout,
                                max_message_bytes=args.max_message_bytes)
        self.journal = Journal(args.journal)
        self.n = 0
        self.uids = 0
        self.runs_made = 0
        self.active: list = []
        self.finished: list = []
        self.phase = 0
        self.ops_done = 0
        self.unknown = 0
        self.rejected = 0
        self.hostile = self._hostile_plan(args)
        self.parent = os.getppid()  # a client outlives no test: it stops when its parent is gone

    # -- the call wrapper ----------------------------------------------------------------

    def uid(self) -> str:
        self.uids += 1
        return f"{self.args.seed}.{self.args.cid}.{self.uids}"

    def call(self, run: str, parts: list, fn, hostile: str | None = None) -> dict:
        n = self.n
        self.n += 1
        self.journal.write({"k": "call", "n": n, "run": run, "parts": parts, "hostile": hostile,
                            "phase": self.phase, "t": round(time.time(), 4)})
        try:
            results = fn()
        except InmemError as exc:
            name = type(exc).__name__
            out = "unk" if name in UNKNOWN_ERRORS else "rej"
            rec = {"k": "done", "n": n, "out": out, "err": name, "msg": str(exc)[:300]}
        except Exception as exc:  # not an InmemError: a finding, journaled as such
            rec = {"k": "done", "n": n, "out": "exc", "err": type(exc).__name__,
                   "msg": repr(exc)[:300]}
        else:
            rec = {"k": "done", "n": n, "out": "ack",
                   "res": [_normalize(p, r) for p, r in zip(parts, results)]}
        rec["t"] = round(time.time(), 4)
        self.journal.write(rec)
        if rec["out"] in ("unk", "exc"):
            self.unknown += 1
        elif rec["out"] == "rej":
            self.rejected += 1
        return rec

    def wait_back(self, run: str) -> None:
        """After an unknown outcome: wait (bounded) until the run's shard answers again."""
        deadline = time.monotonic() + WAIT_BACK_S
        while time.monotonic() < deadline:
            try:
                self.db.run_status(run)
                return
            except InmemError:
                time.sleep(0.05)

    # -- runs --------------------------------------------------------------------------

    def begin(self) -> None:
        self.runs_made += 1
        rid = f"s{self.args.seed}-c{self.args.cid}-r{self.runs_made}"
        part = {"p": "run", "a": "begin"}
        rec = self.call(rid, [part], lambda: [self.db.begin_run(
            name=f"sim {self.args.cid}", run_id=rid, tags=["sim"], metadata={"c": self.args.cid})])
        if rec["out"] == "ack":
            self.active.append(RunState(rid))
        elif rec["out"] != "rej":
            self.wait_back(rid)

    def fill_runs(self) -> None:
        for _ in range(RUNS_PER_CLIENT * 4):
            if len(self.active) >= RUNS_PER_CLIENT:
                return
            self.begin()

    def settle(self, r: RunState, parts: list, rec: dict) -> None:
        """Update what the client knows from a call's outcome."""
        out = rec["out"]
        if out == "rej":
            return
        if out == "ack":
            for part, res in zip(parts, rec["res"]):
                self._settle_ack(r, part, res)
            return
        # Unknown: never touch these slots (or this run, for a status change) again.
        for part in parts:
            if part["p"] in ("kv", "st", "js"):
                r.table(part["p"]).pop(part["key"], None)
            elif part["p"] == "run" and r in self.active:
                self.active.remove(r)
        self.wait_back(r.id)

    def _settle_ack(self, r: RunState, part: dict, res) -> None:
        p = part["p"]
        if p in ("kv", "st", "js"):
            table = r.table(p)
            if part.get("a") == "del":
                entry = table.get(part["key"])
                if res and entry is not None:
                    table[part["key"]] = [False, entry[1] + 1]
            else:
                table[part["key"]] = [True, res]
        elif p == "tr":
            r.traces.append(res)
        elif p == "run" and part["a"] in ("end", "abort"):
            if r in self.active:
                self.active.remove(r)
            self.finished.append(r)

    # -- strict operations -------------------------------------------------------------

    def pick(self, table: dict, found=None):
        keys = [k for k, (f, _) in table.items() if found is None or f == found]
        return self.rng.choice(sorted(keys)) if keys else None

    def op_strict(self) -> None:
        r = self.rng.choice(self.active)
        choices = [("kv_put", 20), ("kv_cas", 8), ("kv_del", 5), ("ev", 15), ("st_init", 4),
                   ("st_set", 6), ("st_cas", 5), ("tr", 8), ("js_put", 5), ("js_set", 5),
                   ("tx", 10), ("end", 2), ("abort", 2), ("dead_run", 1), ("bad_key", 1)]
        name = self.rng.choices([c for c, _ in choices], [w for _, w in choices])[0]
        if name == "dead_run" and not self.finished:
            name = "kv_put"
        if name == "tx":
            return self.op_tx(r)
        if name in ("end", "abort"):
            return self.op_finish(r, name)
        if name == "dead_run":
            dead = self.rng.choice(self.finished)
            return self.single(dead, self.part_kv_put(dead, fresh=True))
        if name == "bad_key":
            uid = self.uid()
            part = {"p": "kv", "a": "put", "key": "", "uid": uid, "ttl": None, "bad": True}
            return self.single(r, part)
        part = getattr(self, "part_" + name)(r)
        if part is None:
            part = self.part_kv_put(r)
        return self.single(r, part)

    def single(self, r: RunState, part: dict, hostile: str | None = None) -> dict:
        rec = self.call(r.id, [part], lambda: [self.send(r.id, part)], hostile)
        self.settle(r, [part], rec)
        return rec

    def send(self, run: str, part: dict):
        """Make the one call a part describes."""
        db = self.db
        p, a = part["p"], part.get("a")
        value = hostile_value(part) if "hv" in part else (
            value_for(part["uid"]) if "uid" in part else None)
        if p == "kv":
            if a == "put":
                return db.kv.put(run, part["key"], value, ttl=part["ttl"])
            if a == "cas":
                return db.kv.cas(run, part["key"], part["exp"], value)
            return db.kv.delete(run, part["key"])
        if p == "st":
            if a == "init":
                return db.state.init(run, part["key"], value)
            if a == "set":
                return db.state.set(run, part["key"], value)
            return db.state.cas(run, part["key"], part["exp"], value)
        if p == "js":
            if a == "put":
                return db.json.put(run, part["key"], value)
            return db.json.set(run, part["key"], part["path"], value)
        if p == "ev":
            return db.events.append(run, part["type"], value)
        if p == "tr":
            return db.traces.record(run, part["type"], value, parent_id=part["parent"],
                                    tags=["sim"])
        raise AssertionError(f"no single call for {part!r}")

    def part_kv_put(self, r: RunState, fresh: bool = False, ttl="random") -> dict:
        key = None if fresh or self.rng.random() < 0.5 else self.pick(r.kv)
        if ttl == "random":
            ttl = LONG_TTL if self.rng.random() < 0.3 else None
        return {"p": "kv", "a": "put", "key": key or r.fresh("k"), "uid": self.uid(), "ttl": ttl}

    def part_kv_cas(self, r: RunState):
        key = self.pick(r.kv)
        if key is None:
            return None
        found, version = r.kv[key]
        exp = version if found else 0
        wrong = self.rng.random() < 0.15
        if wrong:
            exp += 1 + self.rng.randrange(3)
        return {"p": "kv", "a": "cas", "key": key, "uid": self.uid(), "exp": exp, "wrong": wrong}

    def part_kv_del(self, r: RunState):
        key = self.pick(r.kv)
        if key is None:
            return None
        return {"p": "kv", "a": "del", "key": key, "uid": self.uid()}

    def part_ev(self, r: RunState) -> dict:
        return {"p": "ev", "type": self.rng.choice(EVENT_TYPES), "uid": self.uid()}

    def part_st_init(self, r: RunState) -> dict:
        existing = self.pick(r.st, found=True) if self.rng.random() < 0.1 else None
        return {"p": "st", "a": "init", "key": existing or r.fresh("s"), "uid": self.uid()}

    def part_st_set(self, r: RunState) -> dict:
        key = self.pick(r.st) if self.rng.random() < 0.7 else None
        return {"p": "st", "a": "set", "key": key or r.fresh("s"), "uid": self.uid()}

    def part_st_cas(self, r: RunState):
        key = self.pick(r.st, found=True)
        if key is None:
            return None
        exp = r.st[key][1]
        wrong = self.rng.random() < 0.15
        if wrong:
            exp += 1
        return {"p": "st", "a": "cas", "key": key, "uid": self.uid(), "exp": exp, "wrong": wrong}

    def part_tr(self, r: RunState) -> dict:
        roll = self.rng.random()
        if roll < 0.1:
            parent = "no-such-trace"
        elif roll < 0.5 and r.traces:
            parent = self.rng.choice(r.traces)
        else:
            parent = None
        return {"p": "tr", "type": self.rng.choice(TRACE_TYPES), "uid": self.uid(),
                "parent": parent}

    def part_js_put(self, r: RunState) -> dict:
        key = self.pick(r.js) if self.rng.random() < 0.4 else None
        return {"p": "js", "a": "put", "key": key or r.fresh("d"), "uid": self.uid()}

    def part_js_set(self, r: RunState):
        key = self.pick(r.js, found=True)
        if key is None:
            return None
        return {"p": "js", "a": "set", "key": key, "uid": self.uid(), "path": "$.f"}

    def op_finish(self, r: RunState, how: str) -> None:
        if how == "end":
            part = {"p": "run", "a": "end"}
            fn = lambda: [self.db.end_run(r.id)]  # noqa: E731
        else:
            part = {"p": "run", "a": "abort", "reason": f"gave up {self.uid()}"}
            fn = lambda: [self.db.abort_run(r.id, part["reason"])]  # noqa: E731
        self.settle(r, [part], self.call(r.id, [part], fn))
        self.fill_runs()

    # -- transactions ------------------------------------------------------------------

    def tx_parts(self, r: RunState) -> list:
        parts = []
        used = set()
        for _ in range(self.rng.randint(2, 4)):
            kind = self.rng.choice(("kv", "kv_del", "ev", "st", "js", "tr"))
            if kind == "kv":
                part = self.part_kv_put(r)
            elif kind == "kv_del":
                part = self.part_kv_del(r) or self.part_kv_put(r)
            elif kind == "ev":
                part = self.part_ev(r)
            elif kind == "st":
                part = self.part_st_set(r)
            elif kind == "js":
                part = self.part_js_put(r)
            else:
                part = {"p": "tr", "type": self.rng.choice(TRACE_TYPES), "uid": self.uid(),
                        "parent": None}
            slot = (part["p"], part.get("key"))
            if part.get("key") is not None and slot in used:
                continue  # one write per slot keeps the model's bookkeeping per part
            used.add(slot)
            parts.append(part)
        return parts

    @staticmethod
    def tx_write(tx, part: dict) -> None:
        value = hostile_value(part) if "hv" in part else value_for(part["uid"])
        p, a = part["p"], part.get("a")
        if p == "kv" and a == "del":
            tx.kv.delete(part["key"])
        elif p == "kv":
            tx.kv.put(part["key"], value, ttl=part["ttl"])
        elif p == "ev":
            tx.events.append(part["type"], value)
        elif p == "st":
            tx.state.set(part["key"], value)
        elif p == "js":
            tx.json.put(part["key"], value)
        elif p == "tr":
            tx.traces.record(part["type"], value, parent_id=part["parent"], tags=["sim"])
        else:
            raise AssertionError(f"no transactional write for {part!r}")

    def op_tx(self, r: RunState) -> None:
        parts = self.tx_parts(r)
        if self.rng.random() < 0.15:
            return self.op_tx_conflict(r, parts)

        def commit():
            with self.db.transaction(r.id) as tx:
                for part in parts:
                    self.tx_write(tx, part)
            return tx.results

        self.settle(r, parts, self.call(r.id, parts, commit))

    def op_tx_conflict(self, r: RunState, parts: list) -> None:
        """A transaction that read a key which changes before it commits: refused whole."""
        key = self.pick(r.kv) or r.fresh("k")
        parts = [p for p in parts if p.get("key") != key or p["p"] != "kv"]
        tx = self.db.transaction(r.id)
        try:
            tx.kv.get(key)
        except InmemError:
            tx.abort()
            return
        direct = {"p": "kv", "a": "put", "key": key, "uid": self.uid(), "ttl": None}
        rec = self.call(r.id, [direct], lambda: [self.send(r.id, direct)])
        self.settle(r, [direct], rec)
        if rec["out"] != "ack":
            tx.abort()
            return

        def commit():
            for part in parts:
                self.tx_write(tx, part)
            return tx.commit()

        self.settle(r, parts, self.call(r.id, parts, commit))

    # -- buffered operations -----------------------------------------------------------

    def op_buffered(self) -> None:
        r = self.rng.choice(self.active)
        kind = self.rng.choice(("kv", "ev", "st", "js", "tr", "tx"))
        if kind == "tx":
            kinds = self.rng.sample(("kv", "ev", "st", "js", "tr"), self.rng.randint(2, 3))
            parts = [self.fresh_part(r, k) for k in kinds]

            def commit():
                with self.db.transaction(r.id) as tx:
                    for part in parts:
                        self.tx_write(tx, part)
                return tx.results

            rec = self.call(r.id, parts, commit)
        else:
            part = self.fresh_part(r, kind)
            rec = self.call(r.id, [part], lambda: [self.send(r.id, part)])
        if rec["out"] in ("unk", "exc"):
            self.wait_back(r.id)
        self.observe(r)

    def fresh_part(self, r: RunState, kind: str) -> dict:
        uid = self.uid()
        if kind == "kv":
            return {"p": "kv", "a": "put", "key": r.fresh("k"), "uid": uid, "ttl": None}
        if kind == "st":
            return {"p": "st", "a": "set", "key": r.fresh("s"), "uid": uid}
        if kind == "js":
            return {"p": "js", "a": "put", "key": r.fresh("d"), "uid": uid}
        if kind == "ev":
            return {"p": "ev", "type": self.rng.choice(EVENT_TYPES), "uid": uid}
        return {"p": "tr", "type": self.rng.choice(TRACE_TYPES), "uid": uid, "parent": None}

    def observe(self, r: RunState) -> None:
        """Journal the run's status; bring a run a restart touched back to plain "active"."""
        try:
            status = self.db.run_status(r.id)
        except InmemError as exc:
            status = f"error {type(exc).__name__}"
        self.journal.write({"k": "obs", "run": r.id, "status": status})
        if status == "active":
            return
        if status.startswith("error"):
            self.wait_back(r.id)
        elif status == "orphaned":
            self.status_call(r, "pause", lambda: self.db.runs.pause(r.id))
            self.status_call(r, "resume", lambda: self.db.runs.resume(r.id))
        elif status == "paused":
            self.status_call(r, "resume", lambda: self.db.runs.resume(r.id))
        elif status == "not_found":
            self.status_call(r, "begin", lambda: self.db.begin_run(run_id=r.id, tags=["sim"]))

    def status_call(self, r: RunState, action: str, fn) -> None:
        rec = self.call(r.id, [{"p": "run", "a": action}], lambda: [fn()])
        if rec["out"] in ("unk", "exc"):
            self.wait_back(r.id)

    # -- hostile operations ------------------------------------------------------------

    def _hostile_plan(self, args) -> dict:
        kinds = [k for k in (args.hostile or "").split(",") if k]
        if not kinds:
            return {}
        unknown = set(kinds) - HOSTILE.keys()
        if unknown:
            raise SystemExit(f"unknown hostile kinds {sorted(unknown)}")
        lo = args.total_ops // 10
        hi = max(args.total_ops * 6 // 10, lo + len(kinds))
        at = sorted(self.rng.sample(range(lo, hi), len(kinds)))
        return dict(zip(at, kinds))

    def op_hostile(self, kind: str) -> None:
        """One hostile call; again (fresh, up to HOSTILE_TRIES times) while its outcome is unknown.

        An unknown outcome may be a harness kill's doing; the model judges the
        last try (it must be refused) and every try that was acknowledged.
        """
        for _ in range(HOSTILE_TRIES):
            rec = HOSTILE[kind](self, self.rng.choice(self.active), kind)
            self.fill_runs()
            if rec["out"] != "unk" or not self.active:
                return

    def h_ttl(self, r: RunState, kind: str) -> dict:
        ttl = {"ttl_1e300": 1e300, "ttl_10e30_int": 10**30, "ttl_inf": float("inf"),
               "ttl_nan": float("nan"), "ttl_negative": -5}[kind]
        return self.single(r, self.part_kv_put(r, fresh=True, ttl=ttl), hostile=kind)

    def h_tx_ttl(self, r: RunState, kind: str) -> dict:
        parts = [self.part_kv_put(r, fresh=True, ttl=1e300), self.part_ev(r)]
        return self.hostile_tx(r, parts, kind)

    def h_abort(self, r: RunState, kind: str) -> dict:
        if kind == "abort_surrogate_reason":
            part = {"p": "run", "a": "abort", "reason": "\udcff"}
            reason = "\udcff"
        elif kind == "abort_huge_reason":
            part = {"p": "run", "a": "abort", "reason_len": self.args.max_value_bytes + 1}
            reason = "r" * part["reason_len"]
        else:
            part = {"p": "run", "a": "abort", "reason_nested": True}
            reason = hostile_value({"hv": "nested", "uid": self.uid()})
        rec = self.call(r.id, [part], lambda: [self.db.abort_run(r.id, reason)], kind)
        self.settle(r, [part], rec)
        return rec

    def h_nested(self, r: RunState, kind: str) -> dict:
        uid = self.uid()
        p = kind.split("_", 1)[1]
        if p == "kv":
            part = {"p": "kv", "a": "put", "key": r.fresh("k"), "uid": uid, "ttl": None}
        elif p == "event":
            part = {"p": "ev", "type": "observe", "uid": uid}
        elif p == "state":
            part = {"p": "st", "a": "set", "key": r.fresh("s"), "uid": uid}
        elif p == "json":
            part = {"p": "js", "a": "put", "key": r.fresh("d"), "uid": uid}
        elif p == "trace":
            part = {"p": "tr", "type": "thought", "uid": uid, "parent": None}
        else:
            raise AssertionError(kind)
        part["hv"] = "nested"
        return self.single(r, part, hostile=kind)

    def h_nested_tx(self, r: RunState, kind: str) -> dict:
        part = {"p": "kv", "a": "put", "key": r.fresh("k"), "uid": self.uid(), "ttl": None,
                "hv": "nested"}
        return self.hostile_tx(r, [self.part_ev(r), part], kind)

    def h_nested_metadata(self, r: RunState, kind: str) -> dict:
        self.runs_made += 1
        rid = f"s{self.args.seed}-c{self.args.cid}-r{self.runs_made}"
        meta = hostile_value({"hv": "nested", "uid": rid})
        return self.call(rid, [{"p": "run", "a": "begin", "hv": "nested"}],
                         lambda: [self.db.begin_run(run_id=rid, metadata=meta)], kind)

    def h_too_large(self, r: RunState, kind: str) -> dict:
        part = self.part_kv_put(r, fresh=True, ttl=None)
        part.update(hv="big", size=self.args.max_value_bytes + 1)
        return self.single(r, part, hostile=kind)

    def h_tx_over_64mib(self, r: RunState, kind: str) -> dict:
        """A transaction whose writes total more than 64 MiB, each value under the limit."""
        size = self.args.max_value_bytes - 1024
        count = 64 * 2**20 // size + 2
        parts = [{"p": "kv", "a": "put", "key": r.fresh("big"), "uid": self.uid(), "ttl": None,
                  "hv": "big", "size": size} for _ in range(count)]
        return self.hostile_tx(r, parts, kind, shared=big_value(size))

    def hostile_tx(self, r: RunState, parts: list, kind: str, shared=None) -> dict:
        def commit():
            with self.db.transaction(r.id) as tx:
                for part in parts:
                    if shared is not None:
                        tx.kv.put(part["key"], shared)  # one object: the client stays small
                    else:
                        self.tx_write(tx, part)
            return tx.results

        rec = self.call(r.id, parts, commit, kind)
        self.settle(r, parts, rec)
        return rec

    # -- the command loop --------------------------------------------------------------

    def run_phase(self, phase: int, ops: int) -> None:
        self.phase = phase
        self.journal.write({"k": "phase", "p": phase})
        deadline = time.monotonic() + PHASE_MAX_S
        self.fill_runs()
        for _ in range(ops):
            if time.monotonic() > deadline or not self.active or os.getppid() != self.parent:
                break
            kind = self.hostile.pop(self.ops_done, None)
            if kind is not None:
                self.op_hostile(kind)
            elif self.args.mode == "strict":
                self.op_strict()
            else:
                self.op_buffered()
            self.ops_done += 1
            self.fill_runs()

    def close(self) -> None:
        self.journal.close()
        self.db.close()


HOSTILE = {
    "ttl_1e300": Client.h_ttl, "ttl_10e30_int": Client.h_ttl, "ttl_inf": Client.h_ttl,
    "ttl_nan": Client.h_ttl, "ttl_negative": Client.h_ttl, "tx_ttl_1e300": Client.h_tx_ttl,
    "abort_surrogate_reason": Client.h_abort, "abort_huge_reason": Client.h_abort,
    "abort_nested_reason": Client.h_abort,
    "nested_kv": Client.h_nested, "nested_event": Client.h_nested,
    "nested_state": Client.h_nested, "nested_json": Client.h_nested,
    "nested_trace": Client.h_nested, "nested_tx": Client.h_nested_tx,
    "nested_metadata": Client.h_nested_metadata, "value_too_large": Client.h_too_large,
    "tx_over_64mib": Client.h_tx_over_64mib,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--cid", type=int, required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--mode", choices=("strict", "buffered"), required=True)
    p.add_argument("--hostile", default="")
    p.add_argument("--total-ops", type=int, default=100)
    p.add_argument("--max-value-bytes", type=int, default=16 * 2**20)
    p.add_argument("--max-message-bytes", type=int, default=64 * 2**20)
    p.add_argument("--request-timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    client = Client(args)
    print("ready", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words or words[0] == "stop":
                break
            if words[0] == "phase":
                client.run_phase(int(words[1]), int(words[2]))
                print(f"done {client.n} {client.unknown} {client.rejected}", flush=True)
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
