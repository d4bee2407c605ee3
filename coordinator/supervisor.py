"""Shard supervision: start the local shard processes, notice deaths, restart with backoff.

Each shard has a `ShardHandle` with its state:

    recovering   started (or, for a remote shard, not heard from yet); its
                 "hello" has not been answered, so it is still replaying
    ready        answered "hello" with its RecoveryResult; serving
    unresponsive a local shard whose process runs but has answered nothing, not
                 even a ping, for heartbeat_timeout_s (stopped, stuck, or held
                 by one long request); ready again as soon as it answers
    down         its process died (a restart is scheduled: `restart_at`, and
                 no pid until the new process starts), or a remote shard
                 stopped answering heartbeats; also, in `summary`, a shard
                 whose restarts fail at start-up while the next try runs
                 (`start_failures`: how many in a row, `last_error`: why)

The supervisor owns the processes; the coordinator's loop calls `poll()`
(cheap: one waitpid per local shard) and `restart_due()` on every tick and
moves handles between states as hellos and heartbeats arrive. Restarts back
off: restart_backoff_ms doubled for each failure in a row, capped at
restart_backoff_max_ms; a shard that served for a while before dying starts
again from the base delay. A shard that exits with its start-up failure code
leaves a note saying why (`inmem.processes.write_exit_note`): the handle keeps
it as `start_failure`, and the coordinator fails a start whose shard cannot
start for a lasting reason (see `Coordinator._tick`). A shard unresponsive
for restart_unresponsive_after_s (when set) is killed (`kill_unresponsive`),
and restarted as any that died.

The first start forks the shards from the coordinator, which imported the
shard worker (and the durable store it opens) first, before it opened any
socket or started any thread: a
shard is then ready to recover at once, where a new interpreter spends most
of a cluster's start-up importing. Restarts after a death spawn a fresh
interpreter (`python -m inmem.shard.worker`), as the coordinator is serving
by then.

Shards run with --watch-parent, so a coordinator that is killed outright
takes its shards with it (Linux parent-death signal, plus a getppid check),
and `stop_all` asks every local shard to stop (SIGTERM: flush, final
snapshot), then kills what is still running when stop_timeout_s runs out.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback

from inmem.processes import HELLO_TOKEN_ENV, SHARD_EXIT_STARTUP, child_env, read_exit_note

RECOVERING = "recovering"
READY = "ready"
UNRESPONSIVE = "unresponsive"
DOWN = "down"
#: a shard that served this long before dying is restarted without backoff
STABLE_AFTER_S = 30.0


class ShardHandle:
    __slots__ = ("id", "endpoint", "remote", "proc", "state", "pid", "recovery", "restarts",
                 "failures", "restart_at", "ready_at", "started_at", "last_exit", "last_error",
                 "start_failure", "start_failures")

    def __init__(self, shard: dict):
        self.id = shard["id"]
        self.endpoint = shard["endpoint"]
        self.remote = shard["remote"]
        self.proc: subprocess.Popen | None = None
        self.state = RECOVERING if self.remote else DOWN
        self.pid: int | None = None
        self.recovery = None  # the RecoveryResult fields, as the shard sent them
        self.restarts = 0
        self.failures = 0
        self.restart_at: float | None = None
        self.ready_at: float | None = None
        self.started_at = time.monotonic()
        self.last_exit: int | None = None
        self.last_error: str | None = None
        #: the exit note of the last process of this shard, when it exited with the
        #: start-up failure code before it was ready (else None)
        self.start_failure: dict | None = None
        #: processes of this shard in a row that failed at start-up (0 once one is ready)
        self.start_failures = 0

    def summary(self) -> dict:
        waiting = self.restart_at is not None and self.proc is None
        # A shard whose restarts keep failing at start-up is down, the try under way included.
        state = DOWN if self.state == RECOVERING and self.start_failures else self.state
        return {"shard": self.id, "state": state, "pid": self.pid,
                "endpoint": self.endpoint, "remote": self.remote, "restarts": self.restarts,
                "last_exit": self.last_exit, "last_error": self.last_error,
                "start_failures": self.start_failures,
                # while a restart waits out its backoff: which restart in a row it
                # is, and in how many seconds it starts
                "restart_attempt": self.failures if waiting else None,
                "restart_in_s": (round(max(self.restart_at - time.monotonic(), 0.0), 3)
                                 if waiting else None)}


class Supervisor:
    def __init__(self, spec: dict, out=print, hello_token: str | None = None):
        self.spec = spec
        #: what the coordinator's hellos carry, given to the shards it starts
        #: (see shard.worker's admin_hello)
        self.hello_token = hello_token
        self.out = out
        self.handles = [ShardHandle(s) for s in spec["shards"]]
        sup = spec["supervisor"]
        self.backoff_s = sup["restart_backoff_ms"] / 1000
        self.backoff_max_s = sup["restart_backoff_max_ms"] / 1000
        self.stop_timeout_s = sup["stop_timeout_s"]
        self._spec_json = json.dumps(spec)
        self._env = child_env()
        if hello_token is not None:
            self._env[HELLO_TOKEN_ENV] = hello_token

    # -- starting ------------------------------------------------------------------

    def start_all(self, fork: bool = False) -> None:
        """Start every local shard; `fork`: from this process (no socket or thread open yet)."""
        local = [h for h in self.handles if not h.remote]
        worker = None
        if fork and local:
            # Once, here, rather than in every shard: the worker, and the durable
            # store it opens first thing (its WAL and recovery modules).
            from inmem.shard import worker
            if self.spec["durability"] != "inmemory":
                from inmem.shard import durable  # noqa: F401
        for h in local:
            self.spawn(h, worker)

    def spawn(self, h: ShardHandle, worker=None) -> None:
        if worker is not None:
            spec = json.loads(self._spec_json)
            spec["hello_token"] = self.hello_token
            h.proc = ForkedShard.start(worker, spec, h.id)
        else:
            cmd = [sys.executable, "-m", "inmem.shard.worker", "--shard", str(h.id),
                   "--spec", self._spec_json, "--watch-parent"]
            h.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=self._env,
                                      close_fds=True)
        h.pid = h.proc.pid
        h.state = RECOVERING
        h.restart_at = None
        h.started_at = time.monotonic()

    # -- watching ------------------------------------------------------------------

    def poll(self) -> list:
        """Handles of local shards whose process has exited since the last call."""
        died = []
        for h in self.handles:
            proc = h.proc
            if proc is None:
                continue
            code = proc.poll()
            if code is None:
                continue
            starting = h.state == RECOVERING
            h.proc = None
            # No process until the restart: the old pid may soon be another program's.
            h.pid = None
            h.last_exit = code
            note = read_exit_note(self.spec["data_dir"], h.id)
            h.last_error = _note_text(note) or h.last_error
            if starting and code == SHARD_EXIT_STARTUP and note is not None:
                h.start_failure = note
                h.start_failures += 1
            else:
                h.start_failure = None
                h.start_failures = 0  # (in a row)
            died.append(h)
        return died

    def kill_unresponsive(self, h: ShardHandle, why: str) -> None:
        """SIGKILL a local shard that stopped answering; `poll` then sees it die and it is
        restarted as any shard that died (SIGKILL: a stopped or stuck process cannot
        act on SIGTERM)."""
        if h.proc is None:
            return
        h.last_error = why
        _signal(h.proc, signal.SIGKILL)

    def schedule_restart(self, h: ShardHandle) -> float:
        now = time.monotonic()
        if h.ready_at is not None and now - h.ready_at >= STABLE_AFTER_S:
            h.failures = 0
        delay = min(self.backoff_s * (2 ** min(h.failures, 20)), self.backoff_max_s)
        h.failures += 1
        h.state = DOWN
        h.ready_at = None
        h.restart_at = now + delay
        return delay

    def restart_due(self) -> list:
        """Start every shard whose backoff has run out; return their handles."""
        now = time.monotonic()
        started = []
        for h in self.handles:
            if h.restart_at is not None and h.restart_at <= now and h.proc is None:
                h.restarts += 1
                self.spawn(h)
                started.append(h)
        return started

    # -- stopping ------------------------------------------------------------------

    def kill_all(self) -> None:
        """SIGKILL every local shard and reap it (a start that failed after they started)."""
        for h in self.handles:
            if h.proc is not None:
                _signal(h.proc, signal.SIGKILL)
                try:
                    h.last_exit = h.proc.wait(10)
                except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
                    pass
                h.proc = None
            if not h.remote:
                h.state = DOWN

    def stop_all(self) -> None:
        """SIGTERM every local shard, wait for clean exits, kill the rest."""
        procs = [h.proc for h in self.handles if h.proc is not None]
        for p in procs:
            _signal(p, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        for p in procs:
            try:
                p.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                self.out(f"shard pid {p.pid} did not stop within {self.stop_timeout_s} s; "
                         "killing it (its WAL is intact; the next start recovers it)")
                _signal(p, signal.SIGKILL)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
                    pass
        for h in self.handles:
            if h.proc is not None:
                h.last_exit = h.proc.poll()
                h.proc = None
            if not h.remote:
                h.state = DOWN
            h.restart_at = None


#: the signals that stop a shard (SIGHUP: the terminal of `inmem serve` closed)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ForkedShard:
    """A shard process forked from the coordinator: what the supervisor uses of a Popen."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    @classmethod
    def start(cls, worker, spec: dict, shard: int) -> "ForkedShard":
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        # A stop signal that lands in the child before it has put back the default
        # handlers would run the coordinator's copied Python handler and be lost (the
        # shard would never stop): held back across the fork, it reaches the child
        # once the defaults are in place (and stops it before it serves).
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            raise
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        else:  # pragma: no cover - the shard process; its tests are the cluster's
            code = 1
            try:
                # (SIGHUP keeps what `inmem serve` made of it: a SIGTERM to itself)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                # Nothing of the coordinator's but the log on stdout and stderr.
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.closerange(3, 1 << 16)
                code = worker.run_worker(spec, shard, watch_parent=True)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    # Never the coordinator's exit path: no atexit, no finalizers of
                    # what the fork copied.
                    os._exit(code)
        return cls(pid)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: it is gone, its code unknown
                self.returncode = -1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"shard pid {self.pid}", timeout)
            time.sleep(0.005)
        return self.returncode

    def send_signal(self, sig) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _signal(proc, sig) -> None:
    try:
        proc.send_signal(sig)
    except (ProcessLookupError, OSError):
        pass


def _note_text(note: dict | None) -> str | None:
    """What an exit note says went wrong, in one line (None: no note)."""
    if note is None:
        return None
    # (notes of an earlier version have no reason)
    return note.get("reason") or f"{note.get('error')}: {note.get('message')}"


__all__ = ["Supervisor", "ShardHandle", "ForkedShard", "RECOVERING", "READY", "UNRESPONSIVE",
           "DOWN"]
