"""Drive cycles (speed traces) and time-series profiles (current or power) from CSV files.

Every bad input becomes one :class:`InputError` naming file, line and column. A speed trace is
read as piecewise linear in time: inside a segment the acceleration is its slope (the centred
difference about the segment's midpoint), at a sample point the centred difference of its two
neighbours, so speed, acceleration and distance always agree with each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.config import read_text
from bms.data import DATA_DIR
from bms.errors import InputError, located

#: Shipped cycles live here (symlinked to ``scenarios/drive_cycles`` in the source tree).
CYCLE_DIR = DATA_DIR / "drive_cycles"

TIME_COLUMN = "time_s"
SPEED_COLUMN = "speed_mps"
PROFILE_COLUMNS = ("current_a", "power_w")


def shipped_cycles() -> list[str]:
    """Names of the shipped drive cycles (``udds``, ``hwfet``, ...)."""
    return sorted(p.stem for p in CYCLE_DIR.glob("*.csv"))


def cycle_path(name_or_path: str | Path) -> Path:
    """A shipped cycle name or a path to a user CSV; unknown names list the choices."""
    path = Path(name_or_path)
    if path.suffix.lower() == ".csv" or path.exists() or "/" in str(name_or_path):
        return path
    candidate = CYCLE_DIR / f"{str(name_or_path).lower()}.csv"
    if candidate.exists():
        return candidate
    raise InputError(
        f"{name_or_path}: no such drive-cycle file or shipped name "
        f"(shipped: {', '.join(shipped_cycles())})"
    )


# -- CSV reading --------------------------------------------------------------------------------
def read_columns(
    path: str | Path,
    required: Sequence[str],
    *,
    one_of: Sequence[str] = (),
    nonnegative: Sequence[str] = (),
) -> tuple[dict[str, np.ndarray], str | None]:
    """Read named numeric columns of a header CSV, validated; returns (columns, chosen one_of).

    The ``time_s`` column must be strictly increasing; every value must be a finite number.
    Columns named in ``nonnegative`` must be >= 0. Blank lines and lines starting with ``#``
    are skipped; extra columns are ignored.
    """
    source = str(path)
    text = read_text(path)
    rows = [
        (n, line.strip())
        for n, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    want = ", ".join([*required, *([" or ".join(one_of)] if one_of else [])])
    if not rows:
        raise InputError(f"{source}: empty file (expected a header line with {want})")
    header_line, header_text = rows[0]
    header = [h.strip() for h in header_text.split(",")]
    for name in required:
        if name not in header:
            raise located(
                source, header_line, "", f"missing column {name} (found: {', '.join(header)})"
            )
    chosen = None
    if one_of:
        present = [c for c in one_of if c in header]
        if len(present) != 1:
            problem = "missing" if not present else "ambiguous"
            raise located(
                source,
                header_line,
                "",
                f"{problem} value column: expected exactly one of {', '.join(one_of)} "
                f"(found: {', '.join(header)})",
            )
        chosen = present[0]
    names = [*required, *([chosen] if chosen else [])]
    index = {name: header.index(name) for name in names}
    if len(rows) < 2:
        raise located(source, header_line, "", "no data rows after the header")
    out = {name: np.empty(len(rows) - 1) for name in names}
    for k, (line_no, line) in enumerate(rows[1:]):
        fields = line.split(",")
        if len(fields) != len(header):
            raise located(source, line_no, "", f"expected {len(header)} fields, got {len(fields)}")
        for name, col in index.items():
            text_value = fields[col].strip()
            try:
                value = float(text_value)
            except ValueError:
                raise located(
                    source, line_no, f"column {name}", f"expected a number, got {text_value!r}"
                ) from None
            if not math.isfinite(value):
                raise located(
                    source,
                    line_no,
                    f"column {name}",
                    f"expected a finite number, got {text_value!r}",
                )
            if value < 0.0 and name in nonnegative:
                raise located(
                    source, line_no, f"column {name}", f"must be >= 0, got {text_value!r}"
                )
            out[name][k] = value
    time_s = out.get(TIME_COLUMN)
    if time_s is not None:
        bad = np.flatnonzero(np.diff(time_s) <= 0.0)
        if bad.size:
            k = int(bad[0]) + 1
            raise located(
                source,
                rows[k + 1][0],
                f"column {TIME_COLUMN}",
                f"time must increase ({time_s[k]:g} after {time_s[k - 1]:g})",
            )
    return out, chosen


# -- drive cycles -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriveCycle:
    """A speed trace sampled at ``time_s`` (strictly increasing, s) with ``speed_mps`` (>= 0)."""

    name: str
    time_s: np.ndarray
    speed_mps: np.ndarray

    @property
    def start_s(self) -> float:
        """Time of the first sample."""
        return float(self.time_s[0])

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample."""
        return float(self.time_s[-1] - self.time_s[0])

    @property
    def distance_m(self) -> float:
        """Distance of the piecewise-linear trace (trapezoid rule, exact for it)."""
        return float(
            np.sum(np.diff(self.time_s) * 0.5 * (self.speed_mps[1:] + self.speed_mps[:-1]))
        )

    def speed_at(self, time_s: np.ndarray | float) -> np.ndarray:
        """Speed (m/s) at any time, linear between samples, held at the end values outside."""
        return np.interp(time_s, self.time_s, self.speed_mps)

    def accel_at(self, time_s: np.ndarray | float) -> np.ndarray:
        """Acceleration (m/s^2): the slope of the segment holding ``time_s``; at a sample point
        the centred difference of its neighbours; 0 outside the trace."""
        t = np.asarray(time_s, dtype=float)
        times, speeds = self.time_s, self.speed_mps
        k = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
        accel = (speeds[k + 1] - speeds[k]) / (times[k + 1] - times[k])
        # At an interior sample point: centred difference (time-weighted mean of both slopes).
        # For k == 0 the k - 1 index wraps around, but those entries are masked out.
        centred = (speeds[k + 1] - speeds[k - 1]) / (times[k + 1] - times[k - 1])
        accel = np.where((t == times[k]) & (k >= 1), centred, accel)
        return np.where((t < times[0]) | (t >= times[-1]), 0.0, accel)

    def segment_midpoints_s(self) -> np.ndarray:
        """Midpoints of the sample intervals: where the trace's mean speed and slope coincide."""
        return 0.5 * (self.time_s[1:] + self.time_s[:-1])

    def repeat(self, times: int) -> DriveCycle:
        """This cycle driven ``times`` times back to back (see :func:`concatenate`)."""
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise InputError(f"drive cycle {self.name}: repeat count must be >= 1, got {times!r}")
        return concatenate([self] * times, name=f"{self.name}x{times}" if times > 1 else self.name)


