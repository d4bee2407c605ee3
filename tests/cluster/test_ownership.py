"""One owner per data directory: a refused start leaves the running cluster alone; all private.

Real processes: a cluster started with `inmem serve`, then a second `inmem
serve` and an `inmem demo` on the same directory, which must each exit with
one line while the first cluster keeps its sockets and keeps answering. Both
socket layouts are covered: sockets in the data directory (a short path) and
in the short runtime directory used when the data directory's path is too
long for an ipc socket.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

import inmem
from inmem.coordinator.config import ConfigError, load, socket_dir
from file_modes import modes_under

from .test_cli import Serve, _inmem

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(params=["sockets_in_data_dir", "sockets_in_runtime_dir"])
def data_dir(request, tmp_path):
    if request.param == "sockets_in_data_dir":
        base = tempfile.mkdtemp(prefix="inm-")  # short enough for ipc paths
        data = Path(base) / "data"
    else:
        base = None
        data = tmp_path / ("d" * 60) / "data"
        data.parent.mkdir()  # serve makes the data directory, not a missing parent
    in_data_dir = socket_dir(str(data)) == str(data)
    assert in_data_dir == (request.param == "sockets_in_data_dir"), data
    yield data
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


def socket_paths(spec) -> list[str]:
    endpoints = [spec["client_endpoint"]] + [s["endpoint"] for s in spec["shards"]]
    return [e[len("ipc://"):] for e in endpoints]


def one_line_refusal(out) -> str:
    lines = (out.stdout + out.stderr).splitlines()
    assert out.returncode != 0 and len(lines) == 1 and "Traceback" not in lines[0], (
        f"exit {out.returncode}, stdout:\n{out.stdout}\nstderr:\n{out.stderr}")
    return lines[0]


def test_a_refused_second_start_leaves_the_running_cluster_reachable(data_dir):
    serve = Serve("--data-dir", str(data_dir), "--shards", "1")
    try:
        serve.until("ready:")
        spec = load(None, data_dir=str(data_dir), shards=1)
        sockets = socket_paths(spec)
        assert all(os.path.exists(p) for p in sockets), sockets
        pid = serve.proc.pid
        for args in (("serve", "--data-dir", str(data_dir), "--shards", "1"),
                     ("demo", "--data-dir", str(data_dir))):
            line = one_line_refusal(_inmem(*args))
            assert "another coordinator" in line and str(data_dir) in line, line
            missing = [p for p in sockets if not os.path.exists(p)]
            assert not missing, f"`inmem {args[0]}` removed the running cluster's {missing}"
            with inmem.connect(spec["client_endpoint"], timeout=10) as db:
                assert db._backend.status()["coordinator"]["pid"] == pid
                run = db.begin_run()
                db.kv.put(run, "still", "here")
                assert db.kv.get(run, "still") == "here"
    finally:
        serve.proc.terminate()
        serve.proc.wait(30)
        serve.kill()


def test_a_cluster_object_on_a_served_directory_is_refused_and_touches_nothing(make_cluster):
    first = make_cluster(shards=1)
    sockets = socket_paths(first.spec)
    second = make_cluster(data_dir=first.data_dir, shards=1, start=False)
    with pytest.raises(inmem.InmemError, match="another coordinator"):
        second.start()
    assert second.proc is None  # refused before anything was spawned
    second.kill()  # the cleanup after a crash must not take the other cluster's sockets
    assert all(os.path.exists(p) for p in sockets)
    with first.connect() as db:
        assert db.info()["shards"][0]["state"] == "ready"


def test_an_open_or_foreign_runtime_directory_is_refused(tmp_path, monkeypatch):
    from inmem.coordinator.config import prepare_socket_dir
    data = tmp_path / ("d" * 60) / "data"
    data.parent.mkdir()
    spec = load(None, data_dir=str(data), shards=1)
    runtime = socket_dir(spec["data_dir"])
    assert runtime != spec["data_dir"]
    os.mkdir(runtime)
    try:
        os.chmod(runtime, 0o777)  # someone else's trap, or a careless umask
        with pytest.raises(ConfigError, match="mode 0777"):
            prepare_socket_dir(spec)
        line = one_line_refusal(_inmem("serve", "--data-dir", str(data), "--shards", "1"))
        assert runtime in line and "0777" in line, line
        assert stat.S_IMODE(os.lstat(runtime).st_mode) == 0o777  # left as it was
        assert os.listdir(runtime) == []
        os.chmod(runtime, 0o700)
        prepare_socket_dir(spec)  # ours and private: accepted
        uid = os.geteuid()
        monkeypatch.setattr(os, "geteuid", lambda: uid + 1)
        with pytest.raises(ConfigError, match=f"belongs to uid {uid}"):
            prepare_socket_dir(spec)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def test_a_symlink_as_runtime_directory_is_refused(tmp_path):
    from inmem.coordinator.config import prepare_socket_dir
    spec = load(None, data_dir=str(tmp_path / ("d" * 60) / "data"), shards=1)
    runtime = socket_dir(spec["data_dir"])
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    os.symlink(target, runtime)
    try:
        with pytest.raises(ConfigError, match="not a directory"):
            prepare_socket_dir(spec)
    finally:
        os.unlink(runtime)




def test_a_cluster_writes_only_private_files_whatever_the_umask(make_cluster, tmp_path):
    data = tmp_path / "made" / "data"
    old = os.umask(0)  # inherited by the coordinator and its shards
    try:
        cluster = make_cluster(data_dir=data, shards=1, durability="strict")
    finally:
        os.umask(old)
    with cluster.connect() as db:
        db.kv.put(db.begin_run(), "k", "v")
        db.snapshot()
    runtime = socket_dir(cluster.data_dir)
    assert stat.S_IMODE(os.lstat(runtime).st_mode) == 0o700
    cluster.stop()
    modes = modes_under(tmp_path / "made")
    assert {"data/coordinator.log", "data/coordinator.lock", "data/shard-0/LOCK"} <= set(modes)
    wrong = {rel: f"{mode:04o}" for rel, mode in modes.items()
             if mode != (0o700 if os.path.isdir(tmp_path / "made" / rel) else 0o600)}
    assert not wrong, f"not private: {wrong}"
