"""The WAL writer: appends records to segment files in the buffered or strict durability mode.

Appends encode into an in-memory buffer under a lock and get an LSN at once.
Who writes the buffer to the file, and when an append returns, is the mode:

- "buffered": a daemon thread writes everything pending with one write and
  one fsync every `flush_interval_ms`, or as soon as `max_pending_writes`
  records are pending (the appender wakes it). A crash loses at most the
  records of the last interval: that is the mode's promise. Without that
  thread (`flusher=False`) the owner flushes: a server loop that must not
  wait for the disk calls `flush_in_background()`, which writes at once and
  leaves the fsync to a syncer thread that does nothing else (Redis's
  everysec does the same with its background fsync).
- "strict": `append` returns only once its record is written and fsynced.
  Group commit: among threads appending at once, one (the leader) writes and
  fsyncs everything pending; the others wait on a condition until
  `durable_lsn` passes their LSN, then return. A single-threaded caller that
  drains a batch uses `append_nowait` for each record and `sync()` once.

LSNs are global record indexes; `durable_lsn` and `next_lsn` are exclusive
bounds: every record with lsn < durable_lsn is on disk and fsynced.

Segments: when a record would take the current segment past
`segment_bytes_max`, the writer fsyncs and closes it and creates the next one,
named by the LSN of its first record, then fsyncs the directory. A record
larger than the limit gets a segment to itself. The roll point is chosen at
append time, so a buffer that spans a roll is written into the right files.
On open the writer continues the newest segment when it ends cleanly at the
LSN the log continues from and has room left (its clean end is verified first,
and a zero tail beyond the last record is cut off); otherwise it starts a new
segment at its first LSN. So reopening a store does not add a file each time.

Preallocation (strict mode, as the shard store runs it): a segment gets its
full size from posix_fallocate when it is created or continued, and gives the
unused rest back (ftruncate to its last record, fsynced) when it is rolled and
when the writer closes. Only a crash leaves a zero tail behind, in the newest
segment only; readers stop at it without reading it when the filesystem
reports it as a hole, and the next open cuts it off.

Failure is fail-stop. A write or fsync error (after an fsync error the kernel
may have dropped the dirty pages, so a retry proves nothing) is recorded;
from then on every append, sync and flush raises WalFailed with the OSError
as its cause, nothing more is acknowledged, and the pending buffer is kept
(shown by `pending_records`). The owner closes the writer and recovers from
disk. A short write is continued until all bytes are written; a write that
fails half way is truncated away (best effort) so the file ends on a record
boundary. fsyncs slower than `fsync_slow_ms` are logged on "inmem.wal".

All file I/O on the hot path goes through the module attributes `_os_write`
and `_os_fsync`, so fault tests can inject short writes and fsync errors.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time

from inmem.files import fsync_dir, make_dirs, open_private
from inmem.wal.errors import WalClosed, WalError, WalFailed, WalNeedsRecovery
from inmem.wal.failpoints import failpoint, register
from inmem.wal.reader import CleanEnd, WalReader
from inmem.wal.record import RECORD_OVERHEAD, TYPE_BATCH, append_record, checked_size
from inmem.wal.segment import LSN_MAX, list_segments, remove_temp_files, segment_path

logger = logging.getLogger("inmem.wal")

# The I/O seam: fault tests replace these with wrappers (short writes, EIO).
_os_write = os.write
_os_fsync = os.fsync

FP_BEFORE_WRITE = register("wal.before_write")
FP_AFTER_WRITE_BEFORE_FSYNC = register("wal.after_write_before_fsync")
FP_AFTER_FSYNC = register("wal.after_fsync")
FP_BEFORE_ROLL = register("wal.before_roll")
FP_AFTER_ROLL = register("wal.after_roll")
FP_BEFORE_DELETE = register("wal.before_delete")
FP_AFTER_DELETE = register("wal.after_delete")

MODES = ("buffered", "strict")

_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)


def _fsync(fd: int) -> None:
    # A late binding, so a test that swaps `_os_fsync` also catches directory fsyncs.
    _os_fsync(fd)


class WalWriter:
    """Append records to a WAL directory. Thread-safe. See the module docstring."""

    def __init__(self, directory, mode: str = "buffered",
                 segment_bytes_max: int = 64 * 2**20, flush_interval_ms: float = 100,
                 max_pending_writes: int = 1000, fsync_slow_ms: float = 50,
                 start_lsn: int | None = None, before_flush=None, preallocate: bool = False,
                 flusher: bool = True, log_end: tuple | None = None):
        if mode not in MODES:
            raise ValueError(f"WAL mode must be one of {MODES}, got {mode!r} "
                             f"(the 'inmemory' durability writes no WAL at all)")
        if segment_bytes_max < 1:
            raise ValueError(f"segment_bytes_max must be >= 1, got {segment_bytes_max}")
        if flush_interval_ms <= 0:
            raise ValueError(f"flush_interval_ms must be > 0, got {flush_interval_ms}")
        if max_pending_writes < 1:
            raise ValueError(f"max_pending_writes must be >= 1, got {max_pending_writes}")
        self.directory = os.fspath(directory)
        self.mode = mode
        self.segment_bytes_max = segment_bytes_max
        self.flush_interval_ms = flush_interval_ms
        self.max_pending_writes = max_pending_writes
        self.fsync_slow_ms = fsync_slow_ms
        # Called by the background flusher (buffered mode) before each flush, so
        # an owner that batches operations in memory can hand them over as one
        # record just in time.
        self.before_flush = before_flush
        # Preallocated segments (posix_fallocate to segment_bytes_max) make an
        # append + fsync cheaper (no block allocation per fsync: ~95 vs ~145 us
        # here). The tail of such a file is zero fill, which readers treat as the
        # end; writes go at our own offset instead of O_APPEND.
        self.preallocate = preallocate
        self._open_flags = _OPEN_FLAGS & ~os.O_APPEND if preallocate else _OPEN_FLAGS
        self._strict = mode == "strict"

        # _lock guards the buffer and counters; _io_lock makes one thread at a
        # time the owner of the file descriptor. I/O runs under _io_lock only,
        # so appends keep filling the next buffer while a write is in flight.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._io_lock = threading.Lock()
        # The flusher's wake-up. Not a threading.Event: its set() takes a lock in
        # Python code, and an interrupt (Ctrl-C) landing between that acquire and
        # its release leaves the lock held, so the next set() (close's, or the
        # exit handler's) would wait forever. A SimpleQueue's put is one C call.
        self._kick: queue.SimpleQueue = queue.SimpleQueue()
        self._leader = False
        # Threads waiting on _cond (under _lock): with none, a flush that
        # advances durable_lsn has nobody to wake, and skips the notify.
        self._waiting = 0
        self._stopping = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        # flush_in_background: the newest (dup'ed fd, its segment, LSN it makes
        # durable) to fsync, and the thread that does it (started on first use)
        self._sync_job: tuple[int, int, int] | None = None
        self._syncer: threading.Thread | None = None

        # Pending records: a list of (segment first LSN, bytearray) chunks, one
        # per segment they belong in; _cur is the chunk appends go to.
        self._chunks: list[tuple[int, bytearray]] = []
        self._cur: bytearray | None = None
        self._pending = 0

        self._fd: int | None = None
        # log_end: (newest segment's path, offset after its last record, LSN
        # after it), as a reader that just read that segment to a clean end
        # found them (recovery does): the segment need not be read again.
        first, size, next_lsn = self._open_log(start_lsn, log_end)
        self._fd_seg_first = first        # segment the fd writes (physical)
        self._fd_size = size
        self._fd_dirty = False
        self._seg_first = first           # segment new appends go to (logical)
        self._seg_bytes = size            # its bytes, written and pending
        self._next_lsn = next_lsn
        self._durable_lsn = next_lsn

        # Without the flusher thread (flusher=False) a buffered writer's owner
        # calls flush() itself: a single-threaded server does, from its loop.
        if mode == "buffered" and flusher:
            self._thread = threading.Thread(target=self._flusher, daemon=True,
                                            name=f"inmem-wal-flush:{self.directory}")
            self._thread.start()

    @classmethod
    def open(cls, directory, mode: str = "buffered", **options) -> "WalWriter":
        """Continue the log in `directory` after its last good record.

        The log must end cleanly: run recovery first if it has a torn tail.
        """
        return cls(directory, mode, **options)

    # -- opening -------------------------------------------------------------

    def _open_log(self, start_lsn: int | None, log_end=None) -> tuple[int, int, int]:
        """Open the segment the next record goes to; return (its first LSN, its size, next LSN)."""
        directory = self.directory
        make_dirs(directory, _fsync)
        if remove_temp_files(directory):
            fsync_dir(directory, _fsync)
        segments = list_segments(directory)
        if start_lsn is not None and not 0 <= start_lsn <= LSN_MAX:
            raise ValueError(f"start_lsn out of range: {start_lsn}")
        if not segments:
            start = 0 if start_lsn is None else start_lsn
            self._fd = self._create_segment(start)
            return start, 0, start
        newest_first, newest_path = segments[-1]
        if start_lsn is not None and newest_first > start_lsn:
            raise WalError(
                f"cannot start the WAL in {directory} at LSN {start_lsn}: it already "
                f"holds a segment starting at LSN {newest_first}; open it without "
                f"start_lsn to continue after its last record")
        if log_end is not None and log_end[0] == newest_path:
            _path, end_offset, end_lsn = log_end
            clean = True
        else:
            end_lsn, end_offset, clean = self._newest_end()
        if start_lsn is None:
            if not clean:
                raise WalNeedsRecovery(
                    f"the WAL in {directory} does not end cleanly; run recovery on it (it "
                    f"truncates a torn tail after keeping a *.broken.N copy) before writing")
            start_lsn = end_lsn
        elif (clean and end_lsn > start_lsn) or (not clean and newest_first == start_lsn):
            raise WalNeedsRecovery(
                f"WAL segment {newest_path} already holds records at or after LSN "
                f"{start_lsn}, where the log is to continue; run recovery on the "
                f"directory first")
        if clean and end_lsn == start_lsn and end_offset < self.segment_bytes_max:
            self._fd = self._continue_segment(newest_path, end_offset)
            return newest_first, end_offset, start_lsn
        if clean:
            _trim_file(newest_path, end_offset)
        self._fd = self._create_segment(start_lsn)
        return start_lsn, 0, start_lsn

    def _newest_end(self) -> tuple[int, int, bool]:
        """(LSN after its last record, byte offset after it, ends cleanly) of the newest segment."""
        # start_lsn at the very end: the reader verifies only the newest segment
        # and makes no payload objects, which is all that continuing needs.
        reader = WalReader(self.directory, start_lsn=LSN_MAX)
        for _ in reader:
            pass
        return reader.next_lsn, reader.end_offset, isinstance(reader.outcome, CleanEnd)

    def _continue_segment(self, path: str, end_offset: int) -> int:
        """Open a segment that ends cleanly at `end_offset` for appending after its last record."""
        fd = open_private(path, self._open_flags)
        try:
            if os.fstat(fd).st_size > end_offset:
                os.ftruncate(fd, end_offset)  # the zero tail a crash left
                _fsync(fd)
            self._preallocate(fd, end_offset)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _create_segment(self, first_lsn: int) -> int:
        path = segment_path(self.directory, first_lsn)
        fd = open_private(path, self._open_flags | os.O_CREAT | os.O_EXCL)
        try:
            self._preallocate(fd, 0)
            _fsync(fd)
            fsync_dir(self.directory, _fsync)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _preallocate(self, fd: int, offset: int) -> None:
        if not self.preallocate:
            return
        if offset < self.segment_bytes_max:
            try:
                os.posix_fallocate(fd, 0, self.segment_bytes_max)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    # Too little room to reserve a whole segment is no reason to
                    # refuse to start (and serve reads): append as the space allows,
                    # and a write that finds none fails then, as without preallocation.
                    os.ftruncate(fd, offset)
                    logger.warning("%s: no room to reserve a %d-byte WAL segment; appending "
                                "without preallocation", self.directory,
                                self.segment_bytes_max)
                elif exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                # A filesystem without fallocate: plain appends still work.
        os.lseek(fd, offset, os.SEEK_SET)

    def _trim_tail(self) -> None:
        """Give back the preallocated space after the last record (durable at the next fsync)."""
        if self.preallocate:
            os.ftruncate(self._fd, self._fd_size)
            self._fd_dirty = True

    # -- appending -----------------------------------------------------------

    def append(self, payload, rtype: int = TYPE_BATCH) -> int:
        """Add one record; return its LSN.

        strict: returns once the record is durable (group commit).
        buffered: returns at once; the flusher makes it durable within an interval.
        """
        lsn = self._enqueue(payload, rtype)
        if self._strict:
            self._wait_durable(lsn)
        elif self._pending >= self.max_pending_writes:
            self.kick()
        return lsn

    def append_nowait(self, payload, rtype: int = TYPE_BATCH) -> int:
        """Add one record to the buffer and return its LSN without waiting, in any mode.

        The record is durable after the next `sync()` (or flush) returns.
        """
        return self._enqueue(payload, rtype)

    def append_located(self, payload, rtype: int = TYPE_BATCH) -> tuple[int, int, int]:
        """`append_nowait` that also says where the record goes: (LSN, segment's first LSN, offset).

        The segment is named by its first LSN; the offset is where the record's
        header starts in it. A history index (`shard.history_files`) keeps it.
        """
        return self._enqueue(payload, rtype, True)

    def _enqueue(self, payload, rtype: int, located: bool = False):
        size = checked_size(payload, rtype)
        record_bytes = size + RECORD_OVERHEAD
        with self._lock:
            if self._error is not None:
                raise self._failed_error()
            if self._closed:
                raise WalClosed(f"the WAL writer for {self.directory} is closed")
            lsn = self._next_lsn
            if self._seg_bytes and self._seg_bytes + record_bytes > self.segment_bytes_max:
                self._seg_first = lsn
                self._seg_bytes = 0
                self._cur = None
            buf = self._cur
            if buf is None:
                buf = self._cur = bytearray()
                self._chunks.append((self._seg_first, buf))
            offset = self._seg_bytes
            pending, start = self._pending, len(buf)
            try:
                append_record(buf, payload, rtype, size)
                self._seg_bytes = offset + record_bytes
                self._next_lsn = lsn + 1
                self._pending = pending + 1
            except BaseException:
                # An interrupt (Ctrl-C, an exception from a signal handler) part way
                # through: half a record in the buffer would be written out before
                # the records after it, a damaged record in the middle of the log.
                del buf[start:]
                self._seg_bytes, self._next_lsn, self._pending = offset, lsn, pending
                raise
            return (lsn, self._seg_first, offset) if located else lsn

    def _wait_durable(self, lsn: int) -> None:
        """Group commit: lead a flush if nobody is flushing, else wait for the leader."""
        # `with self._lock` is `with self._cond` (the condition's lock) without
        # the condition's Python-level __enter__ and __exit__.
        with self._lock:
            while self._durable_lsn <= lsn:
                if self._error is not None:
                    raise self._failed_error()
                if not self._leader:
                    self._leader = True
                    break
                self._waiting += 1
                try:
                    self._cond.wait()
                finally:
                    self._waiting -= 1
            else:
                return
        try:
            self._flush()
        finally:
            with self._lock:
                self._leader = False
                if self._waiting:
                    self._cond.notify_all()

    def kick(self) -> None:
        """Ask the buffered flusher to flush now rather than at its next interval."""
        if self._kick.empty():
            self._kick.put(None)

    def wait_durable(self, lsn: int) -> None:
        """Return once the record at `lsn` is fsynced, leading a group flush if needed."""
        self._wait_durable(lsn)

    def sync(self) -> int:
        """Write and fsync everything pending; return the durable LSN (exclusive)."""
        self._check_usable()
        return self._flush()

    def flush(self) -> int:
        """Write and fsync everything pending now, in any mode; return the durable LSN."""
        return self.sync()

    def flush_in_background(self) -> None:
        """Write everything pending now; its fsync follows on the writer's syncer thread.

        For an owner whose loop must not wait for the disk (a buffered shard:
        its writes are acknowledged before they are durable anyway). When this
        returns the records are in the file, so a crash of the process loses
        none of them; the syncer thread, started on first use, only calls
        fsync (which runs without the GIL) and then advances the durable LSN.
        A failed fsync fails the writer, as a failed flush does. Calls made
        while an fsync runs leave one more for it to do, never a queue.
        """
        with self._lock:
            if self._closed:  # close() makes everything durable itself, then stops the syncer
                raise WalClosed(f"the WAL writer for {self.directory} is closed")
        with self._io_lock:
            upto = self._write_pending(sync=False)
            if upto is None:
                return
            fd = os.dup(self._fd) if self._fd_dirty else None
            segment = self._fd_seg_first
        with self._cond:
            if fd is None:  # nothing left unsynced (a roll fsynced what it closed)
                self._durable_lsn = max(self._durable_lsn, upto)
                self._cond.notify_all()
                return
            # A newer job covers an older one: both are writes to this file, or
            # the older file was fsynced when the roll closed it.
            superseded, self._sync_job = self._sync_job, (fd, segment, upto)
            if self._syncer is None:
                self._syncer = threading.Thread(target=self._syncer_main, daemon=True,
                                                name=f"inmem-wal-sync:{self.directory}")
                self._syncer.start()
            self._cond.notify_all()
        if superseded is not None:
            os.close(superseded[0])

    def _syncer_main(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while self._sync_job is None and not self._stopping:
                    self._waiting += 1
                    try:
                        cond.wait()
                    finally:
                        self._waiting -= 1
                job, self._sync_job = self._sync_job, None
            if job is None:
                return
            fd, segment, upto = job
            try:
                self._timed_fsync(fd, segment)
                failpoint(FP_AFTER_FSYNC)
            except BaseException as exc:  # reported: the writer refuses everything from now on
                with cond:
                    self._record_failure(exc)
                    cond.notify_all()
                return
            finally:
                os.close(fd)
            with cond:
                if upto > self._durable_lsn:
                    self._durable_lsn = upto
                cond.notify_all()

    def _stop_syncer(self) -> None:
        syncer = self._syncer
        if syncer is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        syncer.join()
        job, self._sync_job = self._sync_job, None
        if job is not None:
            os.close(job[0])

    def _check_usable(self) -> None:
        with self._lock:
            if self._error is not None:
                raise self._failed_error()
            if self._closed:
                raise WalClosed(f"the WAL writer for {self.directory} is closed")

    # -- writing -------------------------------------------------------------

    def _flush(self) -> int:
        with self._io_lock:
            upto = self._write_pending(sync=True)
            if upto is None:
                return self._durable_lsn
            with self._lock:
                if upto > self._durable_lsn:
                    self._durable_lsn = upto
                if self._waiting:
                    self._cond.notify_all()
            return upto

    def _write_pending(self, sync: bool) -> int | None:
        """Write (and with `sync`, fsync) every pending record; the LSN they reach, or None.

        None: nothing was pending (and, with `sync`, nothing written is left
        unsynced by `flush_in_background`). Hold `_io_lock`. On a failure the records
        stay in the buffer (the only copy of what was not acknowledged) and
        the writer refuses everything from then on.
        """
        with self._lock:
            if self._error is not None:
                raise self._failed_error()
            chunks = self._chunks
            target = self._seg_first
            upto = self._next_lsn
            pending = self._pending
            if not chunks and target == self._fd_seg_first and not (sync and self._fd_dirty):
                # Nothing to write, and (with sync) nothing written that a
                # background fsync may not have reached yet.
                return None
            if self._fd is None:
                raise WalClosed(f"the WAL writer for {self.directory} is closed")
            self._chunks = []
            self._cur = None
            self._pending = 0
        try:
            self._write_out(chunks, target, sync)
        except BaseException as exc:
            with self._cond:
                self._chunks[:0] = chunks
                self._pending += pending
                self._record_failure(exc)
                self._cond.notify_all()
            if isinstance(exc, Exception):
                raise self._failed_error() from exc
            raise
        return upto

    def _write_out(self, chunks, target: int, sync: bool = True) -> None:
        if len(chunks) == 1 and chunks[0][0] == target == self._fd_seg_first and chunks[0][1]:
            # The usual case: one buffer, all of it for the open segment.
            failpoint(FP_BEFORE_WRITE)
            self._write_all(chunks[0][1])
            failpoint(FP_AFTER_WRITE_BEFORE_FSYNC)
            if sync:
                self._timed_fsync(self._fd, target)
                self._fd_dirty = False
                failpoint(FP_AFTER_FSYNC)
            return
        wrote = False
        for seg_first, buf in chunks:
            if seg_first != self._fd_seg_first:
                self._roll_file(seg_first)
            if buf:
                failpoint(FP_BEFORE_WRITE)
                self._write_all(buf)
                wrote = True
        if wrote:
            failpoint(FP_AFTER_WRITE_BEFORE_FSYNC)
        if sync and self._fd_dirty:  # this call's writes, or a background flush's
            self._fsync_file()
            if wrote:
                failpoint(FP_AFTER_FSYNC)
        if target != self._fd_seg_first:
            self._roll_file(target)

    def _write_all(self, buf: bytearray) -> None:
        fd = self._fd
        start = self._fd_size
        total = len(buf)
        done = 0
        try:
            n = _os_write(fd, buf)
            if n == total:  # the usual case: the whole buffer in one call
                self._fd_dirty = True
                self._fd_size = start + total
                return
            with memoryview(buf) as view:
                while True:
                    if n <= 0:
                        raise OSError(errno.EIO, "write to a WAL segment made no progress")
                    done += n
                    self._fd_dirty = True
                    if done >= total:
                        break
                    n = _os_write(fd, view[done:])
        except BaseException:
            if done:
                # Leave the file ending on a record boundary, not in half a batch.
                try:
                    os.ftruncate(fd, start)
                    os.lseek(fd, start, os.SEEK_SET)
                except OSError:
                    pass
            raise
        self._fd_size = start + total

    def _fsync_file(self) -> None:
        if not self._fd_dirty:
            return
        self._timed_fsync(self._fd, self._fd_seg_first)
        self._fd_dirty = False

    def _timed_fsync(self, fd: int, segment: int) -> None:
        """fsync `fd` (segment `segment`), with a warning when the disk was slow."""
        began = time.monotonic()
        _os_fsync(fd)
        elapsed_ms = (time.monotonic() - began) * 1000.0
        if elapsed_ms > self.fsync_slow_ms:
            logger.warning("slow WAL fsync: %.1f ms (threshold %s ms) on segment %d in %s",
                           elapsed_ms, self.fsync_slow_ms, segment, self.directory)

    def _roll_file(self, first_lsn: int) -> None:
        failpoint(FP_BEFORE_ROLL)
        self._trim_tail()
        self._fsync_file()
        old, self._fd = self._fd, None
        os.close(old)
        self._fd = self._create_segment(first_lsn)
        self._fd_seg_first = first_lsn
        self._fd_size = 0
        self._fd_dirty = False
        failpoint(FP_AFTER_ROLL)

    # -- segments ------------------------------------------------------------

    def roll(self) -> int:
        """Close the current segment and start a new one; return the new one's first LSN.

        Everything pending is written first. A no-op when the current segment
        holds no record yet. Used before a snapshot so that the segments the
        snapshot covers can be deleted whole later.
        """
        with self._lock:
            if self._error is not None:
                raise self._failed_error()
            if self._closed:
                raise WalClosed(f"the WAL writer for {self.directory} is closed")
            if self._seg_bytes:
                self._seg_first = self._next_lsn
                self._seg_bytes = 0
                self._cur = None
            first = self._seg_first
        self._flush()
        return first

    def delete_before(self, lsn: int) -> list[str]:
        """Delete the segments all of whose records have LSN < `lsn`; return their paths.

        A segment qualifies when the next segment starts at or before `lsn`.
        The segment being written is never deleted. The directory is fsynced
        afterwards (an fsync error there is fail-stop like any other).
        """
        with self._io_lock:
            self._check_usable()
            current = self._fd_seg_first
            segments = list_segments(self.directory)
            victims = [path for (first, path), (following, _) in zip(segments, segments[1:])
                       if following <= lsn and first < current]
            if not victims:
                return []
            failpoint(FP_BEFORE_DELETE)
            for path in victims:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            try:
                fsync_dir(self.directory, _fsync)
            except OSError as exc:
                with self._cond:
                    self._record_failure(exc)
                    self._cond.notify_all()
                raise self._failed_error() from exc
            failpoint(FP_AFTER_DELETE)
            return victims

    # -- the buffered flusher ------------------------------------------------

    def _flusher(self) -> None:
        interval_s = self.flush_interval_ms / 1000.0
        wait, take = self._kick.get, self._kick.get_nowait
        while True:
            try:
                wait(timeout=interval_s)
                while True:  # kicks that came meanwhile: one flush serves them all
                    take()
            except queue.Empty:
                pass
            if self._stopping:
                return  # close() does the final flush
            try:
                if self.before_flush is not None:
                    self.before_flush()
                self._flush()
            except WalError as exc:
                logger.error("WAL background flush stopped for %s: %s", self.directory, exc)
                return
            except BaseException as exc:  # a daemon thread must report, not vanish
                logger.exception("WAL background flush crashed for %s", self.directory)
                with self._cond:
                    self._record_failure(exc)
                    self._cond.notify_all()
                return

    # -- failure and state ---------------------------------------------------

    def _record_failure(self, exc: BaseException) -> None:
        # Called with _lock held. The first error is the one that counts.
        if self._error is None:
            self._error = exc
            logger.error("WAL in %s failed and refuses further records: %r",
                         self.directory, exc)

    def _failed_error(self) -> WalFailed:
        err = WalFailed(
            f"the WAL in {self.directory} hit an I/O error ({self._error!r}) and refuses "
            f"further records; close it and recover the shard from disk")
        err.__cause__ = self._error
        return err

    @property
    def durable_lsn(self) -> int:
        """Every record with an LSN below this one is written and fsynced."""
        return self._durable_lsn

    @property
    def next_lsn(self) -> int:
        """The LSN the next appended record will get."""
        return self._next_lsn

    @property
    def has_flusher(self) -> bool:
        """A background thread flushes this buffered writer (else its owner calls flush)."""
        return self._thread is not None

    @property
    def failed(self) -> bool:
        return self._error is not None

    @property
    def error(self) -> BaseException | None:
        """The I/O error that stopped the log, or None."""
        return self._error

    def owns_thread(self, thread: threading.Thread) -> bool:
        """Whether `thread` is this writer's flusher or syncer (which close() joins)."""
        return thread is self._thread or thread is self._syncer

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_records(self) -> int:
        """Records appended but not yet durable."""
        return self._next_lsn - self._durable_lsn

    @property
    def pending_bytes(self) -> int:
        """Bytes of encoded records held in memory, waiting to be written."""
        with self._lock:
            return sum(len(buf) for _, buf in self._chunks)

    @property
    def segment_first_lsn(self) -> int:
        """First LSN of the segment file being written."""
        return self._fd_seg_first

    def close(self) -> None:
        """Flush, stop the flusher thread and close the file. Idempotent.

        On a failed writer it releases the file without writing and does not
        raise; if the final flush fails, the file is still closed and the
        WalFailed is raised.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        thread = self._thread
        if thread is not None:
            self._stopping = True
            self._kick.put(None)
            thread.join()
        self._stop_syncer()
        final_error = None
        if self._error is None:
            try:
                self._flush()
            except WalError as exc:
                final_error = exc
        with self._io_lock:
            if final_error is None and self._error is None and self._fd is not None:
                self._trim_at_close()
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    os.close(fd)
                except OSError as exc:
                    logger.warning("closing WAL segment in %s: %r", self.directory, exc)
        with self._cond:
            self._cond.notify_all()
        if final_error is not None:
            raise final_error

    def _trim_at_close(self) -> None:
        # Everything is durable already: a failed trim costs disk space, not data.
        try:
            self._trim_tail()
            self._fsync_file()
        except OSError as exc:
            logger.warning("could not trim WAL segment %d in %s: %r",
                           self._fd_seg_first, self.directory, exc)

    def __enter__(self) -> "WalWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "failed" if self.failed else "closed" if self._closed else "open"
        return (f"WalWriter({self.directory!r}, mode={self.mode!r}, next_lsn={self._next_lsn}, "
                f"durable_lsn={self._durable_lsn}, {state})")


def _trim_file(path: str, size: int) -> None:
    """Cut a closed segment's zero tail (left by a crash) so that it ends at its last record."""
    fd = open_private(path, os.O_WRONLY)
    try:
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)
            _fsync(fd)
    finally:
        os.close(fd)
