"""Clocks injected into schedulers and nodes: simulated (deterministic) or wall (monotonic).

Models never read the time themselves; a runner owns one clock and passes ``now_s`` around.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """What a scheduler needs from a clock."""

    #: True: every missed slot is still sent (virtual time, nothing is ever really late).
    catch_up: bool

    def now_s(self) -> float:
        """Current time in seconds since the clock's start."""
        ...


class SimClock:
    """Simulated time in integer nanoseconds, advanced only by the runner (no drift)."""

    catch_up = True

    def __init__(self, start_s: float = 0.0) -> None:
        self.time_ns = round(start_s * 1e9)

    def now_s(self) -> float:
        """Current simulated time in seconds."""
        return self.time_ns / 1e9

    def advance(self, dt_s: float) -> float:
        """Move time forward by ``dt_s`` (>= 0) and return the new time."""
        if dt_s < 0:
            raise ValueError("simulated time cannot go backwards")
        self.time_ns += round(dt_s * 1e9)
        return self.now_s()

    def set(self, time_s: float) -> None:
        """Jump to ``time_s`` (not earlier than now)."""
        time_ns = round(time_s * 1e9)
        if time_ns < self.time_ns:
            raise ValueError("simulated time cannot go backwards")
        self.time_ns = time_ns


class WallClock:
    """Monotonic wall time since construction; a missed slot is skipped, not sent late twice."""

    catch_up = False

    def __init__(self) -> None:
        self._t0 = time.monotonic()

    def now_s(self) -> float:
        """Seconds since the clock was created (monotonic)."""
        return time.monotonic() - self._t0

    def sleep_until(self, time_s: float) -> None:
        """Sleep until ``time_s`` on this clock (returns at once if it has passed)."""
        delay = time_s - self.now_s()
        if delay > 0:
            time.sleep(delay)
