"""State cell operations of a run: named values changed by version (compare-and-set).

`StateOps` is one of the parts the `Engine` is assembled from. A cell's entry
is the packed form of the last ST_PUT or ST_DEL on its name (`shard.entries`:
value, version, time); a deleted cell keeps counting versions. Its tombstone
is reclaimed once dead for the engine's `dead_key_retention_s`
(`shard.dead_keys`): it leaves the table, and the run's state floor
(`state_floors`) rises to its version; a name that is not in the table
takes `floor + 1` on its first write (1 in a run that never reclaimed a
cell), so a cell written again continues above every version it had. A
reclaimed cell is absent, as the tombstone was: `read` gives None, `init`
creates it, and `cas` finds version 0 (an expected 0, "must be absent",
passes; any other fails with `current` None).
"""

from __future__ import annotations

from typing import Callable

import msgpack

from inmem.errors import InvalidValue, StateExists, VersionMismatch
from inmem.types import State
from inmem.values import check_key

from .dead_keys import DeadKeys
from .effects import ST_DEL, ST_PUT
from .entries import DELETED, entry_ts, entry_value, entry_version
from .runs import RunData

_unpackb = msgpack.unpackb


def _live(r: RunData, name: str) -> bytes | None:
    """The cell's entry when it holds a value (not deleted)."""
    e = r.state.get(name)
    return None if e is None or e[0] & DELETED else e


class StateOps:
    """The state cell operations of the engine."""

    clock: Callable[[], int]
    dead_state: DeadKeys
    #: run id -> its state cell floor (shard.dead_keys): only runs that reclaimed a cell
    state_floors: dict

    def st_init(self, run: str, name: str, value) -> int:
        r = self._writable(run)
        check_key(name, "state name")
        if _live(r, name) is not None:
            raise StateExists(f"state cell {name!r} already exists in run {run!r}")
        return self._st_put(r, name, value)

    def _st_put(self, r: RunData, name: str, value) -> int:
        data = self._encode(value)
        old = r.state.get(name)
        if old is None:
            floors = self.state_floors
            version = floors.get(r.run_id, 0) + 1 if floors else 1
        else:
            version = entry_version(old) + 1
        self._commit(r, (ST_PUT, name, data, version, self.clock()))
        return version

    def st_read(self, run: str, name: str) -> State | None:
        r = self._run(run)
        e = _live(r, check_key(name, "state name"))
        return None if e is None else State(_unpackb(entry_value(e), raw=False), entry_version(e),
                                            entry_ts(e))

    def st_set(self, run: str, name: str, value) -> int:
        r = self._writable(run)
        check_key(name, "state name")
        return self._st_put(r, name, value)

    def st_cas(self, run: str, name: str, expected_version: int, value) -> int:
        r = self._writable(run)
        check_key(name, "state name")
        if type(expected_version) is not int:
            raise InvalidValue("expected_version must be an int")
        e = _live(r, name)
        actual = 0 if e is None else entry_version(e)
        if actual != expected_version:
            raise VersionMismatch(expected_version, actual, current=None if e is None else State(
                _unpackb(entry_value(e), raw=False), actual, entry_ts(e)))
        return self._st_put(r, name, value)

    def st_delete(self, run: str, name: str) -> bool:
        r = self._writable(run)
        check_key(name, "state name")
        e = _live(r, name)
        if e is None:
            return False
        now = self.clock()  # the delete's time, and when its tombstone died
        self._commit(r, (ST_DEL, name, None, entry_version(e) + 1, now))
        self._note_tombstone(self.dead_state, r.run_id, name, now)
        return True
