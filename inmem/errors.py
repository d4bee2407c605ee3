"""Every error inmem raises, and how an error crosses a process boundary.

All public errors subclass `InmemError`. A shard that raises one sends
`(class name, message, fields)` over the wire (`to_wire`), and the client
rebuilds the same class with the same message (`from_wire`), so code that
catches `inmem.VersionMismatch` works the same embedded or against a cluster.
"""

from __future__ import annotations

from .types import State


class InmemError(Exception):
    """Base class of every error raised by inmem."""

    #: attribute names carried across the wire besides the message
    _fields: tuple[str, ...] = ()

    def __init__(self, message: str = "", **fields):
        super().__init__(message)
        for name, value in fields.items():
            setattr(self, name, value)

    @property
    def message(self) -> str:
        """The error's text, as str(error) gives it."""
        return self.args[0] if self.args else ""

    def __reduce__(self):
        # Exception's own reduce would call __init__ with the message alone, which
        # the classes whose __init__ takes their fields first would misread.
        return _rebuild, (type(self), self.message), dict(self.__dict__)

    def to_wire(self) -> list:
        """[class name, message, {field: value}]: how the error crosses a process boundary."""
        return [type(self).__name__, self.message,
                {f: getattr(self, f, None) for f in self._fields}]


class InvalidKey(InmemError):
    """A key or name that is not a non-empty str of at most 1024 UTF-8 bytes."""


class InvalidValue(InmemError):
    """A value outside the value model (None, bool, int64, float, str, bytes, list, dict[str, ...])."""


class ValueTooLarge(InmemError):
    """An encoded value larger than max_value_bytes."""


class InvalidPath(InmemError):
    """A malformed JSON path, or a path step that does not fit the document."""


class RunNotFound(InmemError):
    """The run does not exist."""
    _fields = ("run_id",)


class RunExists(InmemError):
    """begin_run with an id that is already taken."""
    _fields = ("run_id",)


class RunNotActive(InmemError):
    """A write to a run whose status is not active or paused."""
    _fields = ("run_id", "status")


class InvalidStatusTransition(InmemError):
    """A run status change that the transition table does not allow."""
    _fields = ("from_", "to")

    def __init__(self, from_: str = "", to: str = "", message: str | None = None):
        super().__init__(message or f"cannot move a run from {from_!r} to {to!r}",
                         from_=from_, to=to)


def _number(n) -> str:
    """A version for a message: an int too long to print as its size (never raising)."""
    try:
        return str(n)
    except ValueError:  # past the digits Python prints
        return f"<an int of {n.bit_length()} bits>" if type(n) is int else "<?>"
    except Exception:  # an object whose __str__ fails: the message must still be made
        return f"<{type(n).__name__}>"


class VersionMismatch(InmemError):
    """A compare-and-swap whose expected version is not the current one.

    `current` is what the loser of a race needs to try again without another
    read: the cell's State as the failed `state.cas` found it (None when the
    cell is absent, and for other compare-and-swaps, such as a KV put with
    `if_version`).
    """
    _fields = ("expected", "actual", "current")
    #: ints that may be past 64 bits (a caller's expected version), which cross
    #: the wire as their decimal text
    _int_fields = ("expected", "actual")

    def __init__(self, expected: int = 0, actual: int = 0, message: str | None = None,
                 current=None):
        super().__init__(message or f"expected version {_number(expected)}, found {_number(actual)}",
                         expected=expected, actual=actual, current=current)

    @property
    def current(self):
        """The cell's State when the compare-and-swap failed, or None."""
        return self._current

    @current.setter
    def current(self, value) -> None:
        # Over the wire a State arrives as a plain [value, version, updated_at].
        if value is not None and type(value) is not State:
            try:
                value = State(*value)
            except TypeError:
                value = None
        self._current = value


class StateExists(InmemError):
    """state.init on a cell that already exists."""


class StateNotFound(InmemError):
    """state.transition on a cell that does not exist."""


class TraceNotFound(InmemError):
    """A trace id (or parent id) that the run does not hold."""


class TransactionConflict(InmemError):
    """Something a transaction read changed before it committed; nothing was applied."""


class ClusterNotReady(InmemError):
    """The cluster has not finished recovering every shard."""


class ShardUnavailable(InmemError):
    """The shard that owns the run is down or restarting; retry later."""


class SlotMoved(InmemError):
    """A shard was sent a request for a slot it does not own (the sender's slot map is stale).

    The client refreshes its map from the coordinator and sends the request
    again, to `shard`; code using the client never sees this error.
    """
    _fields = ("slot", "shard")


class Timeout(InmemError):
    """No reply within the client's deadline."""


class ProtocolError(InmemError):
    """A malformed, oversized or wrong-version message."""


class InvalidOption(InmemError, TypeError):
    """An option that `open` or `connect` does not take, or one of the wrong type.

    Also a TypeError, which is what Python raises for an unexpected keyword.
    """


class InvalidURL(InmemError, ValueError):
    """A cluster URL that is not ipc://path or tcp://host:port."""


class StoreOpenError(InmemError, OSError):
    """The directory of a durable store cannot be created or opened (also an OSError)."""
    _fields = ("path",)


class CorruptionError(InmemError):
    """Damaged data on disk that recovery may not skip."""
    _fields = ("path", "offset")


class DurabilityError(InmemError):
    """The write-ahead log cannot be written or fsynced; the shard refuses writes."""


class HistoryNotKept(InmemError):
    """Replay or diff of a run whose history was not kept (an in-memory store's `history=`)."""
    _fields = ("run_id",)


_BY_NAME = {cls.__name__: cls for cls in (
    InmemError, InvalidKey, InvalidValue, ValueTooLarge, InvalidPath, RunNotFound,
    RunExists, RunNotActive, InvalidStatusTransition, VersionMismatch, StateExists,
    StateNotFound, TraceNotFound, TransactionConflict, ClusterNotReady,
    ShardUnavailable, SlotMoved, Timeout, ProtocolError, InvalidOption, InvalidURL,
    StoreOpenError, CorruptionError, DurabilityError, HistoryNotKept)}


def _rebuild(cls, message: str) -> InmemError:
    """An error of class `cls` with `message`, its fields to come (pickle, copy)."""
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    return err


def from_wire(wire) -> InmemError:
    """Rebuild an error sent by `InmemError.to_wire`; unknown names become InmemError."""
    try:
        name, message, fields = wire
        cls = _BY_NAME.get(name, InmemError)
        err = cls.__new__(cls)
        Exception.__init__(err, str(message))
        if isinstance(fields, dict):
            for key in cls._fields:
                setattr(err, key, fields.get(key))
            for key in getattr(cls, "_int_fields", ()):
                value = getattr(err, key)
                if type(value) is str and value.lstrip("-").isdigit():
                    setattr(err, key, int(value))
        return err
    except (TypeError, ValueError):
        return ProtocolError(f"malformed error reply: {wire!r:.200}")


__all__ = [name for name in _BY_NAME] + ["from_wire"]
