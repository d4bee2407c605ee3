"""The `inmem` command line: demo, serve, status, shard serve, keys generate, bench, wal inspect,
snapshot verify.

Every command ends in one line on stderr and a non-zero exit code when it
cannot do its job (no cluster, a directory in use, a path of the wrong
kind), never in a traceback; and its output may be cut short by a reader
that goes away (`inmem status | head -1`) without an error.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import sys
import time

#: exit code when the reader of our output went away (128 + SIGPIPE, as a shell reports it)
EXIT_BROKEN_PIPE = 141
#: how long `status` and `demo --connect` wait quietly before saying what they wait for
QUIET_WAIT_S = 1.0


def _cmd_demo(args) -> int:
    from .errors import InmemError, InvalidOption
    try:
        # Options that only one way of running takes, given to another, were
        # dropped without a word (a cluster started in ./data for --path DIR).
        if args.path and not args.embedded:
            raise InvalidOption("--path DIR is the embedded demo's directory: add --embedded, "
                                "or use --data-dir for a local cluster's")
        if args.embedded and args.connect:
            raise InvalidOption("--embedded and --connect exclude each other: the embedded "
                                "demo runs in this process")
        if not args.timeout > 0:
            raise InvalidOption(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
        if args.embedded:
            return _demo_embedded(args)
        if args.connect:
            return _demo_connect(args)
        return _demo_local_cluster(args)
    except InmemError as exc:
        # A refusal to start (the directory is in use, a bad config) is one
        # line for the user, not a traceback.
        print(f"inmem demo: {exc}", file=sys.stderr)
        return 2


def _demo_embedded(args) -> int:
    import inmem
    from .demo import play
    if args.durability is not None and not args.path:
        from .errors import InvalidOption
        raise InvalidOption(f"--durability {args.durability} needs --path DIR: without a "
                            "directory the embedded demo runs in memory")
    db = inmem.open(args.path, durability=(args.durability or "buffered") if args.path
                    else "inmemory")
    print(f"inmem demo against the embedded engine ({args.path or 'in memory'})")
    from .demo import finish
    with db:
        for _ in range(args.runs):
            play(db)
        finish(db)
    return 0


def _demo_connect(args) -> int:
    import inmem
    from .demo import play
    from .errors import ClusterNotReady
    keys = args.keys
    if keys is None and args.config and args.connect.startswith("tcp://"):
        from inmem.coordinator import config as cfg
        keys = cfg.load(args.config)["keys"]
    _check_keys_exist(keys, args)
    why = _nothing_serves(args.connect)
    if why:
        raise ClusterNotReady(f"{why}; start one with `inmem serve`, or pass the endpoint it "
                              "printed")
    print(f"inmem demo against the cluster at {args.connect} (waiting up to {args.timeout:g} s "
          "for it to be ready)", flush=True)
    with inmem.connect(args.connect, timeout=args.timeout, keys=keys) as db:
        _demo_cluster(db, args.runs, play)
    return 0


def _demo_local_cluster(args) -> int:
    """Start a local cluster on the default config (data under ./data unless --data-dir
    says otherwise), play against it, stop it."""
    import inmem
    from inmem.coordinator import config as cfg
    from .demo import play
    from .display import count
    spec = cfg.load(args.config, data_dir=args.data_dir)
    cfg.check_data_dir(spec, _data_dir_source(args))
    data_dir = spec["data_dir"]
    cluster = inmem.Cluster(config=args.config, data_dir=data_dir)
    cluster.check_free()  # refused before anything is printed, spawned or touched
    print(f"starting a local cluster in {os.path.abspath(data_dir)} ...", flush=True)
    cluster.start()
    try:
        print(f"cluster ready at {cluster.endpoint} (pids {cluster.pids()})")
        with cluster.connect() as db:
            for r in db.recovery_report():
                source = "a snapshot and " if r.snapshot_used else ""
                print(f"  shard {r.shard}: recovered from {source}"
                      f"{count(r.records_replayed, 'WAL record')} "
                      f"({count(r.transactions_recovered, 'operation')}) in "
                      f"{r.seconds * 1000:.1f} ms; {count(len(r.orphaned_runs), 'orphaned run')}")
            _demo_cluster(db, args.runs, play)
        print("stopping the cluster (WALs flushed, final snapshots taken)")
    finally:
        cluster.stop()
    print("done; run it again to see the cluster recover what this run wrote")
    return 0


def _demo_cluster(db, runs: int, play) -> None:
    from .demo import finish
    for _ in range(runs):
        play(db)
    finish(db)
    hits = db.search("search fetch", limit=3)
    print(f"search 'search fetch': {hits.total_matches} matches; best: "
          + ", ".join(f"{h.primitive}:{h.ref}" for h in hits.results))
    info = db.info()
    for s in info["shards"]:
        print(f"  shard {s['shard']}: {s['state']}, {s['runs']} runs, {s['keys']} keys, "
              f"{s['memory_bytes'] // 2**20} MiB RSS, {s['durability']}")


def _print_line(line: str) -> None:
    print(line, flush=True)


def _stop_on_hangup():
    """Make SIGHUP (the terminal of a foreground `serve` closed, an ssh session gone) a clean
    stop, as SIGTERM is, instead of a death that skips the final flush and snapshot.

    The handler is inherited by the shard processes the coordinator forks (it
    resets only SIGTERM and SIGINT), which get the hangup too, being in the
    terminal's process group: each turns it into its own SIGTERM. Output goes to
    /dev/null from then on, as the terminal is gone. Under `nohup` (SIGHUP
    ignored) nothing changes. Returns the handler it replaced, to put back.
    """
    previous = signal.getsignal(signal.SIGHUP)
    if previous == signal.SIG_IGN:
        return previous

    def hung_up(signum, frame):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            for fd in (1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGHUP, hung_up)
    return previous


def _unloaded_data(spec: dict) -> str | None:
    """A warning when an inmemory cluster starts over a data directory holding durable shards:
    it serves none of that data (which it leaves as it is), and starts empty."""
    if spec["durability"] != "inmemory":
        return None
    held = []
    for directory in _shard_dirs(spec["data_dir"]):
        for sub in ("wal", "snapshots"):
            try:
                if os.listdir(os.path.join(directory, sub)):
                    held.append(os.path.basename(directory))
                    break
            except OSError:
                pass
    if not held:
        return None
    return (f"warning: durability is inmemory, so this cluster starts empty and does not load "
            f"the data on disk in {spec['data_dir']} ({', '.join(held)}: WAL and snapshots); "
            "it is left as it is, for a start in buffered or strict mode")


def _cmd_serve(args) -> int:
    from inmem.coordinator import config as cfg
    from inmem.coordinator.server import run
    from .errors import InmemError
    try:
        spec = cfg.load(args.config, data_dir=args.data_dir, shards=args.shards,
                        durability=args.durability, endpoint=args.endpoint)
        cfg.check_data_dir(spec, _data_dir_source(args))
        cfg.check_endpoints_free(spec, "--endpoint" if args.endpoint else
                                 (args.config or "the built-in config"))
        warning = _unloaded_data(spec)
        if warning:
            print(f"inmem serve: {warning}", file=sys.stderr, flush=True)
        previous = _stop_on_hangup()
        try:
            return run(spec, out=_print_line)
        finally:
            signal.signal(signal.SIGHUP, previous)
    except cfg.ConfigError as exc:
        print(f"inmem serve: {exc}", file=sys.stderr)
        return 2
    except InmemError as exc:
        print(f"inmem serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a data directory this user may not write
        from .files import describe_os_error
        print(f"inmem serve: {describe_os_error(exc)}", file=sys.stderr)
        return 2


def _data_dir_source(args) -> str:
    """Where the data directory of a command came from, for an error about it."""
    if getattr(args, "data_dir", None):
        return "--data-dir"
    return args.config or "the built-in config"


def _check_keys_exist(keys, args) -> None:
    """ConfigError when the key directory (or .key_secret file) to use does not exist, naming
    where it was given: --keys, or [cluster] keys of the --config."""
    if keys is None or os.path.exists(keys):
        return
    from inmem.coordinator.config import ConfigError
    where = "--keys" if args.keys else f"{args.config}: [cluster] keys"
    raise ConfigError(f"{where}: {keys} does not exist; it is the cluster's key directory "
                      "(`inmem keys generate DIR`) or a client's .key_secret file, copied to "
                      "this host")


def _no_tcp_listener(endpoint: str) -> str | None:
    """Why nothing can be serving a tcp endpoint (its host refuses the connection), or None.

    Only a refusal is an answer: a host that does not reply (a firewall, a
    machine starting) may yet, so that is left to the wait.
    """
    import socket
    host, _, port = endpoint[len("tcp://"):].rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
            return None
    except ConnectionRefusedError:
        return f"no cluster is serving {endpoint} (connection refused: nothing listens there)"
    except (OSError, ValueError):
        return None


def _nothing_serves(endpoint: str) -> str | None:
    """Why nothing can be serving an endpoint (an ipc socket file missing, or that nothing
    listens on; a tcp port refused), or None."""
    if endpoint.startswith("tcp://"):
        return _no_tcp_listener(endpoint)
    if not endpoint.startswith("ipc://"):
        return None
    from .files import socket_in_use
    path = endpoint[len("ipc://"):]
    if not os.path.lexists(path):
        return f"no cluster is serving {endpoint} (the socket {path} does not exist)"
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        return f"no cluster is serving {endpoint} ({path} is not a socket)"
    if not socket_in_use(path):
        # A coordinator killed (SIGKILL, a crash) leaves its socket file: nothing can
        # answer there, so waiting the whole timeout for it would only hide that.
        return (f"no cluster is serving {endpoint} (nothing listens on {path}: it is left "
                "from a coordinator that ended without removing it)")
    base = path[:-len(".s")] if path.endswith(".s") else None
    if base is not None and os.path.lexists(base) and stat.S_ISSOCK(os.lstat(base).st_mode):
        # `ls` shows both; the one with .s is the stream socket beside the endpoint,
        # which speaks another framing: nothing would ever answer there.
        return (f"{path} is the stream socket beside an endpoint, not an endpoint: use "
                f"ipc://{base}")
    return None


def _cmd_status(args) -> int:
    from inmem.coordinator import config as cfg
    from .client import ClusterBackend
    from .errors import InmemError, Timeout
    try:
        spec = cfg.load(args.config) if args.config else None
        # (an endpoint naming a network interface, as serve may bind, is reached at its address)
        endpoint = cfg.connect_endpoint(args.endpoint
                                        or (spec or cfg.load(None))["client_endpoint"])
        keys = args.keys or (spec["keys"] if spec and endpoint.startswith("tcp://") else None)
        _check_keys_exist(keys, args)
        backend = ClusterBackend(endpoint, timeout=args.timeout, keys=keys)
    except InmemError as exc:
        print(f"inmem status: {exc}", file=sys.stderr)
        return 2
    hint = ("start the cluster with `inmem serve`, or name a running one with --endpoint URL "
            "or --config FILE")
    # --wait-ready may be asked of a cluster still starting (its socket not yet bound):
    # that is waited for; a plain status says at once that nothing serves there.
    why = None if args.wait_ready else _nothing_serves(endpoint)
    if why:
        backend.close()
        print(f"inmem status: {why}; {hint}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    status = None
    said = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                status = backend.cluster("status", timeout=min(left, QUIET_WAIT_S))
            except Timeout:
                pass
            else:
                if status["ready"] or not args.wait_ready:
                    break
            if not said:
                what = ("the coordinator at {} to answer" if status is None else
                        "every shard of the cluster at {} to be ready").format(endpoint)
                print(f"inmem status: waiting up to {args.timeout:g} s for {what} "
                      "(--timeout changes it) ...", file=sys.stderr, flush=True)
                said = True
            if status is not None:
                time.sleep(min(0.1, max(deadline - time.monotonic(), 0)))
    finally:
        backend.close()
    if status is None:
        if endpoint.startswith("ipc://") and _nothing_serves(endpoint) is None:
            # Something listens there, so `inmem serve` is not the advice.
            hint = ("a process listens on its socket but did not answer: the coordinator may "
                    "be stopped (SIGSTOP), overloaded, or not an inmem coordinator")
        print(f"inmem status: no coordinator answered at {endpoint} within {args.timeout:g} s; "
              f"{hint}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_status_document(endpoint, status), indent=2))
        return 0 if status["ready"] else 1
    c = status["coordinator"]
    print(f"{endpoint}: {'ready' if status['ready'] else 'NOT READY'}; coordinator pid "
          f"{c['pid']}, {c['durability']}, {len(status['shards'])} shards")
    from inmem.coordinator.fanout import describe_recovery
    for s in status["shards"]:
        line = f"  shard {s['shard']}: {_shard_state(s)}, " + (
            "no pid" if s["pid"] is None else f"pid {s['pid']}") + f", {s['endpoint']}"
        if s["state"] == "ready":
            line += f"; {describe_recovery(s['recovery'])}"
        if s.get("remote"):
            line += "; remote (started on its own host, not restarted from here)"
        if s["restarts"]:
            line += f"; {s['restarts']} restarts"
        if s["last_error"]:
            line += f"; last error: {s['last_error']}"
        print(line)
    return 0 if status["ready"] else 1


def _status_document(endpoint: str, status: dict) -> dict:
    """The coordinator's status as `status --json` prints it: each shard's recovery by name."""
    from .types import RecoveryResult
    shards = []
    for shard in status["shards"]:
        shard = dict(shard)
        r = shard.get("recovery")
        if isinstance(r, (list, tuple)) and len(r) == len(RecoveryResult._fields):
            shard["recovery"] = dict(zip(RecoveryResult._fields, r))
        shards.append(shard)
    return {"endpoint": endpoint, **status, "shards": shards}


def _shard_state(s: dict) -> str:
    """A shard's state as `status` shows it: why it does not serve, and for how long."""
    state = s["state"]
    # .get: a coordinator of an earlier version does not send these
    if s.get("restart_in_s") is not None:
        return (f"restarting (attempt {s.get('restart_attempt')}, next in "
                f"{s['restart_in_s']:.1f} s)")
    if s.get("silent_s") is not None:
        return f"{state} (no answer for {s['silent_s']:.1f} s)"
    return state


