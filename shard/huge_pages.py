"""The serving process's heap held in transparent huge pages, so that a snapshot's fork is short.

A snapshot forks the serving process (`shard.durable`), and fork copies the
process's page tables: one entry per 4 KiB page, ~8 ms for a store of 1M
keys (280 MB) on an idle core and two or three times that on a busy one.
That copy is the serving pause. Memory held in 2 MiB huge pages costs fork
one entry per 2 MiB instead of 512, and the same store forks in under 1 ms.

Python's allocator maps its arenas 1 MiB at a time and never asks for huge
pages, so `HeapPages` gathers the heap into them afterwards: a thread of
its own walks the process's private anonymous mappings and asks the kernel
to collapse each 2 MiB stretch that is already resident (`MADV_COLLAPSE`,
Linux 6.1 and later). Stretches that are mostly unused (thread stacks, the
unused end of an arena) are left alone, so the heap does not grow by more
than a few pages per stretch. The call runs without the GIL and the thread
rests as long as it worked, so serving keeps its share of the CPU.

After a fork, every page the parent writes while the child still shares it
is copied by the kernel into a 4 KiB page of its own, which splits the huge
page around it; once the child has exited, the next pass gathers those
stretches again (tens of ms of the thread's time, none of the loop's). A
pass runs only when no snapshot child is alive (collapsing a shared page
would copy it) and never during a fork: `paused()` stops the pass and waits
for the stretch being collapsed, and the fork then runs alone. A pass starts
once the heap has grown by `GROWTH_BYTES` and stopped growing (or after a
snapshot), and never sooner than `SETTLE_S` after a store opened, so a
restart's first pass does not compete with the other shards of its host
still recovering.

Where the kernel cannot do this (not Linux, huge pages disabled, a kernel
without MADV_COLLAPSE), `HeapPages` does nothing and fork copies 4 KiB
entries as before. It is a matter of speed only: the contents of memory and
what a snapshot holds are the same either way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

log = logging.getLogger("inmem.shard")

#: the heap grew by this much since the last pass: gather the new memory
GROWTH_BYTES = 32 << 20
#: the heap grew by less than this since the last look: it has settled
SETTLED_BYTES = 8 << 20
#: seconds after a store opened before its first pass
SETTLE_S = 2.0
#: at most this many 4 KiB pages of a stretch may be absent for it to be collapsed
ABSENT_MAX = 32

MADV_COLLAPSE = 25
_THP = "/sys/kernel/mm/transparent_hugepage"


class HeapPages:
    """One per process (`heap_pages()`): the thread that keeps the heap in huge pages."""

    def __init__(self):
        self._lock = threading.Lock()  # held while a stretch is being collapsed
        self._counts = threading.Lock()  # stores of several threads fork and reap
        self._paused = 0
        self._children = 0
        self._dirty = False
        self._not_before = 0.0
        self._gathered_rss = 0
        self._last_rss = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._libc = None
        self.huge_bytes = _huge_page_bytes()
        self.usable = self.huge_bytes is not None and self._load_libc()
        self.passes = 0
        self.collapsed = 0
        #: stretches the kernel had no huge page for at the time (EAGAIN/ENOMEM)
        self.refused = 0

    def _load_libc(self) -> bool:
        try:
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        except (OSError, AttributeError):
            return False
        self._ctypes = ctypes
        self._libc = libc
        return True

    # -- what the store tells it -------------------------------------------------------

    def opened(self) -> None:
        """A store opened (after its recovery): its first pass waits `SETTLE_S`."""
        self._not_before = max(self._not_before, time.monotonic() + SETTLE_S)

    def forked(self) -> None:
        """A snapshot child was forked (call inside `paused()`)."""
        with self._counts:
            self._children += 1

    def reaped(self) -> None:
        """A snapshot child exited: what the parent wrote meanwhile lies in split pages."""
        with self._counts:
            self._children = max(self._children - 1, 0)
        self._dirty = True

    @contextlib.contextmanager
    def paused(self):
        """No stretch is being collapsed inside: fork then copies the page tables alone."""
        with self._counts:
            self._paused += 1
        try:
            with self._lock:
                yield
        finally:
            with self._counts:
                self._paused -= 1

    def upkeep(self) -> None:
        """From a store's upkeep: start a pass if the heap grew and settled, or after a snapshot."""
        if not self.usable or self._children or self._paused:
            return
        rss = _rss_bytes()
        settled = rss - self._last_rss < SETTLED_BYTES
        self._last_rss = rss
        if not settled or time.monotonic() < self._not_before or self._wake.is_set():
            return
        if self._dirty or rss - self._gathered_rss >= GROWTH_BYTES:
            self._dirty = False
            self._gathered_rss = rss
            self._start()
            self._wake.set()

    # -- the thread ---------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="inmem-huge-pages",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            try:
                self.gather()
            except Exception:  # a daemon thread must report, not vanish
                log.exception("gathering the heap into huge pages failed")
            finally:
                self._wake.clear()
            self.passes += 1

    def gather(self) -> int:
        """One pass over the heap; returns the stretches collapsed. Stops when paused."""
        if not self.usable:
            return 0
        size = self.huge_bytes
        pages = size // os.sysconf("SC_PAGE_SIZE")
        vec = self._ctypes.create_string_buffer(pages)
        madvise, mincore = self._libc.madvise, self._libc.mincore
        done = 0
        for start, end in _heap_mappings():
            for at in range((start + size - 1) // size * size, end - size + 1, size):
                if self._paused or self._children:
                    return done
                t0 = time.monotonic()
                with self._lock:
                    if self._paused or self._children:
                        return done
                    if mincore(at, size, vec) != 0:
                        continue  # unmapped meanwhile
                    if pages - resident(vec.raw) > ABSENT_MAX:
                        continue
                    if madvise(at, size, MADV_COLLAPSE) != 0:
                        err = self._ctypes.get_errno()
                        if err == 22:  # EINVAL: this kernel has no MADV_COLLAPSE
                            self.usable = False
                            return done
                        self.refused += 1
                        continue  # EAGAIN/ENOMEM: no huge page free now; the next pass
                    done += 1
                    self.collapsed += 1
                # Rest as long as the stretch took: serving keeps its share of the CPU.
                time.sleep(min(time.monotonic() - t0, 0.05))
        return done


def _huge_page_bytes() -> int | None:
    """The PMD huge page size if the kernel has transparent huge pages enabled, else None."""
    try:
        with open(f"{_THP}/enabled") as f:
            if "[never]" in f.read():
                return None
        with open(f"{_THP}/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


#: mincore's byte per page -> its low bit (resident or not), for bytes.translate: counting
#: a 2 MiB stretch's resident pages this way takes ~1.5 µs, a generator over the bytes ~36 µs
_LOW_BIT = bytes(b & 1 for b in range(256))


def resident(vec: bytes) -> int:
    """How many pages mincore's vector says are resident (the low bit of each byte)."""
    return vec.translate(_LOW_BIT).count(1)


def _heap_mappings():
    """(start, end) of the process's private anonymous read-write mappings."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
                    continue
                if parts[4] != "0":  # an inode: a file's private copy, not the heap
                    continue
                start, end = parts[0].split("-")
                out.append((int(start, 16), int(end, 16)))
    except OSError:
        pass
    return out


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_HEAP: HeapPages | None = None
_HEAP_LOCK = threading.Lock()


def heap_pages() -> HeapPages:
    """The process's one HeapPages (stores of one process share a heap)."""
    global _HEAP
    with _HEAP_LOCK:
        if _HEAP is None:
            _HEAP = HeapPages()
        return _HEAP
