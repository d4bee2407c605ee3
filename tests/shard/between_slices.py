"""Tests' hook between the slices of an embedded store's long call (a search waiting
for the index, a long replay or chain check): another thread's call, run there.

The embedded store sleeps for no time between two slices, its lock free
(`inmem.embedded`); `write_between_slices` makes the first such sleep run
`write` in another thread and wait for it. The list it returns ends up as
[write's result, whether the thread was still stuck] once that happened: a
store that held its lock across the whole call never sleeps there, and the
list stays empty.
"""

from __future__ import annotations

import threading

import inmem.embedded


def write_between_slices(monkeypatch, write) -> list:
    seen: list = []
    real_sleep = inmem.embedded.time.sleep

    def between_slices(seconds):
        if not seen:
            t = threading.Thread(target=lambda: seen.append(write()))
            t.start()
            t.join(timeout=60)
            seen.append(t.is_alive())
        real_sleep(seconds)

    monkeypatch.setattr(inmem.embedded.time, "sleep", between_slices)
    return seen