def _cmd_shard_serve(args) -> int:
    """One shard process started by hand (on its own host), from the cluster's config."""
    from inmem.coordinator import config as cfg
    from inmem.coordinator.slotmap import SlotMap
    from inmem.shard.worker import run_worker
    try:
        spec = cfg.load(args.config, data_dir=args.data_dir, durability=args.durability)
        cfg.check_data_dir(spec, _data_dir_source(args))
        if spec["shards_auto"] and not spec["shard_table"]:
            persisted = SlotMap.peek_shard_count(spec["data_dir"])
            if persisted:
                spec = cfg.with_shard_count(spec, persisted)
        # Before the recovery, which may take minutes: what would fail after it.
        cfg.check_shard_can_serve(spec, args.shard, args.config)
    except cfg.ConfigError as exc:
        print(f"inmem shard serve: {exc}", file=sys.stderr)
        return 2
    previous = _stop_on_hangup()
    try:
        return run_worker(spec, args.shard)
    finally:
        signal.signal(signal.SIGHUP, previous)


def _cmd_keys_generate(args) -> int:
    """Write a cluster's Curve keypairs (coordinator, each shard, clients) into a 0700 directory."""
    from inmem import keys
    from inmem.coordinator import config as cfg
    if os.path.lexists(args.dir) and not os.path.isdir(args.dir):
        print(f"inmem keys generate: {args.dir} is a file; name a directory for the keys (it "
              "is created if missing)", file=sys.stderr)
        return 2
    try:
        shards = args.shards
        if shards is None and args.config:
            spec = cfg.load(args.config, insecure=True)
            shards = len(spec["shards"])
        if shards is None:
            print("inmem keys generate: say how many shards (--shards N) or give the cluster's "
                  "--config", file=sys.stderr)
            return 2
        done = keys.generate(args.dir, shards, args.clients or [keys.CLIENT])
    except (keys.KeyFileError, cfg.ConfigError, OSError) as exc:
        print(f"inmem keys generate: {exc}", file=sys.stderr)
        return 2
    for name, what in done:
        print(f"  {name}: {what}")
    print(f"keys in {os.path.abspath(args.dir)}: copy every .key file and only that host's "
          f".key_secret to each host; set [cluster] keys to the directory")
    return 0


