"""Fixtures shared by the whole test suite: backends, a fake clock, fresh runs,
and the hypothesis profiles.

Every API test asks for a database through `open_db` (or `db`, `clocked_db`),
never by calling `inmem.open` itself, so the same tests run against every
backend listed in `BACKENDS`: adding a backend is adding one factory there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# The suite runs against the checkout it lives in, installed or not.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# "ci" is bounded so the whole suite stays quick on two cores; print_blob makes
# a failure print the @reproduce_failure line that replays it exactly.
settings.register_profile("ci", max_examples=50, deadline=None, print_blob=True,
                          derandomize=False)
settings.register_profile("dev", max_examples=100, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


class FakeClock:
    """A clock the test moves by hand: call it for int microseconds since the epoch."""

    START_US = 1_700_000_000_000_000

    def __init__(self, now_us: int = START_US):
        self.now_us = now_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> int:
        # Rounded, not truncated: 4.9 s must land on 4_900_000 us, not one below.
        self.now_us += round(seconds * 1_000_000)
        return self.now_us


def _open_embedded(**options):
    import inmem
    return inmem.open(None, **options)


def _open_cluster(**options):
    # One 2-shard inmemory cluster per test process (real coordinator and shard
    # processes), wiped before each database it hands out.
    from cluster.shared import open_cluster_db
    return open_cluster_db(**options)


_DURABLE_ROOT: list[str] = []


def _durable_factory(durability: str, asynchronous: bool = False):
    """Embedded stores on disk, so the buffered and strict write paths run through the suite."""
    def _open(**options):
        import atexit
        import shutil
        import tempfile

        import inmem
        if not _DURABLE_ROOT:
            _DURABLE_ROOT.append(tempfile.mkdtemp(prefix="inmem-api-"))
            atexit.register(shutil.rmtree, _DURABLE_ROOT[0], True)
        path = tempfile.mkdtemp(dir=_DURABLE_ROOT[0])
        if asynchronous:
            from aio.sync_face import open_embedded
            return open_embedded(path, durability, **options)
        return inmem.open(path, durability=durability, **options)
    return _open


def _open_async_embedded(**options):
    # The AsyncDatabase of inmem.asyncio, driven through a blocking face (tests/aio).
    from aio.sync_face import open_embedded
    return open_embedded(None, **options)


def _open_async_cluster(**options):
    from aio.sync_face import open_cluster
    return open_cluster(**options)


def _open_async_cluster_zmq(**options):
    # The asyncio client over ZeroMQ rather than the shards' Unix stream sockets.
    from aio.sync_face import open_cluster
    return open_cluster(stream=False, **options)


#: backend name -> factory(**options) returning an open Database
def _open_cluster_proxied(**options):
    # The same cluster through the coordinator (connect(url, direct=False)).
    from cluster.shared import open_cluster_db
    return open_cluster_db(direct=False, **options)


def _open_cluster_zmq(**options):
    # Direct to the shards, over ZeroMQ rather than their Unix stream sockets
    # (the path a client on another host takes).
    from cluster.shared import open_cluster_db
    return open_cluster_db(stream=False, **options)


BACKENDS = {
    "embedded": _open_embedded,
    "cluster": _open_cluster,
    "cluster-zmq": _open_cluster_zmq,
    "proxied": _open_cluster_proxied,
    "buffered": _durable_factory("buffered"),
    "strict": _durable_factory("strict"),
    # inmem.asyncio: the same tests against AsyncDatabase (see tests/aio/sync_face.py)
    "async-embedded": _open_async_embedded,
    "async-cluster": _open_async_cluster,
    "async-cluster-zmq": _open_async_cluster_zmq,
}


def _open_multihost(**options):
    # A cluster whose shards run on other hosts (network namespaces): tests/multihost
    # runs the API suite on the client host with only this backend.
    from multihost.api_backend import open_multihost_db
    return open_multihost_db(**options)


if os.environ.get("INMEM_TEST_MULTIHOST"):
    BACKENDS = {"multihost": _open_multihost}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request) -> str:
    return request.param


@pytest.fixture
def backend_factory(backend):
    """The bare factory, for tests that open and close many databases themselves."""
    return BACKENDS[backend]


@pytest.fixture
def open_db(backend):
    """A factory `open_db(**options)` for databases that are closed after the test."""
    factory = BACKENDS[backend]
    opened = []

    def _open(**options):
        database = factory(**options)
        opened.append(database)
        return database

    yield _open
    failures = []
    for database in reversed(opened):
        try:
            database.close()
        except Exception as exc:  # close every database before reporting
            failures.append(exc)
    if failures:
        raise failures[0]


@pytest.fixture
def db(open_db):
    return open_db()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clock_factory():
    """The FakeClock class, for tests that need a fresh clock per example."""
    return FakeClock


@pytest.fixture
def clocked_db(open_db, clock):
    return open_db(clock=clock)


@pytest.fixture
def run(db) -> str:
    return db.begin_run(name="test")
