"""The command line as a new user meets it: no cluster, a busy directory, the wrong kind of
path, a closed pipe, help texts. Each failure is one line and an exit code, never a traceback."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import inmem
from cluster.conftest import make_cluster  # noqa: F401  (the fixture)
from inmem.cli import EXIT_BROKEN_PIPE, build_parser, main
from inmem.processes import child_env

ROOT = Path(__file__).resolve().parents[2]


def make_store(path: Path, keys: int = 20) -> None:
    with inmem.open(path, durability="strict", snapshot_on_close=False) as db:
        run = db.begin_run(run_id="r")
        for i in range(keys):
            db.kv.put(run, f"k{i}", i)
        db.snapshot()


def _free_tcp_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def _one_line_no_traceback(err: str) -> None:
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


# -- inmem status --------------------------------------------------------------------

def _never_ask_a_coordinator(monkeypatch):
    """Fail the test if the CLI waits for an answer: with no socket file it must not try."""
    from inmem.client import ClusterBackend

    def asked(*args, **kwargs):
        raise AssertionError("the CLI waited for a coordinator that cannot be there")
    monkeypatch.setattr(ClusterBackend, "cluster", asked)
    monkeypatch.setattr(ClusterBackend, "wait_ready", asked)


def test_status_on_a_missing_ipc_socket_fails_at_once_with_a_hint(tmp_path, capsys, monkeypatch):
    endpoint = f"ipc://{tmp_path}/coordinator.sock"
    _never_ask_a_coordinator(monkeypatch)  # not the 30 s default timeout
    assert main(["status", "--endpoint", endpoint]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    _one_line_no_traceback(out.err)
    assert "does not exist" in out.err and "inmem serve" in out.err
    assert out.err.count(endpoint) == 1


def test_status_says_what_it_waits_for_then_fails_with_a_hint(capsys):
    with socket.socket() as silent:  # takes connections, never answers: the client can only wait
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        assert main(["status", "--endpoint", endpoint, "--timeout", "2.5"]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.err
    assert lines[0].startswith("inmem status: waiting up to 2.5 s for the coordinator at "
                               f"{endpoint} to answer")
    assert f"no coordinator answered at {endpoint} within 2.5 s" in lines[1]
    assert "inmem serve" in lines[1]
    assert all(line.count(endpoint) == 1 for line in lines)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_status_into_a_closed_pipe_ends_quietly(make_cluster, tmp_path):
    cluster = make_cluster(data_dir=tmp_path / "data", shards=1)
    # The reader is gone before anything is written: every write meets a closed pipe.
    proc = subprocess.Popen([sys.executable, "-m", "inmem", "status", "--endpoint",
                             cluster.endpoint], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(60) == EXIT_BROKEN_PIPE
    assert "BrokenPipe" not in err and "Traceback" not in err, err
    # The same through a shell pipeline, as a user types it.
    shell = subprocess.run(["bash", "-c", f"{sys.executable} -m inmem status --endpoint "
                            f"{cluster.endpoint} | head -1"], env=child_env(),
                           capture_output=True, text=True, timeout=60)
    assert shell.stdout.startswith(f"{cluster.endpoint}: ready")
    assert len(shell.stdout.splitlines()) == 1 and shell.stderr == ""


def _status_json(endpoint: str, capsys) -> tuple[int, dict]:
    import json
    code = main(["status", "--endpoint", endpoint, "--json", "--timeout", "10"])
    return code, json.loads(capsys.readouterr().out)


def test_status_json_is_one_object_with_the_same_exit_codes(make_cluster, tmp_path, capsys):
    import os
    import signal
    import time
    cluster = make_cluster(data_dir=tmp_path / "data", shards=2, restart_backoff_ms=30000,
                           restart_backoff_max_ms=30000)
    code, doc = _status_json(cluster.endpoint, capsys)
    assert code == 0 and doc["ready"] is True and doc["endpoint"] == cluster.endpoint
    assert [s["state"] for s in doc["shards"]] == ["ready", "ready"]
    assert doc["shards"][0]["recovery"]["records_replayed"] == 0  # by name, not position
    os.kill(doc["shards"][1]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # the coordinator sees the exit within its next turns
        code, doc = _status_json(cluster.endpoint, capsys)
        if doc["shards"][1]["restart_in_s"] is not None or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert code == 1 and doc["ready"] is False
    assert doc["shards"][1]["pid"] is None and doc["shards"][1]["restart_attempt"] == 1


# -- inmem demo ----------------------------------------------------------------------

def test_demo_connect_to_a_missing_cluster_is_one_line(tmp_path, capsys, monkeypatch):
    with monkeypatch.context() as m:
        _never_ask_a_coordinator(m)
        assert main(["demo", "--connect", f"ipc://{tmp_path}/none.sock"]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert err.startswith("inmem demo: no cluster is serving") and "inmem serve" in err
    with socket.socket() as silent:  # takes connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        assert main(["demo", "--connect", endpoint, "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "within 1 s" in err


def test_demo_connect_to_a_bad_url_is_one_line(capsys):
    assert main(["demo", "--connect", "localhost:7700"]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert err.startswith("inmem demo: ")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_while_serve_holds_the_directory_is_one_line(make_cluster, tmp_path, capsys):
    data = tmp_path / "data"
    cluster = make_cluster(data_dir=data, shards=1)
    assert main(["demo", "--data-dir", str(data)]) == 2
    out = capsys.readouterr()
    _one_line_no_traceback(out.err)
    assert "another coordinator" in out.err and str(cluster.pids()["coordinator"]) in out.err
    assert out.out == ""  # refused before anything was printed or started


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_clean_restart_of_the_demo_finds_no_orphaned_run(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["demo", "--data-dir", str(data), "--timeout", "60"]) == 0
    capsys.readouterr()
    assert main(["demo", "--data-dir", str(data), "--timeout", "60"]) == 0
    out = capsys.readouterr().out
    recovered = [line for line in out.splitlines() if "recovered from" in line]
    assert recovered and all(line.endswith("; 0 orphaned runs") for line in recovered), out
    assert not re.search(r"\b1 (orphaned runs|WAL records|operations)\b", out)
    # The shared run is paused between demos, and the agents' counter went on.
    with inmem.Cluster(data_dir=data) as cluster, cluster.connect() as db:
        assert db.run_status("demo-coordination") == "paused"
        assert db.orphaned_runs() == []
        assert db.state.read("demo-coordination", "agents_busy").value == 10


def test_the_embedded_demo_pauses_its_shared_run(tmp_path, capsys):
    store = tmp_path / "store"
    assert main(["demo", "--embedded", "--path", str(store), "--runs", "2"]) == 0
    with inmem.open(store) as db:
        assert db.run_status("demo-coordination") == "paused"
        assert db.orphaned_runs() == []
        assert db.state.read("demo-coordination", "agents_busy").value == 10


# -- wal inspect and snapshot verify -------------------------------------------------

def test_wal_inspect_on_a_cluster_root_lists_its_shards(tmp_path, capsys):
    for n in (0, 1, 10):
        make_store(tmp_path / "data" / f"shard-{n}")
    assert main(["wal", "inspect", str(tmp_path / "data")]) == 2
    out = capsys.readouterr().out
    assert "cluster's data directory" in out
    listed = re.findall(r"inmem wal inspect (\S+)", out)
    assert listed == [str(tmp_path / "data" / f"shard-{n}" / "wal") for n in (0, 1, 10)]
    assert main(["wal", "inspect", listed[0]]) == 0


def test_wal_inspect_on_a_file_says_it_is_a_file(tmp_path, capsys):
    make_store(tmp_path / "store")
    (segment,) = (tmp_path / "store" / "wal").glob("*.wal")
    assert main(["wal", "inspect", str(segment)]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "is a file" in err and str(tmp_path / "store" / "wal") in err
    assert main(["wal", "inspect", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_wal_inspect_on_a_directory_without_segments_says_there_is_nothing_to_inspect(
        tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    elsewhere = tmp_path / "elsewhere"  # files, none of them a WAL segment
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("x")
    (elsewhere / "00000000000000000007.wal.broken").write_bytes(b"old evidence")
    store_wal = tmp_path / "store" / "wal"  # a store directory whose wal/ holds none
    store_wal.mkdir(parents=True)
    for path, shown in ((empty, empty), (elsewhere, elsewhere), (store_wal.parent, store_wal)):
        assert main(["wal", "inspect", str(path)]) == 2
        out = capsys.readouterr()
        assert "clean" not in out.out + out.err
        _one_line_no_traceback(out.err)
        assert "no WAL segments" in out.err and "nothing to inspect" in out.err
        assert str(shown) in out.err
    assert main(["wal", "inspect", "--json", str(empty)]) == 2
    out = capsys.readouterr()
    assert "nothing to inspect" in out.err and "clean" not in out.out


def test_wal_inspect_passes_json_through(tmp_path, capsys):
    make_store(tmp_path / "store")
    assert main(["wal", "inspect", "--json", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out.lstrip().startswith("{")


def test_snapshot_verify_takes_a_directory(tmp_path, capsys):
    for n in (0, 1):
        make_store(tmp_path / "data" / f"shard-{n}")
    store = tmp_path / "data" / "shard-0"
    for path in (store, store / "snapshots"):
        assert main(["snapshot", "verify", str(path)]) == 0
        out = capsys.readouterr().out
        assert out.count("result: valid") == 1 and "1 snapshot checked: all valid" in out
    assert main(["snapshot", "verify", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert out.count("result: valid") == 2 and "2 snapshots checked: all valid" in out
    # One damaged file makes the whole check fail, and the others are still checked.
    (snap,) = (tmp_path / "data" / "shard-1" / "snapshots").glob("*.snap")
    raw = bytearray(snap.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    snap.write_bytes(bytes(raw))
    assert main(["snapshot", "verify", str(tmp_path / "data")]) == 2
    out = capsys.readouterr().out
    assert out.count("result: valid") == 1 and "NOT all valid" in out
    (tmp_path / "empty").mkdir()
    assert main(["snapshot", "verify", str(tmp_path / "empty")]) == 2
    assert "no snapshot files" in capsys.readouterr().err


# -- help and version ----------------------------------------------------------------

def _actions(parser: argparse.ArgumentParser, path: str = "inmem"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_and_argument_has_help_text():
    from inmem.bench.__main__ import build_parser as bench_parser
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}"
               for parser in (build_parser(), bench_parser())
               for path, a in _actions(parser)
               if not a.help or a.help == argparse.SUPPRESS]
    assert not missing, f"without help text: {missing}"


def test_help_texts_show_percent_signs_as_written(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "compare", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "50%" in out and "%%" not in out
    for argv in (["--help"], ["demo", "--help"], ["status", "--help"], ["wal", "inspect", "--help"],
                 ["snapshot", "verify", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "%%" not in capsys.readouterr().out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out.strip() == f"inmem {version}" == f"inmem {inmem.__version__}"


def _left_socket_file(path: Path) -> None:
    """A socket file as a killed coordinator leaves it: bound once, listened on by no one."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def test_status_on_a_socket_left_by_a_killed_coordinator_fails_at_once(
        tmp_path, capsys, monkeypatch):
    _left_socket_file(tmp_path / "coordinator.sock")
    _never_ask_a_coordinator(monkeypatch)  # not the 30 s default timeout
    assert main(["status", "--endpoint", f"ipc://{tmp_path}/coordinator.sock"]) == 1
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "nothing listens" in err and "inmem serve" in err


