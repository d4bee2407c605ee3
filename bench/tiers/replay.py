"""Tier replay: runs replayed, diffed and searched through a cluster, beside the embedded store.

The cluster rows go through `inmem.Cluster(shards=2, durability="buffered")`
and `cluster.connect()` (through the coordinator); the embedded rows run the
same case on `inmem.open(path, durability="buffered")` in this process, so
the difference between two rows of the same case is what the cluster costs.

- `{cluster,embedded}.replay_run.{1K,10K}`: `db.replay_run(run)` of a run
  holding that many events (appended through pipelines); the value is the
  median of the timed replays, after one untimed replay that also checks the
  event count. A replay to half the run (`at=`) is timed too, in `extra`.
- `{cluster,embedded}.diff_runs.1K`: `db.diff_runs(a, b)` of two runs of 1K
  keys each, one key in ten different. In the cluster the two run ids are
  chosen with the coordinator's slot map (slot = `inmem.protocol.slot_of`)
  so that they live on different shards: ids `diff-a-0`, `diff-a-1`, ... are
  tried until one lands on a shard not used yet (`extra.shards` says where).
- `{cluster,embedded}.search.p50`: the median wall time of a search over
  100K documents (quick: 20K), KV string values of 4-10 words drawn
  uniformly from a seeded vocabulary of 4000 pseudo-words, spread over 32
  runs (so over every shard), loaded with pipelines; 200 queries (quick: 50)
  of 1-3 vocabulary words. Uniform draws mean each word is in about
  docs * 7 / 4000 documents; a skewed (Zipf) corpus queried for its common
  words would score many more documents per query. The index is brought up
  to date by the first search after a load (the shard indexes its journal
  lazily), so that search is timed apart (`extra.first_query_ms`) and the
  rest are the steady state.
- `recovery.index_rebuild`: the search index rebuild after recovery for 1M
  keys (quick: 100K) with text values: a child process builds a buffered
  store (`snapshot_on_close=True`) and closes it, a fresh child reopens it.
  The store is ready before its index (`recovery_report()[0].index_seconds`,
  in `extra`, is next to nothing); the row's value is how long after `open`
  returned the background rebuild made the index complete (`db.info()`'s
  `index_complete`). `extra` also has the first search right after `open`
  (its time and whether it said `index_complete`).
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time

from inmem.protocol import SLOT_COUNT, slot_of

from ..context import Context, error_row, fmt_count, make_row, skipped_row, target
from ..harness import percentile, time_once
from ..machine import REPO_ROOT
from ..workloads import load_items, make_texts, make_vocabulary
from .cluster import ClusterUnavailable, RunningCluster
from .durability import DurableUnavailable, open_durable

TIER = "replay"
MODE = "buffered"
SHARDS = 2
VOCABULARY_WORDS = 4000
DOC_WORDS = (4, 10)
SEARCH_RUNS = 32
QUERY_WORDS = (1, 3)
DOC_SEED, QUERY_SEED = 17, 29
REBUILD_RUNS = 16
CHILD_TIMEOUT_S = 3600


TARGETS = {
    "cluster.replay_run.1K": target("< 5 ms", "goal: cluster replay and search", max_ms=5, for_n=1_000),
    "cluster.replay_run.10K": target("< 50 ms", "goal: cluster replay and search", max_ms=50, for_n=10_000),
    "cluster.diff_runs.1K": target("< 5 ms", "goal: cluster replay and search", max_ms=5, for_n=1_000),
    "cluster.search.p50": target("< 20 ms over 100K documents", "goal: cluster replay and search", max_ms=20,
                                 for_n=100_000),
}


def row_names(sizes: dict) -> dict:
    """Every row this tier adds for `sizes`, grouped: {"cluster": [...], "embedded": [...], ...}."""
    out: dict = {}
    for side in ("cluster", "embedded"):
        names = [f"{side}.replay_run.{fmt_count(n)}" for n in sizes["replay_run_events"]]
        names.append(f"{side}.diff_runs.{fmt_count(sizes['replay_diff_keys'])}")
        names.append(f"{side}.search.p50")
        out[side] = names
    out["recovery"] = ["recovery.index_rebuild"]
    return out


def run(ctx: Context) -> None:
    s = ctx.sizes
    names = row_names(s)
    corpus = _Corpus(s["search_docs"])
    for side in ("cluster", "embedded"):
        with ctx.case(f"replay: {side} rows"):
            _side(ctx, side, names[side], corpus)
    with ctx.case("replay: recovery.index_rebuild"):
        try:
            _index_rebuild(ctx, s["index_rebuild_keys"])
        except DurableUnavailable as exc:
            ctx.add(skipped_row("recovery.index_rebuild", TIER, MODE, "ms", str(exc)))
        except Exception as exc:  # reported in its row; the tier's other rows stand
            ctx.add(error_row("recovery.index_rebuild", TIER, MODE, "ms", exc))


def _side(ctx, side, names, corpus) -> None:
    """Open the store for `side`, run every case on it; a store that will not open skips all."""
    s = ctx.sizes
    reps = s["replay_repeats"]
    cases = [(f"{side}.replay_run.{fmt_count(n)}",
              (lambda st, n=n: _replay(st, side, n, reps)))
             for n in s["replay_run_events"]]
    cases.append((f"{side}.diff_runs.{fmt_count(s['replay_diff_keys'])}",
                  lambda st: _diff(st, side, s["replay_diff_keys"], reps)))
    cases.append((f"{side}.search.p50",
                  lambda st: _search(st, side, corpus, s["search_queries"])))
    done = len(ctx.rows)
    try:
        with _open_side(ctx, side) as st:
            for name, fn in cases:
                try:
                    ctx.add(fn(st))
                except Exception as exc:  # one broken case must not cost the others
                    ctx.add(error_row(name, TIER, MODE, "ms", exc, target=TARGETS.get(name)))
    except (ClusterUnavailable, DurableUnavailable) as exc:
        reason = str(exc)
        _fill(ctx, done, names, lambda name: skipped_row(name, TIER, MODE, "ms", reason,
                                                        target=TARGETS.get(name)))
    except Exception as exc:  # e.g. the slot map could not be read: the rows say why
        failure = exc
        _fill(ctx, done, names, lambda name: error_row(name, TIER, MODE, "ms", failure,
                                                      target=TARGETS.get(name)))


def _fill(ctx, done, names, make) -> None:
    """Add `make(name)` for each of `names` that has no row since row index `done`."""
    have = {r["name"] for r in ctx.rows[done:]}
    for name in names:
        if name not in have:
            ctx.add(make(name))


class _open_side:
    """`with _open_side(ctx, side) as st`: a 2-shard buffered cluster, or an embedded store.

    `st.db` is the store (for a cluster, a client through the coordinator);
    `st.direct` a second client of the same cluster made with
    `connect(direct=True)` (None when embedded); `st.owners` the slot map.
    """

    def __init__(self, ctx, side):
        self.ctx, self.side = ctx, side
        self.running = None
        self.db = None
        self.direct = None
        self.owners = None
        self.path = None

    def __enter__(self):
        if self.side == "cluster":
            self.running = RunningCluster(self.ctx, shards=SHARDS, durability=MODE)
            cluster, self.db = self.running.__enter__()
            try:
                self.owners = slot_owners(self.db)
                self.direct = cluster.connect(direct=True)
            except BaseException:
                self.running.__exit__(None, None, None)
                raise
            return self
        self.path = self.ctx.scratch("replay-embedded")
        self.db = open_durable(self.path, MODE, snapshot_on_close=False)
        return self

    def __exit__(self, *exc):
        if self.running is not None:
            if self.direct is not None:
                self.direct.close()
            self.running.__exit__(*exc)
        else:
            if self.db is not None:
                self.db.close()
            if self.path is not None:
                self.ctx.discard(self.path)
        return False


# -- the slot map --------------------------------------------------------------------

def slot_owners(db) -> list | None:
    """The coordinator's slot map as a list (owners[slot] = shard); None if there is none."""
    ask = getattr(getattr(db, "_backend", None), "cluster", None)
    if ask is None:
        return None
    reply = ask("slotmap")
    owners: list = [None] * SLOT_COUNT
    for start, end, shard in reply["ranges"]:
        owners[start:end + 1] = [shard] * (end - start + 1)
    return owners


