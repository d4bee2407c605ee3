"""`events.by_type`, `traces.by_type`, `traces.by_tag` and `traces.roots` in pages (`after=`,
`limit=`) on every backend: the pages put together are the unpaged list for any page size
(hypothesis), the cursors (a sequence or an Event; a trace id or a Trace), what is
recorded between pages, bad pages refused, and pipelines.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inmem
from paging import pages

TYPES = ["thought", "tool_call", "decision"]
TAGS = ["a", "b"]


def trace_listings(db, run):
    """(name, page function) of every trace listing of `run` that pages."""
    out = [(f"type {t}", lambda t=t, **kw: db.traces.by_type(run, t, **kw)) for t in TYPES]
    out += [(f"tag {tag}", lambda tag=tag, **kw: db.traces.by_tag(run, tag, **kw))
            for tag in TAGS]
    out.append(("roots", lambda **kw: db.traces.roots(run, **kw)))
    return out


def fill(db, run, n=30):
    """`n` events of 3 types and `n` traces of 3 types, some tagged, some children."""
    ids = []
    for i in range(n):
        db.events.append(run, ["x", "y", "z"][i % 3], {"i": i})
        parent = ids[i // 2] if i % 4 == 3 else None
        tags = [TAGS[i % 2]] if i % 3 else TAGS
        ids.append(db.traces.record(run, TYPES[(i * 2) % 3], {"i": i}, parent, tags))
    return ids


def test_event_pages_put_together_are_the_unpaged_list(db, run):
    fill(db, run)
    for t in ("x", "y", "z", "none"):
        whole = db.events.by_type(run, t)
        assert [e.event_type for e in whole] == ([t] * 10 if t != "none" else [])
        for limit in (1, 2, 3, 7, 10, 11):
            assert pages(lambda **kw: db.events.by_type(run, t, **kw), limit,
                         lambda e: e.sequence) == whole
            # The last Event itself is a cursor too.
            assert pages(lambda **kw: db.events.by_type(run, t, **kw), limit,
                         lambda e: e) == whole
    whole = db.events.by_type(run, "y")
    assert db.events.by_type(run, "y", limit=4) == whole[:4]
    assert db.events.by_type(run, "y", after=whole[3]) == whole[4:]
    assert db.events.by_type(run, "y", after=whole[3].sequence, limit=2) == whole[4:6]
    # Any sequence, not only one of an event of the type: after 10 is from 11 on.
    assert db.events.by_type(run, "y", after=10) == [e for e in whole if e.sequence > 10]
    assert db.events.by_type(run, "y", after=-5, limit=1) == whole[:1]
    assert db.events.by_type(run, "y", after=whole[-1]) == []
    assert db.events.by_type(run, "y", after=10**6, limit=3) == []


def test_trace_pages_put_together_are_the_unpaged_lists(db, run):
    ids = fill(db, run)
    for name, listing in trace_listings(db, run):
        whole = listing()
        assert whole, name
        for limit in (1, 2, 5, len(whole), len(whole) + 1):
            assert pages(listing, limit, lambda t: t.id) == whole, (name, limit)
            assert pages(listing, limit, lambda t: t) == whole, (name, limit)
        assert listing(limit=3) == whole[:3]
        assert listing(after=whole[2]) == whole[3:]
        assert listing(after=whole[2].id, limit=2) == whole[3:5]
        assert listing(after=whole[-1]) == []
        # Any trace of the run is a place in record order, whatever its type or tags.
        for cursor in (ids[0], ids[13], ids[-1]):
            later = set(ids[ids.index(cursor) + 1:])
            assert listing(after=cursor) == [t for t in whole if t.id in later], (name, cursor)
            assert listing(after=cursor, limit=2) == [t for t in whole if t.id in later][:2]


def test_what_is_recorded_between_pages_comes_in_a_later_page(db, run):
    fill(db, run, 12)
    first = db.traces.roots(run, limit=5)
    events = db.events.by_type(run, "x", limit=2)
    late_trace = db.traces.record(run, "thought", {"late": True})
    late_event = db.events.append(run, "x", {"late": True})
    rest = db.traces.roots(run, after=first[-1], limit=100)
    assert first + rest == db.traces.roots(run)
    assert rest[-1].id == late_trace
    after_first = db.events.by_type(run, "x", after=events[-1])
    assert after_first[-1] == late_event
    assert events + after_first == db.events.by_type(run, "x")


def test_no_paging_arguments_is_the_list_as_before(db, run):
    fill(db, run, 6)
    assert db.events.by_type(run, "x", after=None, limit=None) == db.events.by_type(run, "x")
    for _name, listing in trace_listings(db, run):
        assert listing(after=None, limit=None) == listing()


@pytest.mark.parametrize("bad", [
    {"limit": 0}, {"limit": -1}, {"limit": 1.5}, {"limit": True}, {"limit": "3"},
    {"after": "3"}, {"after": 1.5}, {"after": True}, {"after": [1]}, {"after": b"1"},
    {"after": (1, 2)},
])
def test_a_bad_event_page_is_refused(db, run, bad):
    db.events.append(run, "x")
    with pytest.raises(inmem.InvalidValue):
        db.events.by_type(run, "x", **bad)


@pytest.mark.parametrize("bad", [
    {"limit": 0}, {"limit": -1}, {"limit": 1.5}, {"limit": True}, {"limit": "3"},
    {"after": 3}, {"after": 1.5}, {"after": True}, {"after": ["a"]}, {"after": b"a"},
    {"after": ("a", "b")},
])
def test_a_bad_trace_page_is_refused(db, run, bad):
    db.traces.record(run, "thought", {}, tags=["a"])
    for _name, listing in trace_listings(db, run):
        with pytest.raises(inmem.InvalidValue):
            listing(**bad)


def test_a_trace_cursor_of_another_run_is_trace_not_found(db, run):
    other = db.begin_run()
    elsewhere = db.traces.record(other, "thought", {}, tags=["a"])
    db.traces.record(run, "thought", {}, tags=["a"])
    for _name, listing in trace_listings(db, run):
        with pytest.raises(inmem.TraceNotFound, match=elsewhere):
            listing(after=elsewhere, limit=1)
    with pytest.raises(inmem.RunNotFound):
        db.traces.roots("no-such-run", limit=1)
    with pytest.raises(inmem.RunNotFound):
        db.events.by_type("no-such-run", "x", after=1)


def test_a_pipeline_lists_pages(db, run):
    fill(db, run, 9)
    events = db.events.by_type(run, "x")
    roots = db.traces.roots(run)
    tagged = db.traces.by_tag(run, "a")
    with db.pipeline() as p:
        p.events.by_type(run, "x", limit=2)
        p.events.by_type(run, "x", after=events[1])
        p.traces.roots(run, after=roots[0], limit=2)
        p.traces.by_tag(run, "a", after=tagged[0].id)
        p.traces.by_type(run, "thought", limit=0)
        got = p.execute(raise_on_error=False)
    assert got[0] == events[:2] and got[1] == events[2:]
    assert got[2] == roots[1:3] and got[3] == tagged[1:]
    assert isinstance(got[4], inmem.InvalidValue)


# -- any page size --------------------------------------------------------------------


records = st.lists(st.tuples(st.sampled_from(["ev", "tr"]), st.integers(0, 2),
                             st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
                             st.none() | st.integers(0, 50)),
                   max_size=30)


def test_paging_with_any_page_size_is_the_unpaged_list(db):
    """Whatever the run holds and the page size, the pages put together (each page's last
    item the next's cursor) are exactly the unpaged list, for every listing."""
    @settings(max_examples=20, deadline=None)
    @given(records, st.integers(1, 8))
    def check(script, limit):
        run = db.begin_run()
        ids: list[str] = []
        for kind, k, tags, parent in script:
            if kind == "ev":
                db.events.append(run, ["x", "y", "z"][k], k)
            else:
                parent_id = ids[parent % len(ids)] if parent is not None and ids else None
                ids.append(db.traces.record(run, TYPES[k], {"k": k}, parent_id, tags))
        for t in ("x", "y", "z"):
            assert pages(lambda **kw: db.events.by_type(run, t, **kw), limit,
                         lambda e: e.sequence) == db.events.by_type(run, t)
        for name, listing in trace_listings(db, run):
            assert pages(listing, limit, lambda t: t.id) == listing(), name
    check()


def test_the_reference_example_of_pages_runs():
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                if 'after=page[-1], limit=100' in b]
    with inmem.open(None) as db:
        scope = {"inmem": inmem, "db": db, "run": db.begin_run()}
        exec(compile(block, "docs/api.md", "exec"), scope)
        assert len(scope["calls"]) == 250
