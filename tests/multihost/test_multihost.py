"""A cluster across hosts: Linux network namespaces joined by a bridge, Curve on every tcp hop.

The coordinator (and shard 0) runs in one namespace, shards 1 and 2 in two
others, started by hand as an operator would (`inmem shard serve`), and every
client in a fourth. Every loop here is bounded in count and in time.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from polling import wait_for

from .layout import ROOT, runs_on_shard

pytestmark = pytest.mark.timeout(300)


@pytest.mark.timeout(1000)
def test_the_api_suite_through_a_multihost_cluster(multihost):
    cluster = multihost(durability="inmemory", test_hooks=True)
    env = dict(cluster.env)
    env["INMEM_TEST_MULTIHOST"] = json.dumps({"url": cluster.url, "keys": cluster.keys})
    env["CI"] = "true"  # the bounded hypothesis profile
    r = cluster.net.run("client", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                   "-x", os.path.join(ROOT, "tests", "api")],
                        timeout=900, env=env)
    tail = r.stdout[-3000:]
    assert r.returncode == 0, tail + r.stderr[-2000:] + cluster.logs()
    summary = r.stdout.strip().splitlines()[-1]
    passed = int(summary.split(" passed")[0].split()[-1])
    assert passed >= 100 and "skipped" not in summary, summary


def test_clients_without_the_cluster_keys_are_refused_and_change_nothing(multihost, tmp_path):
    cluster = multihost(durability="strict")
    run = runs_on_shard(1, 1, "intrude")[0]
    probe = tmp_path / "probe.py"
    probe.write_text("import sys, json, inmem\n"
                     "a = json.loads(sys.argv[1])\n"
                     "db = inmem.connect(a['url'], timeout=30, keys=a['keys'])\n"
                     "if a['begin']:\n"
                     "    db.begin_run(run_id=a['run'])\n"
                     "print(json.dumps(db.kv.keys(a['run'])))\n")

    def keys_of_run(begin=False):
        r = cluster.net.run("client", [sys.executable, str(probe), json.dumps(
            {"url": cluster.url, "keys": cluster.keys, "run": run, "begin": begin})],
            timeout=60, env=cluster.env)
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)

    assert keys_of_run(begin=True) == []
    from inmem import keys as keyfiles
    stranger = tmp_path / "stranger"
    keyfiles.generate(stranger, 1)
    pub, sec = (k.decode() for k in keyfiles.keypair(stranger, "client"))
    coord = keyfiles.public_key(cluster.keys, "coordinator").decode()
    shard = keyfiles.public_key(cluster.keys, "shard-1").decode()
    for endpoint, server in ((cluster.url, coord), (cluster.shard_endpoint[1], shard)):
        for curve in (None, [pub, sec, server]):
            got = cluster.client("intrude", endpoint=endpoint, run=run, curve=curve, wait_ms=1500)
            assert got["replied"] is False, (endpoint, curve, got)
    # A whole client with a key the cluster does not list never gets ready.
    r = cluster.net.run("client", [sys.executable, "-c",
                                   "import sys, inmem\n"
                                   "try:\n"
                                   f"    inmem.connect({cluster.url!r}, timeout=2, keys={str(stranger)!r})\n"
                                   "except inmem.ClusterNotReady: sys.exit(7)\n"],
                        timeout=60, env=cluster.env)
    assert r.returncode == 7, r.stderr
    # No effect; and the same request from a listed client is answered and applied, so
    # this test can tell the two apart.
    assert keys_of_run() == []
    mine = [k.decode() for k in keyfiles.keypair(cluster.keys, "client")]
    # (A generous wait: it ends at the reply, and a loaded machine may take seconds to
    # finish the handshake and a strict write.)
    assert cluster.client("intrude", endpoint=cluster.url, run=run, curve=mine + [coord],
                          wait_ms=30_000) == {"replied": True, "sent": True}
    assert keys_of_run() == ["stolen"]


def _acks_on(path, runs) -> int:
    try:
        with open(path) as f:
            return sum(1 for line in f if line.split(" ", 1)[0] in runs)
    except FileNotFoundError:
        return 0


def _load(cluster, tmp_path, name, runs):
    acks, stop = tmp_path / f"{name}.acks", tmp_path / f"{name}.stop"
    proc = cluster.client_popen("load", f"{name}.log", runs=runs, acks=str(acks), stop=str(stop),
                                seconds=150, max_ops=200_000)
    return proc, acks, stop


def _finish_load(cluster, proc, stop) -> None:
    stop.write_text("stop")
    proc.wait(60)
    assert proc.returncode == 0, cluster.logs()


def test_kill_9_of_a_remote_shard_under_strict_load_loses_nothing_acknowledged(multihost,
                                                                               tmp_path):
    cluster = multihost(durability="strict")
    far = runs_on_shard(1, 4, "kill")
    near = runs_on_shard(0, 2, "kill") + runs_on_shard(2, 2, "kill")
    proc, acks, stop = _load(cluster, tmp_path, "kill", far + near)
    try:
        wait_for(lambda: _acks_on(acks, far) >= 200, 60, "acknowledged writes on the remote shard")
        cluster.kill_shard(1)  # SIGKILL, mid-load
        wait_for(lambda: cluster.shard_state(1) == "down", 30, "shard 1 marked down")
        before = _acks_on(acks, far)
        near_before = _acks_on(acks, near)
        wait_for(lambda: _acks_on(acks, near) > near_before + 20, 30,
                 "the other shards to keep serving while shard 1 is down")
        cluster.start_shard(1)
        wait_for(lambda: cluster.shard_state(1) == "ready", 60, "shard 1 back and ready")
        wait_for(lambda: _acks_on(acks, far) > before + 50, 60, "writes to shard 1 again")
    finally:
        _finish_load(cluster, proc, stop)
    got = cluster.client("check", acks=str(acks), timeout=120)
    assert got["checked"] > 300 and got["missing_count"] == 0, got
    status = cluster.status()
    assert status["ready"] and status["shards"][1]["remote"] is True


def test_a_partition_during_writes_then_healed(multihost, tmp_path):
    cluster = multihost(durability="strict")
    far = runs_on_shard(2, 4, "part")
    near = runs_on_shard(0, 2, "part") + runs_on_shard(1, 2, "part")
    proc, acks, stop = _load(cluster, tmp_path, "part", far + near)
    try:
        wait_for(lambda: _acks_on(acks, far) >= 100, 60, "acknowledged writes on shard 2")
        cluster.net.cut("s2")
        wait_for(lambda: cluster.shard_state(2) == "down", 30,
                 "the coordinator to mark the cut-off shard down")
        near_before = _acks_on(acks, near)
        wait_for(lambda: _acks_on(acks, near) > near_before + 20, 30,
                 "the shards on this side of the partition to keep serving")
        time.sleep(1.0)  # writes keep coming at the cut-off shard for a while
        before = _acks_on(acks, far)
        cluster.net.heal("s2")
        wait_for(lambda: cluster.shard_state(2) == "ready", 60, "shard 2 ready after the heal")
        wait_for(lambda: _acks_on(acks, far) > before + 50, 60, "writes to shard 2 again")
    finally:
        _finish_load(cluster, proc, stop)
    got = cluster.client("check", acks=str(acks), timeout=120)
    assert got["checked"] > 200 and got["missing_count"] == 0, got
