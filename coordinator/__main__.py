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
    from inmem.errors import InmemError, StoreOpenError
    from inmem.files import describe_os_error
    from inmem.processes import write_coordinator_note
    if args.watch_parent:
        from inmem.processes import die_with_parent
        server.PARENT_PID = die_with_parent()
    spec = json.loads(args.spec)
    try:
        return server.run(spec, out=print_line)
    except (InmemError, OSError) as exc:
        if not isinstance(exc, InmemError):  # its data directory's files
            exc = StoreOpenError(describe_os_error(exc), path=exc.filename)
        # One line in the log, and a note that inmem.Cluster raises from.
        print_line(f"cannot serve: {type(exc).__name__}: {exc}")
        write_coordinator_note(spec["data_dir"], exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
