"""`runs.list` in pages (`after=`, `limit=`) on every backend: the pages put together are
the unpaged list, filters apply to pages, runs deleted or created between pages, bad pages
refused, and a model of the documented order (created_at, then run_id) checked by hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import inmem
from paging import pages


def page_through(db, limit, **filters) -> list:
    """Every listed run, a page of `limit` at a time, each page's last run the next's `after`."""
    return pages(lambda **page: db.runs.list(**filters, **page), limit)


def _make_runs(db, clock) -> list[str]:
    """25 runs over 2 shards (on a cluster), some created in the same µs (ties by run id)."""
    ids = []
    for i in range(25):
        rid = f"r{(i * 7) % 25:02d}"  # ids not in creation order
        tags = ("even",) if i % 2 == 0 else ("odd",)
        ids.append(db.begin_run(run_id=rid, tags=tags, parent=ids[0] if i > 12 else None))
        if i % 3 == 0:
            clock.advance(1)
    return ids


def test_pages_put_together_are_the_unpaged_list(clocked_db, clock):
    db = clocked_db
    _make_runs(db, clock)
    whole = db.runs.list()
    assert len(whole) == 25
    assert whole == sorted(whole, key=lambda r: (r.created_at, r.run_id))
    for limit in (1, 2, 3, 7, 25, 26, 1000):
        assert page_through(db, limit) == whole
    assert db.runs.list(limit=4) == whole[:4]
    assert db.runs.list(after=whole[9]) == whole[10:]
    assert db.runs.list(after=whole[9], limit=3) == whole[10:13]
    assert db.runs.list(after=whole[-1]) == []
    assert db.runs.list(after=whole[-1], limit=5) == []


def test_after_is_a_run_info_or_a_created_at_run_id_pair(clocked_db, clock):
    db = clocked_db
    _make_runs(db, clock)
    whole = db.runs.list()
    cut = whole[11]
    expected = whole[12:17]
    assert db.runs.list(after=(cut.created_at, cut.run_id), limit=5) == expected
    assert db.runs.list(after=[cut.created_at, cut.run_id], limit=5) == expected
    # Any place in the order, not only a run's.
    place = (cut.created_at, cut.run_id[:-1])
    assert db.runs.list(after=place, limit=2) == [
        r for r in whole if (r.created_at, r.run_id) > place][:2]
    assert db.runs.list(after=(0, ""), limit=2) == whole[:2]


def test_pages_with_filters(clocked_db, clock):
    db = clocked_db
    ids = _make_runs(db, clock)
    db.end_run(ids[4])
    db.end_run(ids[6])
    db.abort_run(ids[13], "x")
    for filters in ({"tag": "even"}, {"tag": "odd"}, {"parent": ids[0]}, {"status": "active"},
                    {"status": "completed"}, {"status": "active", "tag": "odd",
                                              "parent": ids[0]}, {"tag": "none"}):
        whole = db.runs.list(**filters)
        assert whole == [r for r in db.runs.list() if _matches(r, **filters)]
        for limit in (1, 2, 5, 100):
            assert page_through(db, limit, **filters) == whole, (filters, limit)


def _matches(r, status=None, tag=None, parent=None) -> bool:
    return ((status is None or r.status == status) and (tag is None or tag in r.tags)
            and (parent is None or r.parent == parent))


def test_a_run_deleted_between_pages(clocked_db, clock):
    db = clocked_db
    _make_runs(db, clock)
    whole = db.runs.list()
    page = db.runs.list(limit=5)
    # The page's last run (the cursor) and one ahead go before the next page is asked.
    assert db.runs.delete(page[-1].run_id) is True
    assert db.runs.delete(whole[7].run_id) is True
    nxt = db.runs.list(after=page[-1], limit=5)
    assert nxt == whole[5:7] + whole[8:11]
    rest = page_through_from(db, nxt[-1], 4)
    assert page + nxt + rest == [r for r in whole if r.run_id != whole[7].run_id]


def page_through_from(db, after, limit) -> list:
    out = []
    while True:
        page = db.runs.list(after=after, limit=limit)
        if not page:
            return out
        out.extend(page)
        after = page[-1]


def test_a_run_created_between_pages_comes_in_a_later_page(clocked_db, clock):
    db = clocked_db
    _make_runs(db, clock)
    whole = db.runs.list()
    page = db.runs.list(limit=10)
    clock.advance(1)
    late = db.begin_run(run_id="late")
    rest = page_through_from(db, page[-1], 10)
    assert [r.run_id for r in page + rest] == [r.run_id for r in whole] + [late]


def test_a_run_status_changed_between_pages_keeps_its_place(clocked_db, clock):
    db = clocked_db
    _make_runs(db, clock)
    whole = db.runs.list()
    page = db.runs.list(limit=6)
    db.end_run(whole[3].run_id)  # behind the cursor
    db.end_run(whole[8].run_id)  # ahead of it: still listed, with its new status
    rest = page_through_from(db, page[-1], 6)
    assert [r.run_id for r in page + rest] == [r.run_id for r in whole]
    assert rest[2].run_id == whole[8].run_id and rest[2].status == "completed"


def test_no_paging_arguments_is_the_list_as_before(db):
    a = db.begin_run(run_id="a")
    assert db.runs.list(after=None, limit=None) == db.runs.list() == [db.runs.get(a)]


@pytest.mark.parametrize("bad", [
    {"limit": 0}, {"limit": -1}, {"limit": 1.5}, {"limit": True}, {"limit": "3"},
    {"after": "a-run-id"}, {"after": 7}, {"after": (1,)}, {"after": (1, "a", 2)},
    {"after": ("a", 1)}, {"after": (1.5, "a")}, {"after": (True, "a")}, {"after": (1, 2)},
    {"after": {"created_at": 1, "run_id": "a"}}, {"after": b"a"},
])
def test_a_bad_page_is_refused(db, bad):
    db.begin_run(run_id="a")
    with pytest.raises(inmem.InvalidValue):
        db.runs.list(**bad)
    with pytest.raises(inmem.InvalidValue):
        db.runs.list(tag="t", **bad)


def test_a_pipeline_lists_a_page(db):
    for rid in ("a", "b", "c"):
        db.begin_run(run_id=rid)
    whole = db.runs.list()
    with db.pipeline() as p:
        p.runs.list(limit=2)
        p.runs.list(after=whole[1], limit=2)
        p.runs.list(limit=0)
        got = p.execute(raise_on_error=False)
    assert got[0] == whole[:2] and got[1] == whole[2:]
    assert isinstance(got[2], inmem.InvalidValue)


# -- a model --------------------------------------------------------------------------


RUN_IDS = ["a", "b", "c", "d", "e", "f", "g", "h"]
steps = st.one_of(
    st.tuples(st.just("begin"), st.sampled_from(RUN_IDS), st.sampled_from(["x", "y"]),
              st.sampled_from([0, 0, 1])),
    st.tuples(st.just("delete"), st.sampled_from(RUN_IDS)),
    st.tuples(st.just("end"), st.sampled_from(RUN_IDS)),
)


def test_pages_agree_with_a_sorted_model(backend_factory, clock_factory):
    """Every page is the model's matching runs after the cursor, the first `limit` of them,
    whatever is created, ended or deleted between pages."""
    @settings(max_examples=25, deadline=None)
    @given(st.lists(steps, max_size=12), st.lists(st.lists(steps, max_size=3), max_size=8),
           st.integers(1, 4), st.sampled_from([{}, {"tag": "x"}, {"status": "active"}]))
    def check(before, between, limit, filters):
        clock = clock_factory()
        db = backend_factory(clock=clock)
        try:
            model: dict = {}  # run id -> [created_at, tag, status]

            def apply(step):
                if step[0] == "begin":
                    _, rid, tag, advance = step
                    clock.advance(advance)
                    if rid in model:
                        with pytest.raises(inmem.RunExists):
                            db.begin_run(run_id=rid, tags=(tag,))
                    else:
                        db.begin_run(run_id=rid, tags=(tag,))
                        model[rid] = [clock.now_us, tag, "active"]
                elif step[0] == "delete":
                    assert db.runs.delete(step[1]) is (model.pop(step[1], None) is not None)
                elif step[1] in model and model[step[1]][2] == "active":
                    db.end_run(step[1])
                    model[step[1]][2] = "completed"

            def expected(after):
                rows = sorted((c, rid) for rid, (c, tag, status) in model.items()
                              if filters.get("tag", tag) == tag
                              and filters.get("status", status) == status)
                return [rid for c, rid in rows if after is None or (c, rid) > after][:limit]

            for step in before:
                apply(step)
            assert [(r.created_at, r.run_id) for r in db.runs.list(**filters)] == sorted(
                (c, rid) for rid, (c, tag, status) in model.items()
                if filters.get("tag", tag) == tag and filters.get("status", status) == status)
            after = None
            for changes in between + [[]] * 30:
                page = db.runs.list(**filters, after=after, limit=limit)
                assert [r.run_id for r in page] == expected(after)
                if not page:
                    break
                after = (page[-1].created_at, page[-1].run_id)
                for step in changes:
                    apply(step)
            else:
                pytest.fail("the listing did not come to an end")
        finally:
            db.close()
    check()
