"""Timing: warm-up, repeats, sampled per-op latency, and the numbers a row reports.

A workload is a callable `op(i)` that performs one operation (the i-th of a
loop); every system under test, ours and the peers', is measured through the
same `op(i)` loop shape, so the cost of the loop itself (about 40 ns of
Python call) is the same for all of them.

Each repeat has two passes:

- a throughput pass: `n` operations back to back with nothing else in the
  loop, timed as a whole; ops/s comes from this pass only;
- a latency pass over a sample of operations: every `stride`-th operation is
  timed alone with `perf_counter_ns`, the others run untimed in between so
  caches and allocators stay in the same state as in the throughput pass.
  The cost of reading the clock twice (calibrated once per process) is
  subtracted from each sample, because for sub-microsecond operations it is
  a large share of what would otherwise be reported.

The cyclic garbage collector is disabled during the timed passes (and
enabled again after, if it was on) so that a collection triggered by the
benchmark's own allocations does not land in one repeat and not another.
Reported throughput is the median of the repeats, with the best one kept
beside it; latency percentiles pool the samples of every repeat.
"""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

_ns = time.perf_counter_ns

_timer_overhead_ns: int | None = None


def timer_overhead_ns() -> int:
    """The median cost of two back-to-back clock reads, measured once per process."""
    global _timer_overhead_ns
    if _timer_overhead_ns is None:
        samples = []
        for _ in range(20000):
            a = _ns()
            b = _ns()
            samples.append(b - a)
        samples.sort()
        _timer_overhead_ns = samples[len(samples) // 2]
    return _timer_overhead_ns


@dataclass
class Measurement:
    """What one workload measured: throughput, latency percentiles, and how."""

    ops_per_s: float                 # median over repeats of the throughput pass
    best_ops_per_s: float            # the fastest repeat
    p50_us: float | None
    p99_us: float | None
    n: int                           # operations per throughput pass
    repeats: int
    samples: int                     # latency samples pooled across repeats
    repeat_ops_per_s: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ops_per_s": self.ops_per_s, "best_ops_per_s": self.best_ops_per_s,
                "p50_us": self.p50_us, "p99_us": self.p99_us, "n": self.n,
                "repeats": self.repeats, "samples": self.samples,
                "repeat_ops_per_s": self.repeat_ops_per_s}


class gc_paused:
    """Context manager: the cyclic GC off inside, restored to its prior state after."""

    def __enter__(self):
        self._was = gc.isenabled()
        gc.disable()
        return self

    def __exit__(self, *exc):
        if self._was:
            gc.enable()
        return False


def percentile(sorted_values: list, q: float):
    """Nearest-rank percentile of an already sorted list (q in 0..100); None when empty."""
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, int(round(q / 100.0 * len(sorted_values))) - 1))
    return sorted_values[rank]