def ids_on_distinct_shards(owners, count: int, prefix: str, tries: int = 100_000) -> list[str]:
    """`count` run ids `prefix-0`, `prefix-1`, ... each owned by a shard the others are not on.

    With fewer shards than `count` (or no slot map) the first ids are taken as
    they come: the caller records where they landed.
    """
    if owners is None or len({o for o in owners if o is not None}) < count:
        return [f"{prefix}-{i}" for i in range(count)]
    chosen: list[str] = []
    used: set = set()
    for i in range(tries):
        rid = f"{prefix}-{i}"
        shard = owners[slot_of(rid)]
        if shard not in used:
            used.add(shard)
            chosen.append(rid)
            if len(chosen) == count:
                return chosen
    raise RuntimeError(f"no {count} ids with prefix {prefix!r} on distinct shards in {tries} "
                       "tries; the slot map is very uneven")


def _shard_of(owners, run_id):
    return None if owners is None else owners[slot_of(run_id)]


# -- cases -----------------------------------------------------------------------------

def _timed(fn, reps: int) -> list[float]:
    return [time_once(fn)[0] for _ in range(reps)]


def _ms_row(name, side, times_ms, n, extra):
    times_ms = sorted(times_ms)
    p50 = percentile(times_ms, 50)
    p99 = percentile(times_ms, 99)
    extra = {"store": "2-shard buffered cluster, through the coordinator" if side == "cluster"
             else "embedded, buffered, in this process", **extra}
    return make_row(name, TIER, MODE, "ms", value=statistics.median(times_ms), p50=p50 * 1000,
                    p99=p99 * 1000, n=n, target=TARGETS.get(name), extra=extra)