def concatenate(cycles: Iterable[DriveCycle], name: str | None = None) -> DriveCycle:
    """Cycles back to back, starting at the first one's start time.

    Where one ends at the speed the next starts with (both standstill for EPA cycles) they share
    the joining sample, so durations and distances add exactly; otherwise the next cycle starts
    one of its own sample intervals later and the trace ramps linearly across the gap.
    """
    parts = list(cycles)
    if not parts:
        raise InputError("drive cycle: nothing to concatenate")
    times = [parts[0].time_s]
    speeds = [parts[0].speed_mps]
    end_s = parts[0].time_s[-1]
    for cycle in parts[1:]:
        rel = cycle.time_s - cycle.time_s[0]
        if cycle.speed_mps[0] == speeds[-1][-1]:
            times.append(end_s + rel[1:])
            speeds.append(cycle.speed_mps[1:])
        else:
            gap = rel[1] if len(rel) > 1 else 1.0
            times.append(end_s + gap + rel)
            speeds.append(cycle.speed_mps)
        end_s = times[-1][-1] if len(times[-1]) else end_s
    return DriveCycle(
        name or "+".join(c.name for c in parts), np.concatenate(times), np.concatenate(speeds)
    )


def load_cycle(name_or_path: str | Path, repeat: int = 1) -> DriveCycle:
    """Load a shipped cycle (``udds``, ``hwfet``) or a ``time_s,speed_mps`` CSV; repeat it."""
    path = cycle_path(name_or_path)
    columns, _ = read_columns(path, (TIME_COLUMN, SPEED_COLUMN), nonnegative=(SPEED_COLUMN,))
    speed = columns[SPEED_COLUMN]
    if len(speed) < 2:
        raise InputError(f"{path}: a drive cycle needs at least two samples")
    cycle = DriveCycle(Path(path).stem, columns[TIME_COLUMN], speed)
    return cycle.repeat(repeat) if repeat != 1 else cycle


# -- current / power profiles ---------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """A current (A, positive = discharge) or power (W, positive = discharge) time series.

    ``quantity`` is ``"current_a"`` or ``"power_w"``. Between samples the value is held (a
    battery cycler's step profile) or, with ``linear=True``, interpolated.
    """

    name: str
    quantity: str
    time_s: np.ndarray
    value: np.ndarray

    @property
    def duration_s(self) -> float:
        """Time from the first to the last sample."""
        return float(self.time_s[-1] - self.time_s[0])

    def value_at(self, time_s: np.ndarray | float, linear: bool = False) -> np.ndarray:
        """Value at any time: held from each sample to the next (or linear); 0 outside the span."""
        t = np.asarray(time_s, dtype=float)
        if linear:
            out = np.interp(t, self.time_s, self.value)
        else:
            k = np.clip(np.searchsorted(self.time_s, t, side="right") - 1, 0, len(self.value) - 1)
            out = self.value[k]
        return np.where((t < self.time_s[0]) | (t > self.time_s[-1]), 0.0, out)

    def integral(self) -> float:
        """Integral over the span as held values (A s = C, or W s = J)."""
        return float(np.sum(np.diff(self.time_s) * self.value[:-1]))


def load_profile(path: str | Path) -> Profile:
    """Load a ``time_s,current_a`` or ``time_s,power_w`` CSV (exactly one value column)."""
    columns, quantity = read_columns(path, (TIME_COLUMN,), one_of=PROFILE_COLUMNS)
    quantity = quantity or PROFILE_COLUMNS[0]  # read_columns guarantees one was found
    return Profile(Path(path).stem, quantity, columns[TIME_COLUMN], columns[quantity])
