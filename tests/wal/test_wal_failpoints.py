"""Named crash points: cheap when off, an immediate exit with a chosen code when armed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from inmem.wal import failpoints
from inmem.wal.failpoints import KNOWN_FAILPOINTS, failpoint
from walfix import read_back

ROOT = str(Path(__file__).resolve().parents[2])

WAL_POINTS = ["wal.before_write", "wal.after_write_before_fsync", "wal.after_fsync",
              "wal.before_roll", "wal.after_roll", "wal.before_delete", "wal.after_delete"]

SCRIPT = """
import sys
from inmem.wal import WalWriter
w = WalWriter(sys.argv[1], sys.argv[2], segment_bytes_max=60)
for i in range(5):
    w.append(b"record-%d" % i)
w.sync()
w.delete_before(3)
w.close()
print("survived")
"""


def run_script(directory, mode, **env):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INMEM_FAILPOINT")}
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", SCRIPT, str(directory), mode],
                          env=full_env, capture_output=True, timeout=60)


def test_wal_points_are_registered(monkeypatch):
    for name in WAL_POINTS:
        assert name in KNOWN_FAILPOINTS
    assert len(set(KNOWN_FAILPOINTS)) == len(KNOWN_FAILPOINTS)
    # On a copy: the crash matrix enumerates the real list in this same process.
    monkeypatch.setattr(failpoints, "KNOWN_FAILPOINTS", list(KNOWN_FAILPOINTS))
    assert failpoints.register("test.point") == "test.point"
    failpoints.register("test.point")
    assert failpoints.KNOWN_FAILPOINTS.count("test.point") == 1
    assert "test.point" not in KNOWN_FAILPOINTS


def test_unarmed_failpoint_does_nothing():
    failpoint("wal.after_fsync")
    failpoint("no.such.point")


class Exited(Exception):
    pass


@pytest.fixture
def armed(monkeypatch):
    """Arm failpoints in this process, with os._exit replaced by an exception."""
    def fake_exit(code):
        raise Exited(code)
    monkeypatch.setattr(failpoints.os, "_exit", fake_exit)

    def arm(points, exit_code=None, skip=None):
        monkeypatch.setenv("INMEM_FAILPOINT", points)
        for var, value in (("INMEM_FAILPOINT_EXIT", exit_code), ("INMEM_FAILPOINT_SKIP", skip)):
            if value is None:
                monkeypatch.delenv(var, raising=False)
            else:
                monkeypatch.setenv(var, value)
        failpoints.reload()
    yield arm
    monkeypatch.delenv("INMEM_FAILPOINT", raising=False)
    monkeypatch.delenv("INMEM_FAILPOINT_EXIT", raising=False)
    monkeypatch.delenv("INMEM_FAILPOINT_SKIP", raising=False)
    failpoints.reload()
    assert failpoints.active() == frozenset()


def test_armed_points_exit_with_the_code_after_skips(armed):
    armed(" a.one , b.two ", exit_code="9", skip="2")
    assert failpoints.active() == {"a.one", "b.two"}
    failpoint("c.other")
    failpoint("a.one")
    failpoint("a.one")
    failpoint("b.two")  # counted per point
    with pytest.raises(Exited) as info:
        failpoint("a.one")
    assert info.value.args == (9,)


def test_default_exit_code_and_bad_values(armed):
    armed("p", exit_code="not a number", skip="-3")
    with pytest.raises(Exited) as info:
        failpoint("p")
    assert info.value.args == (77,)


def test_failpoint_exits_a_real_process_at_the_point(tmp_path):
    # after_fsync on its 3rd hit: three strict appends were fsynced, no more.
    result = run_script(tmp_path, "strict", INMEM_FAILPOINT="wal.after_fsync",
                        INMEM_FAILPOINT_SKIP="2", INMEM_FAILPOINT_EXIT="33")
    assert result.returncode == 33, result.stderr
    assert b"survived" not in result.stdout
    assert b"failpoint wal.after_fsync" in result.stderr
    records, reader = read_back(tmp_path)
    assert [p for _, _, p in records] == [b"record-0", b"record-1", b"record-2"]
    assert reader.outcome.kind == "clean"


def test_failpoint_before_delete_keeps_every_segment(tmp_path):
    result = run_script(tmp_path, "buffered", INMEM_FAILPOINT="wal.before_delete")
    assert result.returncode == 77, result.stderr
    records, reader = read_back(tmp_path)
    assert [p for _, _, p in records] == [b"record-%d" % i for i in range(5)]
    assert reader.first_lsn == 0


def test_unarmed_script_survives(tmp_path):
    result = run_script(tmp_path, "buffered")
    assert result.returncode == 0, result.stderr
    assert b"survived" in result.stdout
