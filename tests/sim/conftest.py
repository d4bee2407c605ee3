"""Fixtures of the fault simulation: the cluster factory of the cluster tests, and the run's size.

The size and seed come from the environment, so a long run needs no code change:

    INMEM_SIM_SEED=7 INMEM_SIM_OPS=3000 INMEM_SIM_KILLS=20 \\
        .venv/bin/python -m pytest -q tests/sim

INMEM_SIM_OPS is the number of operations per client, INMEM_SIM_KILLS the
number of kills (one per phase; a last phase without one follows). The
defaults are the short fixed-seed run CI makes.
"""

from __future__ import annotations

import os

import pytest

from cluster.conftest import make_cluster  # noqa: F401  (the fixture, shared)

DEFAULT_SEED = 1729


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"{name} must be an integer, got {raw!r}") from None


@pytest.fixture
def sim_seed() -> int:
    return env_int("INMEM_SIM_SEED", DEFAULT_SEED)
