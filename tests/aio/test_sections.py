"""The async sections' methods: coroutine functions that hand on exactly what the sync ones do."""

from __future__ import annotations

import asyncio
import inspect

import pytest

from inmem.async_database import AsyncEvents, AsyncJSON, AsyncKV, AsyncRuns, AsyncStateCells, \
    AsyncTraces
from inmem.sections import JSON, KV, Events, Runs, StateCells, Traces

PAIRS = [(AsyncKV, KV), (AsyncEvents, Events), (AsyncJSON, JSON), (AsyncRuns, Runs),
         (AsyncTraces, Traces), (AsyncStateCells, StateCells)]


def _methods(async_cls, sync_cls):
    return [name for name in dir(sync_cls)
            if not name.startswith("_") and inspect.isfunction(getattr(sync_cls, name))
            and name not in vars(async_cls)]  # (those redone with awaits are tested elsewhere)


@pytest.mark.parametrize("async_cls,sync_cls", PAIRS, ids=[a.__name__ for a, _ in PAIRS])
def test_each_method_is_a_coroutine_function_with_the_sync_ones_parameters(async_cls, sync_cls):
    for name in _methods(async_cls, sync_cls):
        method, sync = getattr(async_cls, name), getattr(sync_cls, name)
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(sync), name
        assert method.__doc__ == sync.__doc__ and method.__name__ == name


def _calls(method, seen: list, ways):
    """Call `method` every way in `ways` (args, kwargs); what each handed to its `_call`."""
    out = []
    for args, kwargs in ways:
        seen.clear()
        try:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                asyncio.run(result)
        except _Stop:
            pass
        out.append(list(seen))
    return out


class _Stop(Exception):
    pass


@pytest.mark.parametrize("async_cls,sync_cls", PAIRS, ids=[a.__name__ for a, _ in PAIRS])
def test_each_method_hands_its_call_what_the_sync_one_does_however_its_arguments_are_given(
        async_cls, sync_cls):
    seen: list = []

    def sync_call(op, args):
        seen.append((op, args))
        raise _Stop  # (some methods go on with the result: the call is all we look at)

    async def async_call(op, args):
        sync_call(op, args)

    for name in _methods(async_cls, sync_cls):
        params = list(inspect.signature(getattr(sync_cls, name)).parameters.values())[1:]
        required = [p for p in params if p.default is inspect.Parameter.empty]
        optional = [p for p in params if p.default is not inspect.Parameter.empty]
        given = [f"a{i}" for i in range(len(required))]
        ways = [(given, {}),
                # every optional one by keyword, then the positional ones by position
                (given, {p.name: f"o-{p.name}" for p in optional})]
        positional = [p for p in optional if p.kind is p.POSITIONAL_OR_KEYWORD]
        if positional:
            ways.append((given + [f"o-{p.name}" for p in positional], {}))
        ways.append(([], {p.name: v for p, v in zip(required, given)}))
        sync = _calls(getattr(sync_cls(sync_call), name), seen, ways)
        awaited = _calls(getattr(async_cls(async_call), name), seen, ways)
        assert awaited == sync and all(sync), name
