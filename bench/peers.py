"""The peers we measure against, set up by the benchmark itself: SQLite, LMDB, Redis.

- SQLite is the standard library's sqlite3: a `:memory:` database for the
  in-memory rows, a WAL-journal file with `synchronous=NORMAL` (buffered) or
  `FULL` (strict) for the durable ones; one statement per operation in
  autocommit mode, so each put is its own transaction, as ours are.
- LMDB is py-lmdb, with `sync` off (in-memory and buffered rows, on tmpfs
  when there is one) or on (strict rows); one write transaction per put.
- Redis is Debian's redis-server, started here on 127.0.0.1 on a free port
  with a temporary directory and the persistence that matches the mode
  (none / appendonly with appendfsync everysec / always), driven by
  redis-py, and always stopped before the benchmark exits. With
  `user_defaults` (the cluster tier) nothing else is changed from Redis's
  own defaults; otherwise RDB saves and AOF rewrites are off, because the
  rows that time them (recovery) start them on purpose.

Python packages that are missing are installed with pip into the running
interpreter; redis-server is installed with apt-get when we are root and
apt works. Anything that still cannot be used raises `PeerUnavailable` with
the reason, which the row records as "skipped: <reason>".
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

PIP_TIMEOUT_S = 900
APT_TIMEOUT_S = 900
REDIS_START_TIMEOUT_S = 20.0

ALL_PEERS = ("redis", "sqlite", "lmdb")


class PeerUnavailable(Exception):
    """A peer (or a package the benchmark needs) cannot be used; str(exc) is the reason."""


# -- packages ----------------------------------------------------------------------

_modules: dict[str, object] = {}
_install_lock = threading.Lock()


def ensure_module(import_name: str, pip_name: str | None = None, *, install: bool = True):
    """Import a module, installing `pip_name` with pip first when it is missing.

    Raises PeerUnavailable with the reason when it cannot be had. The outcome
    is remembered, so a failed install is tried once per process.
    """
    with _install_lock:
        cached = _modules.get(import_name)
        if isinstance(cached, PeerUnavailable):
            raise cached
        if cached is not None:
            return cached
        try:
            module = importlib.import_module(import_name)
        except ImportError as exc:
            if not install:
                err = PeerUnavailable(f"python package {pip_name or import_name!r} is not "
                                      f"installed ({exc}); installing was turned off")
                _modules[import_name] = err
                raise err from None
            module = _pip_install_and_import(import_name, pip_name or import_name)
        _modules[import_name] = module
        return module


def _pip_install_and_import(import_name: str, pip_name: str):
    print(f"[bench] installing {pip_name} with pip ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", pip_name],
                              capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        err = PeerUnavailable(f"pip install {pip_name} failed: {exc}")
        _modules[import_name] = err
        raise err from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        err = PeerUnavailable(f"pip install {pip_name} failed (exit {proc.returncode}): {tail[0]}")
        _modules[import_name] = err
        raise err
    importlib.invalidate_caches()
    try:
        return importlib.import_module(import_name)
    except ImportError as exc:
        err = PeerUnavailable(f"{pip_name} installed but cannot be imported: {exc}")
        _modules[import_name] = err
        raise err from None


# -- SQLite ------------------------------------------------------------------------

class SqliteKV:
    """A key-value table in SQLite; each put is one autocommit transaction."""

    PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"
    GET = "SELECT v FROM kv WHERE k = ?"

    def __init__(self, path: str, synchronous: str = "NORMAL"):
        self.path = path
        # isolation_level None = autocommit: one statement, one commit (and,
        # with synchronous=FULL, one fsync), which is what a put costs us.
        self.con = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                   timeout=60.0)
        if path != ":memory:":
            mode = self.con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise PeerUnavailable(f"sqlite refused journal_mode=WAL (got {mode})")
        self.con.execute(f"PRAGMA synchronous={synchronous}")
        self.con.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
        self.synchronous = synchronous

    def ops(self):
        """(put(key, value), get(key)) bound for a tight loop; statements come from the cache."""
        execute = self.con.execute
        put_sql, get_sql = self.PUT, self.GET

        def put(k, v):
            execute(put_sql, (k, v))

        def get(k):
            row = execute(get_sql, (k,)).fetchone()
            return None if row is None else row[0]

        return put, get

    def load(self, pairs) -> None:
        self.con.execute("BEGIN")
        self.con.executemany(self.PUT, pairs)
        self.con.execute("COMMIT")

    def count(self) -> int:
        return self.con.execute("SELECT count(*) FROM kv").fetchone()[0]

    def connect_again(self) -> "SqliteKV":
        """Another connection to the same file (one per writer thread)."""
        return SqliteKV(self.path, self.synchronous)

    def close(self) -> None:
        self.con.close()


# -- LMDB --------------------------------------------------------------------------

class LmdbKV:
    """An LMDB environment; each put is one write transaction, each get one read transaction."""

    def __init__(self, lmdb, path: str, *, sync: bool, map_size: int):
        self.path = path
        self.env = lmdb.open(path, map_size=map_size, sync=sync, metasync=sync,
                             max_dbs=0, lock=True, readahead=False)
        self.sync = sync

    def ops(self):
        begin = self.env.begin

        def put(k, v):
            with begin(write=True) as txn:
                txn.put(k, v)

        def get(k):
            with begin() as txn:
                return txn.get(k)

        return put, get

    def load(self, pairs) -> None:
        with self.env.begin(write=True) as txn:
            for k, v in pairs:
                txn.put(k, v)

    def close(self) -> None:
        self.env.close()


def tmpfs_dir() -> str | None:
    """A memory-backed directory for the in-memory LMDB rows, when the machine has one."""
    for cand in ("/dev/shm",):
        if os.path.isdir(cand) and os.access(cand, os.W_OK):
            return cand
    return None


# -- Redis -------------------------------------------------------------------------

REDIS_PERSISTENCE = {
    "inmemory": ["--appendonly", "no"],
    "buffered": ["--appendonly", "yes", "--appendfsync", "everysec"],
    "strict": ["--appendonly", "yes", "--appendfsync", "always"],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_redis_binary: list = []


def redis_server_binary(install: bool) -> str:
    """The redis-server path, installing Debian's package once when allowed and possible."""
    if _redis_binary:
        if isinstance(_redis_binary[0], PeerUnavailable):
            raise _redis_binary[0]
        return _redis_binary[0]
    try:
        path = _find_or_install_redis(install)
    except PeerUnavailable as exc:
        _redis_binary.append(exc)
        raise
    _redis_binary.append(path)
    return path


