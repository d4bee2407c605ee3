"""`python -m inmem.coordinator`: run a cluster's coordinator (and its local shards) in the foreground.

    python -m inmem.coordinator --config cluster.toml [--data-dir DIR] [--shards N] ...
    python -m inmem.coordinator --spec '<json>'        # a resolved spec (how inmem.Cluster starts it)

`inmem serve` is the same program with the same options.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m inmem.coordinator", description=__doc__.splitlines()[0])
    p.add_argument("--config")
    p.add_argument("--spec", help="a resolved cluster spec, as JSON")
    p.add_argument("--data-dir")
    p.add_argument("--shards", type=int)
    p.add_argument("--durability", choices=("inmemory", "buffered", "strict"))
    p.add_argument("--endpoint")
    p.add_argument("--watch-parent", action="store_true",
                   help="stop when the parent process dies (how inmem.Cluster starts it)")
    args = p.parse_args(argv)
    if args.watch_parent:
        from inmem.shard.worker import _die_with_parent
        from inmem.coordinator import server
        server.PARENT_PID = _die_with_parent()
    from inmem.cluster import serve_main
    if args.spec:
        from inmem.coordinator.server import run
        from inmem.cluster import line_printer
        return run(json.loads(args.spec), out=line_printer())
    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
