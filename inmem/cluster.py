"""`inmem.Cluster`, and the `inmem serve` / `inmem status` commands.

`Cluster(...)` starts a coordinator process (which starts one process per
shard) in its own process group, waits until every shard has recovered and
the cluster is ready, and stops it cleanly when the `with` block ends
(shards flush their WALs and take their final snapshot). With data_dir None
it runs in the data directory its config file names, or, when there is none,
in a fresh temporary directory, removed afterwards.

    with inmem.Cluster(shards=2, durability="strict") as cluster:
        db = cluster.connect()

The coordinator writes its log (and its shards') to `<data_dir>/coordinator.log`.

A data directory is served by one coordinator at a time (it holds the
directory's lock). Starting a Cluster on a directory that a running cluster
serves is refused before anything is spawned or touched, and only a holder of
that lock ever removes a cluster's socket files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

from typing import TYPE_CHECKING

from .errors import ClusterNotReady, InmemError, InvalidOption, StoreOpenError, Timeout
from .files import NotRegularFile, describe_os_error, kind_of, make_dirs, private_opener

if TYPE_CHECKING:
    from .database import Database


def _names_data_dir(config) -> bool:
    """Whether the config file `config` sets `[cluster] data_dir` (False for None or a
    file that cannot be read: loading it then says what is wrong)."""
    if config is None:
        return False
    from inmem.coordinator.config import ConfigError, read_toml
    try:
        table = read_toml(config).get("cluster")
    except (ConfigError, OSError):
        return False
    return isinstance(table, dict) and "data_dir" in table



def _check_seconds(name: str, value) -> None:
    """InvalidOption unless `value` is a finite number of seconds above 0 (not a bool)."""
    if type(value) not in (int, float) or not 0 < value < float("inf"):
        raise InvalidOption(f"{name} must be a number of seconds > 0, got {value!r:.40}")


def _log_opener(path, flags: int) -> int:
    """`private_opener` for the coordinator's log, which must be a regular file: opening a
    FIFO for writing would wait for a reader for good (NotRegularFile instead)."""
    if os.path.lexists(path) and not os.path.isfile(path):
        raise NotRegularFile(path, kind_of(path))
    fd = private_opener(path, flags | os.O_NONBLOCK)  # ENXIO, not a wait, if one came since
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(path, kind_of(path))
    return fd


class Cluster:
    """A local cluster in child processes, for tests and embedding.

    `config`: a TOML file (None: the built-in defaults, as configs/default.toml);
    `data_dir`: where it keeps its data (None: the config's `data_dir` when
    the config file sets one, as `inmem serve` uses it; else a temporary
    directory removed when it stops); `shards`, `durability` and other keyword overrides take
    precedence over the config. `ready_timeout`: seconds `start()` waits for
    every shard to recover. InvalidOption or a config error for bad settings;
    from `start()`, StoreOpenError for a data directory it cannot use, and
    ClusterNotReady when a shard cannot start or the timeout passes.
    """

    def __init__(self, config: str | os.PathLike | None = None,
                 data_dir: str | os.PathLike | None = None, shards: int | None = None,
                 durability: str | None = None, *, ready_timeout: float = 60.0, **overrides):
        from inmem.coordinator import config as cfg
        _check_seconds("ready_timeout", ready_timeout)
        if config is not None and not isinstance(config, (str, bytes, os.PathLike)):
            raise InvalidOption(f"config must be None or the path of a TOML file, got "
                                f"{type(config).__name__}")
        if data_dir is not None and not (isinstance(data_dir, (str, os.PathLike))
                                         and isinstance(os.fspath(data_dir), str)):
            raise InvalidOption(f"data_dir must be None or a str path (or os.PathLike), got "
                                f"{type(data_dir).__name__}")
        self._tmp = None
        if data_dir is None and not _names_data_dir(config):
            self._tmp = tempfile.mkdtemp(prefix="inmem-cluster-")
            data_dir = self._tmp
        try:
            self.spec = cfg.load(config, data_dir=None if data_dir is None else os.fspath(data_dir),
                                 shards=shards, durability=durability, **overrides)
        except BaseException:
            self._remove_tmp()
            raise
        self.data_dir = self.spec["data_dir"]
        #: where clients connect (an endpoint naming a network interface, as tcp://lo:7700,
        #: is bound on its address, and reached there)
        self.endpoint: str = cfg.connect_endpoint(self.spec["client_endpoint"])
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._admin = None
        self._log = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self, wait: bool = True) -> "Cluster":
        """Start the coordinator; with wait, return once the cluster is ready."""
        from .processes import child_env
        from inmem.coordinator.config import check_not_nested
        if self.proc is not None:
            raise InmemError("this cluster is already running")
        check_not_nested(self.data_dir, "data_dir")
        try:
            make_dirs(self.data_dir)
            self.check_free()
            self._log = open(os.path.join(self.data_dir, "coordinator.log"), "ab",
                             opener=_log_opener)
        except OSError as exc:
            if isinstance(exc, InmemError):
                raise
            raise StoreOpenError(describe_os_error(exc), path=exc.filename) from None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "inmem.coordinator", "--spec", json.dumps(self.spec),
             "--watch-parent"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, env=child_env(), close_fds=True)
        if not wait:
            return self
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def check_free(self) -> None:
        """Raise InmemError if a running cluster serves this data directory already."""
        from inmem.coordinator.server import lock_data_dir
        from inmem.coordinator.config import ConfigError
        try:
            fd = lock_data_dir(self.data_dir)
        except ConfigError as exc:
            raise InmemError(f"{exc} at {self.endpoint}") from None
        except FileNotFoundError:
            return  # no data directory yet: nobody serves it
        os.close(fd)

    def wait_ready(self, timeout: float) -> dict:
        """Wait for every shard to be ready; ClusterNotReady if not, saying why.

        A shard that cannot start (its files, their permissions, damage recovery
        may not skip) ends the wait at once: ClusterNotReady("shard N cannot
        start: ...") with `shard`, `path` and `cause` set. At the timeout, the
        message says what each shard not ready is waiting on, then the log's tail.
        """
        _check_seconds("timeout", timeout)
        deadline = time.monotonic() + timeout
        admin = self._admin_backend()
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise self._exit_error()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ClusterNotReady(f"the cluster at {self.endpoint} was not ready within "
                                      f"{timeout:g} s: {self._waiting_on()}\n"
                                      + self.log_tail())
            try:
                status = admin.wait_ready(min(left, 0.5))
            except (ClusterNotReady, Timeout):
                continue
            pid = status["coordinator"]["pid"]
            if self.proc is not None and pid != self.proc.pid:
                # Our coordinator has not bound yet, and another one answers on
                # the endpoint: ours will find the directory taken and exit.
                time.sleep(0.05)
                continue
            return status

    def _exit_error(self) -> InmemError:
        """Why the coordinator exited during the start: the note it left, else its log's tail."""
        from .processes import read_coordinator_note
        code = self.proc.returncode
        note = read_coordinator_note(self.data_dir, self.proc.pid)
        if note is None:
            return ClusterNotReady(f"the coordinator exited with code {code}:\n"
                                   + self.log_tail())
        # ClusterNotReady whatever the coordinator met (a ConfigError, a file it could
        # not open): what start() raises when the cluster does not come up.
        fields = {k: note.get(k) for k in ("shard", "path", "cause")}
        if fields["cause"] is None and note.get("error") != "ClusterNotReady":
            fields["cause"] = note.get("error")
        return ClusterNotReady(str(note.get("message")), **fields)

    def _waiting_on(self) -> str:
        """What each shard not ready is doing, and its last error (never empty)."""
        try:
            status = self._admin_backend().cluster("status", timeout=1.0)
            shards = [s for s in status["shards"] if s["state"] != "ready"]
        except (InmemError, KeyError, TypeError):
            return (f"no answer from its coordinator (pid "
                    f"{self.proc.pid if self.proc else None})")
        if not shards:
            return "every shard is ready, but not the cluster yet"
        return "; ".join(f"shard {s['shard']} {s['state']}"
                         + (f" (last error: {s['last_error']})" if s.get("last_error") else "")
                         for s in shards)

    def _check_started(self) -> None:
        """ClusterNotReady at once when this Cluster was not started and nothing serves its
        ipc endpoint (a client would wait its whole timeout to say less)."""
        if self.proc is None and self.endpoint.startswith("ipc://"):
            path = self.endpoint[len("ipc://"):]
            if not os.path.lexists(path):
                raise ClusterNotReady(f"nothing serves {self.endpoint}: this Cluster was not "
                                      "started (call start(), or use it in a with block)")

    def connect(self, timeout: float = 10.0, **options) -> "Database":
        """A Database on this cluster (a new client each call); options as `inmem.connect`."""
        from .client import connect
        self._check_started()
        options.setdefault("keys", self._client_keys())
        return connect(self.endpoint, timeout=timeout, **options)

    def status(self) -> dict:
        """The coordinator's view: readiness, and each shard's state, pid, endpoint and recovery."""
        return self._admin_backend().status()

    def pids(self) -> dict:
        """{"coordinator": pid, "shards": [pid, ...]} of the running processes."""
        status = self.status()
        return {"coordinator": self.proc.pid if self.proc else status["coordinator"]["pid"],
                "shards": [s["pid"] for s in status["shards"]]}

    def stop(self, timeout: float = 60.0) -> None:
        """Stop gracefully (SIGTERM: flush, final snapshot); kill what outlives `timeout`."""
        self._close_admin()
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            self._kill_group(proc)
            self.proc = None
        self._finish()

    def kill(self) -> None:
        """SIGKILL the coordinator and every shard at once (a crash, for tests)."""
        self._close_admin()
        if self.proc is not None:
            self._kill_group(self.proc)
            self.proc = None
        self._finish(remove_tmp=False)

    def _kill_group(self, proc) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
            pass
        # Shards are in the coordinator's group; wait until none is left, so
        # that a restart on the same directory never meets a live old shard.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)

    def _finish(self, remove_tmp: bool = True) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        self._remove_stale_sockets()
        if remove_tmp:
            self._remove_tmp()

    def _remove_stale_sockets(self) -> None:
        """Remove the sockets a killed coordinator left, if no coordinator serves the directory.

        Holding the directory's lock while removing them is what makes them
        ours: if another cluster serves it, its sockets stay untouched.
        """
        from inmem.coordinator.server import lock_data_dir, remove_sockets
        try:
            fd = lock_data_dir(self.data_dir)
        except (InmemError, OSError):
            return
        try:
            remove_sockets(self.spec)
        finally:
            os.close(fd)

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _admin_backend(self):
        self._check_started()
        if self._admin is None:
            from .client import ClusterBackend
            self._admin = ClusterBackend(self.endpoint, timeout=10.0, keys=self._client_keys())
        return self._admin

    def _client_keys(self):
        """The key directory clients of this cluster use: when it has keys and tcp endpoints."""
        from inmem.coordinator.config import tcp_endpoints
        return self.spec["keys"] if self.spec.get("keys") and tcp_endpoints(self.spec) else None

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of `<data_dir>/coordinator.log`."""
        if type(lines) is not int or lines < 0:
            raise InvalidOption(f"lines must be an int >= 0, got {lines!r:.40}")
        if lines == 0:
            return ""  # (a slice [-0:] would be every line)
        try:
            with open(os.path.join(self.data_dir, "coordinator.log"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(f.tell() - 8192, 0))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return "(no coordinator log)"
        return "\n".join(text.splitlines()[-lines:]) or "(the coordinator log is empty)"

    def __enter__(self) -> "Cluster":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop()
        return False

    def __repr__(self) -> str:
        state = "running" if self.proc is not None else "stopped"
        return f"<inmem.Cluster {self.endpoint} {state}>"


__all__ = ["Cluster"]
