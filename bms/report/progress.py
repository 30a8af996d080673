"""A one-line progress bar for long runs: simulated time, percent, real-time factor and ETA.

Drawn only on an interactive terminal; silent when the stream is not a TTY, when ``CI`` (or a
known CI variable) is set, or when ``TERM=dumb``, so logs and CI output stay clean. Redraws are
throttled on the injected wall clock, so updating every simulated step costs a comparison.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO

import numpy as np

#: Environment variables set by common CI services; any of them silences the bar.
CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD")
#: Seconds of wall time between two redraws (about ten a second reads as smooth).
REDRAW_S = 0.1
#: Characters of the bar itself.
BAR_WIDTH = 30


def interactive(stream: IO[str], environ: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is a terminal a person watches (not a pipe, file, dumb term or CI)."""
    env = os.environ if environ is None else environ
    if any(env.get(name, "").strip().lower() not in ("", "0", "false") for name in CI_VARIABLES):
        return False
    if env.get("TERM", "") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # closed stream
        return False


def _clock_text(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Progress of one run: ``update(sim_s)`` as the run goes, ``close()`` at the end.

    ``total_s`` is the scenario's duration cap (the run may stop earlier); ``clock`` returns wall
    seconds (injected for tests); ``enabled`` forces the bar on or off, default: only on an
    interactive terminal outside CI. Usable as a context manager.
    """

    def __init__(
        self,
        total_s: float,
        *,
        label: str = "",
        stream: IO[str] | None = None,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.total_s = max(float(total_s), 0.0)
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.enabled = interactive(self.stream, environ) if enabled is None else enabled
        self._clock = clock
        self._start = clock()
        self._next_draw = self._start  # first update draws at once
        self._width = 0
        self.sim_s = 0.0

    def update(self, sim_s: float) -> None:
        """Record the simulated time reached; redraw at most every :data:`REDRAW_S` wall s."""
        self.sim_s = sim_s
        if not self.enabled:
            return
        now = self._clock()
        if now < self._next_draw:
            return
        self._next_draw = now + REDRAW_S
        self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The text of the bar: ``label [####----] 42% 12:30/30:00 sim  85x  ETA 0:09``."""
        now = self._clock() if now is None else now
        wall = max(now - self._start, 1e-9)
        frac = min(self.sim_s / self.total_s, 1.0) if self.total_s > 0 else 0.0
        filled = int(round(frac * BAR_WIDTH))
        rtf = self.sim_s / wall
        eta = (self.total_s - self.sim_s) / rtf if rtf > 0 and frac < 1.0 else 0.0
        prefix = f"{self.label} " if self.label else ""
        return (
            f"{prefix}[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {100 * frac:3.0f}% "
            f"{_clock_text(self.sim_s)}/{_clock_text(self.total_s)} sim  "
            f"{rtf:5.0f}x real time  ETA {_clock_text(eta)}"
        )

    def _draw(self, now: float) -> None:
        text = self.line(now)
        # Pad over a longer previous line; \r returns to the start without scrolling.
        pad = " " * max(self._width - len(text), 0)
        self._width = len(text)
        self.stream.write(f"\r{text}{pad}")
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line (nothing when silent); safe to call twice."""
        if self.enabled and self._width >= 0:
            self._draw(self._clock())
            self.stream.write("\n")
            self.stream.flush()
            self._width = -1

    def wrap(self, recorder: object | None) -> ProgressRecorder:
        """A recorder that forwards everything to ``recorder`` and advances this bar per sample."""
        return ProgressRecorder(self, recorder)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressRecorder:
    """A :class:`~bms.scenario.result.Recorder` tap: forwards frames/samples, updates progress.

    Lets ``bms run`` show progress without the runner knowing about terminals:
    ``run_scenario(scenario, progress.wrap(recorder))``. ``recorder`` may be None.
    """

    def __init__(self, progress: Progress, recorder: object | None) -> None:
        self.progress = progress
        self.recorder = recorder
        self._on_frame = getattr(recorder, "on_frame", None)
        self._on_sample = getattr(recorder, "on_sample", None)

    def on_frame(self, msg: object, bus: str) -> None:
        """Forward one frame."""
        if self._on_frame is not None:
            self._on_frame(msg, bus)

    def on_sample(self, time_s: float, names: Sequence[str], values: np.ndarray) -> None:
        """Forward one trace row and move the bar to its time."""
        if self._on_sample is not None:
            self._on_sample(time_s, names, values)
        self.progress.update(time_s)

    def close(self) -> None:
        """Close the wrapped recorder (the bar is closed by its owner)."""
        close = getattr(self.recorder, "close", None)
        if close is not None:
            close()

    def __getattr__(self, name: str) -> object:
        # Anything else a caller needs from the real recorder (paths, frames, finish, ...).
        return getattr(self.recorder, name)
