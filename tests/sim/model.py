"""The simulation's model: what the cluster must hold given the clients' journals, and the check.

`check_strict(db, journals)` reads back every run a journal names and
compares it with what the journal allows (strict durability: nothing
acknowledged may be lost):

- a KV key, state cell or JSON document is replayed through its calls as a
  set of possible states (found, value, version). An acknowledged write must
  return the next version of a possible state; a refused one changes nothing;
  one with an unknown outcome may or may not have happened (the clients
  never touch such a slot again, so the set stays small). The state read
  back (through `tx.read`, which also sees the version of a deleted slot)
  must be one of the possible states;
- events: every acknowledged append is present at the sequence it was
  acknowledged with and with its payload, nothing refused is present, an
  unknown append is present at most once and never before an acknowledged
  append issued before it, and the hash chain verifies;
- traces: likewise by id and uid; run status and error: from begin, end and
  abort calls;
- a transaction with an unknown outcome is all there or all absent;
- a hostile call is refused, and no call is answered by an exception that is
  not an InmemError or by the shard's catch-all "internal error";
- the run's replay (`replay_run`) agrees with the live reads.

`check_buffered(db, journals, final_phase)`: kills may lose the newest
writes, so per run the writes present within one shard lifetime (a stretch
of writes each followed by an "active" status read) must be a prefix of the
acknowledged ones: no acknowledged write is missing before a present one.
Writes of the last phase (after the last kill) must all be present, and
nothing refused may be.

Both return a list of findings (empty when the cluster did what it promised).
"""

from __future__ import annotations

import reprlib
import time
from dataclasses import dataclass, field

from inmem.errors import ClusterNotReady, RunNotFound, ShardUnavailable, Timeout

from .workload import TRACE_TYPES, abort_reason, part_value, read_journal

_RETRYABLE = (ShardUnavailable, Timeout, ClusterNotReady)
_VERB = {"ev": "append", "tr": "record"}
_ANY = object()


def read(fn, *args, attempts: int = 200):
    """A read that waits out a shard restart (bounded)."""
    for i in range(attempts):
        try:
            return fn(*args)
        except _RETRYABLE:
            if i == attempts - 1:
                raise
            time.sleep(0.1)


def short(value) -> str:
    if isinstance(value, dict) and isinstance(value.get("u"), str):
        return f"<value {value['u']}>"
    try:
        return reprlib.repr(value)
    except RecursionError:
        return "<deeply nested value>"


def same(a, b) -> bool:
    try:
        return a == b
    except RecursionError:
        return False


@dataclass
class Call:
    client: int
    n: int
    run: str
    parts: list
    hostile: str | None
    phase: int
    out: str = "unk"  # a call without a "done" line was in flight: its outcome is unknown
    err: str | None = None
    msg: str = ""
    res: list | None = None

    def describe(self) -> str:
        names: dict = {}
        for p in self.parts:
            name = f"{p['p']}.{p.get('a') or _VERB[p['p']]}"
            names[name] = names.get(name, 0) + 1
        what = "+".join(name if k == 1 else f"{k}x{name}" for name, k in names.items())
        if len(self.parts) > 1:
            what = f"transaction {what}"
        if self.hostile:
            what = f"hostile {self.hostile}: {what}"
        tail = f" {self.err}: {self.msg[:120]}" if self.err else ""
        return f"client {self.client} call {self.n} ({what}, {self.out}{tail})"


@dataclass
class Journals:
    calls: list = field(default_factory=list)
    #: per client, in order: ("call", Call) or ("obs", run, status)
    entries: dict = field(default_factory=dict)

    @classmethod
    def load(cls, paths: dict) -> "Journals":
        self = cls()
        for client, path in sorted(paths.items()):
            by_n: dict = {}
            seq = self.entries[client] = []
            for rec in read_journal(path):
                kind = rec["k"]
                if kind == "call":
                    call = Call(client, rec["n"], rec["run"], rec["parts"], rec["hostile"],
                                rec["phase"])
                    by_n[call.n] = call
                    self.calls.append(call)
                    seq.append(("call", call))
                elif kind == "done":
                    call = by_n[rec["n"]]
                    call.out, call.err = rec["out"], rec.get("err")
                    call.msg, call.res = rec.get("msg", ""), rec.get("res")
                elif kind == "obs":
                    seq.append(("obs", rec["run"], rec["status"]))
        return self

    def runs(self) -> dict:
        out: dict = {}
        for call in self.calls:
            out.setdefault(call.run, []).append(call)
        return out

    def outcomes(self) -> dict:
        counts: dict = {}
        for call in self.calls:
            counts[call.out] = counts.get(call.out, 0) + 1
        return counts


