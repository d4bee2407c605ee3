"""Fixtures for the multi-host tests: a network of namespaces per test, removed afterwards.

Skipped, with the reason, where network namespaces cannot be made (no root,
no iproute2); CI runs as root with iproute2, so there they run.
"""

from __future__ import annotations

import pytest

from .layout import HOSTS, MultiHostCluster
from .netns import Network, unavailable

_WHY = []


def _why_not() -> str | None:
    if not _WHY:
        _WHY.append(unavailable())
    return _WHY[0]


@pytest.fixture
def network():
    why = _why_not()
    if why:
        pytest.skip(f"no network namespaces here: {why}")
    net = Network(HOSTS).up()
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def multihost(network, tmp_path):
    """A factory: `multihost(durability=..., test_hooks=...)`, a started cluster across hosts."""
    made = []

    def make(**kwargs) -> MultiHostCluster:
        cluster = MultiHostCluster(network, tmp_path, **kwargs)
        made.append(cluster)
        return cluster.start()

    yield make
