"""The project installs as one top-level package, `inmem`, with its layers as subpackages."""

from __future__ import annotations

import subprocess
import sys

import pytest

LAYERS = ("shard", "wal", "recovery", "coordinator", "bench")


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    # Run outside the checkout, so only what is installed can be imported.
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_is_not_a_top_level_package(layer, tmp_path):
    proc = _python(f"import {layer}", tmp_path)
    assert proc.returncode != 0
    assert f"No module named '{layer}'" in proc.stderr


@pytest.mark.parametrize("module", ["inmem.shard.engine", "inmem.wal.writer",
                                    "inmem.recovery.sequence", "inmem.coordinator.server",
                                    "inmem.bench.tiers.micro"])
def test_layer_imports_under_inmem(module, tmp_path):
    proc = _python(f"import {module}", tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_base_install_needs_four_runtime_dependencies():
    from importlib.metadata import requires
    base = [r for r in requires("inmem") if "extra ==" not in r]
    assert sorted(r.split(">")[0].split("=")[0].strip() for r in base) == [
        "crc32c", "msgpack", "psutil", "pyzmq"]


def test_langgraph_extra_brings_langgraph():
    from importlib.metadata import requires
    extra = [r.split(";")[0].strip() for r in requires("inmem") if 'extra == "langgraph"' in r]
    assert {r.split(">")[0] for r in extra} == {"langgraph", "langgraph-checkpoint"}