def _direct_p50_ms(st, fn, reps):
    """The median of `fn(db)` timed on the direct-routed client; None when embedded."""
    if st.direct is None:
        return None
    return statistics.median(_timed(lambda: fn(st.direct), reps))


def _replay(st, side, events, reps):
    name = f"{side}.replay_run.{fmt_count(events)}"
    db = st.db
    run = db.begin_run(name=f"replay-{events}")
    for lo in range(0, events, 1000):
        with db.pipeline() as p:
            append = p.events.append
            for i in range(lo, min(events, lo + 1000)):
                append(run, "tool_call", {"tool": "search", "query": f"q{i}", "i": i})
            for r in p.execute():
                if isinstance(r, BaseException):
                    raise r
    view = db.replay_run(run)
    if len(view.events) != events:
        raise RuntimeError(f"replay saw {len(view.events)} events, expected {events}")
    times = _timed(lambda: db.replay_run(run), reps)
    half = _timed(lambda: db.replay_run(run, at=view.position // 2), max(3, reps // 3))
    direct_ms = _direct_p50_ms(st, lambda d: d.replay_run(run), reps)
    return _ms_row(name, side, times, events,
                   {"times_ms": times, "replays": len(times),
                    "at_half_p50_ms": statistics.median(half),
                    "journal_entries": view.position,
                    "direct_p50_ms": direct_ms,
                    "shard": _shard_of(st.owners, run),
                    "run": "events only: tool_call with a 3-field payload"})


def _diff(st, side, keys, reps):
    name = f"{side}.diff_runs.{fmt_count(keys)}"
    db, owners = st.db, st.owners
    a_id, b_id = ids_on_distinct_shards(owners, 2, f"diff-{side}")
    a = db.begin_run(name="diff-a", run_id=a_id)
    b = db.begin_run(name="diff-b", run_id=b_id)
    items = [(a, f"k{i:05d}", i) for i in range(keys)]
    # One key in ten differs; i + 1 and not -i, which would leave k00000 equal.
    items += [(b, f"k{i:05d}", i + 1 if i % 10 == 0 else i) for i in range(keys)]
    load_items(db, items)
    expected = len(range(0, keys, 10))
    diff = db.diff_runs(a, b)
    if len(diff.modified) != expected or diff.added or diff.removed:
        raise RuntimeError(f"diff_runs found {len(diff.modified)} modified, {len(diff.added)} "
                           f"added, {len(diff.removed)} removed; expected {expected}, 0, 0")
    times = _timed(lambda: db.diff_runs(a, b), reps)
    direct_ms = _direct_p50_ms(st, lambda d: d.diff_runs(a, b), reps)
    shards = [_shard_of(owners, a), _shard_of(owners, b)]
    return _ms_row(name, side, times, keys,
                   {"times_ms": times, "diffs": len(times), "modified_keys": expected,
                    "shards": shards if owners is not None else "embedded (one engine)",
                    "run_ids": [a, b], "direct_p50_ms": direct_ms,
                    "note": "run ids picked with the slot map so that a and b live on "
                            "different shards" if owners is not None else None})


class _Corpus:
    """The search documents and queries: the same for the cluster and the embedded store."""

    def __init__(self, docs: int):
        self.docs = docs
        self._texts = None
        self.vocabulary = make_vocabulary(VOCABULARY_WORDS)

    def texts(self) -> list[str]:
        if self._texts is None:
            self._texts = make_texts(self.docs, self.vocabulary, random.Random(DOC_SEED),
                                     DOC_WORDS)
        return self._texts

    def queries(self, count: int) -> list[str]:
        rng = random.Random(QUERY_SEED)
        lo, hi = QUERY_WORDS
        return [" ".join(rng.sample(self.vocabulary, rng.randint(lo, hi))) for _ in range(count)]


def _search(st, side, corpus, queries):
    name = f"{side}.search.p50"
    db, owners = st.db, st.owners
    runs = [db.begin_run(name=f"corpus-{j}") for j in range(SEARCH_RUNS)]
    texts = corpus.texts()
    items = [(runs[i % SEARCH_RUNS], f"d{i:07d}", text) for i, text in enumerate(texts)]
    t0 = time.perf_counter()
    load_items(db, items)
    load_s = time.perf_counter() - t0
    del items
    qs = corpus.queries(queries)
    warm = texts[0].split()[0]  # a word the corpus surely holds
    first_ms, first = time_once(lambda: db.search(warm))
    if not first.results:
        raise RuntimeError(f"search {warm!r} found nothing in {len(texts)} documents")
    times, matches, empty, exhausted = [], [], 0, 0
    for q in qs:
        ms, resp = time_once(lambda q=q: db.search(q))
        times.append(ms)
        matches.append(resp.total_matches)
        empty += not resp.results
        exhausted += bool(resp.budget_exhausted)
    per_shard = None
    if owners is not None:
        per_shard = [0] * (max(o for o in owners if o is not None) + 1)
        for i in range(len(texts)):
            per_shard[owners[slot_of(runs[i % SEARCH_RUNS])]] += 1
    return _ms_row(name, side, times, len(texts),
                   {"queries": len(qs), "query_words": list(QUERY_WORDS),
                    "docs": len(texts), "doc_words": list(DOC_WORDS),
                    "vocabulary_words": VOCABULARY_WORDS, "runs": SEARCH_RUNS,
                    "docs_per_shard": per_shard, "load_s": round(load_s, 3),
                    "first_query_ms": first_ms,
                    "mean_total_matches": statistics.mean(matches),
                    "queries_without_hits": empty, "budget_exhausted": exhausted,
                    "limit": 10, "mean_ms": statistics.mean(times)})


# -- index rebuild during recovery (children) ------------------------------------------

def _run_child(case: str, n: int, path: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "inmem.bench.tiers.replay", case, str(n), path],
                          cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT_S)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"index rebuild child {case} failed (exit {proc.returncode}): {tail}")
    result = json.loads(lines[-1])
    if "skipped" in result:
        raise DurableUnavailable(result["skipped"])
    return result


