"""The `inmem` command line: demo, serve, status, shard serve, keys generate, bench, wal inspect,
snapshot verify."""

from __future__ import annotations

import argparse
import os
import sys


def _cmd_demo(args) -> int:
    from .errors import InmemError
    try:
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
    db = inmem.open(args.path, durability=args.durability if args.path else "inmemory")
    print(f"inmem demo against the embedded engine ({args.path or 'in memory'})")
    with db:
        for _ in range(args.runs):
            play(db)
    return 0


def _demo_connect(args) -> int:
    import inmem
    from .demo import play
    print(f"inmem demo against the cluster at {args.connect}")
    with inmem.connect(args.connect, timeout=args.timeout) as db:
        _demo_cluster(db, args.runs, play)
    return 0


def _demo_local_cluster(args) -> int:
    """Start a local cluster on the default config (data under ./data unless --data-dir
    says otherwise), play against it, stop it."""
    import inmem
    from inmem.coordinator import config as cfg
    from .demo import play
    spec = cfg.load(args.config)
    data_dir = args.data_dir or spec["data_dir"]
    cluster = inmem.Cluster(config=args.config, data_dir=data_dir)
    cluster.check_free()  # refused before anything is printed, spawned or touched
    print(f"starting a local cluster in {os.path.abspath(data_dir)} ...", flush=True)
    cluster.start()
    try:
        print(f"cluster ready at {cluster.endpoint} (pids {cluster.pids()})")
        with cluster.connect() as db:
            for r in db.recovery_report():
                source = "a snapshot and " if r.snapshot_used else ""
                print(f"  shard {r.shard}: recovered from {source}{r.records_replayed} WAL records "
                      f"({r.transactions_recovered} operations) in {r.seconds * 1000:.1f} ms; "
                      f"{len(r.orphaned_runs)} orphaned runs")
            _demo_cluster(db, args.runs, play)
        print("stopping the cluster (WALs flushed, final snapshots taken)")
    finally:
        cluster.stop()
    print("done; run it again to see the cluster recover what this run wrote")
    return 0


def _demo_cluster(db, runs: int, play) -> None:
    for _ in range(runs):
        play(db)
    hits = db.search("search fetch", limit=3)
    print(f"search 'search fetch': {hits.total_matches} matches; best: "
          + ", ".join(f"{h.primitive}:{h.ref}" for h in hits.results))
    info = db.info()
    for s in info["shards"]:
        print(f"  shard {s['shard']}: {s['state']}, {s['runs']} runs, {s['keys']} keys, "
              f"{s['memory_bytes'] // 2**20} MiB RSS, {s['durability']}")


def _print_line(line: str) -> None:
    print(line, flush=True)


