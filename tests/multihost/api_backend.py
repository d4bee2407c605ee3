"""The API suite's backend on a cluster across hosts: used when the suite runs on the client host.

tests/multihost starts a cluster in network namespaces and runs tests/api
on the client host with INMEM_TEST_MULTIHOST set to {"url", "keys"}; then
tests/conftest.py offers only this backend, and each database it hands out
is on a wiped cluster, as with the local cluster backend.
"""

from __future__ import annotations

import json
import os

import inmem
from cluster.shared import ClockedBackend
from inmem.database import Database

ENV = "INMEM_TEST_MULTIHOST"


def target() -> dict | None:
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None


def open_multihost_db(clock=None, max_value_bytes=None, **options) -> Database:
    if options:
        raise TypeError(f"the multi-host test cluster does not take {sorted(options)}")
    t = target()
    db = inmem.connect(t["url"], timeout=30.0, keys=t["keys"], direct=t.get("direct", True))
    backend = db._backend
    backend.cluster("debug.reset")
    if max_value_bytes is not None:
        backend.cluster("debug.max_value_bytes", [max_value_bytes])
    if clock is not None:
        db = Database(ClockedBackend(backend, clock))
    return db