def measure(op: Callable[[int], object], n: int, *, repeats: int = 3, warmup: int | None = None,
            samples: int = 2000, before_repeat: Callable[[int], None] | None = None,
            index_base: int = 0) -> Measurement:
    """Measure `op(i)`.

    `op` receives a running index that never repeats within one call (warm-up,
    throughput and latency passes each take fresh indexes), so a workload
    that needs distinct keys can derive them from it. `before_repeat(r)` runs
    untimed before each repeat (to restore state a destructive op consumed).
    """
    if n <= 0:
        raise ValueError("n must be positive")
    warmup = min(n, 1000) if warmup is None else warmup
    samples = max(1, min(samples, n))
    stride = max(1, n // samples)
    overhead = timer_overhead_ns()
    i = index_base
    if before_repeat is not None:
        before_repeat(-1)
    for j in range(i, i + warmup):
        op(j)
    i += warmup
    rates = []
    lat: list[int] = []
    for r in range(repeats):
        if before_repeat is not None:
            before_repeat(r)
        with gc_paused():
            t0 = _ns()
            for j in range(i, i + n):
                op(j)
            elapsed = _ns() - t0
        i += n
        rates.append(n / (elapsed / 1e9) if elapsed > 0 else float("inf"))
        if before_repeat is not None:
            before_repeat(r)
        lat.extend(_latency_pass(op, i, samples, stride, overhead))
        i += samples * stride
    lat.sort()
    p50 = percentile(lat, 50)
    p99 = percentile(lat, 99)
    return Measurement(
        ops_per_s=statistics.median(rates), best_ops_per_s=max(rates),
        p50_us=None if p50 is None else p50 / 1000.0,
        p99_us=None if p99 is None else p99 / 1000.0,
        n=n, repeats=repeats, samples=len(lat), repeat_ops_per_s=rates)


def _latency_pass(op, base: int, samples: int, stride: int, overhead: int) -> list:
    out = []
    append = out.append
    ns = _ns
    with gc_paused():
        j = base
        for _ in range(samples):
            for k in range(j + 1, j + stride):
                op(k)
            t0 = ns()
            op(j)
            dt = ns() - t0 - overhead
            append(dt if dt > 0 else 0)
            j += stride
    return out


def timed_loop(op: Callable[[int], object], n: int, *, warmup: int = 0, start: int = 0,
               samples: int = 500, before: Callable[[], object] | None = None) -> dict:
    """One pass of `n` ops timed as a whole, every stride-th op also timed alone.

    The loop of the cluster tier, the same in the benchmark's process and in
    every client process: `warmup` ops untimed (indexes from `start`), then
    `before()` (a barrier, for client processes), then `n` ops with the GC
    paused. Returns {"ops_per_s", "ops", "t0", "t1" (perf_counter_ns, which
    is system-wide on Linux), "lat" (ns samples, clock cost subtracted)}.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    for j in range(start, start + warmup):
        op(j)
    overhead = timer_overhead_ns()
    stride = max(1, n // max(1, samples))
    lat: list[int] = []
    append = lat.append
    ns = _ns
    base = start + warmup
    if before is not None:
        before()
    with gc_paused():
        t0 = ns()
        for j in range(base, base + n):
            if j % stride == 0:
                a = ns()
                op(j)
                dt = ns() - a - overhead
                append(dt if dt > 0 else 0)
            else:
                op(j)
        t1 = ns()
    elapsed = t1 - t0
    return {"ops_per_s": n / (elapsed / 1e9) if elapsed > 0 else float("inf"), "ops": n,
            "t0": t0, "t1": t1, "lat": lat}


def time_once(fn: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call in milliseconds, GC paused, and the call's result."""
    with gc_paused():
        t0 = _ns()
        result = fn()
        elapsed = _ns() - t0
    return elapsed / 1e6, result


def measure_threads(make_op: Callable[[int], Callable[[int], object]], threads: int,
                    ops_per_thread: int, *, samples_per_thread: int = 500) -> Measurement:
    """Run `threads` threads, each calling its own `make_op(t)(i)` `ops_per_thread` times.

    Throughput is the total over the time from the common start to the last
    thread's end. Every thread times a sample of its operations (every
    `stride`-th) for the latency percentiles. GC is paused for the whole run.
    """
    import threading

    overhead = timer_overhead_ns()
    stride = max(1, ops_per_thread // max(1, samples_per_thread))
    barrier = threading.Barrier(threads + 1)
    lat: list[list[int]] = [[] for _ in range(threads)]
    ends = [0] * threads
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            op = make_op(t)
            mine = lat[t]
            barrier.wait()
            for j in range(ops_per_thread):
                if j % stride == 0:
                    t0 = _ns()
                    op(j)
                    dt = _ns() - t0 - overhead
                    mine.append(dt if dt > 0 else 0)
                else:
                    op(j)
            ends[t] = _ns()
        except BaseException as exc:  # re-raised in the caller below
            errors.append(exc)
            try:
                barrier.abort()
            except threading.BrokenBarrierError:
                pass

    pool = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads)]
    with gc_paused():
        for th in pool:
            th.start()
        # The barrier releases once every thread has built its op, so setup
        # (connections, keys) stays out of the timed span.
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        t0 = _ns()
        for th in pool:
            th.join()
    if errors:
        raise errors[0]
    elapsed = max(ends) - t0
    total = threads * ops_per_thread
    pooled = sorted(x for part in lat for x in part)
    rate = total / (elapsed / 1e9) if elapsed > 0 else float("inf")
    p50 = percentile(pooled, 50)
    p99 = percentile(pooled, 99)
    return Measurement(ops_per_s=rate, best_ops_per_s=rate,
                       p50_us=None if p50 is None else p50 / 1000.0,
                       p99_us=None if p99 is None else p99 / 1000.0,
                       n=total, repeats=1, samples=len(pooled), repeat_ops_per_s=[rate])


__all__ = ["Measurement", "measure", "measure_threads", "timed_loop", "time_once", "gc_paused",
           "percentile", "timer_overhead_ns"]