# -- slots: KV keys, state cells, JSON documents -----------------------------------------


@dataclass
class S:
    found: bool
    value: object
    version: int
    applied: frozenset = frozenset()

    def show(self) -> str:
        return f"v{self.version} {short(self.value) if self.found else 'absent'}"


def _new_value(state: S, part: dict):
    if part["p"] == "js" and part.get("a") == "set":
        if not state.found or not isinstance(state.value, dict):
            return _ANY
        doc = dict(state.value)
        doc[part["path"].removeprefix("$.")] = part_value(part)
        return doc
    return part_value(part)


def _apply(state: S, part: dict, applied=frozenset()) -> S | None:
    """The state after `part` applies to `state`; None when it could not apply there."""
    a = part.get("a")
    if a == "del":
        if not state.found:
            return None
        return S(False, None, state.version + 1, state.applied | applied)
    if a == "cas":
        actual = state.version if state.found else 0
        if part["exp"] != actual:
            return None
    if a == "init" and state.found:
        return None
    value = _new_value(state, part)
    if value is _ANY:
        return None
    return S(True, value, state.version + 1, state.applied | applied)


class SlotModel:
    def __init__(self, where: str):
        self.where = where
        self.states = [S(False, None, 0)]
        self.history: list = []
        self.findings: list = []

    def step(self, call: Call, part: dict, res) -> None:
        self.history.append(call)
        if part.get("bad"):
            if call.out == "ack":
                self.findings.append(f"{self.where}: an invalid key was accepted by "
                                     f"{call.describe()}")
            return
        if call.out == "ack":
            self._ack(call, part, res)
        elif call.out == "rej":
            self._refused(call, part)
        else:
            grown = list(self.states)
            for s in self.states:
                nxt = _apply(s, part, frozenset(((call.client, call.n),)))
                if nxt is not None:
                    grown.append(nxt)
            self.states = grown

    def _ack(self, call: Call, part: dict, res) -> None:
        if part.get("a") == "del":
            nxt = [S(False, None, s.version + 1, s.applied) if s.found else s
                   for s in self.states if s.found == bool(res)]
            if not nxt:
                self.findings.append(
                    f"{self.where}: {call.describe()} returned {res}, but the acknowledged "
                    f"history leaves it {' or '.join(s.show() for s in self.states)}")
                nxt = [S(False, None, max(s.version for s in self.states) + 1)]
            self.states = nxt
            return
        fits = [s for s in self.states if _apply(s, part) is not None and s.version + 1 == res]
        if not fits:
            self.findings.append(
                f"{self.where}: {call.describe()} was acknowledged with version {res}, but the "
                f"acknowledged history leaves the slot at "
                f"{' or '.join(s.show() for s in self.states)} (an acknowledged write was lost, "
                f"or a refused one applied)")
            base = self.states[-1]
            self.states = [S(True, _new_value(base, part), res if isinstance(res, int) else 0)]
            return
        self.states = [_apply(s, part) for s in fits]

    def _refused(self, call: Call, part: dict) -> None:
        if part.get("wrong") or len(self.states) != 1:
            return
        (s,) = self.states
        if call.err == "VersionMismatch" and part.get("a") == "cas":
            if part["exp"] == (s.version if s.found else 0):
                self.findings.append(
                    f"{self.where}: {call.describe()} expected version {part['exp']}, which every "
                    f"acknowledged write says is current (an acknowledged write was lost?)")
        elif call.err == "StateExists" and not s.found:
            self.findings.append(f"{self.where}: {call.describe()} found a cell that no "
                                 "acknowledged write left there")

    def observe(self, found: bool, value, version: int, evidence: dict) -> None:
        matches = [s for s in self.states if s.found == found and s.version == version
                   and (not found or same(s.value, value))]
        if not matches:
            got = f"v{version} {short(value) if found else 'absent'}"
            last = self.history[-1].describe() if self.history else "no call"
            self.findings.append(
                f"{self.where}: read {got}; the journal allows only "
                f"{' or '.join(s.show() for s in self.states)} (last: {last})")
            return
        unknown = set().union(*(s.applied for s in self.states))
        for key in unknown:
            evidence.setdefault(key, set()).update(key in s.applied for s in matches)


# -- the strict check ------------------------------------------------------------------


def _slot_read(db, run, ns, key):
    found, value, version = read(db._backend.call, "tx.read", (run, ns, key))
    return bool(found), value, version


