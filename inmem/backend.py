"""What a Database needs from whatever serves it: the interface both backends implement.

`EmbeddedBackend` (an engine in this process) and `ClusterBackend` (a
connection to a cluster) are the two implementations; a Database holds one
and turns its public methods into operations on it.
"""

from __future__ import annotations

from typing import Any, Protocol

from .sections import KV


class Backend(Protocol):
    def call(self, op: str, args: tuple | list) -> Any:
        """Run one operation on the shard that owns its run; raise its InmemError."""

    def call_batch(self, ops: list) -> list:
        """Run many operations; each result or InmemError comes back in its place."""

    def fanout(self, op: str, args: tuple | list) -> list:
        """Run a read on every shard; one answer per shard."""

    def kv_section(self) -> KV:
        """The Database's `kv` section (a backend may give it faster paths)."""

    def snapshot(self) -> list: ...

    def compact_history(self) -> list: ...

    def recovery_report(self) -> list: ...

    def info(self) -> dict: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


__all__ = ["Backend"]
