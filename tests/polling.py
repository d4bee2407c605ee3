"""The one way tests wait for something that happens in another thread or process."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 10.0, what: str = "condition", interval: float = 0.005):
    """Poll `predicate` until it returns a true value, and return it; fail after `timeout` s.

    The timeout is a deadline for a hung condition, never a timing assertion.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
