"""LangGraph on inmem: a checkpointer (`InmemSaver`) and a long-term store (`InmemStore`).

    pip install 'inmem[langgraph]'

    import inmem
    from inmem.langgraph import InmemSaver, InmemStore
    db = inmem.connect("ipc:///tmp/inmem/coordinator.sock")   # or inmem.open(...)
    graph = builder.compile(checkpointer=InmemSaver(db), store=InmemStore(db))

Both work over any inmem database, embedded or a cluster, and offer
LangGraph's sync and async methods alike.
"""

from __future__ import annotations

try:
    import langgraph.checkpoint.base  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("inmem.langgraph needs LangGraph: pip install 'inmem[langgraph]'") from exc

from .saver import InmemSaver
from .store import InmemStore

__all__ = ["InmemSaver", "InmemStore"]
