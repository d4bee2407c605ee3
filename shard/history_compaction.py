"""Compaction of history files: the live part of a mostly dead file copied forward, crash-safely.

A file in `history/` (a WAL segment that snapshot retention took out of the
WAL while runs' histories still named it, or an earlier compaction's output)
is kept whole while any extent names it. Once most of it belongs to deleted
runs, its live part is copied into a new file, the index is pointed there
and the old file goes. The live part is counted in batches, not records: a
record of a buffered WAL holds the batches of several runs, so each record
that a live run's extent names is copied with the batches of the runs that
name it, as they are (msgpack bytes untouched), under a header and crc32c of
its own in the WAL's record format. A run's effects in a record keep their
order and count, so every extent's `skip` stays true.

When. The policy, `history_compact_dead_fraction` (default 0.5; None turns
the automatic compaction off): a file out of the WAL whose dead batches and
records take at least that fraction of its bytes is compacted. The files are measured
after a run holding extents was deleted, after retention moved files into
`history/`, and once after the store opens; the compaction itself goes in
slices of the shard's upkeep (a few milliseconds of copying or index
rewriting at a time, `STEP_MS`), so requests are never held for long.
`compact_history()` on a database compacts every file with any dead record,
to completion; a shard's loop does it in slices with requests served between
them (`all_in_slices`, driven by `shard.deferred_admin`). A file
no live run names at all is not compacted: retention removes it.

The steps, each behind a failpoint of its own, and why a crash at any of them
loses nothing:

1. copy: the live part of each live record into
   `history/<new name>.tmp`, in slices (`history.compact_copy` after the
   first slice). A crash leaves a `.tmp` file that retention removes.
2. fsync the copy, rename it to `<new name>`, fsync the directory
   (`history.compact_copied` before the rename, `history.compact_renamed`
   after). No index names the new file yet: a crash leaves a file no extent
   names, which retention removes.
3. the move note `<old name>.moved` (`shard.history_files.write_moved`):
   written to a temporary name, fsynced, renamed, the directory fsynced
   (`history.compact_noted` after). From here on every index that names the
   old file, in memory or in any retained snapshot, is translated through the
   note when it is recovered, so the index pointing at the new file is durable.
4. the index in memory is pointed at the new file, in slices over the runs
   (`history.compact_remap` after the first slice). Meanwhile a place may
   name either file: both give a live run the same effects.
5. the old file is removed and the directory fsynced
   (`history.compact_before_unlink`, `history.compact_after_unlink`).

The note stays until every retained snapshot was taken after step 4 ended
(`HistoryFiles.moved_done`), so that falling back to an older snapshot still
finds every record.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from array import array
from bisect import bisect_left

import msgpack

from inmem.errors import CorruptionError, InmemError
from inmem.files import fsync_dir, open_private
from inmem.wal.failpoints import failpoint, register
from inmem.wal.record import encode
from inmem.wal.segment import list_segments

from .effects import payload_of_batches, record_batches

from .history_files import (COMPACTED_SUFFIX, MOVED_SUFFIX, OFFSET_BITS, OFFSET_MASK, TMP_SUFFIX,
                            is_history_file)

log = logging.getLogger("inmem.shard")

#: the longest slice of compaction in one round of upkeep, in milliseconds
STEP_MS = 3
#: a slice copies at most this many bytes
COPY_SLICE_BYTES = 1 << 20
#: a slice of the index rewrite visits at most this many extents
REMAP_SLICE = 50_000

POINTS = ("history.compact_copy", "history.compact_copied", "history.compact_renamed",
          "history.compact_noted", "history.compact_remap", "history.compact_before_unlink",
          "history.compact_after_unlink")
for _name in POINTS:
    register(_name)


class _Job:
    """One file being compacted."""

    __slots__ = ("source", "source_no", "offsets", "runs_of", "target", "target_no", "tmp", "fd",
                 "at", "written", "new", "phase", "runs", "run_at", "size", "missed")

    def __init__(self, source: str, source_no: int, offsets: list, size: int):
        self.source, self.source_no, self.size = source, source_no, size
        #: the offsets of the live records, sorted, and the runs whose batches each keeps
        self.offsets = [off for off, _runs in offsets]
        self.runs_of = [runs for _off, runs in offsets]
        stem = source.split(".", 1)[0]
        self.target = f"{stem}.{secrets.token_hex(4)}{COMPACTED_SUFFIX}"
        self.target_no = -1
        self.tmp = self.fd = None
        self.at = 0           # next offset to copy (index into `offsets`)
        self.written = 0      # bytes in the new file so far
        self.new = array("q")  # the new offset of each copied record
        self.phase = "copy"
        self.runs: list = []
        self.run_at = 0
        self.missed = 0       # extents naming a record that was not copied (kept: the source stays)


class Compactor:
    """Finds mostly dead history files and compacts them, a slice at a time."""

    def __init__(self, files, engine, next_lsn, dead_fraction: float | None):
        self.files = files
        self.engine = engine
        #: the WAL's next LSN (a callable): a move note's age, see `HistoryFiles.moved_done`
        self.next_lsn = next_lsn
        self.dead_fraction = dead_fraction
        self.job: _Job | None = None
        self.queue: list = []
        #: the measuring under way (a generator), see `_measure`
        self._measuring = None
        #: files.released and files in history/ when the files were last measured
        self._measured: tuple | None = None
        #: files that failed to compact: not tried again until the store reopens
        self._failed: set[str] = set()
        self.stats = {"files": 0, "bytes_before": 0, "bytes_after": 0}
        #: one compaction at a time: the upkeep's slices and a request's run to the end
        self._mutex = threading.Lock()

    # -- choosing files ------------------------------------------------------------

    def _due(self) -> bool:
        if self.dead_fraction is None:
            return False
        return self._measured != self._state()

    def _state(self) -> tuple:
        try:
            names = frozenset(os.listdir(self.files.dir))
        except OSError:
            names = frozenset()
        return self.files.released, names

    def measure(self, threshold: float) -> list:
        """The files whose dead bytes reach `threshold` of them, measured to the end."""
        for _ in self._measure(threshold):
            pass
        out, self.queue = self.queue, []
        return out

    def _measure(self, threshold: float):
        """Measure the files out of the WAL, yielding now and then; the result goes to `queue`.

        A record's live part is the batches of the runs whose extents name it
        (a record of a buffered WAL holds several runs' batches).
        """
        files = self.files
        self._measured = self._state()
        in_wal = {os.path.basename(p) for _, p in list_segments(files.wal)}
        candidates: dict = {}
        for name in self._measured[1]:
            if (not is_history_file(name) or name in in_wal or name in files.busy
                    or name in self._failed):
                continue
            no = files._no_of.get(name)
            if no is not None and files.live[no]:
                candidates[no] = {}
        found = []
        if candidates:
            for run_id, r in list(self.engine.runs.items()):
                for place in r.journal.ext_loc:
                    if place >= 0:
                        offs = candidates.get(place >> OFFSET_BITS)
                        if offs is not None:
                            off = place & OFFSET_MASK
                            runs = offs.get(off)
                            if runs is None:
                                offs[off] = {run_id}
                            else:
                                runs.add(run_id)
            yield
        for no, offs in candidates.items():
            name = files.names[no]
            try:
                size = os.stat(os.path.join(files.dir, name)).st_size
                limit = size * (1 - threshold)
                live_bytes = 0
                for off in sorted(offs):
                    live_bytes += len(self._live_part(no << OFFSET_BITS | off, offs[off]))
                    if live_bytes > limit:
                        break
                    yield
            except (OSError, InmemError) as exc:
                if not files.live[no]:
                    # No run names it any more, so retention removed it meanwhile:
                    # nothing is left to compact.
                    continue
                log.warning("history file %s cannot be measured for compaction: %s", name, exc)
                continue
            if offs and live_bytes <= limit and live_bytes < size:
                found.append((name, no, sorted(offs.items()), size))
        self.queue = found

    def _live_part(self, place: int, runs) -> bytes:
        """The record at `place` with only the batches of `runs`: as it is when that is all of it."""
        head, body, length = self.files._fetch(place)
        payload = body[:length]
        try:
            count, spans = record_batches(payload)
        except (ValueError, msgpack.UnpackException) as exc:
            raise CorruptionError(f"history record at place {place} does not decode: {exc}",
                                  path=self.files.dir, offset=place & OFFSET_MASK) from None
        kept = [s for s in spans if s[0] in runs]
        if len(kept) == len(spans):
            return head + body
        return encode(payload_of_batches(payload, count, kept), head[4])  # the record's type

    # -- the work ------------------------------------------------------------------

    def pending(self) -> bool:
        return self.job is not None or bool(self.queue) or self._measuring is not None

    def step(self, lock, budget_ms: float = STEP_MS) -> bool:
        """One slice of compaction (the files measured first when due); True: more to do."""
        if not self._mutex.acquire(blocking=False):
            return True  # a request is compacting to the end meanwhile
        try:
            return self._step(lock, budget_ms)
        finally:
            self._mutex.release()

    def _step(self, lock, budget_ms: float) -> bool:
        deadline = time.monotonic() + budget_ms / 1000
        if self.job is None and not self.queue:
            if self._measuring is None and self._due():
                self._measuring = self._measure(self.dead_fraction)
            if self._measuring is not None:
                with lock:
                    try:
                        while time.monotonic() < deadline:
                            next(self._measuring)
                    except StopIteration:
                        self._measuring = None
                return self.pending()
        if self.job is None:
            if not self.queue:
                return False
            name, no, offsets, size = self.queue.pop(0)
            self.job = _Job(name, no, offsets, size)
        job = self.job
        try:
            if job.phase == "copy":
                with lock:
                    self._copy(job, deadline)
            elif job.phase == "publish":
                self._publish(job, lock)
            elif job.phase == "remap":
                with lock:
                    self._remap(job, deadline)
            if job.phase == "drop":
                self._drop(job)
        except (OSError, InmemError) as exc:
            if not self.files.live[job.source_no]:
                # Every run that named it was deleted and retention removed the file
                # meanwhile: nothing was left to compact, so nothing failed.
                log.debug("compaction of history file %s ends: no run names it any more",
                          job.source)
            else:
                log.error("compaction of history file %s failed, it is kept as it is: %s",
                          job.source, exc)
            self._abandon(job)
        return self.pending()

    def run_all(self, lock, threshold: float = 0.0) -> dict:
        """Compact every file whose dead bytes exceed `threshold` of it, to completion."""
        with self._mutex:
            steps = self._all_steps(lock, threshold, 50)
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value

    def all_in_slices(self, lock, threshold: float = 0.0, budget_ms: float = STEP_MS):
        """`run_all` one slice per next(), for a loop that serves between them; what
        run_all returns is the value of the StopIteration that ends it.

        The automatic steps may run between the slices: they work on the same
        queue and job, so the whole still ends with every file compacted.
        """
        steps = self._all_steps(lock, threshold, budget_ms)
        while True:
            with self._mutex:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value
            yield

    def _all_steps(self, lock, threshold: float, budget_ms: float):
        before = dict(self.stats)
        while self.job is not None:
            self._step(lock, budget_ms)
            yield
        self.queue = []
        self._measuring = self._measure(threshold)
        while self.pending():
            self._step(lock, budget_ms)
            yield
        return {k: self.stats[k] - before[k] for k in self.stats}

    def _copy(self, job: _Job, deadline: float) -> None:
        files = self.files
        if job.fd is None:
            job.tmp = os.path.join(files.dir, job.target + TMP_SUFFIX)
            files.busy.add(job.target)
            job.fd = open_private(job.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        base = job.source_no << OFFSET_BITS
        copied = 0
        offsets, runs = job.offsets, job.runs_of
        while job.at < len(offsets):
            record = self._live_part(base | offsets[job.at], runs[job.at])
            view = memoryview(record)
            while view:
                view = view[os.write(job.fd, view):]
            job.new.append(job.written)
            job.written += len(record)
            copied += len(record)
            job.at += 1
            if copied >= COPY_SLICE_BYTES or time.monotonic() > deadline:
                break
        failpoint("history.compact_copy")
        if job.at == len(offsets):
            job.phase = "publish"

    def _publish(self, job: _Job, lock) -> None:
        files = self.files
        os.fsync(job.fd)
        os.close(job.fd)
        job.fd = None
        failpoint("history.compact_copied")
        os.rename(job.tmp, os.path.join(files.dir, job.target))
        fsync_dir(files.dir)
        failpoint("history.compact_renamed")
        files.write_moved(job.source, job.target, array("q", job.offsets), job.new)
        failpoint("history.compact_noted")
        with lock:
            job.target_no = files.number(job.target)
            job.runs = list(self.engine.runs.values())
        job.phase = "remap"

    def _remap(self, job: _Job, deadline: float) -> None:
        files = self.files
        live = files.live
        src, dst = job.source_no, job.target_no << OFFSET_BITS
        old, new = job.offsets, job.new
        visited = 0
        while job.run_at < len(job.runs):
            loc = job.runs[job.run_at].journal.ext_loc
            for i, place in enumerate(loc):
                if place >= 0 and place >> OFFSET_BITS == src:
                    j = _find(old, place & OFFSET_MASK)
                    if j < 0:
                        job.missed += 1
                        continue
                    loc[i] = dst | new[j]
                    live[src] -= 1
                    live[job.target_no] += 1
            visited += len(loc)
            job.run_at += 1
            if visited >= REMAP_SLICE or time.monotonic() > deadline:
                break
        failpoint("history.compact_remap")
        if job.run_at == len(job.runs):
            job.runs = []
            # No place in memory names the source any more; once every retained
            # snapshot is younger than this, the move note can go too.
            files.moved_done[job.source + MOVED_SUFFIX] = self.next_lsn()
            files.busy.discard(job.target)
            files.forget_cached()
            job.phase = "drop"

    def _drop(self, job: _Job) -> None:
        files = self.files
        self.job = None
        if job.missed:
            # Should not happen (every live extent's record was copied); if it
            # does, the source stays for them and retention removes it later.
            log.warning("history file %s is kept: %d extents name records compaction did not "
                        "copy", job.source, job.missed)
            return
        failpoint("history.compact_before_unlink")
        files._close(job.source_no)
        try:
            os.unlink(os.path.join(files.dir, job.source))
        except FileNotFoundError:
            pass  # retention removed it first: no extent named it any more
        fsync_dir(files.dir)
        failpoint("history.compact_after_unlink")
        self.stats["files"] += 1
        self.stats["bytes_before"] += job.size
        self.stats["bytes_after"] += job.written

    def _abandon(self, job: _Job) -> None:
        self._failed.add(job.source)
        if job.phase in ("copy", "publish"):
            if job.fd is not None:
                os.close(job.fd)
                job.fd = None
            for path in (job.tmp, os.path.join(self.files.dir, job.target)):
                try:
                    if path:
                        os.unlink(path)
                except OSError:
                    pass
            self.files.busy.discard(job.target)
            self.job = None
        elif job.phase == "drop":
            self.job = None  # the index is moved; retention removes the source
        # In the remap, the copy is whole and noted: it goes on at the next step.

    def close(self) -> None:
        job = self.job
        if job is not None and job.fd is not None:
            os.close(job.fd)
            job.fd = None


def _find(old, off: int) -> int:
    """Where `off` is in the sorted `old` (-1: not there)."""
    j = bisect_left(old, off)
    return j if j < len(old) and old[j] == off else -1
