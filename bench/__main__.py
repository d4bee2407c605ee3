"""The benchmark command: `inmem bench [options]` (= `python -m inmem.bench`), plus the
subcommands `compare OLD NEW`, `markdown RESULTS` and `plot RESULTS [DIR]`.

Runs the chosen tiers in order, prints progress on stderr, writes
DIR/results.json after every tier (so an interrupted run keeps what it
measured), prints the table, and draws the plots. Never run under pytest:
timings there are meaningless.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import shutil
import sys
import time
from pathlib import Path

from . import machine, report
from .context import Context, error_row, fmt_count, scaled_sizes
from .peers import ALL_PEERS, Peers

TIERS = ("micro", "durability", "recovery", "memory", "concurrency", "cluster", "scenarios",
         "replay", "langgraph")
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="inmem bench",
        description="Benchmark inmem side by side with Redis, SQLite and LMDB. "
                    "Also: `inmem bench compare OLD.json NEW.json` flags regressions; "
                    "`inmem bench markdown results.json` prints a markdown table; "
                    "`inmem bench plot results.json [DIR]` redraws the plots.")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes: the whole run takes under 5 minutes on 2 cores")
    p.add_argument("--tier", nargs="+", action="extend", choices=TIERS, metavar="NAME",
                   help=f"tiers to run (default: all): {', '.join(TIERS)}")
    p.add_argument("--peers", default=",".join(ALL_PEERS),
                   help="comma-separated peers to run beside us, or 'none' "
                        f"(default: {','.join(ALL_PEERS)})")
    p.add_argument("--out", help="output directory (default: bench/results/<UTC date>-<commit>/)")
    p.add_argument("--name", help="name of this run: the results directory under "
                                  "bench/results/ when --out is not given; recorded in the file")
    p.add_argument("--size-scale", type=float, default=1.0, metavar="X",
                   help="multiply every size by X (e.g. 0.001 for a smoke run)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes, no plots: checks that every code path runs (= --quick "
                        "--size-scale 0.001 --no-plots)")
    p.add_argument("--no-install", action="store_true",
                   help="do not pip/apt-install missing peers or plotting packages")
    p.add_argument("--no-plots", action="store_true", help="do not draw PNG plots")
    p.add_argument("--no-table", action="store_true", help="do not print the table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def parse_peers(text: str) -> tuple[str, ...]:
    text = text.strip()
    if text in ("", "none"):
        return ()
    peers = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in peers if p not in ALL_PEERS]
    if bad:
        raise SystemExit(f"unknown peer(s) {', '.join(bad)}; choose from {', '.join(ALL_PEERS)}")
    return peers


def default_out_dir(name: str | None) -> Path:
    if name:
        return RESULTS_DIR / name
    stem = f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d}-{machine.short_commit()}"
    out = RESULTS_DIR / stem
    k = 2
    while (out / "results.json").exists():
        out = RESULTS_DIR / f"{stem}-{k}"
        k += 1
    return out


def sizes_text(sizes: dict, quick: bool, scale: float) -> str:
    def f(k):
        v = sizes[k]
        return "/".join(fmt_count(x) for x in v) if isinstance(v, list) else fmt_count(v)

    kind = "quick" if quick else "full"
    if scale != 1.0:
        kind += f" x{scale:g}"
    return (f"{kind}: {sizes['repeats']} repeats; micro {f('micro_ops')} ops "
            f"({f('micro_slow_ops')} for events/state/traces/json/tx, {f('micro_big_ops')} "
            f"for 64 KiB); buffered put {f('buffered_ops')}, strict put "
            f"{sizes['strict_rounds']} interleaved rounds of {f('strict_ops')}, "
            f"group commit {f('group_ops_total')} in all; recovery {f('recovery_keys')} "
            f"keys, WAL replay {f('wal_records')} records (16 B keys, 100 B values); memory "
            f"{f('memory_keys')} keys; concurrency {f('concurrency_ops_per_thread')}/thread; "
            f"scenarios {f('scenario_steps')} steps, replay {f('replay_events')} events; "
            f"cluster {f('cluster_rounds')} interleaved rounds of {f('cluster_single_ops')} "
            f"single, {f('cluster_batched_ops')} batched, "
            f"{f('cluster_strict_ops_per_client')}/client with 8 clients")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        return report.compare_main(argv[1:])
    if argv and argv[0] == "markdown":
        return report.markdown_main(argv[1:])
    if argv and argv[0] == "plot":
        from . import plots
        return plots.main(argv[1:])
    if _under_pytest_timing(argv):
        print("inmem bench: refusing to time under pytest; use --smoke there", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.quick, args.no_plots = True, True
        if args.size_scale == 1.0:
            args.size_scale = 0.001
    if args.size_scale <= 0:
        raise SystemExit("--size-scale must be positive")
    tiers = [t for t in TIERS if t in (args.tier or TIERS)]
    peers = parse_peers(args.peers)
    out = Path(args.out) if args.out else default_out_dir(args.name)
    out.mkdir(parents=True, exist_ok=True)
    scratch = out / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()

    sizes = scaled_sizes(args.quick, args.size_scale)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    doc = {
        "schema": report.SCHEMA_VERSION,
        "name": args.name or out.name,
        "machine": machine.machine_info(out),
        "commit": machine.commit(),
        "started": started,
        "finished": None,
        "config": {"quick": args.quick, "tiers": tiers, "peers": list(peers),
                   "size_scale": args.size_scale, "sizes": sizes,
                   "sizes_text": sizes_text(sizes, args.quick, args.size_scale),
                   "units": "value in `unit`; p50/p99 in microseconds; ratio = ours/theirs"},
        "results": [],
    }
    ctx = Context(quick=args.quick, sizes=sizes,
                  peers=Peers(peers, install=not args.no_install, scratch_dir=str(scratch)),
                  scratch_dir=str(scratch), progress=not args.quiet,
                  ran_on=machine.ran_on(doc["machine"], doc["commit"]))
    ctx.log(f"writing {out / 'results.json'}")
    ctx.log(f"sizes: {doc['config']['sizes_text']}")
    t_start = time.monotonic()
    interrupted = False
    try:
        for tier in tiers:
            ctx.log(f"tier {tier} ...")
            t0 = time.monotonic()
            try:
                module = importlib.import_module(f"inmem.bench.tiers.{tier}")
                module.run(ctx)
            except KeyboardInterrupt:
                interrupted = True
                raise
            except Exception as exc:  # a broken tier is reported; the others still run
                ctx.add(error_row(f"{tier}.tier", tier, None, "ops/s", exc))
            finally:
                ctx.peers.close()
                doc["results"] = ctx.rows
                report.write_json(str(out / "results.json"), doc)
            ctx.log(f"tier {tier} done in {time.monotonic() - t0:.1f} s")
    except KeyboardInterrupt:
        ctx.log("interrupted: the results so far are saved")
    finally:
        ctx.peers.close()
        shutil.rmtree(scratch, ignore_errors=True)
    doc["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    doc["seconds"] = round(time.monotonic() - t_start, 1)
    doc["results"] = ctx.rows
    report.write_json(str(out / "results.json"), doc)
    if not args.no_table:
        report.print_table(doc)
    if not args.no_plots:
        from . import plots
        for line in plots.draw(doc, str(out), install=not args.no_install):
            ctx.log(line)
    errors = [r for r in ctx.rows if str(r.get("status", "")).startswith("error")]
    print(f"results: {out / 'results.json'} ({len(ctx.rows)} rows, {len(errors)} errors, "
          f"{doc['seconds']} s)")
    if interrupted:
        return 130
    return 1 if errors else 0


def _under_pytest_timing(argv) -> bool:
    # The smoke test may run the code paths at tiny sizes; real runs inside
    # pytest would produce numbers nobody should read.
    if "PYTEST_CURRENT_TEST" not in os.environ:
        return False
    return not ("--smoke" in argv or "--size-scale" in argv)


if __name__ == "__main__":
    sys.exit(main())
