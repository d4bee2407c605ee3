"""A clock a test sets: what an engine's `clock` option calls (int µs since the epoch)."""

from __future__ import annotations


class Clock:
    def __init__(self, start_us: int = 1_700_000_000_000_000):
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        self.now_us += int(seconds * 1_000_000)