class StrictCheck:
    def __init__(self, db, journals: Journals):
        self.db = db
        self.j = journals
        self.findings: list = []
        #: (client, call n) -> {True, False}: whether an unknown call's parts were found applied
        self.evidence: dict = {}

    def run(self) -> list:
        for run, calls in sorted(self.j.runs().items()):
            self.check_run(run, calls)
        self.check_all_or_nothing()
        self.check_hostile()
        return self.findings

    def check_run(self, run: str, calls: list) -> None:
        info = read(self.db.runs.get, run)
        if not self.check_status(run, calls, info):
            return
        slots: dict = {}
        events, traces = [], []
        for call in calls:
            for i, part in enumerate(call.parts):
                res = call.res[i] if call.out == "ack" else None
                p = part["p"]
                if p in ("kv", "st", "js"):
                    slot = slots.get((p, part["key"]))
                    if slot is None:
                        slot = slots[(p, part["key"])] = SlotModel(
                            f"run {run} {p} {part['key']!r}")
                    slot.step(call, part, res)
                elif p == "ev":
                    events.append((call, part, res))
                elif p == "tr":
                    traces.append((call, part, res))
        live = {}
        for (p, key), slot in sorted(slots.items()):
            if key != "":  # the invalid key: refused, so there is nothing to read
                found, value, version = _slot_read(self.db, run, p, key)
                live[(p, key)] = (found, value)
                slot.observe(found, value, version, self.evidence)
            self.findings.extend(slot.findings)
        live_events = self.check_events(run, events)
        live_traces = self.check_traces(run, traces)
        self.check_replay(run, live, live_events, live_traces)

    def check_status(self, run: str, calls: list, info) -> bool:
        """Run existence, status and error; False when the run (rightly) does not exist."""
        exists = {True}
        possible = [("active", None)]
        for call in calls:
            for part in call.parts:
                if part["p"] != "run":
                    continue
                a = part["a"]
                if a == "begin":
                    exists = {True} if call.out == "ack" else {False} if call.out == "rej" \
                        else {True, False}
                    continue
                if a == "end":
                    after = [("completed", None)]
                elif a == "abort":
                    after = [("failed", _ANY if part.get("reason_nested") else abort_reason(part))]
                else:
                    continue
                if call.out == "ack":
                    possible = after
                elif call.out != "rej":
                    possible = possible + after
        if info is None:
            if True in exists and False not in exists:
                self.findings.append(f"run {run}: acknowledged by begin_run, but it does not exist")
            acked = [c for c in calls if c.out == "ack" and c.parts[0]["p"] != "run"]
            if acked:
                self.findings.append(f"run {run} does not exist, but {acked[0].describe()} "
                                     "was acknowledged on it")
            return False
        if False in exists and True not in exists:
            self.findings.append(f"run {run}: begin_run was refused, but the run exists")
        status = "active" if info.status == "orphaned" else info.status
        if not any(s == status and (e is _ANY or same(e, info.error)) for s, e in possible):
            self.findings.append(
                f"run {run}: status {info.status!r} error {short(info.error)}; the journal allows "
                f"{[(s, short(e)) for s, e in possible]}")
        return True

    def check_events(self, run: str, issued: list) -> list:
        count = read(self.db.events.count, run)
        final = read(self.db.events.range, run, 0, count + 1)
        by_uid = {part["uid"]: (call, part, res) for call, part, res in issued}
        pos: dict = {}
        for i, e in enumerate(final):
            uid = e.payload.get("u") if isinstance(e.payload, dict) else None
            if uid not in by_uid:
                self.findings.append(f"run {run}: event {i} ({e.event_type}, "
                                     f"{short(e.payload)}) comes from no call in the journal")
            elif uid in pos:
                self.findings.append(f"run {run}: event of {by_uid[uid][0].describe()} is "
                                     f"present twice (sequences {pos[uid]} and {i})")
            else:
                pos[uid] = i
        last_acked = -1
        for call, part, res in issued:
            at = pos.get(part["uid"])
            where = f"run {run}: the event of {call.describe()}"
            if call.out == "ack":
                if at is None:
                    self.findings.append(f"{where} was acknowledged at sequence {res} "
                                         "and is lost")
                    continue
                if at != res:
                    self.findings.append(f"{where} was acknowledged at sequence {res} but is "
                                         f"at {at}")
                e = final[at]
                if e.event_type != part["type"] or not same(e.payload, part_value(part)):
                    self.findings.append(f"{where} holds {e.event_type} {short(e.payload)}")
                last_acked = max(last_acked, at)
            elif call.out == "rej":
                if at is not None:
                    self.findings.append(f"{where} was refused but is present at {at}")
            else:
                if at is not None and at < last_acked:
                    self.findings.append(f"{where} (outcome unknown) is at {at}, before an "
                                         "acknowledged event issued earlier")
                self.evidence.setdefault((call.client, call.n), set()).add(at is not None)
        check = read(self.db.events.verify_chain, run)
        if not check.valid:
            self.findings.append(f"run {run}: the event hash chain does not verify: {check}")
        return [e.payload.get("u") if isinstance(e.payload, dict) else None for e in final]

    def check_traces(self, run: str, issued: list) -> dict:
        found: dict = {}
        for t in TRACE_TYPES:
            for tr in read(self.db.traces.by_type, run, t):
                found[tr.id] = tr
        by_uid: dict = {}
        known = {part["uid"] for _, part, _ in issued}
        for tr in found.values():
            uid = tr.data.get("u") if isinstance(tr.data, dict) else None
            if uid not in known:
                self.findings.append(f"run {run}: trace {tr.id} ({short(tr.data)}) comes from "
                                     "no call in the journal")
            elif uid in by_uid:
                self.findings.append(f"run {run}: the trace of uid {uid} is present twice")
            by_uid[uid] = tr
        for call, part, res in issued:
            tr = by_uid.get(part["uid"])
            where = f"run {run}: the trace of {call.describe()}"
            if call.out == "ack":
                if res not in found:
                    self.findings.append(f"{where} (id {res}) was acknowledged and is lost")
                    continue
                tr = found[res]
                if (tr.trace_type != part["type"] or tr.parent_id != part["parent"]
                        or not same(tr.data, part_value(part)) or tr.tags != ["sim"]):
                    self.findings.append(f"{where} is {tr}")
            elif call.out == "rej":
                if tr is not None:
                    self.findings.append(f"{where} was refused but is present ({tr.id})")
            else:
                self.evidence.setdefault((call.client, call.n), set()).add(tr is not None)
        return {tr.id: tr.data.get("u") for tr in found.values() if isinstance(tr.data, dict)}

    def check_replay(self, run: str, live: dict, live_events: list, live_traces: dict) -> None:
        """The run folded from its journal must show what the live tables show."""
        view = read(self.db.replay_run, run)
        tables = {"kv": view.kv, "st": view.state, "js": view.json}
        for (p, key), (found, value) in live.items():
            if (key in tables[p]) != found or (found and not same(tables[p][key], value)):
                shown = short(tables[p].get(key, "absent"))
                self.findings.append(f"run {run}: replay shows {p} {key!r} as {shown}, "
                                     f"the live read as {short(value) if found else 'absent'}")
        for p, table in tables.items():
            extra = sorted(k for k in table if (p, k) not in live)
            if extra:
                self.findings.append(f"run {run}: {p} {extra[:5]} exist but no call wrote them")
        uids = [e.payload.get("u") if isinstance(e.payload, dict) else None for e in view.events]
        if uids != live_events:
            self.findings.append(f"run {run}: replay has {len(uids)} events, the live log "
                                 f"{len(live_events)} (or in another order)")
        if {t.id for t in view.traces} != set(live_traces):
            self.findings.append(f"run {run}: replay and live reads disagree on the traces")

    def check_all_or_nothing(self) -> None:
        for call in self.j.calls:
            seen = self.evidence.get((call.client, call.n), set())
            if len(seen) > 1:
                self.findings.append(f"run {call.run}: {call.describe()} is partly applied "
                                     "(some of its writes are present, some absent)")

    def check_hostile(self) -> None:
        self.findings.extend(error_findings(self.j.calls))
        self.findings.extend(hostile_findings(self.j.calls))