def test_demo_connect_to_a_socket_left_by_a_killed_coordinator_fails_at_once(
        tmp_path, capsys, monkeypatch):
    _left_socket_file(tmp_path / "coordinator.sock")
    monkeypatch.setattr(inmem, "connect", lambda *a, **k: pytest.fail("waited for no one"))
    assert main(["demo", "--connect", f"ipc://{tmp_path}/coordinator.sock"]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "nothing listens" in err


def test_status_on_a_listener_that_never_answers_does_not_say_start_one(tmp_path, capsys):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "coordinator.sock"))
    listener.listen()
    try:
        assert main(["status", "--endpoint", f"ipc://{tmp_path}/coordinator.sock",
                     "--timeout", "1"]) == 1
    finally:
        listener.close()
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "a process listens" in last and "inmem serve" not in last, last


# -- inmem serve ---------------------------------------------------------------------

def test_serve_inmemory_over_durable_data_warns_that_it_starts_empty(tmp_path, capsys,
                                                                     monkeypatch):
    import inmem.coordinator.server as server
    data = tmp_path / "data"
    make_store(data / "shard-0")
    started = []
    monkeypatch.setattr(server, "run", lambda spec, out: started.append(spec) or 0)
    assert main(["serve", "--data-dir", str(data), "--durability", "inmemory"]) == 0
    err = capsys.readouterr().err
    assert started and "inmemory" in err and "starts empty" in err and "shard-0" in err, err
    assert main(["serve", "--data-dir", str(data)]) == 0  # buffered: it loads them, no warning
    assert capsys.readouterr().err == ""


