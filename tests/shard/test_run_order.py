"""Pages of `run_list` (shard.run_order) against a model, through every way a shard's set
of runs changes: begins and deletes, a run created again under a deleted one's id (in
the same µs too), and the same changes read back from the WAL into an engine whose order
was built already, as recovery applies them; plus the order's rebuilds and its cost.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from inmem.errors import InvalidValue
from inmem.shard import run_order
from inmem.shard.effects import record_payloads
from inmem.shard.engine import Engine
from inmem.shard.recovery_apply import EngineRecovery
from set_clock import Clock

IDS = ["a", "b", "c", "d"]


steps = st.one_of(
    st.tuples(st.just("begin"), st.sampled_from(IDS), st.sampled_from([0, 0, 1]),
              st.sampled_from(["x", "y"])),
    st.tuples(st.just("delete"), st.sampled_from(IDS)),
    # deleted and begun again at once: a new run in the deleted one's place in the order
    st.tuples(st.just("again"), st.sampled_from(IDS), st.sampled_from([0, 1])),
    st.tuples(st.just("end"), st.sampled_from(IDS)),
    st.tuples(st.just("page"), st.none() | st.integers(1, 3),
              # from the first run, from a run's own place, or from any place
              st.none() | st.tuples(st.just("run"), st.integers(0, 3))
              | st.tuples(st.just("place"), st.integers(0, 4), st.sampled_from(["", "c", "z"])),
              st.sampled_from([{}, {"tag": "x"}, {"status": "active"}])),
)


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(steps, min_size=12, max_size=50))
# a run begun again in the same µs under the id of one deleted after the order was built
@example([("begin", "a", 0, "x"), ("begin", "b", 0, "x"), ("page", 2, None, {}),
          ("again", "a", 0), ("page", 3, None, {})])
def test_pages_agree_with_a_model_live_and_read_back_from_the_wal(script):
    clock = Clock()
    base = clock.now_us
    live = Engine(clock=clock, log=True)
    follower = Engine(clock=clock)  # takes live's WAL records, as a recovery does
    apply = EngineRecovery(follower)
    model: dict = {}  # run id -> [created_at, tag, status]
    for step in script:
        if step[0] == "begin":
            _, rid, advance, tag = step
            clock.now_us += advance
            if rid not in model:
                live.begin_run(run_id=rid, tags=[tag])
                model[rid] = [clock.now_us, tag, "active"]
        elif step[0] == "delete":
            assert live.run_delete(step[1]) is (model.pop(step[1], None) is not None)
        elif step[0] == "again":
            _, rid, advance = step
            if rid in model:
                live.run_delete(rid)
                clock.now_us += advance
                live.begin_run(run_id=rid, tags=[model[rid][1]])
                model[rid] = [clock.now_us, model[rid][1], "active"]
        elif step[0] == "end":
            if step[1] in model and model[step[1]][2] == "active":
                live.end_run(step[1])
                model[step[1]][2] = "completed"
        else:
            _, limit, after, filters = step
            rows = sorted((c, rid) for rid, (c, tag, status) in model.items()
                          if filters.get("tag", tag) == tag
                          and filters.get("status", status) == status)
            if after is None:
                cursor = None
            elif after[0] == "run":
                places = sorted((c, rid) for rid, (c, _t, _s) in model.items())
                cursor = list(places[after[1] % len(places)]) if places else None
            else:
                cursor = [base + after[1], after[2]]
            expected = [rid for c, rid in rows if cursor is None or (c, rid) > tuple(cursor)]
            for engine in (live, follower):
                got = engine.run_list(filters.get("status"), filters.get("tag"), None,
                                      cursor, limit)
                assert [r.run_id for r in got] == expected[:limit]
                # and on, page by page, to the end
                paged, at = [], cursor
                while limit is not None and len(paged) <= len(expected):
                    page = engine.run_list(filters.get("status"), filters.get("tag"), None,
                                           at, limit)
                    if not page:
                        break
                    paged += [r.run_id for r in page]
                    at = [page[-1].created_at, page[-1].run_id]
                assert limit is None or paged == expected
        apply.apply_records([payload for payload, _n in record_payloads(live.take_log())])
    assert live.run_list() == follower.run_list()


def test_deleted_runs_places_are_dropped_once_they_outnumber_the_runs(monkeypatch):
    monkeypatch.setattr(run_order, "STALE_SLACK", 4)
    clock = Clock()
    engine = Engine(clock=clock)
    for i in range(10):
        clock.now_us += 1
        engine.begin_run(run_id=f"r{i}")
    assert len(engine.run_list(limit=3)) == 3
    order = engine._run_order
    for i in range(8):
        engine.run_delete(f"r{i}")
    assert [r.run_id for r in engine.run_list(limit=5)] == ["r8", "r9"]
    assert len(order.keys) == 2  # started again from the 2 runs left


def test_the_last_run_deleted_and_new_ones_begun(monkeypatch):
    clock = Clock()
    engine = Engine(clock=clock)
    for rid in ("a", "b", "c"):
        clock.now_us += 1
        engine.begin_run(run_id=rid)
    assert [r.run_id for r in engine.run_list(limit=5)] == ["a", "b", "c"]
    engine.run_delete("c")  # the run the order last saw
    clock.now_us += 1
    engine.begin_run(run_id="d")
    engine.begin_run(run_id="c")  # the same id again, later
    assert [r.run_id for r in engine.run_list(limit=5)] == ["a", "b", "c", "d"]


class CountingDict(dict):
    """The table of runs, counting the runs a listing looks up."""

    looked = 0

    def get(self, key, default=None):
        CountingDict.looked += 1
        return super().get(key, default)

    def values(self):
        for v in super().values():
            CountingDict.looked += 1
            yield v


def test_a_page_looks_at_about_the_page_not_every_run():
    clock = Clock()
    engine = Engine(clock=clock)
    engine.runs = CountingDict()
    for i in range(5000):
        clock.now_us += 1
        engine.begin_run(run_id=f"r{i:05d}")
    first = engine.run_list(limit=10)
    CountingDict.looked = 0
    page = engine.run_list(None, None, None, [first[-1].created_at, first[-1].run_id], 10)
    assert [r.run_id for r in page] == [f"r{i:05d}" for i in range(10, 20)]
    assert CountingDict.looked <= 12
    clock.now_us += 1
    engine.begin_run(run_id="new")
    CountingDict.looked = 0
    page = engine.run_list(None, None, None, [page[-1].created_at, page[-1].run_id], 10)
    assert CountingDict.looked <= 12  # the new run was taken in without a pass over all


@pytest.mark.parametrize("after", ["r1", 5, [1], [1, "a", 2], ["a", 1], [1.0, "a"], [True, "a"],
                                   [1, None], {"a": 1}])
def test_a_cursor_that_is_not_a_place_is_refused(after):
    engine = Engine()
    engine.begin_run(run_id="a")
    with pytest.raises(InvalidValue, match="after must be the last RunInfo"):
        engine.run_list(None, None, None, after, 2)


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "2", [2]])
def test_a_limit_that_is_not_a_count_is_refused(limit):
    engine = Engine()
    with pytest.raises(InvalidValue, match="limit must be an int"):
        engine.run_list(None, None, None, None, limit)
