"""The client side of the multi-host tests, run on the client host (`python driver.py CMD JSON`).

Commands print one JSON line:

    ready    {url, keys, timeout}                   the status once every shard is ready
    status   {url, keys}                            the coordinator's status, ready or not
    load     {url, keys, runs, acks, stop, seconds, max_ops}
             begin `runs`, then strict puts round-robin over them until the `stop` file exists (or
             `seconds`, or `max_ops`); every acknowledged put is appended to
             `acks` as "run key value" and flushed before the next is sent
    check    {url, keys, acks}                      every acknowledged put is there
    intrude  {endpoint, run, curve: [pub, sec, server] or null, wait_ms}
             one raw, well-formed kv.put with no keys or with keys the cluster
             does not list; whether it could be sent and any reply came
"""

from __future__ import annotations

import json
import os
import sys
import time

import inmem


def ready(a):
    db = inmem.connect(a["url"], timeout=a["timeout"], keys=a["keys"])
    try:
        return db._backend.status()
    finally:
        db.close()


def status(a):
    from inmem.client import ClusterBackend
    backend = ClusterBackend(a["url"], timeout=a.get("timeout", 5.0), keys=a["keys"])
    try:
        return backend.cluster("status")
    finally:
        backend.close()


def load(a):
    db = inmem.connect(a["url"], timeout=30, keys=a["keys"], request_timeout=2.0)
    acked = failed = 0
    deadline = time.monotonic() + a["seconds"]
    runs = a["runs"]
    for run in runs:
        try:
            db.begin_run(run_id=run)
        except inmem.RunExists:
            pass
    with open(a["acks"], "a", buffering=1) as out:
        for i in range(a["max_ops"]):
            if time.monotonic() > deadline or os.path.exists(a["stop"]):
                break
            run = runs[i % len(runs)]
            try:
                db.kv.put(run, f"k{i}", i)
            except inmem.InmemError:
                failed += 1  # not acknowledged: may or may not be there
                time.sleep(0.01)
                continue
            out.write(f"{run} k{i} {i}\n")
            acked += 1
    db.close()
    return {"acked": acked, "failed": failed}


def check(a):
    db = inmem.connect(a["url"], timeout=30, keys=a["keys"], request_timeout=10.0)
    missing = []
    checked = 0
    with open(a["acks"]) as f:
        for line in f:
            run, key, value = line.split()
            checked += 1
            if db.kv.get(run, key) != int(value):
                missing.append(line.strip())
    db.close()
    return {"checked": checked, "missing": missing[:20], "missing_count": len(missing)}


def intrude(a):
    import msgpack
    import zmq

    from inmem import keys as keyfiles
    from inmem import protocol
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if a["curve"]:
            keyfiles.client(sock, *(k.encode() for k in a["curve"]))
        sock.connect(a["endpoint"])
        run = a["run"]
        # A DEALER's send blocks while it has no peer to queue for, which a server
        # that refuses its handshake can leave it without (an intruder hung here for
        # its whole 60 s once): a request that cannot even leave was not answered.
        sock.setsockopt(zmq.SNDTIMEO, a["wait_ms"])
        try:
            sock.send_multipart([protocol.header(protocol.KIND_OP, protocol.slot_of(run), 1),
                                 msgpack.packb(["kv.put", [run, "stolen", "x"]])])
        except zmq.Again:
            return {"replied": False, "sent": False}
        return {"replied": bool(sock.poll(a["wait_ms"])), "sent": True}
    finally:
        ctx.destroy(0)


if __name__ == "__main__":
    command, args = sys.argv[1], json.loads(sys.argv[2])
    print(json.dumps({"ready": ready, "status": status, "load": load, "check": check,
                      "intrude": intrude}[command](args)), flush=True)