def _find_or_install_redis(install: bool) -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if not install:
        raise PeerUnavailable("redis-server is not installed; installing was turned off")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        raise PeerUnavailable("redis-server is not installed and we are not root to apt-get it")
    if not shutil.which("apt-get"):
        raise PeerUnavailable("redis-server is not installed and there is no apt-get")
    print("[bench] installing redis-server with apt-get ...", file=sys.stderr, flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "redis-server"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=APT_TIMEOUT_S, env=env)
        if proc.returncode != 0:
            # A fresh machine may have no package lists yet.
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True,
                           timeout=APT_TIMEOUT_S, env=env)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=APT_TIMEOUT_S,
                                  env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerUnavailable(f"apt-get install redis-server failed: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise PeerUnavailable(f"apt-get install redis-server failed: {tail[0]}")
    path = shutil.which("redis-server") or ("/usr/bin/redis-server"
                                            if os.path.exists("/usr/bin/redis-server") else None)
    if not path:
        raise PeerUnavailable("apt-get installed redis-server but the binary is not on PATH")
    return path


def redis_version(binary: str) -> tuple:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    for part in out.split():
        if part.startswith("v="):
            try:
                return tuple(int(x) for x in part[2:].split("."))
            except ValueError:
                break
    return (0,)


def redis_args(port: int, directory: str, log_path: str, persistence: str, *,
               user_defaults: bool = False, version: tuple = (0,), extra_args=()) -> list:
    """redis-server's arguments: Redis's defaults but for what `persistence` and the run need."""
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", directory,
            "--daemonize", "no", "--logfile", log_path, "--dbfilename", "dump.rdb"]
    if not user_defaults:
        # Saves and rewrites would land inside timed loops; the recovery rows
        # save and rewrite on purpose.
        args += ["--save", "", "--auto-aof-rewrite-percentage", "0"]
    args += [*REDIS_PERSISTENCE[persistence], *extra_args]
    if version >= (7,):
        # The recovery rows may use DEBUG; Redis 7 refuses it unless
        # allowed, and "local" allows it from loopback only.
        args += ["--enable-debug-command", "local"]
    return args


