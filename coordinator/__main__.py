"""`python -m inmem.coordinator --spec JSON`: run a cluster's coordinator (and its local shards).

This is how `inmem.Cluster` and `inmem serve` start a coordinator: with a
resolved spec. From a config file, use `inmem serve --config FILE`.
"""

from __future__ import annotations

import argparse
import json
import sys


def print_line(line: str) -> None:
    print(line, flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m inmem.coordinator",
                                description=__doc__.splitlines()[0])
    p.add_argument("--spec", required=True, help="a resolved cluster spec, as JSON")
    p.add_argument("--watch-parent", action="store_true",
                   help="stop when the parent process dies (how inmem.Cluster starts it)")
    args = p.parse_args(argv)
    from inmem.coordinator import server
    if args.watch_parent:
        from inmem.processes import die_with_parent
        server.PARENT_PID = die_with_parent()
    return server.run(json.loads(args.spec), out=print_line)


if __name__ == "__main__":
    sys.exit(main())