def _child_build(n: int, path: str) -> dict:
    vocabulary = make_vocabulary(VOCABULARY_WORDS)
    rng = random.Random(DOC_SEED)
    t0 = time.perf_counter()
    db = open_durable(path, MODE, snapshot_on_close=True)
    try:
        runs = [db.begin_run(name=f"rebuild-{j}") for j in range(REBUILD_RUNS)]
        chunk = 10_000
        for lo in range(0, n, chunk):
            # Made a chunk at a time: a million strings at once would double the child's peak.
            texts = make_texts(min(chunk, n - lo), vocabulary, rng, DOC_WORDS)
            load_items(db, [(runs[(lo + j) % REBUILD_RUNS], f"k{lo + j:015d}", t)
                            for j, t in enumerate(texts)])
        build_s = time.perf_counter() - t0
        t1 = time.perf_counter()
    finally:
        db.close()
    return {"build_s": build_s, "close_s": time.perf_counter() - t1}


def _child_reopen(n: int, path: str) -> dict:
    # The first word of the first document the build wrote: a query that must match.
    word = make_texts(1, make_vocabulary(VOCABULARY_WORDS), random.Random(DOC_SEED),
                      DOC_WORDS)[0].split()[0]
    open_ms, db = time_once(lambda: open_durable(path, MODE, snapshot_on_close=False))
    opened = time.perf_counter()
    try:
        r = db.recovery_report()[0]
        keys = db.info()["shards"][0].get("keys")
        # The first search right after recovery: the index is still being rebuilt.
        search_ms, first = time_once(lambda: db.search(word))
        while not db.info()["shards"][0].get("index_complete", True):
            time.sleep(0.005)
        rebuild_ms = (time.perf_counter() - opened) * 1000
        resp = db.search(word)
    finally:
        db.close()
    return {"open_ms": open_ms, "seconds": r.seconds, "index_seconds": r.index_seconds,
            "records_replayed": r.records_replayed, "snapshot_used": bool(r.snapshot_used),
            "keys": keys, "first_search_ms": search_ms,
            "first_search_index_complete": first.index_complete, "rebuild_ms": rebuild_ms,
            "search_matches": resp.total_matches}


