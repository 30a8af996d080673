"""One store of timestamped measurements, filled by the CAN decoder and read by every BMS task.

Each source (cell voltages, temperatures, module pressures, pack current, ...) keeps preallocated
arrays of values, per-element validity, per-element receive time and sample count, so the
protection engine can ask "how old is this?" and "how many fresh samples arrived?" without the
decoder ever allocating. Time is always passed in (``now_s``); the store never reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from bms.errors import InputError

NEVER_S = -np.inf  # receive time of an element that never arrived: its age is infinite
TIME_EPS_S = 1e-9  # float slack: 1.3 - 1.0 must not count as older than 0.3 s


@dataclass(frozen=True)
class SourceSpec:
    """Shape and timing of one source: ``cycle_s`` is its CAN cycle, ``timeout_s`` its staleness."""

    name: str
    size: int
    cycle_s: float
    timeout_s: float
    bus: str = "pack"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InputError(f"source {self.name}: size must be >= 1, got {self.size}")
        if not (self.cycle_s > 0 and self.timeout_s > 0):
            raise InputError(f"source {self.name}: cycle_s and timeout_s must be > 0")


class Source:
    """Latest value of each element of one source, with validity, receive time and sample count.

    ``seq`` counts writes to the source (frames); ``elem_seq`` counts fresh samples per element, so
    a multiplexed cell-voltage message that refreshes 4 cells per frame is counted per cell.
    """

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        n = spec.size
        self.value = np.full(n, np.nan)
        self.valid = np.zeros(n, dtype=bool)
        self.elem_time_s = np.full(n, NEVER_S)
        self.elem_seq = np.zeros(n, dtype=np.int64)
        self.seq = 0
        self.last_rx_s = NEVER_S
        self.last_gap_s = np.inf  # spacing of the last two writes (vehicle-request timing check)
        self.e2e_failures = 0
        self.last_e2e_failure_s = NEVER_S

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def size(self) -> int:
        return self.spec.size

    def write(
        self, now_s: float, values: np.ndarray | Iterable[float] | float, start: int = 0
    ) -> None:
        """Store ``values`` at elements ``start..``; NaN or inf marks an element invalid.

        Out-of-bounds slices raise :class:`InputError` (a decoder bug or a DBC/pack mismatch),
        never an IndexError deep in a task.
        """
        if type(values) is float and start == 0:
            self._write_scalar(now_s, values)
            return
        arr = np.asarray(values, dtype=float)
        count = arr.size
        stop = start + count
        if start < 0 or stop > self.spec.size:
            raise InputError(
                f"source {self.name}: write of {count} values at {start} exceeds size {self.size}"
            )
        seg = self.value[start:stop]
        seg[...] = arr.reshape(-1) if arr.ndim else arr
        np.isfinite(seg, out=self.valid[start:stop])
        self.elem_time_s[start:stop] = now_s
        self.elem_seq[start:stop] += 1
        self.seq += 1
        self.last_gap_s = now_s - self.last_rx_s
        self.last_rx_s = now_s

    def _write_scalar(self, now_s: float, value: float) -> None:
        """:meth:`write` of one float at element 0 (the 10 ms scalars) without array temporaries."""
        self.value[0] = value
        self.valid[0] = value - value == 0.0  # False for NaN and +-inf, like np.isfinite
        self.elem_time_s[0] = now_s
        self.elem_seq[0] += 1
        self.seq += 1
        self.last_gap_s = now_s - self.last_rx_s
        self.last_rx_s = now_s

    def invalidate(self, now_s: float, start: int = 0, count: int | None = None) -> None:
        """Mark elements invalid (the AFE flagged a channel) while counting them as received."""
        stop = self.size if count is None else start + count
        self.value[start:stop] = np.nan
        self.valid[start:stop] = False
        self.elem_time_s[start:stop] = now_s
        self.elem_seq[start:stop] += 1
        self.seq += 1
        self.last_gap_s = now_s - self.last_rx_s
        self.last_rx_s = now_s

    def note_e2e_failure(self, now_s: float) -> None:
        """Record a frame of this source rejected by the E2E check (counter or CRC)."""
        self.e2e_failures += 1
        self.last_e2e_failure_s = now_s

    def e2e_failed_last(self) -> bool:
        """True while the most recent frame of this source was rejected (no good frame since)."""
        return self.last_e2e_failure_s >= self.last_rx_s and self.e2e_failures > 0

    def age_s(self, now_s: float) -> float:
        """Age of the OLDEST element: a multiplexed group that stopped arriving makes it stale."""
        return float(now_s - self.elem_time_s.min())

    def newest_age_s(self, now_s: float) -> float:
        """Age of the most recent write of any element."""
        return float(now_s - self.last_rx_s)

    def is_stale(self, now_s: float) -> bool:
        """True if any element is older than the source's timeout (or never arrived)."""
        return self.age_s(now_s) > self.spec.timeout_s + TIME_EPS_S

    def stale_mask(self, now_s: float, out: np.ndarray) -> np.ndarray:
        """Per-element staleness into the caller's preallocated boolean array."""
        # Compare receive times with one scalar cut-off: no temporary array per call.
        return np.less(self.elem_time_s, now_s - self.spec.timeout_s - TIME_EPS_S, out=out)

    def usable(self) -> np.ndarray:
        """Elements that are valid right now (received, finite); staleness is checked separately."""
        return self.valid

    def scalar(self, index: int = 0) -> float:
        """One element as a float (NaN if invalid)."""
        return float(self.value[index]) if self.valid[index] else float("nan")