def _cmd_bench(argv) -> int:
    from inmem.bench.__main__ import main as bench_main
    return bench_main(argv)


def _shard_dirs(path: str) -> list[str]:
    """The shard directories (shard-N holding a store) of a cluster's data directory, by N."""
    try:
        names = os.listdir(path)
    except OSError:
        return []
    found = []
    for name in names:
        number = name[len("shard-"):]
        if name.startswith("shard-") and number.isdigit() and os.path.isdir(
                os.path.join(path, name)):
            found.append((int(number), os.path.join(path, name)))
    return [d for _, d in sorted(found)]


def _cmd_wal(args) -> int:
    from inmem.wal.inspect import main as inspect_main
    target = args.dir
    if not os.path.exists(target):
        return _wal_refused(args, target, "missing", f"{target} does not exist")
    if not os.path.isdir(target):
        return _wal_refused(
            args, target, "not_a_directory",
            f"{target} is a file; pass the WAL directory that holds it "
            f"({os.path.dirname(os.path.abspath(target))}) or the store directory above that")
    if os.path.isdir(os.path.join(target, "wal")):  # a store (or shard) directory
        target = os.path.join(target, "wal")
    else:
        shards = [d for d in _shard_dirs(target) if os.path.isdir(os.path.join(d, "wal"))]
        if shards:
            wals = [os.path.join(d, "wal") for d in shards]
            if args.json:
                return _wal_refused(args, target, "cluster",
                                    f"{target} is a cluster's data directory; each shard has "
                                    "its own WAL", shards=wals)
            print(f"{target} is a cluster's data directory; each shard has its own WAL:")
            for wal in wals:
                print(f"  inmem wal inspect {wal}")
            return 2
    with _scratch_target() as target_of:
        content = _record_check(target, target_of)
        return inspect_main([target, *(["--json"] if args.json else [])], content=content)