class RedisServer:
    """One redis-server process owned by the benchmark, on 127.0.0.1 and a temp directory."""

    def __init__(self, binary: str, redis_module, persistence: str, *, parent_dir=None,
                 extra_args=(), user_defaults: bool = False):
        if persistence not in REDIS_PERSISTENCE:
            raise ValueError(f"unknown persistence {persistence!r}")
        self.persistence = persistence
        self.port = free_port()
        # Absolute: redis-server changes into --dir before it opens --logfile, so
        # a relative path (from a relative --out) would point nowhere.
        self.dir = os.path.abspath(tempfile.mkdtemp(prefix="redis-", dir=parent_dir))
        self._log_path = os.path.join(self.dir, "redis.log")
        self.binary = binary
        self.user_defaults = user_defaults
        self._args = [binary, *redis_args(self.port, self.dir, self._log_path, persistence,
                                          user_defaults=user_defaults,
                                          version=redis_version(binary),
                                          extra_args=extra_args)]
        self.redis = redis_module
        self.client = redis_module.Redis(host="127.0.0.1", port=self.port,
                                         socket_timeout=600, socket_connect_timeout=5)
        _live_servers.add(self)
        self._spawn()
        self._wait_ready()

    def _spawn(self) -> None:
        self._proc = subprocess.Popen(self._args, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_ready(self) -> None:
        errors = self.redis.exceptions
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            if self._proc.poll() is not None:
                log = self.log_tail()
                code = self._proc.returncode
                self.stop()
                raise PeerUnavailable(f"redis-server exited at start (code {code}): {log}")
            try:
                if self.client.ping():
                    return
            except (errors.ConnectionError, errors.BusyLoadingError, errors.TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PeerUnavailable("redis-server did not answer PING within "
                                      f"{REDIS_START_TIMEOUT_S:.0f} s")
            time.sleep(0.001)

    def restart(self, kill: bool = False) -> dict:
        """Stop (without saving) and start again on the same directory: time the load.

        `kill`: stop with SIGKILL (a crash) rather than SIGTERM. Returns
        {"wall_ms": start to first PING answered, "load_ms": the load time
        Redis logs itself, or None when the log does not say}.
        """
        if kill and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=60)
        self._stop_process()
        try:
            offset = os.path.getsize(self._log_path)
        except OSError:
            offset = 0
        self.client.close()
        t0 = time.perf_counter()
        self._spawn()
        self._wait_ready()
        wall_ms = (time.perf_counter() - t0) * 1000
        return {"wall_ms": wall_ms, "load_ms": self._logged_load_ms(offset)}

    def _logged_load_ms(self, offset: int):
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                f.seek(offset)
                text = f.read()
        except OSError:
            return None
        found = None
        for line in text.splitlines():
            # e.g. "DB loaded from disk: 0.704 seconds" or
            # "DB loaded from append only file: 1.013 seconds" (the total, logged last)
            if "DB loaded from disk:" in line or "DB loaded from append only file:" in line:
                try:
                    found = float(line.rsplit(":", 1)[1].split()[0]) * 1000
                except (ValueError, IndexError):
                    pass
        return found

    @property
    def pid(self) -> int:
        return self._proc.pid

    def new_client(self):
        return self.redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=600)

    def default_client(self):
        """A redis-py client with every option at its default, as its users make one."""
        return self.redis.Redis(host="127.0.0.1", port=self.port)

    def describe(self) -> dict:
        """How this server and its clients are run, for a row's peer_config."""
        try:
            from redis.utils import HIREDIS_AVAILABLE as hiredis
        except ImportError:
            hiredis = None
        version = ".".join(str(x) for x in redis_version(self.binary))
        return {"server": f"redis-server {version}",
                "args": " ".join(self._shown_arg(a) for a in self._args[1:]),
                "persistence": self.persistence, "user_defaults": self.user_defaults,
                "client": f"redis-py {getattr(self.redis, '__version__', '?')}, "
                          "redis.Redis(host, port) with default options",
                "parser": {True: "hiredis", False: "pure Python"}.get(hiredis, "unknown")}

    def _shown_arg(self, arg: str) -> str:
        # The run's own paths say nothing about how Redis was configured.
        if arg == self.dir:
            return "<dir>"
        if arg == self._log_path:
            return "<dir>/redis.log"
        return arg or '""'

    def log_tail(self, lines: int = 3) -> str:
        try:
            with open(self._log_path, encoding="utf-8", errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-lines:])
        except OSError:
            return "no log"

    def wait_rewrite_done(self, timeout_s: float = 600.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = self.client.info("persistence")
            if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled") \
                    and not info.get("rdb_bgsave_in_progress"):
                return
            time.sleep(0.01)
        raise PeerUnavailable("redis AOF rewrite did not finish in time")

    def _stop_process(self) -> None:
        proc = self._proc
        if proc.poll() is None:
            # SIGTERM is Redis's clean shutdown (the AOF is flushed; with
            # save "" no RDB is written); a SHUTDOWN command through redis-py
            # would sit in the client's reconnect retries as the server exits.
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        self._stop_process()
        try:
            self.client.close()
        except Exception:
            pass
        _live_servers.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)


