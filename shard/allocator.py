"""The C allocator's mmap threshold in a process that serves a durable store, held fixed.

glibc gives an allocation above its mmap threshold (128 KiB at start) a
mapping of its own, unmapped when it is freed. The threshold is dynamic,
though: whenever such a mapping is freed, glibc raises the threshold to its
size, up to 32 MiB. A store frees large buffers all its life: its tables
replace their hash arrays as they grow (tens of MB for a million keys), the
WAL's hand-over buffers run to hundreds of KiB, a replay reads records back.
Once the threshold has risen past them, these buffers come from the heap and
the per-thread arenas, between small long-lived objects that then keep
their pages resident after the buffers are freed, so a long-running shard's
resident memory comes to depend on the order of its past frees.

Holding the threshold (`mallopt(M_MMAP_THRESHOLD)`, which also turns the
adjustment off) at 1 MiB keeps every buffer above that in a mapping of its
own for the life of the process, while the hand-over buffers below it keep
coming from the heap, where they are reused at once (at 128 KiB each one
was a fresh mapping with its page faults: 4-5% of the CPU time of a put).
Measured on a buffered store of 1M keys (16-byte keys, 100-byte values):
258.9 to 259.4 bytes per key over four runs with the threshold held, 258.6
to 261.2 over five without.

It is a setting of the whole process, made once, when the first durable
store opens in it (the `malloc_mmap_threshold` option; 0 or None leaves
the allocator alone). A process started with `MALLOC_MMAP_THRESHOLD_` in its
environment keeps what it asked for. Elsewhere than glibc nothing is done:
other allocators return memory their own way.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("inmem.shard")

#: glibc's mallopt parameter numbers for the mmap threshold and the trim threshold
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
#: the environment variable through which a process sets the threshold itself
ENV = "MALLOC_MMAP_THRESHOLD_"
#: ... and the trim threshold
TRIM_ENV = "MALLOC_TRIM_THRESHOLD_"
#: glibc refuses thresholds above HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
THRESHOLD_MAX = 32 * 2**20

_lock = threading.Lock()
_applied: int | None = None


def _mallopt():
    try:
        import ctypes
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def hold_mmap_threshold(threshold: int | None) -> int | None:
    """Fix this process's mmap threshold at `threshold` bytes, once; the threshold in force
    from this module (None: the allocator was left alone)."""
    global _applied
    if not threshold:
        return _applied
    with _lock:
        if _applied is not None or os.environ.get(ENV):
            return _applied
        fn = _mallopt()
        if fn is None:
            return None
        value = min(threshold, THRESHOLD_MAX)
        if fn(M_MMAP_THRESHOLD, value) != 1:
            log.warning("the C allocator refused an mmap threshold of %d bytes", value)
            return None
        # Setting one threshold freezes the other at its start value (128 KiB)
        # too, and then every free of a buffer that size at the heap's top
        # hands the memory back and the next malloc asks for it again: two
        # brk calls around each msgpack.packb (a fresh 256 KiB buffer), 0.4 ->
        # 7.6 µs. glibc's own adjustment keeps the trim threshold at twice the
        # mmap threshold; so does this. The store's upkeep trims the heap
        # every 250 ms anyway (shard.upkeep).
        if not os.environ.get(TRIM_ENV):
            fn(M_TRIM_THRESHOLD, 2 * value)
        _applied = value
        return value


def held_mmap_threshold() -> int | None:
    """The threshold this module set in the process (None: it set none)."""
    return _applied


__all__ = ["held_mmap_threshold", "hold_mmap_threshold"]
