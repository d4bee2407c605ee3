"""Reprs a person can read: short hashes, ISO datetimes, rounded numbers, summaries."""

from __future__ import annotations

import re

import inmem
from inmem.display import iso_us, rounded, short_hex
from inmem.types import (Hit, RecoveryResult, RunDiff, RunView, SearchResponse, SnapshotInfo,
                         Versioned)

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


def test_the_pieces():
    assert iso_us(1_700_000_000_000_000) == "2023-11-14T22:13:20.000000Z"
    assert iso_us(1_700_000_000_123_456) == "2023-11-14T22:13:20.123456Z"
    assert iso_us(None) == "None" and iso_us(10 ** 30) == repr(10 ** 30)
    assert short_hex(bytes(range(32))) == "000102030405…"
    assert short_hex(b"\x01\x02") == "0102" and short_hex(None) == "None"
    assert rounded(0.123456789) == "0.1235" and rounded(3) == "3"


def test_an_event_shows_short_hashes_and_an_iso_time(clocked_db, clock):
    run = clocked_db.begin_run()
    event = clocked_db.events.append(run, "tool_result", {"text": "x" * 500})
    text = repr(event)
    assert text.startswith("Event(sequence=0, event_type='tool_result', payload={'text': 'xxx")
    assert "timestamp=2023-11-14T22:13:20.000000Z" in text
    assert f"hash={event.hash.hex()[:12]}…" in text and "prev_hash=000000000000…" in text
    assert event.hash.hex() not in text and len(text) < 300
    # Only the repr changed: the fields are the exact values.
    assert event.timestamp == clock.now_us and len(event.hash) == 32


def test_every_timestamp_field_is_iso_in_reprs(clocked_db):
    run = clocked_db.begin_run(name="agent")
    clocked_db.kv.put(run, "k", 1)
    clocked_db.state.set(run, "s", 1)
    tid = clocked_db.traces.record(run, "thought", {"t": 1})
    records = [clocked_db.kv.get_versioned(run, "k"), clocked_db.state.read(run, "s"),
               clocked_db.traces.get(run, tid), clocked_db.runs.get(run),
               SnapshotInfo(0, "/x.snap", 5, 1_700_000_000_000_000, 10)]
    for record in records:
        text = repr(record)
        assert re.search(ISO, text), text
        assert "1700000000000000" not in text, text
    assert "ended_at=None" in repr(clocked_db.runs.get(run))


def test_a_run_view_summarises(db, run):
    for i in range(200):
        db.kv.put(run, f"k{i}", "v" * 100)
    db.events.append(run, "t", {})
    view = db.replay_run(run)
    assert repr(view) == (f"RunView(position={view.position}, kv=200 keys, json=0 docs, "
                          "state=0 cells, events=1 event, traces=0 traces)")
    assert repr(RunView({}, {}, {"a": 1}, [], [], 0)).count("1 cell") == 1


def test_scores_and_durations_are_rounded():
    hit = Hit("kv", "r", "k", 1.2345678901234, "a snippet")
    assert repr(hit) == "Hit(primitive='kv', run='r', ref='k', score=1.235, snippet='a snippet')"
    resp = SearchResponse([hit], 1, False, 0.123456789)
    assert repr(resp).endswith("total_matches=1, budget_exhausted=False, took_ms=0.123, "
                               "index_complete=True)")
    rec = RecoveryResult(0, None, 10, 10, 0, 0, [], 0.0123456, 1_700_000_000_000_000,
                         1_700_000_000_012_345, 0.001)
    assert "seconds=0.01235" in repr(rec) and "started_at=2023-11-14T22:13:20.000000Z" in repr(rec)


def test_reprs_do_not_change_equality_or_the_fields():
    v = Versioned("x", 1, 5)
    assert v == ("x", 1, 5) and v.timestamp == 5 and tuple(v) == ("x", 1, 5)
    assert repr(RunDiff([1], [], [2, 3])) == "RunDiff(added=1, removed=0, modified=2)"


def test_a_deep_trace_tree_repr_is_short(db, run):
    root = db.traces.record(run, "thought", {})
    parent = root
    for _ in range(50):
        parent = db.traces.record(run, "thought", {}, parent_id=parent)
    text = repr(db.traces.tree(run, root))
    assert text.endswith("children=1 tree)") and text.count("Trace(") == 1
    assert isinstance(db.traces.tree(run, root), inmem.TraceTree)
