"""tcp endpoints that name a network interface (tcp://lo:7700, tcp://eth0:7700), as ZeroMQ
allows for a bind: the check for a port in use accepts them (it probes the interface's
address), and a cluster bound on one is reached at that address."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

import inmem
from inmem.cli import main
from inmem.coordinator import config
from inmem.processes import child_env

from polling import wait_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_loopback_interface_is_a_bindable_host():
    port = _free_port()
    assert config._tcp_bind_problem(f"tcp://lo:{port}") is None
    assert config.connect_endpoint(f"tcp://lo:{port}") == f"tcp://127.0.0.1:{port}"


def test_a_port_in_use_on_the_interface_is_still_refused():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        why = config._tcp_bind_problem(f"tcp://lo:{port}")
    assert why is not None and f"port {port} is in use" in why


def test_what_names_no_interface_is_left_as_it_is():
    assert config.connect_endpoint("tcp://127.0.0.1:7700") == "tcp://127.0.0.1:7700"
    assert config.connect_endpoint("tcp://no-such-interface-x:7700") == \
        "tcp://no-such-interface-x:7700"
    assert config.connect_endpoint("ipc:///run/x.sock") == "ipc:///run/x.sock"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_inmem_serve_on_the_loopback_interface_starts_and_answers(tmp_path, capsys):
    port, shard_port = _free_port(), _free_port()
    conf = tmp_path / "lo.toml"
    conf.write_text(f'[cluster]\ndata_dir = "{tmp_path}/data"\n'
                    f'endpoint = "tcp://lo:{port}"\ninsecure = true\nshards = 1\n'
                    f'[[shard]]\nid = 0\nendpoint = "tcp://lo:{shard_port}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "inmem", "serve", "--config", str(conf)],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready:"):
                break
        assert any(l.startswith("ready:") for l in lines), "".join(lines)
        assert main(["status", "--endpoint", f"tcp://127.0.0.1:{port}", "--timeout", "20"]) == 0
        assert "ready" in capsys.readouterr().out
        assert main(["status", "--endpoint", f"tcp://lo:{port}", "--timeout", "20"]) == 0
        assert f"tcp://127.0.0.1:{port}: ready" in capsys.readouterr().out
        # The shard, bound on the interface too, is reached at its address, directly as well.
        with inmem.connect(f"tcp://127.0.0.1:{port}", timeout=20) as db:
            run = db.begin_run()
            assert db.kv.put(run, "k", 1) == 1 and db.kv.get(run, "k") == 1
            assert db._backend.shard_endpoints == [f"tcp://127.0.0.1:{shard_port}"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cluster_on_the_loopback_interface_is_reached_at_its_address(tmp_path):
    port = _free_port()
    with inmem.Cluster(data_dir=tmp_path / "data", shards=1, durability="inmemory",
                       endpoint=f"tcp://lo:{port}", insecure=True, ready_timeout=30) as cl:
        assert cl.endpoint == f"tcp://127.0.0.1:{port}"
        with cl.connect() as db:
            run = db.begin_run()
            assert db.kv.put(run, "k", 1) == 1
            assert db.kv.get(run, "k") == 1
