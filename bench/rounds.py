"""Interleaved rounds: every side of a comparison measured in the same minutes, and the spread.

A machine shared with other work speeds up and slows down by tens of percent
from one minute to the next, so two systems measured one after the other
are compared across different machines. `interleave` runs short
measurements of every side in turn (ours, the peer, the floor, ours, the
peer, ...), `rounds` times, rotating which side goes first each round so no
side is always the one measured first (or last) in a round. Each row then reports the
median of its side's rounds, and the spread of the per-round ratio ours /
theirs: both sides of one round ran within seconds of each other, so that
ratio is the comparison; how much it moves from round to round says how far
to trust it.

A side is a callable `fn(round_index) -> dict` with at least "ops_per_s"
and, optionally, "lat" (latency samples in ns) and any details. A side
marked optional (a peer) that raises is dropped from the later rounds and
reported as "skipped: <reason>"; our own sides raise.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Callable

from .context import peer_skip_reason
from .harness import percentile


@dataclass
class Side:
    name: str
    fn: Callable[[int], dict]
    optional: bool = False          # a peer: a failure skips it instead of failing the group


@dataclass
class Interleaved:
    """What `interleave` measured: per side, one dict per round (or the reason it was skipped)."""

    rounds: int
    orders: list = field(default_factory=list)      # the side names in the order each round ran
    results: dict = field(default_factory=dict)     # side -> [round dict, ...]
    skipped: dict = field(default_factory=dict)     # side -> "skipped: <reason>"

    def values(self, side: str) -> list:
        return [r["ops_per_s"] for r in self.results.get(side, [])]

    def median(self, side: str):
        """The side's median ops/s over its rounds, or its "skipped: ..." reason."""
        if side in self.skipped:
            return self.skipped[side]
        vals = self.values(side)
        return statistics.median(vals) if vals else None

    def latency(self, side: str) -> dict:
        """p50/p99 in µs of the latency samples of every round, pooled."""
        lat = sorted(x for r in self.results.get(side, []) for x in r.get("lat", ()))
        p50, p99 = percentile(lat, 50), percentile(lat, 99)
        return {"p50_us": None if p50 is None else p50 / 1000,
                "p99_us": None if p99 is None else p99 / 1000, "samples": len(lat)}

    def ratio_spread(self, ours: str, theirs: str) -> dict | None:
        """The spread of ours / theirs over the rounds both ran in; None when there are none."""
        a, b = self.values(ours), self.values(theirs)
        ratios = [x / y for x, y in zip(a, b) if y]
        return spread(ratios)

    def side_summary(self, side: str) -> dict:
        """A side's rounds for a row's `extra`: the median, the spread, each round, latency."""
        if side in self.skipped:
            return {"status": self.skipped[side]}
        vals = self.values(side)
        return {"ops_per_s": self.median(side), "spread": spread(vals),
                "per_round": vals, **self.latency(side)}


def interleave(sides: list[Side], rounds: int, log: Callable[[str], None] | None = None
               ) -> Interleaved:
    """Run every side once per round, rotating the first side each round."""
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    out = Interleaved(rounds=rounds)
    for s in sides:
        out.results[s.name] = []
    for r in range(rounds):
        order = rotation(sides, r)
        ran = []
        for s in order:
            if s.name in out.skipped:
                continue
            try:
                result = s.fn(r)
            except Exception as exc:
                if not s.optional:
                    raise
                out.skipped[s.name] = peer_skip_reason(exc)
                out.results[s.name] = []
                continue
            out.results[s.name].append(result)
            ran.append(s.name)
        out.orders.append(ran)
        if log is not None:
            log(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{n} {out.results[n][-1]['ops_per_s']:,.0f}/s" for n in ran))
    return out


def rotation(sides: list, r: int) -> list:
    """The sides in round r's order: the list rotated left by r."""
    k = r % len(sides) if sides else 0
    return list(sides[k:]) + list(sides[:k])


def spread(values: list) -> dict | None:
    """min, quartiles, median and max of `values` (nearest rank), and how many; None if empty."""
    if not values:
        return None
    v = sorted(values)
    return {"min": v[0], "q1": _quantile(v, 0.25), "median": statistics.median(v),
            "q3": _quantile(v, 0.75), "max": v[-1], "rounds": len(v)}


def _quantile(sorted_values: list, q: float):
    # Linear between closest ranks (the "inclusive" method): defined for any length.
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


__all__ = ["Side", "Interleaved", "interleave", "rotation", "spread"]