class SignalStore:
    """All sources of the BMS model by name; the single place tasks read measurements from."""

    def __init__(self, specs: Iterable[SourceSpec]) -> None:
        self._sources: dict[str, Source] = {}
        for spec in specs:
            if spec.name in self._sources:
                raise InputError(f"source {spec.name}: defined twice")
            self._sources[spec.name] = Source(spec)

    def __getitem__(self, name: str) -> Source:
        try:
            return self._sources[name]
        except KeyError:
            raise InputError(
                f"unknown signal source {name!r} (known: {', '.join(self._sources)})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._sources

    def __iter__(self) -> Iterator[Source]:
        return iter(self._sources.values())

    def names(self) -> list[str]:
        """Source names in definition order."""
        return list(self._sources)

    def stale_sources(self, now_s: float, bus: str | None = None) -> list[str]:
        """Names of stale sources, optionally only those of one bus (``pack``, ``vehicle``...)."""
        return [
            s.name
            for s in self._sources.values()
            if (bus is None or s.spec.bus == bus) and s.is_stale(now_s)
        ]


# Sizes of the standard sources: an int, or the name of a pack dimension.
STANDARD_SIZES: dict[str, int | str] = {
    "cell_voltage_v": "cells",
    "cell_temp_c": "temp_sensors",
    "pressure_mpa": "modules",
    "current_a": 1,
    "pack_voltage_v": 1,
    "link_voltage_v": 1,
    "contactor_feedback": 3,  # plus, minus, precharge
    "h2s_ppm": 1,
    "vehicle_request": 1,
    "charger_status": 2,  # available current, status
}


def standard_store(
    n_cells: int,
    n_temp_sensors: int,
    n_modules: int,
    timing: Mapping[str, tuple[float, float, str]],
) -> SignalStore:
    """The BMS store for one pack layout; ``timing[name] = (cycle_s, timeout_s, bus)``.

    Timing comes from the ladder file (``sources:`` section), sizes from the pack layout.
    """
    dims = {"cells": n_cells, "temp_sensors": n_temp_sensors, "modules": n_modules}
    specs = []
    for name, (cycle_s, timeout_s, bus) in timing.items():
        size = STANDARD_SIZES.get(name, 1)
        specs.append(
            SourceSpec(name, dims[size] if isinstance(size, str) else size, cycle_s, timeout_s, bus)
        )
    return SignalStore(specs)