def test_demo_refuses_fewer_than_one_run(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--embedded", "--runs", "0"])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err


def test_a_key_directory_that_does_not_exist_is_named_where_it_was_given(tmp_path, capsys):
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/data"\n'
                      f'endpoint = "tcp://127.0.0.1:7700"\nkeys = "{tmp_path}/no-keys"\n')
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert f"{config}: [cluster] keys" in err and "does not exist" in err, err
    assert main(["status", "--endpoint", _free_tcp_endpoint(), "--keys",
                 str(tmp_path / "nope")]) == 2
    assert "--keys" in capsys.readouterr().err
    assert main(["demo", "--connect", "tcp://127.0.0.1:7700", "--config", str(config)]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "[cluster] keys" in out.err and "does not exist" in out.err


def test_embedded_demo_durability_without_a_path_is_refused(capsys):
    assert main(["demo", "--embedded", "--durability", "strict"]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "--path" in err


def test_keys_generate_into_a_file_says_it_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["keys", "generate", str(tmp_path / "afile"), "--shards", "1"]) == 2
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "is a file" in err and "Errno" not in err


def test_serve_and_status_help_say_how_they_stop_and_what_they_exit_with(capsys):
    for argv in (["serve", "--help"], ["status", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
    out = " ".join(capsys.readouterr().out.split())  # as argparse wraps it
    assert "SIGTERM" in out and "SIGHUP" in out and "exit code 2" in out
    assert "Exit code 0 when the cluster is ready, 1 when" in out


def test_status_on_an_endpoint_that_is_a_plain_file_says_so(tmp_path, capsys, monkeypatch):
    (tmp_path / "coordinator.sock").write_text("")
    _never_ask_a_coordinator(monkeypatch)
    assert main(["status", "--endpoint", f"ipc://{tmp_path}/coordinator.sock"]) == 1
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "is not a socket" in err


def test_status_and_demo_on_a_refused_tcp_port_fail_at_once(capsys, monkeypatch):
    endpoint = _free_tcp_endpoint()  # nothing listens: the host refuses the connection
    _never_ask_a_coordinator(monkeypatch)
    monkeypatch.setattr(inmem, "connect", lambda *a, **k: pytest.fail("waited for no one"))
    assert main(["status", "--endpoint", endpoint]) == 1
    err = capsys.readouterr().err
    _one_line_no_traceback(err)
    assert "connection refused" in err and "inmem serve" in err
    assert main(["demo", "--connect", endpoint]) == 2
    assert "connection refused" in capsys.readouterr().err


def test_status_wait_ready_waits_for_a_cluster_that_is_not_bound_yet(capsys):
    endpoint = _free_tcp_endpoint()  # refused now; `inmem serve` may bind it any moment
    assert main(["status", "--endpoint", endpoint, "--wait-ready", "--timeout", "1"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("inmem status: waiting up to 1 s") and len(lines) == 2, lines


@pytest.mark.parametrize("argv, says", [
    (["--path", "somewhere"], "add --embedded"),
    (["--embedded", "--connect", "ipc:///nowhere.sock"], "exclude each other"),
    (["--embedded", "--timeout", "0"], "--timeout must be more than 0"),
    (["--connect", "ipc:///nowhere.sock", "--timeout", "-1"], "--timeout must be more than 0"),
])
def test_demo_refuses_options_it_would_drop_in_one_line(tmp_path, capsys, monkeypatch, argv, says):
    # --path without --embedded used to start a cluster in ./data and ignore it.
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err
    assert not (tmp_path / "data").exists() and not (tmp_path / "somewhere").exists()


def test_status_on_the_stream_socket_beside_the_endpoint_says_which_to_use(make_cluster, tmp_path,
                                                                          capsys):
    # The .s file sits beside the endpoint's socket; it speaks another framing, and
    # status waited its whole timeout there before blaming a stopped coordinator.
    cluster = make_cluster(shards=1, durability="inmemory")
    stream = cluster.endpoint + ".s"
    assert main(["status", "--endpoint", stream, "--timeout", "30"]) == 1
    err = capsys.readouterr().err
    assert "stream socket beside an endpoint" in err and f"use {cluster.endpoint}" in err