def error_findings(calls) -> list:
    """Calls answered by an exception that is not an InmemError, or by the shard's catch-all."""
    out = []
    for call in calls:
        if call.out == "exc":
            out.append(f"run {call.run}: {call.describe()} raised an exception that is not "
                       "an InmemError")
        elif call.err == "InmemError" and call.msg.startswith("internal error"):
            out.append(f"run {call.run}: {call.describe()} was refused by the shard's "
                       "internal-error path (a bug), not by a typed error")
    return out


def hostile_findings(calls) -> list:
    """A hostile call is refused; one with an unknown outcome (a kill's doing, or its
    own) is tried again, and the last try must be refused."""
    out, last = [], {}
    for call in calls:
        if call.hostile:
            last[(call.client, call.hostile)] = call
            if call.out == "ack":
                out.append(_hostile(call))
    out.extend(_hostile(call) + " (on every try)" for call in last.values() if call.out == "unk")
    return out


def _hostile(call: Call) -> str:
    return (f"hostile {call.hostile} on run {call.run}: expected a refusal with an InmemError "
            f"that changes nothing; got {call.describe()}")


def check_strict(db, journal_paths: dict, stats: dict | None = None) -> list:
    check = StrictCheck(db, Journals.load(journal_paths))
    findings = check.run()
    if stats is not None:
        seen = [v for v in check.evidence.values() if len(v) == 1]
        stats["unknown_found_applied"] = sum(True in v for v in seen)
        stats["unknown_found_absent"] = sum(False in v for v in seen)
    return findings


