"""Permission bits of the files a store or a cluster leaves on disk, for the privacy tests."""

from __future__ import annotations

import os
import stat


def modes_under(root) -> dict[str, int]:
    """Permission bits of everything under `root` (itself included), sockets left out."""
    found = {}
    for directory, _dirs, files in os.walk(root):
        for path in [directory] + [os.path.join(directory, f) for f in files]:
            st = os.lstat(path)
            if not stat.S_ISSOCK(st.st_mode):
                found[os.path.relpath(path, root)] = stat.S_IMODE(st.st_mode)
    return found
