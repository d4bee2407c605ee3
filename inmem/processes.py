"""What the cluster's processes share about each other: child environments, parent death, exit notes.

The coordinator starts shard workers and `inmem.Cluster` starts the
coordinator; both children must import this very installation, and must stop
when their parent dies. A worker that exits on purpose leaves an exit note
(a small 0600 JSON file) saying why, which its supervisor reads and reports.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import signal
import time

from .files import private_opener

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the exit code of a shard that could not start (shard.worker's EXIT_STARTUP): it
#: leaves an exit note saying why
SHARD_EXIT_STARTUP = 2
#: the environment variable that hands a spawned shard its coordinator's hello token
#: (the environment, unlike a command line, is readable by its own user only)
HELLO_TOKEN_ENV = "INMEM_HELLO_TOKEN"


def child_env() -> dict:
    """The environment for a child process: this installation first on its import path."""
    env = dict(os.environ)
    paths = [_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != _ROOT]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def die_with_parent() -> int:
    """Ask Linux to SIGTERM this process when its parent dies; return the parent's pid."""
    ppid = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: an idle check of getppid still works
        pass
    return ppid


def exit_note_path(data_dir: str, shard: int) -> str:
    return os.path.join(data_dir, f"shard-{shard}.exit.json")


def write_exit_note(data_dir: str, shard: int, exc: BaseException) -> None:
    """Leave the reason for a deliberate exit where the supervisor can show it.

    Besides the error's class and text: `reason`, one line saying what is
    wrong and where; `path`, the file or directory at fault (None if none);
    `lasting`, whether trying again cannot help before someone fixes it
    (see `lasting_failure`).
    """
    reason, where, lasting = failure_facts(exc)
    _write_note(exit_note_path(data_dir, shard),
                {"error": type(exc).__name__, "message": str(exc), "reason": reason,
                 "path": where, "lasting": lasting, "time": time.time()})


def _write_note(path: str, note: dict) -> None:
    try:
        with open(path + ".tmp", "w", encoding="utf-8", opener=private_opener) as f:
            json.dump(note, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


#: errors of the file system that a shard meets again on every start until someone acts:
#: the wrong kind of file, permissions, a read-only or full disk, a bad path
_LASTING_ERRNOS = frozenset({errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES,
                             errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                             errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL})


def lasting_failure(exc: BaseException) -> bool:
    """Whether a shard that failed to start with `exc` would fail the same way if started again.

    Damaged data that recovery may not skip, and the file-system errors of
    `_LASTING_ERRNOS`, are; anything else (its directory still locked by a
    process that is ending, an endpoint not free yet, an I/O error) may pass.
    """
    from .errors import CorruptionError, StoreOpenError
    # (an error class of a higher layer, such as a snapshot this build cannot
    # read, says so itself with `lasting`)
    if isinstance(exc, (CorruptionError, StoreOpenError)) or getattr(exc, "lasting", False):
        return True
    return isinstance(exc, OSError) and exc.errno in _LASTING_ERRNOS


def failure_facts(exc: BaseException) -> tuple[str, str | None, bool]:
    """(what is wrong and where in one line, the path at fault or None, `lasting_failure`)."""
    from .files import describe_os_error
    where = getattr(exc, "path", None) or getattr(exc, "filename", None)
    if isinstance(exc, OSError) and not hasattr(exc, "to_wire"):
        reason = describe_os_error(exc)
    else:
        reason = " ".join(str(exc).split()) or type(exc).__name__
    where = os.fspath(where) if isinstance(where, (str, os.PathLike)) else None
    return reason, where, lasting_failure(exc)


def coordinator_note_path(data_dir: str) -> str:
    return os.path.join(data_dir, "coordinator.exit.json")


def write_coordinator_note(data_dir: str, exc: BaseException) -> None:
    """Leave why the coordinator (this process) could not start, for `inmem.Cluster` to raise.

    The note names this process, so that a note left by an earlier
    coordinator is never taken for a later one's.
    """
    fields = {name: getattr(exc, name, None) for name in ("shard", "path", "cause")}
    _write_note(coordinator_note_path(data_dir),
                {"error": type(exc).__name__, "message": str(exc), "pid": os.getpid(),
                 "time": time.time(), **fields})


def read_coordinator_note(data_dir: str, pid: int) -> dict | None:
    """The note the coordinator of process `pid` left when it could not start, or None."""
    try:
        with open(coordinator_note_path(data_dir), encoding="utf-8") as f:
            note = json.load(f)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) and note.get("pid") == pid else None


def read_exit_note(data_dir: str, shard: int) -> dict | None:
    """The note a shard left when it last exited on purpose, or None."""
    try:
        with open(exit_note_path(data_dir, shard), encoding="utf-8") as f:
            note = json.load(f)
    except (OSError, ValueError):
        return None
    return note if isinstance(note, dict) else None


def clear_exit_note(data_dir: str, shard: int) -> None:
    try:
        os.unlink(exit_note_path(data_dir, shard))
    except OSError:
        pass


__all__ = ["HELLO_TOKEN_ENV", "SHARD_EXIT_STARTUP", "child_env", "die_with_parent",
           "exit_note_path", "write_exit_note",
           "read_exit_note", "clear_exit_note", "lasting_failure", "failure_facts",
           "coordinator_note_path", "write_coordinator_note", "read_coordinator_note"]
