"""Named crash points for crash tests.

Code marks a place where a crash would be interesting with
`failpoint("wal.after_fsync")`. In production that is one set lookup and
nothing else. A crash test sets, before starting the process:

    INMEM_FAILPOINT=wal.after_fsync           one point, or a comma-separated list
    INMEM_FAILPOINT_EXIT=77                   exit code (default 77)
    INMEM_FAILPOINT_SKIP=2                    let the first 2 hits pass, die on the 3rd
    INMEM_FAILPOINT_ACTION=stop               stop there (SIGSTOP) instead of dying

and the process dies with `os._exit` right at that point: no cleanup, no
flush of Python buffers, no atexit handlers, like a crash. With the stop
action it stops itself instead, and goes on when a test sends SIGCONT: a
process held at a known point, as a slow disk or a busy machine would hold
it. Hits are counted per point. The environment is read once at import; `reload()` reads it again (for
tests that change it in-process).

Modules declare their points with `register(name)` so that a crash suite can
enumerate `KNOWN_FAILPOINTS` and run every one of them.
"""

from __future__ import annotations

import os
import signal

ENV_POINTS = "INMEM_FAILPOINT"
ENV_EXIT = "INMEM_FAILPOINT_EXIT"
ENV_SKIP = "INMEM_FAILPOINT_SKIP"
ENV_ACTION = "INMEM_FAILPOINT_ACTION"
DEFAULT_EXIT_CODE = 77

#: Every failpoint name declared by a module, in registration order.
KNOWN_FAILPOINTS: list[str] = []

_active: frozenset = frozenset()
_exit_code = DEFAULT_EXIT_CODE
_skip = 0
_stop = False
_hits: dict[str, int] = {}


def register(name: str) -> str:
    """Declare a failpoint name (idempotent) and return it, for use as a constant."""
    if name not in KNOWN_FAILPOINTS:
        KNOWN_FAILPOINTS.append(name)
    return name


def reload() -> None:
    """Read the INMEM_FAILPOINT* environment variables again and reset hit counts."""
    global _active, _exit_code, _skip, _stop
    raw = os.environ.get(ENV_POINTS, "")
    _active = frozenset(p.strip() for p in raw.split(",") if p.strip())
    try:
        _exit_code = int(os.environ.get(ENV_EXIT, str(DEFAULT_EXIT_CODE)))
    except ValueError:
        _exit_code = DEFAULT_EXIT_CODE
    try:
        _skip = max(0, int(os.environ.get(ENV_SKIP, "0")))
    except ValueError:
        _skip = 0
    _stop = os.environ.get(ENV_ACTION, "exit").strip() == "stop"
    _hits.clear()


def active() -> frozenset:
    """The failpoint names armed in this process."""
    return _active


def failpoint(name: str) -> None:
    """Crash (or stop) the process here if `name` is armed; otherwise do nothing."""
    if name in _active:
        _fire(name)


def _fire(name: str) -> None:
    hits = _hits.get(name, 0)
    _hits[name] = hits + 1
    if hits < _skip:
        return
    if _stop:
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    # A line on stderr tells a crash test's log which point killed the process;
    # os.write, because Python's buffered streams are not flushed by _exit.
    try:
        os.write(2, f"failpoint {name} hit: exiting with {_exit_code}\n".encode())
    except OSError:
        pass
    os._exit(_exit_code)


reload()
