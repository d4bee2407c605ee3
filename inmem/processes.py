"""What the cluster's processes share about each other: child environments, parent death, exit notes.

The coordinator starts shard workers and `inmem.Cluster` starts the
coordinator; both children must import this very installation, and must stop
when their parent dies. A worker that exits on purpose leaves an exit note
(a small 0600 JSON file) saying why, which its supervisor reads and reports.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import time

from .files import private_opener

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    """Leave the reason for a deliberate exit where the supervisor can show it."""
    try:
        path = exit_note_path(data_dir, shard)
        with open(path + ".tmp", "w", encoding="utf-8", opener=private_opener) as f:
            json.dump({"error": type(exc).__name__, "message": str(exc), "time": time.time()}, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass


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


__all__ = ["HELLO_TOKEN_ENV", "child_env", "die_with_parent", "exit_note_path", "write_exit_note",
           "read_exit_note", "clear_exit_note"]
