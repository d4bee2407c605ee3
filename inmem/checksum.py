"""CRC-32C (Castagnoli): the checksum of every WAL record, snapshot file and wire frame.

It is the `crc32c` package's C function, loaded on its own: importing the
package runs its `__init__`, which looks its own version up in the metadata
of every installed distribution, and that look-up is a fifth of a second of
every shard process's start-up. Nothing here needs the version, so the
extension module is loaded directly, and through the package only when it
cannot be found that way.
"""

from __future__ import annotations

import os
import sys

__all__ = ["crc32c"]

_EXTENSION = "crc32c._crc32c"


def _load():
    module = sys.modules.get(_EXTENSION)
    if module is None:
        try:
            module = _load_extension()
        except Exception:  # an unusual layout: the package knows where its parts are
            module = None
    if module is None:
        from crc32c import crc32c as fn
        return fn
    return module.crc32c


def _load_extension():
    import importlib.machinery
    import importlib.util

    spec = importlib.util.find_spec("crc32c")
    for where in (spec.submodule_search_locations or ()) if spec else ():
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(where, "_crc32c" + suffix)
            if os.path.isfile(path):
                loader = importlib.machinery.ExtensionFileLoader(_EXTENSION, path)
                found = importlib.util.spec_from_file_location(_EXTENSION, path, loader=loader)
                module = importlib.util.module_from_spec(found)
                loader.exec_module(module)
                # The package's own `from ._crc32c import ...` then finds it loaded.
                sys.modules[_EXTENSION] = module
                return module
    return None


crc32c = _load()
