"""A shard's durability: its WAL, its snapshots, and the recovery that opens them.

`DurableStore.open(path, ...)` recovers the directory into a fresh engine
(snapshot + WAL replay, see `recovery.sequence`) and returns both.

The one durable commit step, shared by the embedded store (single calls and
batches) and the shard worker: the caller applies operations to the engine
under its own lock — the engine encodes each group for the WAL before it
applies it, so whatever cannot be logged was refused at the call — then, still
under the lock, calls `commit_locked()`, and outside the lock
`wait_durable(token)` with what that returned. In strict mode the pending
groups become WAL records at once and the wait is the fsync, shared by every
record waiting at that moment (group commit). In buffered mode the engine's
list of encoded groups is itself the in-memory batch: it is handed to the
WAL writer when it holds `max_pending_writes` groups or when the writer's
flusher is about to flush, and the wait returns at once.

Groups leave the engine's list only once the WAL writer holds them, so no
failure can drop an acknowledged write between the two. A failure of the log
itself (a write or fsync error) is fail-stop: the writer refuses every later
record, `commit_locked` and `check_writable` raise DurabilityError, and the
owner recovers from disk (the embedded store refuses writes until reopened;
a shard worker exits and is restarted).

Snapshots are written by a forked child, as Redis does: the parent holds the
caller's lock only for the fork itself, so serving pauses for the time fork
takes to copy page tables, and the child serializes a frozen copy-on-write
image of the engine. The parent deletes WAL segments only once the oldest
retained snapshot covers them, so falling back to an older snapshot never
loses what the WAL still held.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
import traceback

from inmem.durability import defaults as durability_defaults
from inmem.errors import DurabilityError, InmemError, InvalidOption, StoreOpenError
from inmem.files import enclosing_data_dir, lock_holder, make_dirs, try_lock
from inmem.types import SnapshotInfo
from inmem.recovery.sequence import recover, snapshot_dir, wal_dir
from inmem.wal.failpoints import failpoint, register
from inmem.wal.writer import WalWriter

from .effects import record_payloads
from .engine import Engine
from .history_compaction import Compactor
from .history_files import MOVED_SUFFIX, HistoryFiles
from .allocator import hold_mmap_threshold
from .huge_pages import heap_pages
from .recovery_apply import EngineRecovery
from .snapshot_codec import dump
from .upkeep import UPKEEP_EVERY_S, upkeep, upkeep_wait

log = logging.getLogger("inmem.shard")

DEFAULTS = durability_defaults()
#: what `_outcome` says of a snapshot child that has not ended, for `snapshot_done`
_RUNNING = object()

for _name in ("snapshot.before_fork", "snapshot.child_written", "snapshot.before_wal_delete",
              "snapshot.after_wal_delete"):
    register(_name)


class DurableStore:
    def __init__(self, path, durability, engine, writer, snapshots, recovery_result, options,
                 lock_fd, one_writer: bool = False):
        self.path = os.path.abspath(os.fspath(path))
        self.durability = durability
        self.engine = engine
        self.writer = writer
        self.snapshots = snapshots
        self.recovery_result = recovery_result
        self.options = options
        self.shard = recovery_result.shard
        self._lock_fd = lock_fd
        self._strict = durability == "strict"
        #: one thread makes every write (the shard worker): a strict commit is that
        #: thread's own write and fsync, with no group-commit hand-off between threads
        self._one_writer = one_writer
        #: buffered mode: the engine's log list is the in-memory batch
        self.batch_max = options["max_pending_writes"]
        #: the engine's lock: whoever applies operations holds it, and so do the
        #: WAL hand-over, the fork of a snapshot and the closing flush
        self.lock = threading.RLock()
        if not self._strict:
            writer.before_flush = self._emit_from_flusher
        #: buffered without a flusher thread: the owner's tick() flushes
        self._owner_flushes = not self._strict and not writer.has_flusher
        self._flush_interval_s = options["flush_interval_ms"] / 1000
        self._flush_at: float | None = None
        self._bytes_since_snapshot = 0
        #: what interrupted a write part way (see mark_interrupted); None: nothing
        self.interrupted: BaseException | None = None
        #: (groups, where the writer put the record, its payload) of records handed over
        #: by a commit that left placing them for later (`commit_locked(defer_placing=True)`,
        #: then `place_handed`)
        self._unplaced: list = []
        self._last_snapshot = time.monotonic()
        self._child: int | None = None
        # Snapshot children are reaped under _reap_lock and their outcome kept by
        # pid, so that several threads waiting for the same child (db.snapshot()
        # from many threads, the scheduler) all learn it and none calls waitpid
        # on a pid another thread already reaped.
        self._reap_lock = threading.Lock()
        self._outcomes: dict[int, object] = {}
        self._child_position = 0
        self._child_t0 = 0.0
        self.last_snapshot_pause_ms: float | None = None
        self.last_snapshot_seconds: float | None = None
        self._scheduler: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
        #: the opening process: a forked child's copy of the store is not its to close
        self._pid = os.getpid()
        self.compactor = Compactor(engine.history_files, engine, lambda: writer.next_lsn,
                                   options["history_compact_dead_fraction"])
        #: keeps the heap in huge pages so that a snapshot's fork is short
        self.heap = heap_pages() if options["snapshot_huge_pages"] else None
        if self.heap is not None:
            self.heap.opened()
        # Resident memory that follows the data, not the order of past frees (shard.allocator).
        hold_mmap_threshold(options["malloc_mmap_threshold"])

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path, durability="buffered", *, clock=None, max_value_bytes=None, shard=0,
             flusher: bool = True, one_writer: bool = False, holder: str = "", **options):
        """Recover `path` into a new engine; returns (store, engine).

        `flusher=False`: no background thread flushes a buffered WAL; the
        owner calls `tick()` from its own loop instead (the shard worker does,
        so that one thread owns the socket, the engine and the WAL).
        `one_writer=True`: only the opening thread writes (the shard worker),
        so `wait_durable` writes and fsyncs what is pending itself instead of
        joining the group commit of many threads. `holder`: how the opener is
        named to a process refused the directory ("shard 1"); an embedded
        store by default.
        """
        unknown = options.keys() - DEFAULTS.keys()
        if unknown:
            raise InvalidOption(f"unknown durability options {sorted(unknown)}; known: "
                                f"{', '.join(sorted(DEFAULTS))}")
        if durability not in ("buffered", "strict"):
            raise InmemError(f"a durable store is buffered or strict, not {durability!r}")
        opts = {**DEFAULTS, **options}
        path = os.fspath(path)
        _refuse_nested(path)
        make_dirs(path)
        lock_fd = _lock_directory(path, holder or EMBEDDED_HOLDER)
        try:
            kwargs = {} if max_value_bytes is None else {"max_value_bytes": max_value_bytes}
            engine = Engine(clock=clock, log=True,
                            dead_key_retention_s=opts["dead_key_retention_s"], **kwargs)
            files = engine.history_files = HistoryFiles(path)
            target = EngineRecovery(engine)
            result, next_lsn, snapshots, _case, log_end = recover(
                path, target, shard=shard, max_corrupt_entries=opts["max_corrupt_entries"],
                snapshot_retention=opts["snapshot_retention"])
            # A snapshot taken before a compaction names the files it moved
            # records out of: point those places where the records went.
            files.resolve_moved([r.journal for r in engine.runs.values()])
            for note in files.read_moved():
                files.moved_done[note + MOVED_SUFFIX] = next_lsn
            writer = WalWriter(wal_dir(path), durability,
                               segment_bytes_max=opts["segment_bytes_max"],
                               flush_interval_ms=opts["flush_interval_ms"],
                               max_pending_writes=opts["max_pending_writes"],
                               start_lsn=next_lsn, preallocate=durability == "strict",
                               # A buffered flush can carry megabytes; warn only when
                               # an fsync is slow enough to matter to a user.
                               fsync_slow_ms=opts["fsync_slow_ms"], flusher=flusher,
                               log_end=log_end)
            files.durable_lsn = lambda: writer.durable_lsn
        except BaseException:
            os.close(lock_fd)
            raise
        store = cls(path, durability, engine, writer, snapshots, result, opts, lock_fd,
                    one_writer)
        # The WAL replayed at start is WAL past the newest snapshot too: it counts
        # toward the next one (a store that keeps crashing before it writes
        # snapshot_wal_bytes anew would otherwise replay an ever longer log, and a
        # clean close right after recovery would take no snapshot).
        store._bytes_since_snapshot = target.bytes_applied
        return store, engine

    def start_scheduler(self) -> None:
        """Embedded use: a thread that runs the shard's upkeep (index slices, due snapshots)."""
        if self._scheduler is not None:
            return

        def loop():
            # Back to back while the index is rebuilt after recovery (upkeep says how long to wait).
            wait = upkeep_wait(self.engine)
            while not self._stop.wait(wait):
                wait = UPKEEP_EVERY_S
                if not self._closed:
                    try:
                        wait = upkeep(self.engine, self, self.lock)
                    except Exception:  # a daemon thread must report, not vanish
                        log.exception("background upkeep failed")

        self._scheduler = threading.Thread(target=loop, name="inmem-snapshots", daemon=True)
        self._scheduler.start()

    # -- the write path ------------------------------------------------------------

    def mark_interrupted(self, exc: BaseException) -> None:
        """A write was interrupted part way (Ctrl-C, an exception from a signal handler).

        The engine may then hold part of it, and the runs' histories may not
        match the records handed to the WAL: nothing more is written, and no
        snapshot is taken from this memory. The WAL's records are whole, and the
        closing flush still writes them; reopening recovers from them.
        """
        if self.interrupted is None:
            self.interrupted = exc
            log.error("%s: a write was interrupted part way (%r); the store refuses writes "
                      "and takes no snapshot until it is reopened", self.path, exc)

    def check_writable(self) -> None:
        if self.interrupted is not None:
            raise DurabilityError(
                f"a write to {self.path} was interrupted part way ({self.interrupted!r}); this "
                "store refuses writes until it is reopened, which recovers it from disk")
        if self.writer.failed:
            raise DurabilityError(
                f"the WAL of {self.path} failed ({self.writer.error!r}: a write or fsync that "
                "did not finish, the disk's error or an interrupt such as Ctrl-C in the middle "
                "of one); this store refuses writes until it is reopened and recovered from disk")

    def check_readable_history(self) -> None:
        """DurabilityError if the runs' histories in memory may not match the WAL."""
        if self.interrupted is not None:
            raise DurabilityError(
                f"a write to {self.path} was interrupted part way ({self.interrupted!r}); the "
                "runs' histories in memory may not match what is on disk, so this store does "
                "not replay or diff runs until it is reopened, which recovers it from disk")

    def commit_locked(self, defer_placing: bool = False):
        """The durable commit step, after the engine applied operations. Hold the engine lock.

        Returns the token to pass to `wait_durable` outside the lock (strict),
        or None (buffered: the batch stays in memory until it is full or the
        flusher takes it). `defer_placing`: leave telling the runs' histories
        where their effects went in the WAL (`place_handed`) until the caller
        has sent its replies; no reply needs it, and a shard's clients wait
        for every step before them.
        """
        log = self.engine.log
        if not log:
            return None
        if self._strict:
            return self._hand_over(log, defer_placing)
        if self.engine.log_writes >= self.batch_max:
            self._hand_over(log, defer_placing)
            if self._owner_flushes:
                self._flush_at = 0.0  # at the owner's next tick, after its replies
            else:
                self.writer.kick()
        elif self._owner_flushes and self._flush_at is None:
            self._flush_at = time.monotonic() + self._flush_interval_s
        return None

    def tick(self) -> float | None:
        """Buffered without a flusher thread: flush if it is due; else seconds until it is.

        None: nothing is waiting to be flushed. Call without the engine's lock
        held by another thread (the single-threaded worker holds none).
        """
        due = self._flush_at
        if due is None:
            return None
        wait = due - time.monotonic()
        if wait > 0:
            return wait
        self._flush_at = None
        with self.lock:
            self.emit_locked()
        try:
            # Written now, fsynced by the writer's syncer thread: the loop
            # that called this does not wait for the disk.
            self.writer.flush_in_background()
        except InmemError as exc:
            raise DurabilityError(f"the WAL flush failed; the store refuses writes from now on "
                                  f"({exc}); it must be recovered from disk") from exc
        return None

    def emit_locked(self) -> None:
        """Hand every pending group to the WAL writer (any mode). Hold the engine lock."""
        log = self.engine.log
        if log:
            self._hand_over(log)
        elif self._unplaced:
            self.place_handed()

    def place_handed(self) -> None:
        """Tell the histories where the records a deferred commit handed over went, in order.

        Until then their items stay held in memory, where reads find them. Hold
        the engine lock.
        """
        unplaced = self._unplaced
        if unplaced:
            self._unplaced = []
            for groups, located, payload in unplaced:
                self._place(groups, len(groups), located, payload)

    def _place(self, groups: list, n: int, located: tuple, payload) -> None:
        """The first `n` of `groups` are in the record the writer located (LSN, segment's
        first LSN, offset): the history files learn its place, the histories theirs."""
        files = self.engine.history_files
        token, first, offset = located
        place = files.place(first, offset)
        files.handed_over(token, place, payload)
        _place_groups(groups, n, place, self.engine)

    def _hand_over(self, log: list, defer_placing: bool = False):
        """Pending encoded groups -> WAL records; a group leaves `log` once the writer holds it."""
        if self._unplaced:
            self.place_handed()  # a history's extents follow the order of its records
        located = None
        writer = self.writer
        append = writer.append_located
        try:
            for payload, n in record_payloads(log):
                first, lsn = log[0], writer.next_lsn
                try:
                    located = append(payload)
                    if defer_placing:
                        self._unplaced.append((log[:n], located, payload))
                    else:
                        self._place(log, n, located, payload)
                    del log[:n]
                except BaseException:
                    # Interrupted (Ctrl-C) after the writer took the record: its
                    # groups must not be handed over again by the closing flush,
                    # which would log them twice.
                    if writer.next_lsn > lsn and log and log[0] is first:
                        del log[:n]
                    raise
                self._bytes_since_snapshot += len(payload)
        except InmemError as exc:
            raise DurabilityError(f"could not log a write, the store refuses writes from now "
                                  f"on ({exc}); reopen it to recover from disk") from exc
        finally:
            self.engine.log_writes = sum(g[1] for g in log) if log else 0
        return None if located is None else located[0]

    def _emit_from_flusher(self) -> None:
        if not self.engine.log:
            return
        # Bounded wait: close() holds the lock while it joins this thread.
        if self.lock.acquire(timeout=0.05):
            try:
                self.emit_locked()
            finally:
                self.lock.release()

    def wait_durable(self, token) -> None:
        if token is None:
            return
        try:
            if self._one_writer:
                # Every pending record is this thread's own: write and fsync them
                # now (the same write and fsync, without electing a leader).
                self.writer.sync()
            else:
                self.writer.wait_durable(token)
        except InmemError as exc:
            raise DurabilityError(f"fsync failed; the write was not acknowledged: {exc}") from exc

    def flush(self) -> None:
        """Everything acknowledged so far onto disk, fsynced (any mode). Hold the engine lock."""
        self.emit_locked()
        self.writer.flush()

    def wal_bytes(self) -> int:
        total = 0
        with os.scandir(wal_dir(self.path)) as entries:
            for entry in entries:
                if entry.name.endswith(".wal"):
                    try:
                        total += entry.stat().st_size
                    except FileNotFoundError:
                        pass  # retention deleted it meanwhile (a snapshot finished)
        return total

    # -- history compaction ----------------------------------------------------------

    def compact_step(self) -> bool:
        """One slice of the automatic history compaction (`shard.history_compaction`)."""
        if self.writer.failed or self._closed or self.interrupted is not None:
            return False
        self._place_all()
        return self.compactor.step(self.lock)

    def compact_history(self) -> dict:
        """Compact every history file that holds a dead record, now; what it did."""
        self._check_compactable()
        return self.compactor.run_all(self.lock)

    def compact_history_in_slices(self):
        """`compact_history` a slice per next(), for a loop that serves between them (see
        `Compactor.all_in_slices`): what it did is the value of its StopIteration."""
        self._check_compactable()
        return self._placed_first(self.compactor.all_in_slices(self.lock))

    def _placed_first(self, slices):
        # Writes served between slices: their records are named before the next one.
        while True:
            self._place_all()
            try:
                next(slices)
            except StopIteration as done:
                return done.value
            yield

    def _check_compactable(self) -> None:
        if self._closed:
            raise InmemError("the store is closed")
        if self.interrupted is not None:
            self.check_writable()
        self._place_all()

    def _place_all(self) -> None:
        # The compactor moves records: every history must name its records first.
        if self._unplaced:
            with self.lock:
                self.place_handed()

    # -- snapshots -----------------------------------------------------------------

    def maybe_snapshot(self) -> None:
        """Reap a finished snapshot child; start a snapshot if a trigger fired."""
        if self._child is not None:
            if self._reap_lock.acquire(blocking=False):
                self._reap_lock.release()
                self._reap(block=False)
            return
        due_bytes = self._bytes_since_snapshot >= self.options["snapshot_wal_bytes"]
        interval = self.options["snapshot_interval_s"]
        due_time = (interval is not None and self._bytes_since_snapshot > 0
                    and time.monotonic() - self._last_snapshot >= interval)
        if (due_bytes or due_time) and self.interrupted is None:
            self._start_snapshot()

    def snapshot(self) -> list:
        """Take a snapshot now and wait until it is durable.

        Safe from many threads: each call waits for a snapshot forked after it
        began, its own or one that another thread started meanwhile.
        """
        running = self._child
        if running is not None:
            # Forked before this call, it may miss writes acknowledged since; its
            # failure is reported to whoever started it.
            try:
                self._outcome(running, block=True)
            except DurabilityError:
                pass
        pid = self._start_snapshot()
        if pid is None:
            return []
        info = self._outcome(pid, block=True)
        return [] if info is None else [info]

    def start_snapshot(self) -> int | None:
        """Fork a snapshot child without waiting for it; its pid (None: the store is closed).

        For a caller that must not block while the child writes (a shard's
        loop): `snapshot_done(pid)` says when it has ended. A child already
        running is returned as it is, forked before this call: to be sure of
        one forked after it, wait until `snapshot_running()` is None first.
        """
        return self._start_snapshot()

    def snapshot_running(self) -> int | None:
        """The pid of the snapshot child running now, if any."""
        return self._child

    def snapshot_done(self, pid: int) -> tuple[bool, SnapshotInfo | None]:
        """(False, None) while child `pid` runs; once it has ended (True, its SnapshotInfo
        or None). Never waits. DurabilityError if the child failed."""
        outcome = self._outcome(pid, False, _RUNNING)
        if outcome is _RUNNING:
            return False, None
        return True, outcome

    def _start_snapshot(self) -> int | None:
        """Fork a snapshot child; return its pid (or that of the one already running).

        Serving pauses only while the lock is held here: the pending batch is
        handed to the WAL, the position read, and the process forked. The
        segment roll that lets the covered WAL be deleted comes after.
        """
        with self._fork_alone(), self.lock:
            t0 = time.perf_counter()
            if self._child is not None:
                return self._child
            if self._closed and self._lock_fd is None:
                return None
            self.check_writable()
            # Batched groups are already in the engine's state: they must get
            # LSNs below the snapshot position, or recovery would apply them twice.
            self.emit_locked()
            position = self.writer.next_lsn
            failpoint("snapshot.before_fork")
            # The snapshot's history index names WAL records below `position`:
            # the child publishes its file only once the parent says they are
            # durable (a byte on this pipe, after the roll below flushed them).
            ready_r, ready_w = os.pipe()
            try:
                pid = os.fork()
            except BaseException as exc:
                os.close(ready_r)
                os.close(ready_w)
                if isinstance(exc, OSError):
                    # No memory or the process limit: this snapshot is not taken, the
                    # WAL keeps everything, and the next trigger tries again.
                    raise DurabilityError(f"cannot fork a snapshot child of {self.path}: "
                                          f"{exc}") from None
                raise
            if pid == 0:  # pragma: no cover - runs in the child, checked by the parent
                os.close(ready_w)
                self._child_main(position, ready_r)
            os.close(ready_r)
            self.last_snapshot_pause_ms = (time.perf_counter() - t0) * 1000
            if self.heap is not None:
                self.heap.forked()
            self._child = pid
            self._child_position = position
            self._child_t0 = t0
            self._bytes_since_snapshot = 0
            self._last_snapshot = time.monotonic()
        # Records from here on go to a new segment, so the one that holds the
        # position can be deleted once a retained snapshot covers it. The roll
        # writes and fsyncs every record below the position.
        try:
            self.writer.roll()
            os.write(ready_w, b"1")
        finally:
            os.close(ready_w)
        return pid

    def _fork_alone(self):
        """No huge-page gathering runs while fork copies the page tables."""
        return contextlib.nullcontext() if self.heap is None else self.heap.paused()

    def heap_upkeep(self) -> None:
        """Gather the heap into huge pages when it grew, or after a snapshot (`shard.huge_pages`)."""
        if self.heap is not None and self._child is None and not self._closed:
            self.heap.upkeep()

    def _child_main(self, position: int, ready: int) -> None:  # pragma: no cover - child process
        code = 1
        try:
            if self._lock_fd is not None:
                # The directory lock is the parent's: were it killed, a new
                # opener must get the lock while this child still runs.
                os.close(self._lock_fd)
            gc.disable()
            counts, sections = dump(self.engine)

            def wal_durable():
                if os.read(ready, 1) != b"1":
                    raise DurabilityError("the WAL below the snapshot position did not become "
                                          "durable; the snapshot is not published")

            self.snapshots.write(wal_position=position, shard=self.shard, counts=counts,
                                 sections=sections, before_publish=wal_durable)
            failpoint("snapshot.child_written")
            code = 0
        except BaseException:
            try:
                traceback.print_exc(file=sys.stderr)
            except BaseException:
                pass
        finally:
            os._exit(code)

    def _reap(self, block: bool):
        """The outcome of the running snapshot child, if any (None while it runs)."""
        pid = self._child
        if pid is None:
            return None
        return self._outcome(pid, block)

    def _outcome(self, pid: int, block: bool, running=None):
        """SnapshotInfo (or None) of child `pid`, reaping it if no thread has yet;
        `running` if it has not ended (only when not `block`).

        Raises DurabilityError if the child failed, in every thread that asks.
        """
        with self._reap_lock:
            if pid not in self._outcomes and self._child == pid:
                got, status = os.waitpid(pid, 0 if block else os.WNOHANG)
                if got == 0:
                    return running
                self._outcomes[pid] = self._finish_child(status)
                while len(self._outcomes) > 16:
                    del self._outcomes[next(iter(self._outcomes))]
            outcome = self._outcomes.get(pid)
        if isinstance(outcome, str):
            raise DurabilityError(outcome)
        return outcome

    def _finish_child(self, status: int):
        """Bookkeeping after a child exits: its SnapshotInfo, or the failure message."""
        self._child = None
        if self.heap is not None:
            self.heap.reaped()
        self.last_snapshot_seconds = time.perf_counter() - self._child_t0
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
            return (f"the snapshot child of {self.path} failed (status {status}); "
                    "the WAL is kept, nothing is lost")
        info = next((s for s in self.snapshots.list()
                     if s.wal_position == self._child_position), None)
        self._delete_covered_wal()
        if info is None:
            return None
        return SnapshotInfo(self.shard, os.path.abspath(info.path), info.wal_position,
                            info.timestamp, info.bytes)

    def _delete_covered_wal(self) -> None:
        oldest = self.snapshots.oldest_retained_position()
        if oldest:
            # Segments that runs' histories still name get a name in history/
            # first (and history files no run names go); then the WAL deletes.
            self.engine.history_files.retain(oldest)
            failpoint("snapshot.before_wal_delete")
            self.writer.delete_before(oldest)
            failpoint("snapshot.after_wal_delete")

    # -- closing -------------------------------------------------------------------

    def close(self, snapshot: bool = True) -> None:
        """Flush, take the closing snapshot if configured, stop threads. Call without the lock.

        `snapshot=False`: no closing snapshot whatever `snapshot_on_close` says.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            if self._scheduler is not None and self._scheduler is not threading.current_thread():
                self._scheduler.join(timeout=30)
            if self._child is not None:
                try:
                    self._reap(block=True)
                except DurabilityError as exc:
                    # A background snapshot that failed cost nothing (the WAL is
                    # kept); the buffered writes still have to reach the disk.
                    log.warning("%s", exc)
            if not self.writer.failed:
                with self.lock:
                    self.flush()
                if (snapshot and self.options["snapshot_on_close"]
                        and self._bytes_since_snapshot > 0 and self.interrupted is None):
                    self._start_snapshot()
                    self._reap(block=True)
        finally:
            if not self.writer.failed and not self.writer.closed:
                # Whatever stopped the steps above (a Ctrl-C while a thread was
                # joined), the acknowledged writes still in memory go to the WAL,
                # whose close below writes and fsyncs them.
                with self.lock:
                    self.emit_locked()
            self.writer.close()
            self.compactor.close()
            self.engine.history_files.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def close_unattended(self, why: str) -> None:
        """Close a store its owner never closed (`why`: at exit, or it was collected).

        The WAL is flushed and fsynced, so every acknowledged write is kept; no
        closing snapshot is taken, since forking and serializing the whole
        engine from an exit handler or from the garbage collector (which runs
        on whichever thread allocates, maybe holding locks a child would need)
        risks more than it saves: the next open replays the WAL instead. Never
        raises: a failure is logged in one line. Does nothing in a forked
        child, whose copy of the store belongs to the parent.
        """
        if self._closed or os.getpid() != self._pid:
            return
        me = threading.current_thread()
        if me is self._scheduler or self.writer.owns_thread(me):
            # close() joins this very thread: another one does the closing.
            try:
                threading.Thread(target=self._close_logged, args=(why,),
                                 name="inmem-close").start()
                return
            except RuntimeError:  # no new threads during interpreter shutdown
                pass
        self._close_logged(why)

    def _close_logged(self, why: str) -> None:
        try:
            self.close(snapshot=False)
        except Exception as exc:
            log.error("%s: closing the store (%s, never closed by its owner) failed: %r; "
                      "its WAL keeps what was written before", self.path, why, exc)


#: items of one run held in memory after they reached the WAL, at most: past
#: this they go even if the search index has not read them (it then reads them back)
HELD_MAX = 16384
#: held items past this are read by the search index at once if it has read all
#: before them (~0.2 µs each for binary values, so the pause stays under a ms)
INDEX_HELD_AT = 4096


def _place_groups(log: list, n: int, place: int, engine) -> None:
    """The first `n` groups of `log` went into the record at `place`: tell their runs' histories.

    Consecutive groups of one run go in one extent; `seen` counts each run's
    effects in the record so far, deletes included, as a reader of the record
    will count them (`History._earlier`). A history lets go of its items once
    they are on disk and the search index has read them, so the index need not
    read the WAL back. Past INDEX_HELD_AT the index reads them at once if it
    has read everything before them (`SearchIndex.read_held`); past HELD_MAX
    they go whether it has or not.
    """
    indexed = engine.index.watermark
    waiting = engine.held_runs
    if n == 1:  # one group: one extent, nothing of its run before it in the record
        run_id, count, _data, h = log[0]
        if h is not None:
            if not h.written(count, place, 0, indexed.get(run_id, 0), INDEX_HELD_AT):
                _many_held(h, engine)
            if waiting is not None and h.disk > h.base:
                waiting.add(run_id)  # for release_history, once the index has read them
        return
    seen: dict = {}
    cur = cur_id = None
    cur_n = cur_skip = 0
    for i in range(n):
        run_id, count, _data, h = log[i]
        if h is cur and h is not None:
            cur_n += count
            continue
        if cur_id is not None:
            if cur is not None:
                if not cur.written(cur_n, place, cur_skip, indexed.get(cur_id, 0),
                                   INDEX_HELD_AT):
                    _many_held(cur, engine)
                if waiting is not None and cur.disk > cur.base:
                    waiting.add(cur_id)
            seen[cur_id] = cur_skip + cur_n
        cur, cur_id, cur_n, cur_skip = h, run_id, count, seen.get(run_id, 0)
    if cur is not None:
        if not cur.written(cur_n, place, cur_skip, indexed.get(cur_id, 0), INDEX_HELD_AT):
            _many_held(cur, engine)
        if waiting is not None and cur.disk > cur.base:
            waiting.add(cur_id)


def _many_held(h, engine) -> None:
    """A history holds more than INDEX_HELD_AT items: the index reads them now, or they go."""
    index = engine.index
    held = len(h.items)
    r = engine.runs.get(h.run_id)
    if r is not None and r.journal is h:
        index.read_held(h.run_id, r)
    if held > HELD_MAX:
        h.drop_held(h.disk)
        return
    h.drop_held(index.watermark.get(h.run_id, 0))


def _refuse_nested(path: str) -> None:
    """StoreOpenError if `path` lies inside another store's directory (a shard's directory
    is one): their files would mix. (Beside the shards in a stopped cluster's data
    directory is allowed; inside a running one's, `inmem.open` refuses.)"""
    found = enclosing_data_dir(path, clusters=False)
    if found is not None:
        root, what = found
        raise StoreOpenError(f"{os.path.abspath(path)} is inside {root}, {what}; a store may "
                             "not be inside another's directory, as their files would mix: "
                             "open it in a directory outside it", path=path)


def _lock_directory(path: str, holder: str) -> int:
    """An exclusive lock on the directory: two processes must never share a WAL.

    Refused, the error names the holder when it wrote itself into the lock
    file. Held by an embedded store it is `lasting` (a cluster's start gives
    up at once: the store stays open until its program closes it); held by a
    shard, or by a holder that wrote nothing, it may be a process that is
    ending, which a restart outlasts.
    """
    lock = os.path.join(path, "LOCK")
    fd = try_lock(lock, holder)
    if fd is None:
        found = lock_holder(lock)
        if found is None:
            raise InmemError(f"{path} is already open (in this process or another); close it "
                             "first")
        pid, who = found
        where = "this process" if pid == os.getpid() else f"process {pid}"
        exc = InmemError(f"{path} is already open by {who} in {where}; close it first")
        exc.lasting = who == EMBEDDED_HOLDER
        raise exc
    return fd


#: how an embedded store names itself in its directory's lock file (see `_lock_directory`)
EMBEDDED_HOLDER = "an embedded store"


__all__ = ["DurableStore", "DEFAULTS", "snapshot_dir"]
