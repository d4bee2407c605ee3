"""The LangGraph adapters run against an embedded store, a real 2-shard cluster and a
strict durable store (whose async calls go through a worker thread)."""

import pytest


@pytest.fixture(params=["embedded", "cluster", "strict"])
def backend(request) -> str:
    return request.param