def child(case: str, n: int, path: str) -> dict:
    try:
        if case == "build":
            return _child_build(n, path)
        if case == "reopen":
            return _child_reopen(n, path)
    except DurableUnavailable as exc:
        return {"skipped": str(exc)}
    raise SystemExit(f"unknown case {case!r}; use build or reopen")


def _index_rebuild(ctx, n):
    path = ctx.scratch("replay-index-rebuild")
    try:
        built = _run_child("build", n, path)
        ours = _run_child("reopen", n, path)
    finally:
        ctx.discard(path)
    if not ours["search_matches"]:
        raise RuntimeError("the reopened store's search found nothing: the index is empty")
    if ours["keys"] is not None and ours["keys"] != n:
        raise RuntimeError(f"the reopened store holds {ours['keys']} keys, expected {n}")
    ctx.add(make_row("recovery.index_rebuild", TIER, MODE, "ms", value=ours["rebuild_ms"], n=n,
                     extra={"keys": n, "recovery_ms": ours["seconds"] * 1000,
                            "index_seconds": ours["index_seconds"],
                            "index_share": ours["index_seconds"] / ours["seconds"]
                            if ours["seconds"] else None,
                            "open_ms": ours["open_ms"], "snapshot_used": ours["snapshot_used"],
                            "records_replayed": ours["records_replayed"],
                            "first_search_ms": ours["first_search_ms"],
                            "first_search_index_complete": ours["first_search_index_complete"],
                            "build_s": built["build_s"], "build_close_s": built["close_s"],
                            "values": f"{DOC_WORDS[0]}-{DOC_WORDS[1]} words from "
                                      f"{VOCABULARY_WORDS} pseudo-words",
                            "note": "from open returning (the store ready) to the background "
                                    "rebuild's end, in a fresh process; recovery_ms is the whole "
                                    "recovery; build_s (context only) includes making the texts"}))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: python -m inmem.bench.tiers.replay build|reopen N DIR")
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]), sys.argv[3])))
