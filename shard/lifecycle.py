"""The run lifecycle: the statuses a run can have and the transitions between them.

"orphaned" is not a stored status: it is an active run that a recovery found
without an end, reported as such until the run moves on.
"""

from __future__ import annotations

from inmem.errors import InvalidStatusTransition

STATUSES = frozenset(("active", "paused", "completed", "failed", "cancelled", "archived"))

#: runs in these statuses accept writes
WRITABLE = frozenset(("active", "paused"))

TRANSITIONS = {
    "active": frozenset(("paused", "completed", "failed", "cancelled", "archived")),
    "paused": frozenset(("active", "cancelled", "archived")),
    "completed": frozenset(("archived",)),
    "failed": frozenset(("archived",)),
    "cancelled": frozenset(("archived",)),
    "archived": frozenset(),
}


def check_transition(current: str, target: str) -> None:
    if target not in TRANSITIONS.get(current, ()):
        raise InvalidStatusTransition(current, target)
