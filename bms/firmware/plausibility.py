"""Measurement plausibility: range, stuck, open-wire and clamp checks, cell-sum check, substitution.

Pure functions on numpy arrays do the checks; :class:`PlausibilityChecker` runs them over the
signal store in the 100 ms task and keeps the (few) arrays of state a stuck detector needs.
NaN or missing values are treated as invalid and never raise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bms.config import Section
from bms.firmware.store import SignalStore


@dataclass(frozen=True)
class PlausibilityParams:
    """Limits of the sensors (not of the cell): a value outside them is a sensor fault."""

    cell_voltage_range_v: tuple[float, float]
    voltage_quantum_v: float
    voltage_stuck_samples: int
    stuck_current_a: float
    open_wire_low_v: float
    open_wire_pair_tolerance: float
    temp_clamp_c: tuple[float, float]
    temp_quantum_c: float
    temp_stuck_samples: int
    pressure_range_mpa: tuple[float, float]
    pressure_quantum_mpa: float
    pressure_stuck_samples: int


def read_plausibility(sec: Section) -> PlausibilityParams:
    """Read the ``plausibility:`` section of a ladder file (every field located on error)."""
    vmin = sec.number("cell_voltage_min_v", min=-1.0, max=10.0)
    vmax = sec.number("cell_voltage_max_v", above=vmin, max=10.0)
    tmin = sec.number("temp_clamp_low_c", min=-100.0, max=50.0)
    tmax = sec.number("temp_clamp_high_c", above=tmin, max=400.0)
    pmin = sec.number("pressure_min_mpa", min=-1.0, max=10.0)
    pmax = sec.number("pressure_max_mpa", above=pmin, max=100.0)
    params = PlausibilityParams(
        cell_voltage_range_v=(vmin, vmax),
        voltage_quantum_v=sec.number("voltage_quantum_v", min=0.0, max=0.1),
        voltage_stuck_samples=sec.integer("voltage_stuck_samples", min=2),
        stuck_current_a=sec.number("stuck_current_a", min=0.0),
        open_wire_low_v=sec.number("open_wire_low_v", min=0.0, max=5.0),
        open_wire_pair_tolerance=sec.number("open_wire_pair_tolerance", above=0.0, max=1.0),
        temp_clamp_c=(tmin, tmax),
        temp_quantum_c=sec.number("temp_quantum_c", min=0.0, max=10.0),
        temp_stuck_samples=sec.integer("temp_stuck_samples", min=2),
        pressure_range_mpa=(pmin, pmax),
        pressure_quantum_mpa=sec.number("pressure_quantum_mpa", min=0.0, max=1.0),
        pressure_stuck_samples=sec.integer("pressure_stuck_samples", min=2),
    )
    sec.done()
    return params


# -- pure checks ------------------------------------------------------------------------------


def in_range(values: np.ndarray, low: float, high: float, out: np.ndarray) -> np.ndarray:
    """``out[i]`` = value finite and within [low, high] (NaN compares False, so it is invalid)."""
    np.greater_equal(values, low, out=out)
    out &= values <= high
    return out


def clamped(values: np.ndarray, low: float, high: float, out: np.ndarray) -> np.ndarray:
    """Temperature open/short signature: the channel sits at (or beyond) an ADC clamp extreme.

    An open NTC reads the cold clamp, a shorted one the hot clamp. The runaway detector uses raw
    samples, so invalidating a clamped channel here never hides a real runaway from it.
    """
    np.less_equal(values, low, out=out)
    out |= values >= high
    return out


def open_wire_mask(
    cell_voltage_v: np.ndarray, low_v: float, pair_tolerance: float, out: np.ndarray
) -> np.ndarray:
    """Broken sense line: one channel reads ~0 V and a neighbour ~ the sum of two cells.

    An AFE with a broken tap between cells k and k+1 reports ~0 V on one of them and the pair's
    sum on the other; both channels are flagged, since neither reading belongs to one cell.
    """
    out[:] = False
    if cell_voltage_v.size < 2:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN input: nothing to compare
        ref_v = float(np.nanmedian(cell_voltage_v))
    if not np.isfinite(ref_v) or ref_v <= 0:
        return out
    low = cell_voltage_v < low_v
    double = np.abs(cell_voltage_v - 2.0 * ref_v) <= pair_tolerance * 2.0 * ref_v
    # pair (i, i+1): one low, the other doubled
    pair = (low[:-1] & double[1:]) | (double[:-1] & low[1:])
    out[:-1] |= pair
    out[1:] |= pair
    return out


def cell_sum_mismatch_v(
    cell_voltage_v: np.ndarray, cell_valid: np.ndarray, pack_voltage_v: float
) -> float:
    """|sum of cell voltages - pack voltage sensor|; NaN when either side is unknown.

    Invalid cells count at the median of the valid ones, so one bad channel does not fake a 4 V
    mismatch on its own (its own fault is raised by its own check).
    """
    n_valid = int(np.count_nonzero(cell_valid))
    if n_valid == 0 or not np.isfinite(pack_voltage_v):
        return float("nan")
    valid_v = cell_voltage_v[cell_valid]
    total_v = float(valid_v.sum()) + (cell_voltage_v.size - n_valid) * float(np.median(valid_v))
    return abs(total_v - pack_voltage_v)


def substitute_group_median(
    values: np.ndarray, valid: np.ndarray, n_groups: int, out: np.ndarray, substituted: np.ndarray
) -> np.ndarray:
    """Replace invalid values by the median of the valid ones of their group (module).

    ``substituted`` marks replaced elements; a group with no valid value keeps NaN so that the
    protection sees "unknown" rather than an invented number.
    """
    np.copyto(out, values)
    np.logical_not(valid, out=substituted)
    if not substituted.any():
        return out
    masked = np.where(valid, values, np.nan).reshape(n_groups, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a module with every sensor invalid
        median = np.nanmedian(masked, axis=1)
    fill = np.repeat(median, masked.shape[1])
    np.copyto(out, fill, where=substituted)
    substituted &= np.isfinite(out)
    return out


class StuckDetector:
    """Flags channels that did not change beyond quantisation for N fresh samples while active.

    Noise on a live sensor changes its value every sample; a frozen ADC or a stuck transmitter
    repeats it. Counting only while ``active`` (current flowing) avoids flagging a pack at rest.
    """

    def __init__(self, size: int, quantum: float, samples: int) -> None:
        self.quantum = quantum
        self.samples = samples
        self.last = np.full(size, np.nan)
        self.count = np.zeros(size, dtype=np.int64)
        self._seq = np.zeros(size, dtype=np.int64)
        self._fresh = np.zeros(size, dtype=bool)
        self._same = np.zeros(size, dtype=bool)
        self.stuck = np.zeros(size, dtype=bool)

    def update(self, values: np.ndarray, elem_seq: np.ndarray, active: bool) -> np.ndarray:
        """Feed the latest values and per-element sample counts; returns the stuck mask."""
        np.not_equal(elem_seq, self._seq, out=self._fresh)
        self._seq[:] = elem_seq
        with np.errstate(invalid="ignore"):
            np.less_equal(np.abs(values - self.last), self.quantum, out=self._same)
        if active:
            self.count[self._fresh & self._same] += 1
        self.count[self._fresh & ~self._same] = 0
        np.copyto(self.last, values, where=self._fresh & ~self._same)
        np.greater_equal(self.count, self.samples, out=self.stuck)
        return self.stuck


# -- the checker over the store ---------------------------------------------------------------


class PlausibilityChecker:
    """Runs every plausibility check over the store; results are arrays the protection reads.

    After :meth:`check`: ``cell_voltage_ok`` (range, not open-wire, not stuck),
    ``cell_temp_c`` (invalid sensors replaced by the module median, see ``temp_substituted``),
    ``pressure_ok``, ``sum_mismatch_v`` and counts used as 0/1 or count quantities.
    """

    def __init__(self, params: PlausibilityParams, n_cells: int, n_temps: int, n_modules: int):
        self.params = params
        self.n_modules = n_modules
        self.cell_voltage_ok = np.zeros(n_cells, dtype=bool)
        self.open_wire = np.zeros(n_cells, dtype=bool)
        self.temp_ok = np.zeros(n_temps, dtype=bool)
        self.temp_clamped = np.zeros(n_temps, dtype=bool)
        self.cell_temp_c = np.full(n_temps, np.nan)
        self.temp_substituted = np.zeros(n_temps, dtype=bool)
        self.pressure_ok = np.zeros(n_modules, dtype=bool)
        self.pressure_model_deviation_mpa = np.full(n_modules, np.nan)
        self.sum_mismatch_v = float("nan")
        self.volt_stuck = StuckDetector(
            n_cells, params.voltage_quantum_v, params.voltage_stuck_samples
        )
        self.temp_stuck = StuckDetector(n_temps, params.temp_quantum_c, params.temp_stuck_samples)
        self.pressure_stuck = StuckDetector(
            n_modules, params.pressure_quantum_mpa, params.pressure_stuck_samples
        )

    def check(
        self, store: SignalStore, now_s: float, pressure_model_mpa: np.ndarray | None = None
    ) -> None:
        """Evaluate all checks on the store's current contents (100 ms task)."""
        p = self.params
        cells = store["cell_voltage_v"]
        current = store["current_a"]
        current_a = current.scalar()
        flowing = bool(np.isfinite(current_a) and abs(current_a) >= p.stuck_current_a)

        in_range(cells.value, *p.cell_voltage_range_v, out=self.cell_voltage_ok)
        self.cell_voltage_ok &= cells.valid
        open_wire_mask(
            cells.value, p.open_wire_low_v, p.open_wire_pair_tolerance, out=self.open_wire
        )
        self.cell_voltage_ok &= ~self.open_wire
        self.cell_voltage_ok &= ~self.volt_stuck.update(cells.value, cells.elem_seq, flowing)

        pack_v = store["pack_voltage_v"].scalar() if "pack_voltage_v" in store else float("nan")
        self.sum_mismatch_v = cell_sum_mismatch_v(cells.value, self.cell_voltage_ok, pack_v)

        temps = store["cell_temp_c"]
        clamped(temps.value, *p.temp_clamp_c, out=self.temp_clamped)
        np.logical_not(self.temp_clamped, out=self.temp_ok)
        self.temp_ok &= temps.valid
        # A pack at rest may hold a temperature within one quantum for hours: count only while
        # current flows (heat is produced), with a longer sample count than for voltages.
        self.temp_ok &= ~self.temp_stuck.update(temps.value, temps.elem_seq, flowing)
        substitute_group_median(
            temps.value, self.temp_ok, self.n_modules, self.cell_temp_c, self.temp_substituted
        )

        press = store["pressure_mpa"]
        in_range(press.value, *p.pressure_range_mpa, out=self.pressure_ok)
        self.pressure_ok &= press.valid
        self.pressure_ok &= ~self.pressure_stuck.update(press.value, press.elem_seq, flowing)
        if pressure_model_mpa is not None:
            np.subtract(press.value, pressure_model_mpa, out=self.pressure_model_deviation_mpa)
            np.abs(self.pressure_model_deviation_mpa, out=self.pressure_model_deviation_mpa)
        else:
            self.pressure_model_deviation_mpa[:] = np.nan

    @property
    def cell_voltage_invalid_count(self) -> int:
        return int(self.cell_voltage_ok.size - np.count_nonzero(self.cell_voltage_ok))

    @property
    def temp_invalid_count(self) -> int:
        return int(self.temp_ok.size - np.count_nonzero(self.temp_ok))

    @property
    def pressure_invalid_count(self) -> int:
        return int(self.pressure_ok.size - np.count_nonzero(self.pressure_ok))
