"""`inmem serve` and `inmem status` as a user runs them: real processes, real signals."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from inmem.coordinator.config import load
from inmem.processes import child_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def _endpoint(data) -> str:
    """The client endpoint of a data directory (a short socket path when the directory is deep)."""
    return load(None, data_dir=str(data))["client_endpoint"]


def _inmem(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "inmem", *args], env=child_env(),
                          capture_output=True, text=True, timeout=60, **kwargs)


class Serve:
    """`inmem serve` in the background, its stdout read line by line."""

    def __init__(self, *args, cwd=None):
        self.proc = subprocess.Popen([sys.executable, "-m", "inmem", "serve", *args],
                                     env=child_env(), cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def until(self, prefix: str, timeout: float = 45) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line starting {prefix!r}; got:\n" + "\n".join(self.lines))
            if line is None:
                raise AssertionError(f"serve exited ({self.proc.poll()}); got:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def children(self) -> list:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def test_serve_prints_endpoint_shards_and_ready_then_stops_cleanly(tmp_path):
    data = tmp_path / "data"
    serve = Serve("--data-dir", str(data), "--shards", "2", "--durability", "strict")
    try:
        first = serve.until("inmem coordinator")
        endpoint = _endpoint(data)
        assert endpoint in first and "2 shards" in first and "strict" in first
        serve.until("ready:")
        shard_lines = [l for l in serve.lines if l.startswith("shard ") and " ready, pid " in l]
        assert sorted(l.split()[1] for l in shard_lines) == ["0", "1"]
        assert all("WAL records replayed" in l for l in shard_lines)
        children = serve.children()
        # The shards are the coordinator's children (forked from it at start).
        shard_pids = {int(l.split(" ready, pid ")[1].split(":")[0]) for l in shard_lines}
        assert len(shard_pids) == 2 and shard_pids <= {c.pid for c in children}

        status = _inmem("status", "--endpoint", endpoint, "--wait-ready", "--timeout", "10")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "ready" in status.stdout.splitlines()[0]
        assert "shard 0: ready" in status.stdout and "shard 1: ready" in status.stdout

        demo = _inmem("demo", "--connect", endpoint)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "chain valid: True" in demo.stdout
        import inmem
        with inmem.connect(endpoint) as db:
            written = [s["shard"] for s in db.info()["shards"] if s["runs"]]
        assert written

        serve.proc.send_signal(signal.SIGINT)
        assert serve.proc.wait(30) == 0
        serve.until("stopped")
        for c in children:
            assert not c.is_running() or c.status() == psutil.STATUS_ZOMBIE
        # A clean stop took the final snapshot of every shard that was written to.
        for s in written:
            assert list((data / f"shard-{s}" / "snapshots").glob("*.snap"))
    finally:
        serve.kill()


def test_serve_restarts_on_the_same_directory_and_reports_recovery(tmp_path):
    data = tmp_path / "data"
    endpoint = _endpoint(data)
    serve = Serve("--data-dir", str(data), "--shards", "2")
    try:
        serve.until("ready:")
        assert _inmem("demo", "--connect", endpoint).returncode == 0
        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(30) == 0
    finally:
        serve.kill()
    # Without --shards: the count comes from the slot map in the data directory.
    serve = Serve("--data-dir", str(data))
    try:
        serve.until("ready:")
        shard_lines = [l for l in serve.lines if " ready, pid " in l]
        assert len(shard_lines) == 2
        # The demo's runs were snapshotted at the clean stop and come back from it.
        assert any("snapshot /" in l for l in shard_lines), shard_lines
    finally:
        serve.proc.send_signal(signal.SIGTERM)
        serve.proc.wait(30)
        serve.kill()


def test_serve_uses_the_default_config_from_any_directory(tmp_path):
    serve = Serve("--shards", "1", cwd=tmp_path)
    try:
        line = serve.until("inmem coordinator")
        assert str(tmp_path / "data") in line
        serve.until("ready:")
    finally:
        serve.proc.send_signal(signal.SIGTERM)
        serve.proc.wait(30)
        serve.kill()


def test_serve_refuses_a_second_coordinator_on_one_directory(tmp_path):
    data = tmp_path / "data"
    serve = Serve("--data-dir", str(data), "--shards", "1")
    try:
        serve.until("ready:")
        second = _inmem("serve", "--data-dir", str(data), "--shards", "1")
        assert second.returncode == 2
        assert "another coordinator" in second.stderr
    finally:
        serve.proc.send_signal(signal.SIGTERM)
        serve.proc.wait(30)
        serve.kill()


def test_status_without_a_cluster_fails_quickly(tmp_path):
    t0 = time.monotonic()
    out = _inmem("status", "--endpoint", f"ipc://{tmp_path}/none.sock", "--timeout", "0.5")
    assert out.returncode == 1
    assert "does not exist" in out.stderr and "inmem serve" in out.stderr
    assert time.monotonic() - t0 < 30


def test_serve_reports_a_bad_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[durability]\nmode = 'sometimes'\n")
    out = _inmem("serve", "--config", str(bad))
    assert out.returncode == 2 and "mode must be one of" in out.stderr
