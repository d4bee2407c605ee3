"""Config files with mistakes, as an operator writes them: each is refused before anything
starts, in one line that names the file and the setting, with a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cluster.conftest import make_cluster  # noqa: F401  (the fixture)
from inmem.cli import main
from inmem.coordinator import config as cfg
from inmem.processes import child_env

#: (what the file says, the setting the error must name)
MISTAKES = [
    ('[durability]\nflush_interval_ms = "100"\n', "flush_interval_ms"),
    ("[durability]\nflush_interval_ms = -5\n", "flush_interval_ms"),
    ("[durability]\nsnapshot_retention = 0\n", "snapshot_retention"),
    ("[durability]\nmax_value_bytes = -1\n", "max_value_bytes"),
    ("[durability]\nmax_value_bytes = 0\n", "max_value_bytes"),
    ('[durability]\nmode = "fast"\n', "mode"),
    ("[cluster]\nshards = 0\n", "shards"),
    ("[cluster]\nmax_message_bytes = 10\n", "max_message_bytes"),
    ('[cluster]\ndata_dir = ""\n', "data_dir"),
    ("[cluster]\ndata_dir = 5\n", "data_dir"),
    ('[cluster]\nendpoint = "foo://x"\n', "endpoint"),
    ('[cluster]\nendpoint = "127.0.0.1:7700"\n', "endpoint"),
    ('[cluster]\nendpoint = "tcp://127.0.0.1"\ninsecure = true\n', "endpoint"),
    ('[cluster]\nendpoint = "ipc://"\n', "endpoint"),
    (f'[cluster]\nendpoint = "ipc:///{"s" * 120}.sock"\n', "endpoint"),
    ("[supervisor]\nrestart_backoff_ms = -1\n", "restart_backoff_ms"),
    ("[supervisor]\nrestart_backoff_max_ms = 10\n", "restart_backoff_max_ms"),
    ("[supervisor]\nstop_timeout_s = 0\n", "stop_timeout_s"),
    ("[supervisor]\nstop_timeout_s = -1\n", "stop_timeout_s"),
    ("[supervisor]\nheartbeat_timeout_s = 0\n", "heartbeat_timeout_s"),
    ('[cluster]\nshards = 1\n[[shard]]\nid = 0\nendpoint = "zzz"\n', "endpoint"),
]


@pytest.mark.parametrize("text,key", MISTAKES)
def test_a_bad_value_is_refused_naming_the_file_and_the_setting(tmp_path, text, key):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path)
    message = str(err.value)
    assert str(path) in message and key in message, message
    assert "\n" not in message


def test_an_ipc_endpoint_of_107_bytes_is_taken_and_108_refused(tmp_path):
    fits = "/" + "s" * 106
    path = tmp_path / "mine.toml"
    path.write_text(f'[cluster]\nendpoint = "ipc://{fits}"\n')
    assert cfg.load(path)["client_endpoint"] == f"ipc://{fits}"
    path.write_text(f'[cluster]\nendpoint = "ipc://{fits}x"\n')
    with pytest.raises(cfg.ConfigError, match="108 bytes"):
        cfg.load(path)


def test_a_bad_override_is_named_as_the_override_not_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[cluster]\ndata_dir = "d"\n')
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path, endpoint="nowhere")
    assert "endpoint override" in str(err.value) and str(path) not in str(err.value)


def test_the_shipped_configs_still_load():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("default.toml", "strict.toml"):
        assert cfg.load(os.path.join(root, "configs", name))["data_dir"]
    multihost = cfg.load(os.path.join(root, "configs", "multihost.example.toml"))
    assert [s["remote"] for s in multihost["shards"]] == [False, True, True]


# -- the data directory --------------------------------------------------------------

def test_a_data_dir_that_is_a_file_is_refused_naming_the_key_and_the_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    config = tmp_path / "mine.toml"
    config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/afile"\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(config) in err and "data_dir" in err and "is a file" in err


def test_a_data_dir_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert main(["serve", "--data-dir", str(tmp_path / "afile" / "data")]) == 2
    err = capsys.readouterr().err
    assert "--data-dir" in err and "data_dir" in err and "which is a file" in err, err


def test_a_data_dir_this_user_may_not_write_is_refused(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    data.mkdir()
    # Tests may run as root, whom permissions do not stop: ask as an unprivileged user would.
    monkeypatch.setattr(os, "access", lambda path, mode: os.fspath(path) != str(data))
    assert main(["demo", "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and "data_dir" in err and str(data) in err, err


def test_serve_with_a_mistake_exits_2_in_one_line_and_starts_nothing(tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/data"\n'
                      f'endpoint = "ipc://{tmp_path}/{"e" * 110}.sock"\n')
    done = subprocess.run([sys.executable, "-m", "inmem", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=child_env())
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(config) in done.stderr and "endpoint" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before the data directory was touched


# -- endpoints taken already ---------------------------------------------------------

def test_a_tcp_port_in_use_is_refused_before_any_shard_starts(tmp_path, capsys):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "mine.toml"
        config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/data"\n'
                          f'endpoint = "tcp://127.0.0.1:{port}"\ninsecure = true\n')
        assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(config) in err and "[cluster] endpoint" in err and f"port {port} is in use" in err
    assert not (tmp_path / "data").exists()


def test_an_ipc_endpoint_another_process_serves_is_refused(tmp_path, capsys):
    import socket
    path = tmp_path / "shared.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(path))
        other.listen()
        assert main(["serve", "--data-dir", str(tmp_path / "data"), "--endpoint",
                     f"ipc://{path}"]) == 2
    err = capsys.readouterr().err
    assert "--endpoint" in err and "served by another process" in err, err
    assert not (tmp_path / "data").exists()


def test_a_second_serve_on_a_served_directory_still_names_the_coordinator(
        make_cluster, tmp_path, capsys):
    cluster = make_cluster(data_dir=tmp_path / "data", shards=1)
    assert main(["serve", "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert f"pid {cluster.pids()['coordinator']}" in err, err


def test_a_data_dir_whose_parent_does_not_exist_is_refused(tmp_path, capsys):
    config = tmp_path / "mine.toml"
    config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/no/such/data"\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "data_dir" in err and "does not exist" in err, err
    assert not (tmp_path / "no").exists()  # nothing made on a mistyped path


# -- inmem shard serve ---------------------------------------------------------------

def _remote_shard_config(tmp_path, port: int, keys: str) -> "os.PathLike":
    config = tmp_path / "cluster.toml"
    config.write_text(f'[cluster]\ndata_dir = "{tmp_path}/data"\nshards = 2\n'
                      f'endpoint = "tcp://127.0.0.1:1"\n{keys}\n'
                      '[[shard]]\nid = 0\n'
                      f'[[shard]]\nid = 1\nendpoint = "tcp://127.0.0.1:{port}"\nremote = true\n')
    return config


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shard_serve_without_its_key_file_is_refused_before_recovering(tmp_path, capsys):
    config = _remote_shard_config(tmp_path, _free_port(), f'keys = "{tmp_path}/keys"')
    assert main(["shard", "serve", "--config", str(config), "--shard", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(config) in err and "[cluster] keys" in err and "shard-1.key_secret" in err
    assert not (tmp_path / "data").exists()  # no recovery was started


def test_shard_serve_on_a_port_in_use_is_refused_before_recovering(tmp_path, capsys):
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _remote_shard_config(tmp_path, port, "insecure = true")
        assert main(["shard", "serve", "--config", str(config), "--shard", "1"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "[[shard]] 1 endpoint" in err and "in use" in err, err
    assert not (tmp_path / "data").exists()


def test_shard_serve_of_a_shard_the_config_lacks_names_the_range(tmp_path, capsys):
    config = _remote_shard_config(tmp_path, _free_port(), "insecure = true")
    assert main(["shard", "serve", "--config", str(config), "--shard", "7"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "shards 0 to 1, not 7" in err, err


def test_two_parts_of_a_cluster_on_one_endpoint_are_refused(tmp_path):
    path = tmp_path / "mine.toml"
    shards = ('[[shard]]\nid = 0\nendpoint = "tcp://127.0.0.1:7792"\n'
              '[[shard]]\nid = 1\nendpoint = "tcp://127.0.0.1:7792"\n')
    path.write_text('[cluster]\nshards = 2\nendpoint = "tcp://127.0.0.1:7791"\n'
                    f'insecure = true\n{shards}')
    with pytest.raises(cfg.ConfigError) as err:
        cfg.load(path)
    assert str(path) in str(err.value) and "[[shard]] 1 endpoint" in str(err.value)
    assert "[[shard]] 0 endpoint" in str(err.value)
    path.write_text('[cluster]\nshards = 1\nendpoint = "tcp://127.0.0.1:7791"\n'
                    'insecure = true\n[[shard]]\nid = 0\nendpoint = "tcp://127.0.0.1:7791"\n')
    with pytest.raises(cfg.ConfigError, match=r"\[cluster\] endpoint"):
        cfg.load(path)


# -- the config file itself ----------------------------------------------------------

def _not_a_config(tmp_path, kind: str):
    if kind == "directory":
        return tmp_path
    path = tmp_path / f"{kind}.toml"
    if kind == "fifo":
        os.mkfifo(path)  # opened without a writer: a read would wait for good
    else:
        path.write_bytes(b"\xff\xfe[cluster]\n")
    return path


@pytest.mark.timeout(60)  # a FIFO read by mistake would hang
@pytest.mark.parametrize("kind", ["directory", "fifo", "binary"])
@pytest.mark.parametrize("command", [["serve"], ["status"], ["demo"], ["shard", "serve",
                                                                      "--shard", "0"]])
def test_a_config_that_is_not_a_toml_file_is_one_line(tmp_path, capsys, kind, command):
    path = _not_a_config(tmp_path, kind)
    assert main([*command, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"config file {path}" in err