def _cmd_serve(args) -> int:
    from inmem.coordinator import config as cfg
    from inmem.coordinator.server import run
    from .errors import InmemError
    try:
        spec = cfg.load(args.config, data_dir=args.data_dir, shards=args.shards,
                        durability=args.durability, endpoint=args.endpoint)
        return run(spec, out=_print_line)
    except cfg.ConfigError as exc:
        print(f"inmem serve: {exc}", file=sys.stderr)
        return 2
    except InmemError as exc:
        print(f"inmem serve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. a data directory this user may not write
        print(f"inmem serve: {exc}", file=sys.stderr)
        return 2


def _cmd_status(args) -> int:
    from inmem.coordinator import config as cfg
    from .client import ClusterBackend
    from .errors import ClusterNotReady, Timeout
    from .errors import InmemError
    try:
        spec = cfg.load(args.config) if args.config else None
        endpoint = args.endpoint or (spec or cfg.load(None))["client_endpoint"]
        keys = args.keys or (spec["keys"] if spec and endpoint.startswith("tcp://") else None)
        backend = ClusterBackend(endpoint, timeout=args.timeout, keys=keys)
    except InmemError as exc:
        print(f"inmem status: {exc}", file=sys.stderr)
        return 2
    try:
        if args.wait_ready:
            backend.wait_ready(args.timeout)
        status = backend.cluster("status", timeout=args.timeout)
    except (ClusterNotReady, Timeout) as exc:
        print(f"{endpoint}: {exc}")
        return 1
    finally:
        backend.close()
    c = status["coordinator"]
    print(f"{endpoint}: {'ready' if status['ready'] else 'NOT READY'}; coordinator pid "
          f"{c['pid']}, {c['durability']}, {len(status['shards'])} shards")
    from inmem.coordinator.fanout import describe_recovery
    for s in status["shards"]:
        line = f"  shard {s['shard']}: {s['state']}, pid {s['pid']}, {s['endpoint']}"
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



def _cmd_shard_serve(args) -> int:
    """One shard process started by hand (on its own host), from the cluster's config."""
    from inmem.coordinator import config as cfg
    from inmem.coordinator.slotmap import SlotMap
    from inmem.shard.worker import run_worker
    try:
        spec = cfg.load(args.config, data_dir=args.data_dir, durability=args.durability)
        if spec["shards_auto"] and not spec["shard_table"]:
            persisted = SlotMap.peek_shard_count(spec["data_dir"])
            if persisted:
                spec = cfg.with_shard_count(spec, persisted)
    except cfg.ConfigError as exc:
        print(f"inmem shard serve: {exc}", file=sys.stderr)
        return 2
    return run_worker(spec, args.shard)


def _cmd_keys_generate(args) -> int:
    """Write a cluster's Curve keypairs (coordinator, each shard, clients) into a 0700 directory."""
    from inmem import keys
    from inmem.coordinator import config as cfg
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


def _cmd_wal(args) -> int:
    import os

    from inmem.wal.inspect import main as inspect_main
    target = args.dir
    if os.path.isdir(os.path.join(target, "wal")):  # a store (or shard) directory
        target = os.path.join(target, "wal")
    return inspect_main([target])


def _cmd_snapshot(args) -> int:
    from inmem.recovery.snapshot_format import verify_main
    return verify_main([args.file])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inmem", description="a state store for AI agents")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="play an agent run against a local cluster and print what it did")
    d.add_argument("--config", help="cluster config (default: the built-in local cluster)")
    d.add_argument("--data-dir", help="cluster data directory (default: the config's, ./data)")
    d.add_argument("--connect", metavar="URL", help="use a running cluster instead of starting one")
    d.add_argument("--embedded", action="store_true", help="use the embedded engine instead")
    d.add_argument("--path", help="with --embedded: a data directory (default: in memory)")
    d.add_argument("--durability", default="buffered", choices=("inmemory", "buffered", "strict"))
    d.add_argument("--runs", type=int, default=1)
    d.add_argument("--timeout", type=float, default=30.0)
    d.set_defaults(fn=_cmd_demo)

    s = sub.add_parser("serve", help="run a cluster in the foreground")
    s.add_argument("--config", help="a TOML config (default: the built-in local cluster)")
    s.add_argument("--data-dir", help="override the config's data directory")
    s.add_argument("--shards", type=int, help="override the number of shards")
    s.add_argument("--durability", choices=("inmemory", "buffered", "strict"))
    s.add_argument("--endpoint", help="override the client endpoint")
    s.set_defaults(fn=_cmd_serve)

    st = sub.add_parser("status", help="show a cluster's shards")
    st.add_argument("--config", help="the cluster's TOML config")
    st.add_argument("--endpoint", help="the coordinator endpoint")
    st.add_argument("--keys", help="the key directory (or a client's .key_secret file) for a "
                                   "tcp endpoint; default: the config's")
    st.add_argument("--wait-ready", action="store_true", help="wait until every shard is ready")
    st.add_argument("--timeout", type=float, default=30.0)
    st.set_defaults(fn=_cmd_status)

    sh = sub.add_parser("shard", help="shard processes")
    shsub = sh.add_subparsers(dest="shard_command", required=True)
    shs = shsub.add_parser("serve", help="run one shard of a cluster in the foreground, from the "
                                         "cluster's config (for a shard on its own host)")
    shs.add_argument("--config", required=True, help="the cluster's TOML config")
    shs.add_argument("--shard", type=int, required=True, help="which shard of the config to run")
    shs.add_argument("--data-dir", help="override the config's data directory")
    shs.add_argument("--durability", choices=("inmemory", "buffered", "strict"),
                     help="override the config's durability")
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
                    help="client keypairs to write (client-NAME); default: one, named client")
    kg.set_defaults(fn=_cmd_keys_generate)

    sub.add_parser("bench", help="run the benchmarks (see `inmem bench --help`)", add_help=False)

    w = sub.add_parser("wal", help="write-ahead log tools")
    wsub = w.add_subparsers(dest="wal_command", required=True)
    wi = wsub.add_parser("inspect", help="records, sizes, positions; exit 0 only when clean")
    wi.add_argument("dir", help="a WAL directory, or a store directory holding wal/")
    wi.set_defaults(fn=_cmd_wal)

    sn = sub.add_parser("snapshot", help="snapshot tools")
    snsub = sn.add_subparsers(dest="snapshot_command", required=True)
    sv = snsub.add_parser("verify", help="header, sections, counts and crc of a snapshot file")
    sv.add_argument("file")
    sv.set_defaults(fn=_cmd_snapshot)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":
        return _cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    return args.fn(args) or 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