_live_servers: set = set()


@atexit.register
def _stop_leftovers() -> None:
    # The tiers stop what they start; this catches an exception path that did not.
    for server in list(_live_servers):
        server.stop()


# -- the set of peers one run may use --------------------------------------------

class Peers:
    """The peers selected with --peers, created on demand, all closed by `close()`."""

    def __init__(self, selected, *, install: bool = True, scratch_dir=None):
        unknown = set(selected) - set(ALL_PEERS)
        if unknown:
            raise ValueError(f"unknown peers {sorted(unknown)}; choose from {', '.join(ALL_PEERS)}")
        self.selected = tuple(p for p in ALL_PEERS if p in selected)
        self.install = install
        self.scratch_dir = scratch_dir
        self._servers: list[RedisServer] = []

    def _require(self, peer: str) -> None:
        if peer not in self.selected:
            raise PeerUnavailable("not selected with --peers")

    # SQLite needs nothing installed: it is the standard library's.
    def sqlite(self, path: str, synchronous: str = "NORMAL") -> SqliteKV:
        self._require("sqlite")
        return SqliteKV(path, synchronous)

    def lmdb(self, path: str, *, sync: bool, map_size: int) -> LmdbKV:
        self._require("lmdb")
        module = ensure_module("lmdb", "lmdb", install=self.install)
        return LmdbKV(module, path, sync=sync, map_size=map_size)

    def redis_module(self):
        self._require("redis")
        return ensure_module("redis", "redis", install=self.install)

    def redis(self, persistence: str, extra_args=(), *, user_defaults: bool = False
              ) -> RedisServer:
        """A fresh redis-server with matching persistence; stop it with `release` (or close())."""
        module = self.redis_module()
        binary = redis_server_binary(self.install)
        server = RedisServer(binary, module, persistence, parent_dir=self.scratch_dir,
                             extra_args=extra_args, user_defaults=user_defaults)
        self._servers.append(server)
        return server

    def release(self, server: RedisServer) -> None:
        server.stop()
        if server in self._servers:
            self._servers.remove(server)

    def close(self) -> None:
        while self._servers:
            self._servers.pop().stop()


__all__ = ["Peers", "PeerUnavailable", "SqliteKV", "LmdbKV", "RedisServer", "ensure_module",
           "tmpfs_dir", "free_port", "redis_args", "ALL_PEERS", "REDIS_PERSISTENCE"]
