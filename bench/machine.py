"""What a result was measured on: the machine, the filesystem under the output, the commit.

The commit is read straight from the checkout's `.git` directory (HEAD, loose
refs, packed-refs), so the benchmark needs no git executable and never runs
one. Everything here degrades to "unknown" rather than failing: a missing
fact must not stop a benchmark run.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def filesystem_of(path) -> dict:
    """The mount that holds `path`: device, mount point and filesystem type."""
    try:
        import psutil
    except ImportError:
        return {"path": str(path), "fstype": "unknown"}
    target = os.path.realpath(os.fspath(path))
    best = None
    for part in psutil.disk_partitions(all=True):
        mp = part.mountpoint
        if target == mp or target.startswith(mp.rstrip("/") + "/") or mp == "/":
            if best is None or len(mp) > len(best.mountpoint):
                best = part
    if best is None:
        return {"path": target, "fstype": "unknown"}
    info = {"path": target, "mountpoint": best.mountpoint, "device": best.device,
            "fstype": best.fstype}
    try:
        usage = psutil.disk_usage(best.mountpoint)
        info["total_bytes"] = usage.total
        info["free_bytes"] = usage.free
    except OSError:
        pass
    return info


def machine_info(out_dir) -> dict:
    try:
        import psutil
        memory = psutil.virtual_memory().total
        physical = psutil.cpu_count(logical=False)
    except ImportError:
        memory, physical = None, None
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "physical_cores": physical,
        "memory_bytes": memory,
        "disk": filesystem_of(out_dir),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "python_executable": sys.executable,
        "os": platform.platform(),
        "hostname_hash": _host_hash(),
    }


def ran_on(info: dict, full_commit: str | None) -> dict:
    """The short form of machine_info and the commit that every row carries."""
    return {"commit": full_commit, "host": info.get("hostname_hash"), "cpu": info.get("cpu"),
            "cores": info.get("cores")}


def _host_hash() -> str:
    # Enough to tell two machines' results apart without publishing a host name.
    import hashlib
    return hashlib.sha256(platform.node().encode()).hexdigest()[:12]


def commit(root: Path = REPO_ROOT) -> str | None:
    """The full hash HEAD points at, or None outside a checkout."""
    git = root / ".git"
    if git.is_file():  # a worktree: ".git" names the real directory
        try:
            text = git.read_text().strip()
        except OSError:
            return None
        if not text.startswith("gitdir:"):
            return None
        git = (root / text.split(":", 1)[1].strip()).resolve()
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head.split(":", 1)[1].strip()
    for base in (git, _common_dir(git)):
        try:
            return (base / ref).read_text().strip()
        except OSError:
            pass
        try:
            with open(base / "packed-refs", encoding="utf-8") as f:
                for line in f:
                    parts = line.strip().split(" ")
                    if len(parts) == 2 and parts[1] == ref:
                        return parts[0]
        except OSError:
            pass
    return None


def _common_dir(git: Path) -> Path:
    try:
        return (git / (git / "commondir").read_text().strip()).resolve()
    except OSError:
        return git


def short_commit(root: Path = REPO_ROOT) -> str:
    full = commit(root)
    return full[:7] if full else "nocommit"


__all__ = ["machine_info", "ran_on", "commit", "short_commit", "filesystem_of", "cpu_model", "REPO_ROOT"]
