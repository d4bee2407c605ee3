"""The child process of the crash tests: opens a store, runs the workload, acknowledges.

    python crash_child.py DIR --mode strict|buffered [--ops N] [--threads T]
                          [--snapshot-every K] [--end close|abandon] [--pace-us P]

It opens DIR with tiny thresholds (segments of 4 KiB, a snapshot per 16 KiB
of WAL) so that segment rolls, snapshots and WAL deletions all happen within
a few hundred writes, then runs `workload` ops on T lanes (one thread each)
and writes one line to stdout after each event, with os.write so that a
line is out of the process the moment the op returns (Python's buffers die
with the process in a crash):

    ready                       the store is open and every lane's run exists
    ack LANE I                  op I of LANE returned: it is acknowledged
    snap POSITION               db.snapshot() succeeded
    snapfail                    db.snapshot() raised DurabilityError; serving goes on
    done                        every lane finished its ops
    closed | close_error MSG    after db.close() (--end close)

A crash comes from outside: a failpoint named in INMEM_FAILPOINT, or a
SIGKILL. With `--ops 0` the lanes run until they are killed. `--end
abandon` leaves without closing (os._exit), a crash at the very end.

Exit codes: 0 finished, 77 a failpoint fired (its default), 3 an
unexpected error (the traceback is on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_HERE))
for _p in (_ROOT, _HERE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import inmem  # noqa: E402
import workload  # noqa: E402

SEGMENT_BYTES_MAX = 4096
SNAPSHOT_WAL_BYTES = 16 * 1024


def say(line: str) -> None:
    data = (line + "\n").encode()
    # One write per line: concurrent lanes never interleave within a line.
    while data:
        data = data[os.write(1, data):]


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory")
    p.add_argument("--mode", choices=("buffered", "strict"), required=True)
    p.add_argument("--ops", type=int, default=400, help="ops per lane; 0 = until killed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--snapshot-every", type=int, default=90,
                   help="lane 0 calls db.snapshot() after every K ops; 0 = never")
    p.add_argument("--end", choices=("close", "abandon"), default="close")
    p.add_argument("--flush-interval-ms", type=float, default=5)
    p.add_argument("--max-pending-writes", type=int, default=16)
    p.add_argument("--pace-us", type=int, default=0,
                   help="sleep this long after each op, so a buffered flusher runs between ops")
    return p.parse_args(argv)


def lane_loop(db, lane: int, args, errors: list) -> None:
    try:
        run = workload.lane_run(lane)
        pace_s = args.pace_us / 1e6
        i = 0
        while args.ops == 0 or i < args.ops:
            workload.apply_op(db, run, i)
            say(f"ack {lane} {i}")
            i += 1
            if pace_s:
                time.sleep(pace_s)
            if lane == 0 and args.snapshot_every and i % args.snapshot_every == 0:
                try:
                    infos = db.snapshot()
                except inmem.DurabilityError as exc:
                    say("snapfail")
                    sys.stderr.write(f"snapshot failed: {exc}\n")
                else:
                    say(f"snap {infos[0].wal_position}")
    except BaseException:
        errors.append(traceback.format_exc())


def main(argv=None) -> int:
    args = parse(argv)
    db = inmem.open(args.directory, durability=args.mode,
                    segment_bytes_max=SEGMENT_BYTES_MAX,
                    snapshot_wal_bytes=SNAPSHOT_WAL_BYTES,
                    flush_interval_ms=args.flush_interval_ms,
                    max_pending_writes=args.max_pending_writes)
    for lane in range(args.threads):
        workload.begin(db, lane)
    say("ready")
    errors: list[str] = []
    threads = [threading.Thread(target=lane_loop, args=(db, lane, args, errors),
                                name=f"lane-{lane}") for lane in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.stderr.write("".join(errors))
        sys.stderr.flush()
        os._exit(3)
    say("done")
    if args.end == "abandon":
        os._exit(0)
    try:
        db.close()
    except inmem.DurabilityError as exc:
        say(f"close_error {exc}")
    else:
        say("closed")
    return 0


if __name__ == "__main__":
    try:
        code = main()
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    sys.stderr.flush()
    os._exit(code)
