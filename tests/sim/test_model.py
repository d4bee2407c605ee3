"""The simulation's model on its own: hand-written journals against an embedded store.

These prove the checks have teeth (each kind of loss or leak is reported)
and are not too strict (histories the store may legally show pass), with no
processes and in milliseconds.
"""

from __future__ import annotations

import pytest

import inmem

from .model import check_buffered, check_strict
from .workload import Journal, value_for

RUN = "r1"


class Script:
    """Journals calls the way sim_client does, optionally making them on a real store."""

    def __init__(self, path):
        self.journal = Journal(path)
        self.path = path
        self.n = 0

    def call(self, parts, out="ack", res=None, err=None, run=RUN, phase=0):
        n = self.n
        self.n += 1
        self.journal.write({"k": "call", "n": n, "run": run, "parts": parts, "hostile": None,
                            "phase": phase})
        rec = {"k": "done", "n": n, "out": out}
        if out == "ack":
            rec["res"] = res
        if err is not None:
            rec.update(err=err, msg="")
        self.journal.write(rec)

    def obs(self, status, run=RUN):
        self.journal.write({"k": "obs", "run": run, "status": status})

    def paths(self):
        self.journal.close()
        return {0: self.path}


def kv(key, uid, a="put", **extra):
    return {"p": "kv", "a": a, "key": key, "uid": uid, "ttl": None, **extra}


def ev(uid, type_="act"):
    return {"p": "ev", "type": type_, "uid": uid}


@pytest.fixture
def db():
    d = inmem.open(None)
    yield d
    d.close()


@pytest.fixture
def script(tmp_path):
    return Script(tmp_path / "c0.jsonl")


def begun(db, script):
    db.begin_run(run_id=RUN)
    script.call([{"p": "run", "a": "begin"}], res=[RUN])


def test_strict_model_accepts_a_legal_history(db, script):
    begun(db, script)
    script.call([kv("k1", "a")], res=[db.kv.put(RUN, "k1", value_for("a"))])
    script.call([kv("k1", "b", a="cas", exp=1)], res=[db.kv.cas(RUN, "k1", 1, value_for("b"))])
    script.call([kv("k1", "c", a="cas", exp=7, wrong=True)], out="rej", err="VersionMismatch")
    script.call([kv("k1", "d", a="del")], res=[db.kv.delete(RUN, "k1")])
    script.call([{"p": "st", "a": "init", "key": "s1", "uid": "e"}],
                res=[db.state.init(RUN, "s1", value_for("e"))])
    script.call([{"p": "js", "a": "put", "key": "d1", "uid": "f"}],
                res=[db.json.put(RUN, "d1", value_for("f"))])
    script.call([{"p": "js", "a": "set", "key": "d1", "uid": "g", "path": "$.f"}],
                res=[db.json.set(RUN, "d1", "$.f", value_for("g"))])
    script.call([ev("h")], res=[db.events.append(RUN, "act", value_for("h")).sequence])
    tid = db.traces.record(RUN, "thought", value_for("i"), tags=["sim"])
    script.call([{"p": "tr", "type": "thought", "uid": "i", "parent": None}], res=[tid])
    # Unknown outcomes: one transaction that happened, one that did not.
    with db.transaction(RUN) as tx:
        tx.kv.put("k2", value_for("j"))
        tx.events.append("act", value_for("k"))
    script.call([kv("k2", "j"), ev("k")], out="unk", err="ShardUnavailable")
    script.call([kv("k3", "l"), ev("m")], out="unk", err="Timeout")
    stats = {}
    assert check_strict(db, script.paths(), stats) == []
    assert stats == {"unknown_found_applied": 1, "unknown_found_absent": 1}


def test_strict_model_finds_a_lost_acknowledged_write(db, script):
    begun(db, script)
    script.call([kv("k1", "a")], res=[db.kv.put(RUN, "k1", value_for("a"))])
    script.call([kv("k1", "b")], res=[2])  # acknowledged, then lost
    findings = check_strict(db, script.paths())
    assert len(findings) == 1 and "kv 'k1': read v1 <value a>" in findings[0], findings
    assert "allows only v2 <value b>" in findings[0]


def test_strict_model_finds_a_refused_write_that_is_visible(db, script):
    begun(db, script)
    db.kv.put(RUN, "k1", value_for("a"))
    script.call([kv("k1", "a")], out="rej", err="InvalidValue")
    findings = check_strict(db, script.paths())
    assert any("kv 'k1': read v1 <value a>" in f and "allows only v0 absent" in f
               for f in findings), findings


def test_strict_model_finds_lost_and_misplaced_events(db, script):
    begun(db, script)
    db.events.append(RUN, "act", value_for("b"))
    script.call([ev("a")], res=[0])  # acknowledged at 0, lost
    script.call([ev("b")], res=[1])  # acknowledged at 1, found at 0
    script.call([ev("c")], out="rej", err="RunNotActive")
    db.events.append(RUN, "act", value_for("c"))
    findings = "\n".join(check_strict(db, script.paths()))
    assert "acknowledged at sequence 0 and is lost" in findings
    assert "acknowledged at sequence 1 but is at 0" in findings
    assert "was refused but is present at 1" in findings


def test_strict_model_finds_a_partly_applied_transaction(db, script):
    begun(db, script)
    db.kv.put(RUN, "k1", value_for("a"))  # the transaction's first write, without its event
    script.call([kv("k1", "a"), ev("b")], out="unk", err="ShardUnavailable")
    findings = check_strict(db, script.paths())
    assert any("is partly applied" in f for f in findings), findings


def test_strict_model_finds_a_run_status_no_call_explains(db, script):
    begun(db, script)
    db.abort_run(RUN, "r" * 100)
    script.call([{"p": "run", "a": "abort", "reason_len": 100}], out="rej", err="ValueTooLarge")
    findings = check_strict(db, script.paths())
    assert any("status 'failed'" in f for f in findings), findings


def test_buffered_model_accepts_a_lost_suffix_and_finds_a_hole(db, tmp_path):
    for name, present, hole in (("suffix", ("a", "b"), False), ("hole", ("a", "c"), True)):
        d = inmem.open(None)
        script = Script(tmp_path / f"{name}.jsonl")
        begun(d, script)
        for i, uid in enumerate("abc"):
            if uid in present:
                d.kv.put(RUN, f"k{i}", value_for(uid))
            script.call([kv(f"k{i}", uid)], res=[1], phase=0)
            script.obs("active")
        stats = {}
        findings = check_buffered(d, script.paths(), final_phase=1, stats=stats)
        d.close()
        assert stats["acknowledged_then_lost"] == 1
        assert bool(findings) == hole, (name, findings)
        if hole:
            assert "hole in one shard lifetime" in findings[0] and "call 3" in findings[0]


def test_buffered_model_does_not_compare_writes_across_a_restart(db, script):
    begun(db, script)
    script.call([kv("k0", "a")], res=[1])                # lost in the crash
    script.obs("active")
    script.call([kv("k1", "b")], res=[1])                # straddles it: judged by nobody
    script.obs("orphaned")
    db.kv.put(RUN, "k2", value_for("c"))
    script.call([kv("k2", "c")], res=[1], phase=1)       # after the restart: must be there
    script.obs("active")
    script.call([kv("k3", "d")], res=[1], phase=1)       # after the restart, and lost: a finding
    script.obs("active")
    findings = check_buffered(db, script.paths(), final_phase=1)
    assert len(findings) == 1 and "call 4" in findings[0] and "after the last kill" in findings[0]
