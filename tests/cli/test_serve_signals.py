"""`inmem serve` and the signals an operator's terminal sends it: a hangup is a clean stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import inmem
from inmem.coordinator.config import load
from inmem.processes import child_env


def _serve(data, *args) -> subprocess.Popen:
    # A session of its own: its process group stands for the terminal's foreground group.
    return subprocess.Popen([sys.executable, "-m", "inmem", "serve", "--data-dir", str(data),
                             *args], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _until_ready(proc: subprocess.Popen) -> list[str]:
    lines = []
    deadline = time.monotonic() + 60  # a hang detector only
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line, f"serve ended before it was ready: {lines}"
        lines.append(line)
        if line.startswith("ready:"):
            return lines
    raise AssertionError(f"serve not ready: {lines}")


def test_a_hangup_of_the_terminal_stops_the_cluster_cleanly(tmp_path):
    data = tmp_path / "data"
    proc = _serve(data, "--shards", "1")
    try:
        _until_ready(proc)
        endpoint = load(None, data_dir=str(data))["client_endpoint"]
        with inmem.connect(endpoint, timeout=30) as db:
            shard_pid = db.info()["shards"][0]["pid"]
            run = db.begin_run(run_id="r")
            db.kv.put(run, "k", "acknowledged")
        # The terminal closes: the kernel hangs up its whole foreground process group.
        os.killpg(proc.pid, signal.SIGHUP)
        assert proc.wait(90) == 0  # not killed by the signal
        deadline = time.monotonic() + 30  # a hang detector only
        while psutil.pid_exists(shard_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not psutil.pid_exists(shard_pid)
        # A clean stop: the final snapshot taken, the sockets removed.
        assert [n for n in os.listdir(data / "shard-0" / "snapshots") if n.endswith(".snap")]
        assert not os.path.exists(endpoint[len("ipc://"):])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    with inmem.open(data / "shard-0") as db:
        assert db.kv.get("r", "k") == "acknowledged"


def test_under_nohup_a_hangup_changes_nothing(tmp_path):
    data = tmp_path / "data"
    proc = subprocess.Popen(["nohup", sys.executable, "-m", "inmem", "serve", "--data-dir",
                             str(data), "--shards", "1"], env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _until_ready(proc)
        os.killpg(proc.pid, signal.SIGHUP)
        endpoint = load(None, data_dir=str(data))["client_endpoint"]
        with inmem.connect(endpoint, timeout=30) as db:  # still serving
            assert db.info()["shards"][0]["state"] == "ready"
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(90) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_a_hangup_stops_a_restarted_shard_cleanly_too(tmp_path):
    data = tmp_path / "data"
    proc = _serve(data, "--shards", "1")
    try:
        _until_ready(proc)
        endpoint = load(None, data_dir=str(data))["client_endpoint"]
        with inmem.connect(endpoint, timeout=30) as db:
            first = db.info()["shards"][0]["pid"]
            os.kill(first, signal.SIGKILL)  # no final snapshot from this one
            deadline = time.monotonic() + 60  # a hang detector only
            while True:
                try:
                    shard = db.info()["shards"][0]
                except inmem.errors.InmemError:
                    shard = {"pid": first, "state": "down"}
                if shard["pid"] not in (None, first) and shard["state"] == "ready":
                    break
                assert time.monotonic() < deadline, shard
                time.sleep(0.05)
            run = db.begin_run(run_id="r")
            db.kv.put(run, "k", "acknowledged")
        os.killpg(proc.pid, signal.SIGHUP)
        assert proc.wait(90) == 0
        assert [n for n in os.listdir(data / "shard-0" / "snapshots") if n.endswith(".snap")]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_shard_served_alone_removes_its_socket_files_when_stopped(tmp_path, sig):
    """`inmem shard serve` has no coordinator to clean up after it: it removes its own."""
    data = tmp_path / "data"
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\ndata_dir = "{data}"\nshards = 2\n')
    proc = subprocess.Popen([sys.executable, "-m", "inmem", "shard", "serve", "--config",
                             str(config), "--shard", "0"], env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        endpoint = load(str(config))["shards"][0]["endpoint"]
        path = endpoint[len("ipc://"):]
        deadline = time.monotonic() + 60  # a hang detector only
        while not (os.path.exists(path) and os.path.exists(path + ".s")):
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the shard never bound its sockets"
            time.sleep(0.05)
        proc.send_signal(sig)
        assert proc.wait(60) == 0, proc.stderr.read()
        assert not os.path.exists(path)
        assert not os.path.exists(path + ".s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
