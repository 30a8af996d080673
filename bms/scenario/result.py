"""What a scenario run produces, shared by the runner, the artifact writers, the CLI and pytest.

The runner fills a :class:`RunResult`; a :class:`Recorder` receives every CAN frame and every
row of the decoded signal trace while the run goes on, so nothing is lost if the run is cut short.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import can
import numpy as np


@dataclass
class ExpectationResult:
    """Verdict of one ``expect`` entry; ``time_s`` is when it failed (or was met), if known."""

    name: str
    passed: bool
    detail: str
    time_s: float | None = None


@dataclass
class RunResult:
    """Outcome of one scenario run."""

    name: str
    source: str
    seed: int
    passed: bool = False
    #: One-line reason when the run could not finish (input error, crash, interrupt).
    error: str | None = None
    sim_s: float = 0.0
    wall_s: float = 0.0
    expectations: list[ExpectationResult] = field(default_factory=list)
    #: (time_s, description) of every fault switched on or off.
    fault_events: list[tuple[float, str]] = field(default_factory=list)
    frames: int = 0
    #: Bus load per bus name: {"bits_per_s": ..., "load_pct": ...}.
    busload: dict[str, dict[str, float]] = field(default_factory=dict)
    out_dir: Path | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def failures(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.passed]


class Recorder(Protocol):
    """Receives the run's traffic and trace as they happen; ``close`` flushes and is idempotent."""

    def on_frame(self, msg: can.Message, bus: str) -> None:
        """One frame as sent on ``bus`` ("pack" or "vehicle"), stamped with simulated time."""

    def on_sample(self, time_s: float, names: Sequence[str], values: np.ndarray) -> None:
        """One row of the decoded signal trace (``names`` is the same object every call)."""

    def close(self) -> None:
        """Flush and close every file; safe to call twice and from error paths."""