def _wal_refused(args, target: str, kind: str, reason: str, **extra) -> int:
    """Exit 2 for a path `wal inspect` cannot read as a WAL: the reason on stderr, and with
    --json a report on stdout too (as an empty directory gets), for scripts that read it."""
    print(f"inmem wal inspect: {reason}", file=sys.stderr)
    if args.json:
        report = {"directory": target, "exists": os.path.lexists(target),
                  "outcome": {"kind": kind, "reason": reason}, "verdict": "refused", **extra}
        print(json.dumps(report, indent=2, sort_keys=True))
    return 2


class _scratch_target:
    """`with _scratch_target() as target_of`: `target_of()` is a new recovery target on an empty
    engine, set up as opening sets up a durable store's, whose history files live in a
    scratch directory removed at the end: checking a store's files never writes in it."""

    def __enter__(self):
        import tempfile
        self._tmp = tempfile.TemporaryDirectory(prefix="inmem-check-")
        return self._target

    def _target(self):
        from .shard.engine import Engine
        from .shard.history_files import HistoryFiles
        from .shard.recovery_apply import EngineRecovery
        engine = Engine(log=True)
        engine.history_files = HistoryFiles(self._tmp.name)
        return EngineRecovery(engine)

    def __exit__(self, *exc):
        self._tmp.cleanup()


