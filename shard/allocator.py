"""The C allocator's mmap threshold in a process that serves a durable store, held fixed.

glibc gives an allocation above its mmap threshold (128 KiB at start) a
mapping of its own, unmapped when it is freed. The threshold is dynamic,
though: whenever such a mapping is freed, glibc raises the threshold to its
size (up to 32 MiB), so from then on buffers of that size come from the heap
and the per-thread arenas, between small objects. A store frees large
buffers all the time: its tables replace their hash arrays as they grow
(tens of MB for a million keys), and the WAL's records and write buffers run
to hundreds of KiB. Once those come from the heap, small long-lived objects
allocated beside them keep the pages resident after the buffers are freed,
and a store's resident memory per key depends on the order things happened
in: on a buffered store of 1M keys (16-byte keys, 100-byte values) eleven
runs of the same load read 259.9 to 273.4 bytes per key (median 264.1), and
sixteen with the threshold held at 128 KiB 258.9 to 263.7 (median 260.3) but
for one at 271.7. The price is a fresh mapping, and its page faults, for
each large buffer: about 5% of the CPU time of a buffered put.

Setting the threshold (`mallopt(M_MMAP_THRESHOLD)`) also turns its
adjustment off, so every large buffer is mapped and unmapped on its own, as
glibc does before its first large free. It is a setting of the whole
process, made once, when the first durable store opens in it (the
`malloc_mmap_threshold` option; 0 or None leaves the allocator alone). A process
started with `MALLOC_MMAP_THRESHOLD_` in its environment keeps what it asked
for. Elsewhere than glibc nothing is done: other allocators return memory
their own way.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("inmem.shard")

#: glibc's mallopt parameter number for the mmap threshold
M_MMAP_THRESHOLD = -3
#: the environment variable through which a process sets the threshold itself
ENV = "MALLOC_MMAP_THRESHOLD_"
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
        _applied = value
        return value


def held_mmap_threshold() -> int | None:
    """The threshold this module set in the process (None: it set none)."""
    return _applied


__all__ = ["held_mmap_threshold", "hold_mmap_threshold"]