# -- the buffered check ----------------------------------------------------------------


def _view(db, run):
    try:
        return read(db.replay_run, run)
    except RunNotFound:
        return None


def _present(view, part: dict) -> tuple[bool, bool]:
    """(present, intact) of a part's write in a run view."""
    if view is None:
        return False, True
    p, want = part["p"], part_value(part)
    if p in ("kv", "st", "js"):
        table = {"kv": view.kv, "st": view.state, "js": view.json}[p]
        if part["key"] not in table:
            return False, True
        return True, same(table[part["key"]], want)
    items = view.events if p == "ev" else view.traces
    for item in items:
        body = item.payload if p == "ev" else item.data
        if isinstance(body, dict) and body.get("u") == part["uid"]:
            return True, same(body, want)
    return False, True


def _segments(entries: list, run: str) -> list:
    """A run's write calls cut into stretches that one shard lifetime holds whole.

    A write followed by an "active" status read happened after the previous
    read and before this one with no recovery in between (a recovery marks
    every active run orphaned). A write whose read says otherwise, or whose
    own outcome is unknown, may straddle a restart: it ends the stretch and
    belongs to none.
    """
    segments, current, pending = [], [], None
    for entry in entries:
        if entry[0] == "obs":
            if entry[1] != run:
                continue
            if pending is not None:
                if entry[2] == "active":
                    current.append(pending)
                else:
                    segments.append(current)
                    current = []
                pending = None
            continue
        call = entry[1]
        if call.run != run or call.parts[0]["p"] == "run":
            continue
        if pending is not None:  # no status read after it: it belongs to no stretch
            segments.append(current)
            current = []
        pending = call if call.out in ("ack", "rej") else None
        if pending is None:
            segments.append(current)
            current = []
    segments.append(current)
    return [s for s in segments if s]


def check_buffered(db, journal_paths: dict, final_phase: int, stats: dict | None = None) -> list:
    j = Journals.load(journal_paths)
    findings: list = []
    stats = {} if stats is None else stats
    stats["acknowledged_then_lost"] = 0
    findings.extend(error_findings(j.calls))
    findings.extend(hostile_findings(j.calls))
    for run, calls in sorted(j.runs().items()):
        view = _view(db, run)
        present: dict = {}
        for call in calls:
            if call.parts[0]["p"] == "run":
                continue
            marks = [_present(view, part) for part in call.parts]
            if not all(intact for _, intact in marks):
                findings.append(f"run {run}: {call.describe()} is present with another value")
            flags = {p for p, _ in marks}
            if len(flags) > 1:
                findings.append(f"run {run}: {call.describe()} is partly present")
            present[(call.client, call.n)] = True in flags
            if call.out == "rej" and True in flags:
                findings.append(f"run {run}: {call.describe()} was refused but is present")
            if call.out == "ack" and True not in flags:
                stats["acknowledged_then_lost"] += 1
            if call.out == "ack" and call.phase == final_phase and True not in flags:
                findings.append(f"run {run}: {call.describe()} was acknowledged after the last "
                                "kill and is missing")
        for client, entries in j.entries.items():
            for seg in _segments(entries, run):
                acked = [c for c in seg if c.out == "ack"]
                gap = next((c for c in acked if not present[(c.client, c.n)]), None)
                if gap is None:
                    continue
                later = [c for c in acked[acked.index(gap) + 1:] if present[(c.client, c.n)]]
                if later:
                    findings.append(
                        f"run {run}: hole in one shard lifetime: {later[0].describe()} is "
                        f"present but the earlier acknowledged {gap.describe()} is missing")
        if view is not None:
            uids = [e.payload.get("u") for e in view.events if isinstance(e.payload, dict)]
            order = {part["uid"]: (c.client, c.n) for c in calls for part in c.parts
                     if part["p"] == "ev"}
            keys = [order.get(u) for u in uids]
            if None in keys or keys != sorted(keys):
                findings.append(f"run {run}: events are not those of the journal in its order")
            check = read(db.events.verify_chain, run)
            if not check.valid:
                findings.append(f"run {run}: the event hash chain does not verify: {check}")
    return findings