def _record_check(wal_directory: str, target_of):
    """The content check `wal inspect` feeds the records to: from the state opening would start
    from (the newest loadable snapshot beside the WAL, or nothing), or a dict saying why the
    records cannot be checked."""
    from .recovery.content_check import RecordCheck, check_snapshot, newest_snapshot
    from .recovery.errors import SnapshotError
    from .wal.segment import list_segments
    store = os.path.dirname(os.path.abspath(wal_directory))
    has_snapshots = os.path.isdir(os.path.join(store, "snapshots"))
    try:
        snap, _set_aside = newest_snapshot(store)
    except SnapshotError as exc:  # another release's file: opening stops at it
        return {"outcome": {"kind": "snapshot_refused", "reason": f"{exc}"}}
    except OSError as exc:
        return {"outcome": {"kind": "not_checked",
                            "reason": f"cannot read the snapshots: {exc.strerror or exc}"}}
    target = target_of()
    start_lsn, start = 0, "no snapshot"
    if snap is not None:
        error = check_snapshot(snap, target)
        name = os.path.basename(snap.path)
        if error is not None:
            return {"outcome": {"kind": "snapshot_refused", "reason": (
                f"opening starts from the snapshot {name}, which it refuses "
                f"({type(error).__name__}: {error.reason}); run `inmem snapshot verify "
                f"{snap.path}`")}}
        start_lsn, start = snap.wal_position, f"after snapshot {name}"
    try:
        segments = list_segments(wal_directory)
    except OSError:
        segments = []
    if segments and segments[0][0] > start_lsn:
        where = f"the snapshot {start[len('after snapshot '):]}" if snap else "no snapshot"
        if not has_snapshots:
            return {"outcome": {"kind": "not_checked", "reason": (
                f"the log starts at LSN {segments[0][0]} and no snapshots/ directory is beside "
                f"it to hold the state before that")}}
        return {"outcome": {"kind": "gap", "reason": (
            f"the log starts at LSN {segments[0][0]}, but the state opening starts from "
            f"({where}) needs it from LSN {start_lsn}: opening refuses it (WalGapError)")}}
    return RecordCheck(target, start_lsn, start)


