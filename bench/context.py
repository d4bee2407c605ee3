"""What every tier gets: sizes, repeats, peers, a scratch directory, and the row builder.

A row is the unit of results.json:

    {"name", "tier", "mode", "unit", "value", "p50", "p99", "n",
     "peers": {peer: value | "skipped: <reason>"}, "target": {...} | None,
     "ratio": {peer: ours / theirs | None},
     "status": "ok" | "skipped: <reason>" | "error: <reason>",
     "better": "higher" | "lower", "target_met": bool | None, "extra": {...},
     "ran_on": {"commit", "host", "cpu", "cores"}}

Rows measured in interleaved rounds (the cluster tier) also carry
"ratio_spread": {peer: {"min", "q1", "median", "q3", "max", "rounds"} | None},
the spread of the per-round ratio ours / theirs.

`p50` and `p99` are always microseconds. `value` is in `unit`: "ops/s" rows
are throughput (higher is better), "ms" rows are wall time and "B/key" rows
memory (lower is better). A peer is never dropped from a row it applies to:
when it cannot run, its entry says why.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from .peers import Peers, PeerUnavailable

# Sizes per run kind. `--size-scale` multiplies every count (with floors), so
# a smoke test can run the real code paths in a fraction of a second.
FULL_SIZES = {
    "repeats": 5,
    "micro_ops": 200_000,         # fast ops (get, put, cas, delete) per repeat
    "micro_slow_ops": 50_000,     # events, state, traces, json, transactions
    "micro_big_ops": 2_000,       # 64 KiB puts
    "buffered_ops": 200_000,
    "strict_ops": 2_000,
    "strict_rounds": 5,           # embedded.kv.put.strict: interleaved rounds of strict_ops
    "group_ops_total": 8_000,     # split across the writer threads
    "recovery_keys": 1_000_000,
    "wal_records": 1_000_000,
    # The recovery tier alternates our side and Redis's on the same data, this many rounds.
    "recovery_rounds": 5,
    "memory_keys": [100_000, 1_000_000],
    "concurrency_ops_per_thread": 50_000,
    "scenario_steps": 5_000,
    "replay_events": [100, 1_000, 5_000],
    # The cluster tier measures every side in interleaved rounds; its sizes are per round.
    "cluster_rounds": 5,
    "cluster_single_ops": 4_000,
    "cluster_batched_ops": 100_000,
    "cluster_strict_ops_per_client": 500,   # both 8-client rows, buffered and strict
    "cluster_scale_ops_per_client": 40_000,
    "replay_run_events": [1_000, 10_000],   # tier replay: events per replayed run
    "replay_diff_keys": 1_000,              # keys per run in diff_runs
    "replay_repeats": 21,                   # replays/diffs timed per row (p50 of them)
    "search_docs": 100_000,
    "search_queries": 200,
    "index_rebuild_keys": 1_000_000,
    "langgraph_ops": 2_000,                 # tier langgraph: saver calls per side per round
    "langgraph_history": 100,               # checkpoints on the thread get_tuple reads
}

QUICK_SIZES = {
    "repeats": 3,
    "micro_ops": 100_000,
    "micro_slow_ops": 20_000,
    "micro_big_ops": 500,
    "buffered_ops": 50_000,
    "strict_ops": 300,
    "strict_rounds": 7,
    "group_ops_total": 1_600,
    "recovery_keys": 100_000,
    "wal_records": 100_000,
    "recovery_rounds": 3,
    "memory_keys": [100_000],
    "concurrency_ops_per_thread": 10_000,
    "scenario_steps": 1_000,
    "replay_events": [100, 1_000, 5_000],
    "cluster_rounds": 5,
    "cluster_single_ops": 1_000,
    "cluster_batched_ops": 20_000,
    "cluster_strict_ops_per_client": 200,
    "cluster_scale_ops_per_client": 6_000,
    "replay_run_events": [1_000, 10_000],
    "replay_diff_keys": 1_000,
    "replay_repeats": 11,
    "search_docs": 20_000,
    "search_queries": 50,
    "index_rebuild_keys": 100_000,
    "langgraph_ops": 500,
    "langgraph_history": 100,
}

_FLOORS = {"repeats": 1, "micro_big_ops": 10, "strict_ops": 10, "group_ops_total": 64,
           "scenario_steps": 10, "replay_repeats": 3, "search_queries": 10}
_DEFAULT_FLOOR = 50


def scaled_sizes(quick: bool, scale: float) -> dict:
    base = QUICK_SIZES if quick else FULL_SIZES
    if scale == 1.0:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in base.items()}
    out = {}
    for key, value in base.items():
        if key in ("repeats", "cluster_rounds", "recovery_rounds", "strict_rounds"):
            # Counts of passes, not sizes: a smoke run keeps two, so spreads exist.
            out[key] = value if scale >= 1 else max(1, min(value, 2))
            continue
        floor = _FLOORS.get(key, _DEFAULT_FLOOR)
        if isinstance(value, list):
            out[key] = sorted({max(floor, int(v * scale)) for v in value})
        else:
            out[key] = max(floor, int(value * scale))
    return out


def fmt_count(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}K"
    return str(n)


@dataclass
class Context:
    quick: bool
    sizes: dict
    peers: Peers
    scratch_dir: str
    progress: bool = True
    rows: list = field(default_factory=list)
    # Stamped on every row, so a row copied out of its file still says where it ran.
    ran_on: dict | None = None

    def log(self, message: str) -> None:
        if self.progress:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    def case(self, label: str):
        """Context manager: log a case's start and how long it took."""
        return _Case(self, label)

    def scratch(self, name: str) -> str:
        """A fresh directory on the output's filesystem (so durable rows hit the real disk)."""
        path = os.path.join(self.scratch_dir, f"{name}-{time.monotonic_ns()}")
        os.makedirs(path)
        return path

    def discard(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def add(self, row: dict) -> dict:
        if self.ran_on is not None:
            row.setdefault("ran_on", dict(self.ran_on))
        self.rows.append(row)
        v = row["value"]
        if row["status"] == "ok" and v is not None:
            shown = f"{v:,.0f} {row['unit']}" if row["unit"] == "ops/s" else \
                f"{v:,.2f} {row['unit']}"
            extra = f", p50 {row['p50']:.2f} µs" if row.get("p50") is not None else ""
            self.log(f"  {row['name']} [{row['mode']}]: {shown}{extra}")
        else:
            self.log(f"  {row['name']} [{row['mode']}]: {row['status']}")
        return row


class _Case:
    def __init__(self, ctx: Context, label: str):
        self.ctx, self.label = ctx, label

    def __enter__(self):
        self.t0 = time.monotonic()
        self.ctx.log(f"{self.label} ...")
        return self

    def __exit__(self, *exc):
        self.ctx.log(f"{self.label} took {time.monotonic() - self.t0:.1f} s")
        return False


def make_row(name: str, tier: str, mode: str, unit: str, *, value=None, p50=None, p99=None,
             n=None, peers=None, target=None, status: str = "ok", extra=None,
             better: str | None = None, ratio_spread: dict | None = None) -> dict:
    if better is None:
        better = "higher" if unit == "ops/s" else "lower"
    peers = dict(peers or {})
    ratio = {}
    for peer, theirs in peers.items():
        if isinstance(theirs, (int, float)) and isinstance(value, (int, float)) and theirs:
            ratio[peer] = value / theirs
        else:
            ratio[peer] = None
    row = {"name": name, "tier": tier, "mode": mode, "unit": unit, "value": value,
           "p50": p50, "p99": p99, "n": n, "peers": peers, "target": target, "ratio": ratio,
           "status": status, "better": better, "target_met": None, "extra": dict(extra or {})}
    if ratio_spread is not None:
        row["ratio_spread"] = {p: ratio_spread.get(p) for p in peers}
    row["target_met"] = target_met(row)
    return row


def skipped_row(name: str, tier: str, mode: str, unit: str, reason: str, *, peers=(),
                target=None, n=None) -> dict:
    """A row that could not run: it stays in the results, with its reason and its peers."""
    reason = _one_line(reason)
    return make_row(name, tier, mode, unit, n=n, target=target, status=f"skipped: {reason}",
                    peers={p: f"skipped: {reason}" for p in peers})


def error_row(name: str, tier: str, mode: str, unit: str, exc: BaseException, *, peers=(),
              target=None) -> dict:
    reason = _one_line(f"{type(exc).__name__}: {exc}")
    return make_row(name, tier, mode, unit, target=target, status=f"error: {reason}",
                    peers={p: f"skipped: our side failed ({reason})" for p in peers})


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def target(text: str, source: str, *, ops_per_s=None, p50_us=None, max_ms=None,
           at_least_peer=None, min_ratio=None, for_n=None) -> dict:
    """A seed target: every given bound must hold. `for_n`: applies only at that size.

    `min_ratio`: {peer: factor}, ours / the peer's figure must be at least factor.
    """
    t = {"text": text, "source": source}
    if ops_per_s is not None:
        t["ops_per_s"] = ops_per_s
    if p50_us is not None:
        t["p50_us"] = p50_us
    if max_ms is not None:
        t["max_ms"] = max_ms
    if at_least_peer is not None:
        t["at_least_peer"] = at_least_peer
    if min_ratio is not None:
        t["min_ratio"] = dict(min_ratio)
    if for_n is not None:
        t["for_n"] = for_n
    return t


def target_met(row: dict):
    t = row.get("target")
    if not t or row.get("status") != "ok" or row.get("value") is None:
        return None
    if t.get("for_n") is not None and row.get("n") != t["for_n"]:
        return None
    ok = True
    if "ops_per_s" in t:
        ok &= row["value"] >= t["ops_per_s"]
    if "p50_us" in t:
        if row.get("p50") is None:
            return None
        ok &= row["p50"] < t["p50_us"]
    if "max_ms" in t:
        ok &= row["value"] < t["max_ms"]
    if "at_least_peer" in t:
        theirs = row["peers"].get(t["at_least_peer"])
        if not isinstance(theirs, (int, float)):
            return None
        ok &= row["value"] >= theirs
    for peer, factor in t.get("min_ratio", {}).items():
        theirs = row["peers"].get(peer)
        if not isinstance(theirs, (int, float)):
            return None
        ok &= row["value"] >= factor * theirs
    return bool(ok)


def peer_skip_reason(exc: BaseException) -> str:
    """"skipped: <reason>" for a peer that raised `exc`."""
    if isinstance(exc, PeerUnavailable):
        return f"skipped: {_one_line(str(exc))}"
    return f"skipped: {_one_line(f'{type(exc).__name__}: {exc}')}"


def peer_value(fn, details: dict, peer: str):
    """Run one peer's measurement; a number, or "skipped: <reason>" when it cannot run."""
    try:
        result = fn()
    except Exception as exc:  # a peer's own failure must not take our row down
        return peer_skip_reason(exc)
    if isinstance(result, tuple):
        value, detail = result
        details[peer] = detail
        return value
    return result


__all__ = ["Context", "make_row", "skipped_row", "error_row", "target", "target_met",
           "peer_value", "peer_skip_reason", "scaled_sizes", "fmt_count", "FULL_SIZES",
           "QUICK_SIZES"]
