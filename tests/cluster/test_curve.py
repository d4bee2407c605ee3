"""CurveZMQ on tcp endpoints, on one host: the keys command, refusals, admitted and refused peers.

The same cluster across network namespaces (other hosts) is in tests/multihost.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import subprocess
import sys

import msgpack
import psutil
import pytest
import zmq
import zmq.utils.z85

import inmem
from inmem import keys as keyfiles
from inmem import protocol
from inmem.coordinator import config
from inmem.processes import child_env

from .conftest import runs_on_each_shard, wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "inmem", *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# -- the keys command --------------------------------------------------------------------

def test_keys_generate_writes_private_pairs_and_keeps_existing_ones(tmp_path):
    d = tmp_path / "keys"
    r = _cli("keys", "generate", str(d), "--shards", "2")
    assert r.returncode == 0, r.stderr
    names = ["coordinator", "shard-0", "shard-1", "client"]
    assert sorted(os.listdir(d)) == sorted(n + s for n in names for s in (".key", ".key_secret"))
    assert _mode(d) == 0o700
    assert all(_mode(d / f) == 0o600 for f in os.listdir(d))
    pub, sec = keyfiles.keypair(d, "shard-1")
    assert zmq.curve_public(sec) == pub  # a real Curve keypair
    assert keyfiles.public_key(d, "shard-1") == pub
    before = {f: (d / f).read_bytes() for f in os.listdir(d)}
    r = _cli("keys", "generate", str(d), "--shards", "3", "--clients", "alice")
    assert r.returncode == 0, r.stderr
    assert "shard-2: written" in r.stdout and "shard-0: kept" in r.stdout
    assert all((d / f).read_bytes() == data for f, data in before.items())
    assert (d / "client-alice.key_secret").exists() and (d / "shard-2.key").exists()
    assert len(keyfiles.admitted_keys(d)) == 6


@pytest.mark.parametrize("damage", ["garbage secret", "open secret", "mismatched pair",
                                    "garbage public"])
def test_keys_generate_does_not_call_a_pair_it_cannot_use_kept(tmp_path, damage):
    # A pair already there was reported "kept" whatever it held: a damaged or world-readable
    # secret, or a .key that is not the secret's public half, all of which the cluster
    # refuses (or admits the wrong party with) at its start, after generate said all was well.
    d = tmp_path / "keys"
    assert _cli("keys", "generate", str(d), "--shards", "1").returncode == 0
    secret, public = d / "shard-0.key_secret", d / "shard-0.key"
    if damage == "garbage secret":
        secret.write_text("garbage\n")
    elif damage == "open secret":
        os.chmod(secret, 0o644)
    elif damage == "mismatched pair":
        public.write_bytes((d / "client.key").read_bytes())
    else:
        public.write_text("garbage\n")
    before = {f: (d / f).read_bytes() for f in os.listdir(d)}
    r = _cli("keys", "generate", str(d), "--shards", "2")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "shard-0" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "remove" in r.stderr or "chmod" in r.stderr, r.stderr
    assert {f: (d / f).read_bytes() for f in os.listdir(d)} == before  # nothing changed


def test_keys_generate_for_named_clients_writes_the_default_client_too(tmp_path):
    # With only client-alice written, inmem.Cluster on the directory could not start
    # (its own admin client has the default pair) and connect(keys=DIR) failed.
    d = tmp_path / "keys"
    r = _cli("keys", "generate", str(d), "--shards", "1", "--clients", "alice")
    assert r.returncode == 0, r.stderr
    names = ["coordinator", "shard-0", "client", "client-alice"]
    assert sorted(os.listdir(d)) == sorted(n + s for n in names for s in (".key", ".key_secret"))


@pytest.mark.parametrize("args", [["--shards", "0"], ["--shards", "1", "--clients", ""],
                                  ["--shards", "1", "--clients", "x" * 300],
                                  ["--shards", "1", "--clients", "a/b"]])
def test_keys_generate_refused_leaves_nothing_behind(tmp_path, args):
    # A refused call made the directory all the same; '' wrote client-.key; a long
    # name ended in a raw "[Errno 36] File name too long".
    d = tmp_path / "keys"
    r = _cli("keys", "generate", str(d), *args)
    assert r.returncode == 2 and "inmem keys generate:" in r.stderr and "Errno" not in r.stderr
    assert not d.exists()


def test_keys_generate_needs_a_shard_count_and_takes_it_from_a_config(tmp_path):
    assert _cli("keys", "generate", str(tmp_path / "k")).returncode == 2
    cfg = tmp_path / "c.toml"
    cfg.write_text("[cluster]\nshards = 3\n")
    r = _cli("keys", "generate", str(tmp_path / "k"), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k" / "shard-2.key_secret").exists()


def test_a_secret_key_others_may_read_is_refused(tmp_path):
    keyfiles.generate(tmp_path / "k", 1)
    os.chmod(tmp_path / "k" / "shard-0.key_secret", 0o644)
    with pytest.raises(keyfiles.KeyFileError, match="chmod 600"):
        keyfiles.keypair(tmp_path / "k", "shard-0")
    with pytest.raises(keyfiles.KeyFileError, match="no key file"):
        keyfiles.keypair(tmp_path / "k", "shard-7")


def test_client_keys_option_is_checked(tmp_path):
    with pytest.raises(inmem.InvalidOption, match="keys"):
        inmem.connect("tcp://127.0.0.1:1", keys=5)
    with pytest.raises(keyfiles.KeyFileError, match="no key file"):
        inmem.connect("tcp://127.0.0.1:1", keys=str(tmp_path))


# -- refusing to serve tcp in the clear ----------------------------------------------------

def test_a_tcp_endpoint_without_keys_is_refused_unless_insecure(tmp_path):
    ep = "tcp://127.0.0.1:7700"
    with pytest.raises(config.ConfigError, match="insecure = true"):
        config.load(None, data_dir=str(tmp_path), shards=1, endpoint=ep)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[cluster]\nshards = 2\n[[shard]]\nid = 0\n[[shard]]\nid = 1\n'
                   'endpoint = "tcp://127.0.0.1:7711"\nremote = true\n')
    with pytest.raises(config.ConfigError, match="keys generate"):
        config.load(cfg)
    r = _cli("shard", "serve", "--config", str(cfg), "--shard", "1")
    assert r.returncode == 2 and "insecure = true" in r.stderr
    assert config.load(None, data_dir=str(tmp_path), shards=1, endpoint=ep,
                       insecure=True)["insecure"] is True
    spec = config.load(None, data_dir=str(tmp_path), shards=1, endpoint=ep, keys="k")
    assert spec["keys"] == os.path.abspath("k")
    # ipc needs neither
    assert config.load(None, data_dir=str(tmp_path), shards=1)["keys"] is None


def test_an_insecure_tcp_cluster_serves_and_warns_at_start(make_cluster):
    ep = f"tcp://127.0.0.1:{_free_port()}"
    cluster = make_cluster(shards=1, durability="inmemory", endpoint=ep, insecure=True)
    with cluster.connect() as db:
        run = db.begin_run()
        db.kv.put(run, "k", 1)
    log = open(os.path.join(cluster.data_dir, "coordinator.log")).read()
    assert "WARNING" in log and "WITHOUT authentication or encryption" in log


def test_the_coordinator_refuses_to_start_with_keys_missing_from_the_directory(make_cluster,
                                                                              tmp_path):
    keyfiles.generate(tmp_path / "keys", 1)
    os.unlink(tmp_path / "keys" / "coordinator.key_secret")
    ep = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(inmem.ClusterNotReady, match="coordinator.key_secret"):
        make_cluster(shards=1, durability="inmemory", endpoint=ep, keys=str(tmp_path / "keys"),
                     ready_timeout=20)


# -- a Curve cluster on loopback --------------------------------------------------------------

def _remote_config(tmp_path, port, keys_dir, shards=2) -> str:
    cfg = tmp_path / "curve.toml"
    cfg.write_text(f"""