def _snapshot_files(path: str) -> list[str]:
    """The snapshot files under a snapshots/ directory, a store directory or a cluster's."""
    from inmem.recovery.sequence import snapshot_dir
    if os.path.isdir(snapshot_dir(path)):
        dirs = [snapshot_dir(path)]
    elif _shard_dirs(path):
        dirs = [snapshot_dir(d) for d in _shard_dirs(path) if os.path.isdir(snapshot_dir(d))]
    else:
        dirs = [path]
    return [os.path.join(d, name) for d in dirs for name in sorted(os.listdir(d))
            if name.endswith(".snap")]


def _cmd_snapshot(args) -> int:
    from inmem.recovery.snapshot_format import verify_main
    with _scratch_target() as target_of:
        return _verify_snapshots(args, verify_main, _snapshot_check(target_of))


def _snapshot_check(target_of):
    """The content check `snapshot verify` gives: load the sections into a scratch engine."""
    from .recovery.content_check import check_snapshot

    def check(snap):
        target = target_of()
        error = check_snapshot(snap, target)
        runs = len(target.engine.runs)
        return error, f"{runs} run{'s' if runs != 1 else ''} loaded"
    return check


def _verify_snapshots(args, verify_main, check) -> int:
    if not os.path.isdir(args.path):
        return verify_main([args.path], content=check)
    try:
        files = _snapshot_files(args.path)
    except OSError as exc:
        print(f"inmem snapshot verify: cannot list {args.path}: {exc.strerror or exc}",
              file=sys.stderr)
        return 2
    if not files:
        print(f"inmem snapshot verify: no snapshot files (*.snap) in {args.path}, its "
              "snapshots/ directory or its shards'", file=sys.stderr)
        return 2
    worst = 0
    for i, path in enumerate(files):
        if i:
            print()
        worst = max(worst, verify_main([path], content=check))
    print(f"\n{len(files)} snapshot{'s' if len(files) != 1 else ''} checked: "
          f"{'all valid' if worst == 0 else 'NOT all valid'}")
    return worst


def _at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    modes = ("inmemory", "buffered", "strict")
    p = argparse.ArgumentParser(prog="inmem", description="a state store for AI agents")
    p.add_argument("--version", action="version", version=f"inmem {__version__}",
                   help="print the version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="play an agent run against a local cluster and print what it did")
    d.add_argument("--config", help="cluster config (default: the built-in local cluster)")
    d.add_argument("--data-dir", help="cluster data directory (default: the config's, ./data)")
    d.add_argument("--connect", metavar="URL", help="use a running cluster instead of starting one")
    d.add_argument("--embedded", action="store_true", help="use the embedded engine instead")
    d.add_argument("--path", help="with --embedded: a data directory (default: in memory)")
    d.add_argument("--durability", choices=modes,
                   help="with --embedded --path: the durability mode (default: buffered)")
    d.add_argument("--keys", help="with --connect to a tcp endpoint: the key directory (or a "
                                  "client's .key_secret file); default: the --config's")
    d.add_argument("--runs", type=_at_least_one, default=1,
                   help="how many agent runs to play (default: 1)")
    d.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the cluster to be ready (default: 30)")
    d.set_defaults(fn=_cmd_demo)

    s = sub.add_parser("serve", help="run a cluster in the foreground",
                       description="Run a coordinator and its shards in the foreground. Ctrl-C, "
                                   "SIGTERM or SIGHUP stop it cleanly (WALs flushed, final "
                                   "snapshots taken). A config it cannot use is refused before "
                                   "anything starts: one line, exit code 2.")
    s.add_argument("--config", help="a TOML config (default: the built-in local cluster)")
    s.add_argument("--data-dir", help="override the config's data directory")
    s.add_argument("--shards", type=int, help="override the number of shards")
    s.add_argument("--durability", choices=modes, help="override the config's durability mode")
    s.add_argument("--endpoint", help="override the client endpoint (e.g. tcp://127.0.0.1:7700)")
    s.set_defaults(fn=_cmd_serve)

    st = sub.add_parser("status", help="show a cluster's shards",
                        description="Show each shard's state, pid, endpoint, recovery and "
                                    "restarts. Exit code 0 when the cluster is ready, 1 when it "
                                    "is not or no coordinator answers, 2 for a config or option "
                                    "it cannot use.")
    st.add_argument("--config", help="the cluster's TOML config (default: the built-in one)")
    st.add_argument("--endpoint", help="the coordinator endpoint (default: the config's)")
    st.add_argument("--keys", help="the key directory (or a client's .key_secret file) for a "
                                   "tcp endpoint; default: the config's")
    st.add_argument("--wait-ready", action="store_true", help="wait until every shard is ready")
    st.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                    help="how long to wait for an answer (default: 30)")
    st.add_argument("--json", action="store_true",
                    help="print the status as one JSON object (same exit codes)")
    st.set_defaults(fn=_cmd_status)

    sh = sub.add_parser("shard", help="shard processes")
    shsub = sh.add_subparsers(dest="shard_command", required=True)
    shs = shsub.add_parser("serve", help="run one shard of a cluster in the foreground, from the "
                                         "cluster's config (for a shard on its own host)")
    shs.add_argument("--config", required=True, help="the cluster's TOML config")
    shs.add_argument("--shard", type=int, required=True, help="which shard of the config to run")
    shs.add_argument("--data-dir", help="override the config's data directory")
    shs.add_argument("--durability", choices=modes, help="override the config's durability")
    shs.set_defaults(fn=_cmd_shard_serve)

    k = sub.add_parser("keys", help="CurveZMQ keys for a cluster's tcp endpoints")
    ksub = k.add_subparsers(dest="keys_command", required=True)
    kg = ksub.add_parser("generate", help="write the keypairs of the coordinator, each shard and "
                                          "the clients (0600 files in a 0700 directory); pairs "
                                          "already there are kept")
    kg.add_argument("dir", help="the key directory (the config's [cluster] keys)")
    kg.add_argument("--shards", type=int, help="how many shards (default: the config's)")
    kg.add_argument("--config", help="the cluster's TOML config, for its shard count")
    kg.add_argument("--clients", nargs="*", metavar="NAME",
                    help="more client keypairs to write (client-NAME), each its own to revoke; the "
                         "default client's pair (client) is always written")
    kg.set_defaults(fn=_cmd_keys_generate)

    sub.add_parser("bench", help="run the benchmarks (see `inmem bench --help`)", add_help=False)

    w = sub.add_parser("wal", help="write-ahead log tools")
    wsub = w.add_subparsers(dest="wal_command", required=True)
    wi = wsub.add_parser("inspect", help="records, sizes, positions, and each record's contents "
                                               "decoded as opening would; exit 0 only when clean")
    wi.add_argument("dir", metavar="PATH", help="a WAL directory, or a store directory holding "
                                                "wal/ (a cluster's data directory lists its shards')")
    wi.add_argument("--json", action="store_true", help="print the report as JSON")
    wi.set_defaults(fn=_cmd_wal)

    sn = sub.add_parser("snapshot", help="snapshot tools")
    snsub = sn.add_subparsers(dest="snapshot_command", required=True)
    sv = snsub.add_parser("verify", help="header, sections, counts and crc of snapshot files, "
                                         "and their sections loaded as opening would; exit 0 "
                                         "only when every one is valid")
    sv.add_argument("path", metavar="PATH", help="a snapshot file, or a snapshots/, store or "
                                                 "cluster data directory (every *.snap in it)")
    sv.set_defaults(fn=_cmd_snapshot)
    return p


def _stdout_gone() -> int:
    """The reader of our output went away: stop quietly, as a shell tool does."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


def main(argv=None) -> int:
    """Run the `inmem` command with `argv` (default: the process's arguments); its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "bench":
            code = _cmd_bench(argv[1:])
        else:
            args = build_parser().parse_args(argv)
            code = args.fn(args) or 0
        sys.stdout.flush()
    except BrokenPipeError:
        return _stdout_gone()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