[cluster]
data_dir = "{tmp_path / 'data'}"
shards = {shards}
endpoint = "tcp://127.0.0.1:{_free_port()}"
keys = "{keys_dir}"
[durability]
mode = "strict"
[supervisor]
heartbeat_interval_s = 0.1
heartbeat_timeout_s = 0.8
[[shard]]
id = 0
[[shard]]
id = 1
endpoint = "tcp://localhost:{port}"
remote = true
""")
    return str(cfg)


def _remote_setup(tmp_path) -> tuple:
    """(key directory, the remote shard's port, config) of a 2-shard Curve cluster."""
    keys_dir = tmp_path / "keys"
    keyfiles.generate(keys_dir, 2)
    port = _free_port()
    return keys_dir, port, _remote_config(tmp_path, port, keys_dir)


def _start_remote_shard(cfg: str) -> subprocess.Popen:
    """Shard 1 of the config, started by hand as on its own host."""
    return subprocess.Popen([sys.executable, "-m", "inmem", "shard", "serve", "--config", cfg,
                             "--shard", "1"], env=child_env(), start_new_session=True,
                            stdin=subprocess.DEVNULL)


def _intruder_put(endpoint: str, run: str, curve=None, wait_ms: int = 1500):
    """Send one well-formed kv.put, as a client without the cluster's keys; the reply or None."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            keyfiles.client(sock, *curve)
        sock.connect(endpoint)
        body = msgpack.packb(["kv.put", [run, "stolen", "x"]])
        sock.send_multipart([protocol.header(protocol.KIND_OP, protocol.slot_of(run), 1), body])
        if sock.poll(wait_ms):
            return sock.recv_multipart()
        return None
    finally:
        ctx.destroy(0)


@pytest.mark.timeout(120)
def test_a_curve_cluster_with_a_remote_shard_admits_only_its_keys(make_cluster, tmp_path):
    keys_dir, port, cfg = _remote_setup(tmp_path)
    remote = _start_remote_shard(cfg)
    try:
        cluster = make_cluster(config=cfg, data_dir=tmp_path / "data")
        ids = {}
        with cluster.connect(keys=str(keys_dir)) as db:
            ids = runs_on_each_shard(db, 2, prefix="curve")
            for shard in (0, 1):
                db.begin_run(run_id=ids[shard][0])
                assert db.kv.put(ids[shard][0], "k", shard) == 1
            # Shard 1 straight over tcp; shard 0, on an ipc socket beside the coordinator,
            # through the coordinator (a client over tcp may be on another host).
            st = db._backend._local.state
            assert st.shards[0] is st.coord and st.shards[1].sock is not st.coord.sock
        with inmem.connect(cluster.endpoint, keys=str(keys_dir), direct=False) as db:
            assert db.kv.get(ids[1][0], "k") == 1

        async def through_asyncio():
            import inmem.asyncio
            db = await inmem.asyncio.connect(cluster.endpoint, keys=str(keys_dir))
            try:
                assert await db.kv.get(ids[0][0], "k") == 0
                assert await db.kv.put(ids[1][0], "k", 1) == 2
                backend = db._backend
                # The same routing: shard 0 through the coordinator, shard 1 over tcp.
                assert backend._shards[0] is backend._coord
                assert backend._shards[1] is not backend._coord
            finally:
                await db.close()
        asyncio.run(through_asyncio())
        # The shard binds the address it was given (localhost), not every interface.
        listening = [c.laddr for c in psutil.Process(remote.pid).net_connections()
                     if c.status == "LISTEN"]
        assert listening and all(a.ip in ("127.0.0.1", "::1") for a in listening), listening

        stranger = tmp_path / "stranger"
        keyfiles.generate(stranger, 1)
        spub, ssec = keyfiles.keypair(stranger, "client")
        coord_pub = keyfiles.public_key(keys_dir, "coordinator")
        shard_pub = keyfiles.public_key(keys_dir, "shard-1")
        far = ids[1][0]
        # No keys, then a key the cluster does not list: no reply, on the coordinator and
        # straight at the shard alike.
        assert _intruder_put(cluster.endpoint, far) is None
        assert _intruder_put(cluster.endpoint, far, (spub, ssec, coord_pub)) is None
        assert _intruder_put(f"tcp://localhost:{port}", far) is None
        assert _intruder_put(f"tcp://localhost:{port}", far, (spub, ssec, shard_pub)) is None
        with pytest.raises(inmem.ClusterNotReady):
            inmem.connect(cluster.endpoint, timeout=1.0, keys=str(stranger))
        # ... and no effect.
        with cluster.connect() as db:
            assert db.kv.get(far, "stolen") is None
            assert db.kv.keys(far) == ["k"]
        # The admitted client's raw put does get an answer (the intruder check can fail).
        cpub, csec = keyfiles.keypair(keys_dir, "client")
        assert _intruder_put(cluster.endpoint, far, (cpub, csec, coord_pub)) is not None

        # The remote shard killed: marked down, then ready once it is back.
        remote.kill()
        remote.wait(10)
        wait_for(lambda: cluster.status()["shards"][1]["state"] == "down", 20,
                 "the silent remote shard to be marked down")
        r = _cli("status", "--config", cfg)
        assert r.returncode == 1 and "shard 1: down" in r.stdout and "remote" in r.stdout
        remote = _start_remote_shard(cfg)
        wait_for(lambda: cluster.status()["shards"][1]["state"] == "ready", 30,
                 "the remote shard to be back")
        r = _cli("status", "--config", cfg)
        assert r.returncode == 0 and "shard 1: ready" in r.stdout, r.stdout + r.stderr
        with cluster.connect() as db:
            assert db.kv.get(far, "k") == 1
    finally:
        remote.kill()
        remote.wait(10)


def test_server_keys_refuse_an_unlisted_client_at_the_socket(tmp_path):
    """The ZAP handler alone: a listed key gets a reply, an unlisted one nothing."""
    keyfiles.generate(tmp_path / "k", 1)
    keyfiles.generate(tmp_path / "other", 1)
    logging.getLogger("zmq.auth").setLevel(logging.CRITICAL)
    ctx = zmq.Context()
    server = keyfiles.ServerKeys(tmp_path / "k", "shard-0")
    server.start(ctx)
    try:
        from inmem.transport import bind_router
        router = bind_router(ctx, "tcp://127.0.0.1:0", 1 << 20, server)
        ep = router.getsockopt_string(zmq.LAST_ENDPOINT)

        def ask(pair):
            d = ctx.socket(zmq.DEALER)
            d.setsockopt(zmq.LINGER, 0)
            keyfiles.client(d, *pair, server.public)
            d.connect(ep)
            d.send(b"hi")
            got = router.poll(700)
            if got:
                ident, msg = router.recv_multipart()
                router.send_multipart([ident, msg])
            answered = d.poll(700)
            d.close(0)
            return bool(got and answered)

        assert ask(keyfiles.keypair(tmp_path / "k", "client"))
        assert not ask(keyfiles.keypair(tmp_path / "other", "client"))
        router.close(0)
    finally:
        server.stop()
        ctx.destroy(0)


def test_the_zap_handler_answers_every_request_and_admits_only_listed_curve_keys(tmp_path):
    keyfiles.generate(tmp_path / "k", 1)
    admitted = keyfiles.admitted_keys(tmp_path / "k")
    ctx = zmq.Context()
    try:
        handler = keyfiles._ZapHandler(ctx, admitted)
        pub = zmq.utils.z85.decode(keyfiles.public_key(tmp_path / "k", "client"))
        stranger = zmq.utils.z85.decode(zmq.curve_keypair()[0])
        head = [b"1.0", b"7", b"inmem", b"10.0.0.9", b""]
        assert handler.answer(head + [b"CURVE", pub])[2] == b"200"
        for bad in (head + [b"CURVE", stranger], head + [b"NULL"], head + [b"PLAIN", b"u", b"p"],
                    head + [b"CURVE", b"short"], [b"2.0"] + head[1:] + [b"CURVE", pub], [], [b"x"]):
            assert handler.answer(bad)[2] == b"400", bad
    finally:
        ctx.destroy(0)


def test_demo_connects_to_a_curve_cluster_with_the_configs_keys_or_its_own(make_cluster,
                                                                          tmp_path):
    keyfiles.generate(tmp_path / "keys", 1)
    ep = f"tcp://127.0.0.1:{_free_port()}"
    make_cluster(shards=1, durability="inmemory", endpoint=ep, keys=str(tmp_path / "keys"))
    config = tmp_path / "c.toml"
    config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/unused"\nendpoint = "{ep}"\n'
                      f'keys = "{tmp_path}/keys"\n')
    for args in (["--config", str(config)], ["--keys", str(tmp_path / "keys")]):
        done = _cli("demo", "--connect", ep, "--timeout", "20", *args)
        assert done.returncode == 0, done.stderr
        assert "ended run: completed" in done.stdout
    without = _cli("demo", "--connect", ep, "--timeout", "2")
    assert without.returncode == 2 and "keys" in without.stderr


def _forged_hello(endpoint: str, curve, routing_id: bytes | None = None):
    """An admin hello giving every slot to shard 0, sent straight to a shard; its reply or None."""
    ctx = zmq.Context()
    try:
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id)
        keyfiles.client(sock, *curve)
        sock.connect(endpoint)
        body = msgpack.packb(["hello", [b"\x00\x00" * protocol.SLOT_COUNT]], use_bin_type=True)
        sock.send_multipart([protocol.header(protocol.KIND_ADMIN, 0, 1), body])
        if sock.poll(1500):
            return protocol.unpack_reply(sock.recv_multipart()[1])
        return None
    finally:
        ctx.destroy(0)


@pytest.mark.timeout(120)
def test_a_remote_shard_takes_its_slot_map_from_the_coordinator_only(make_cluster, tmp_path):
    keys_dir, port, cfg = _remote_setup(tmp_path)
    remote = _start_remote_shard(cfg)
    try:
        cluster = make_cluster(config=cfg, data_dir=tmp_path / "data")
        with cluster.connect(keys=str(keys_dir)) as db:
            far = runs_on_each_shard(db, 2, prefix="hello")[1][0]
            db.begin_run(run_id=far)
            db.kv.put(far, "k", 1)
        shard = f"tcp://localhost:{port}"
        client = (*keyfiles.keypair(keys_dir, "client"), keyfiles.public_key(keys_dir, "shard-1"))
        # An admitted client key: its map is refused, whatever routing id it gives.
        for routing_id in (None, b"coordinator", b"\x00\x01\x02\x03\x04"):
            got = _forged_hello(shard, client, routing_id)
            assert isinstance(got, inmem.ProtocolError) and "coordinator" in str(got), got
        for options in ({}, {"direct": False}):
            with cluster.connect(keys=str(keys_dir), **options) as db:
                assert db.kv.get(far, "k") == 1
        # A coordinator started again finds the remote shard and sets its map as before.
        cluster.stop()
        cluster.start()
        for options in ({}, {"direct": False}):
            with cluster.connect(keys=str(keys_dir), **options) as db:
                assert db.kv.get(far, "k") == 1
    finally:
        remote.kill()
        remote.wait(10)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["shard-0.key_secret", "client.key"])
def test_a_fifo_for_a_key_file_is_refused_not_waited_on(tmp_path, name):
    # A blocking open of a FIFO waits for a writer for good, deaf to SIGTERM and Ctrl-C:
    # `inmem serve` hung at start, connect(keys=FIFO) past its timeout.
    d = tmp_path / "keys"
    assert _cli("keys", "generate", str(d), "--shards", "1").returncode == 0
    os.unlink(d / name)
    os.mkfifo(d / name, 0o600)
    with pytest.raises(keyfiles.KeyFileError, match="is a FIFO, not a regular file"):
        if name.endswith("_secret"):
            keyfiles.keypair(d, name[:-len(".key_secret")])
        else:
            keyfiles.public_key(d, name[:-len(".key")])


def test_key_file_errors_end_a_start_at_once():
    from inmem.processes import lasting_failure
    assert lasting_failure(keyfiles.KeyFileError("the secret key K has mode 0644")) is True
