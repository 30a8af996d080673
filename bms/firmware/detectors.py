"""Solid-state extras: soft-short detection and the GB 38031-2025 thermal-runaway confirmation.

Both run in the BMS model on decoded measurements and publish flags that the protection engine
reads as quantities (``soft_short_flag``, ``thermal_runaway_flag``, ``temp_rate_max_c_s``).
Rules and figures: DOMAIN.md sections 6 and 7. Arrays are per cell / per sensor; modules are
equal consecutive blocks of cells and of sensors.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from bms.config import Section

SECONDS_PER_HOUR = 3600.0


# -- soft short -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoftShortParams:
    """Thresholds of the rest-drift, balancing-effort and apparent-R0 detectors (*assumption*)."""

    rest_current_a: float
    settle_s: float
    min_fit_s: float
    drift_threshold_mv_h: float
    leak_threshold_a: float
    min_t_stat: float
    balancing_ratio: float
    balancing_floor_ah_day: float
    r0_drop_fraction: float


def read_soft_short(sec: Section) -> SoftShortParams:
    """Read ``detectors.soft_short`` of a ladder file."""
    params = SoftShortParams(
        rest_current_a=sec.number("rest_current_a", above=0.0),
        settle_s=sec.number("settle_s", min=0.0),
        min_fit_s=sec.number("min_fit_s", above=0.0),
        drift_threshold_mv_h=sec.number("drift_threshold_mv_h", above=0.0),
        leak_threshold_a=sec.number("leak_threshold_a", above=0.0),
        min_t_stat=sec.number("min_t_stat", above=0.0),
        balancing_ratio=sec.number("balancing_ratio", above=1.0),
        balancing_floor_ah_day=sec.number("balancing_floor_ah_day", min=0.0),
        r0_drop_fraction=sec.number("r0_drop_fraction", above=0.0, max=1.0),
    )
    sec.done()
    return params


def _group_median(values: np.ndarray, n_groups: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group with no valid value stays NaN
        return np.repeat(
            np.nanmedian(values.reshape(n_groups, -1), axis=1), values.size // n_groups
        )


class SoftShortDetector:
    """Rest-voltage drift of each cell against its module median, fitted by running least squares.

    The median removes what all cells share (RC relaxation, temperature); a leaking cell drifts
    down by I_leak/Q x dOCV/dSOC. The fit keeps six running sums per cell (no history buffer), so
    it works at any sample rate; a verdict needs ``min_fit_s`` of data and a t-statistic above
    ``min_t_stat`` so that 1 mV of noise on 11 healthy cells does not raise false flags.
    """

    def __init__(self, params: SoftShortParams, n_cells: int, n_modules: int, capacity_ah: float):
        self.params = params
        self.n_modules = n_modules
        self.capacity_as = capacity_ah * SECONDS_PER_HOUR
        self.rest_since_s = np.nan
        self._sums = np.zeros((6, n_cells))  # n, t, t^2, y, t*y, y^2 (t in s, y in mV)
        self.drift_mv_h = np.full(n_cells, np.nan)
        self.t_stat = np.zeros(n_cells)
        self.leak_a = np.full(n_cells, np.nan)
        self.flagged = np.zeros(n_cells, dtype=bool)
        self.flag_time_s = np.full(n_cells, np.nan)

    def reset(self) -> None:
        """Forget the current rest period and clear latched flags (after service)."""
        self.rest_since_s = np.nan
        self._sums[:] = 0.0
        self.flagged[:] = False
        self.flag_time_s[:] = np.nan

    def update(
        self,
        now_s: float,
        cell_voltage_v: np.ndarray,
        cell_valid: np.ndarray,
        current_a: float,
        ocv_slope_v: np.ndarray | None = None,
    ) -> np.ndarray:
        """Feed one fresh voltage sample; returns the (latched) per-cell soft-short flags.

        ``ocv_slope_v`` is dOCV/dSOC per cell (V per unit SOC); with it the drift becomes a leak
        current and the threshold is ``leak_threshold_a``, uniform over SOC.
        """
        p = self.params
        if not np.isfinite(current_a) or abs(current_a) >= p.rest_current_a:
            self.rest_since_s = np.nan  # rest broken: the fit restarts at the next rest
            self._sums[:] = 0.0
            return self.flagged
        if np.isnan(self.rest_since_s):
            self.rest_since_s = now_s
        t_s = now_s - self.rest_since_s - p.settle_s
        if t_s < 0:
            return self.flagged
        dev_mv = (cell_voltage_v - _group_median(cell_voltage_v, self.n_modules)) * 1e3
        w = cell_valid & np.isfinite(dev_mv)
        y = np.where(w, dev_mv, 0.0)
        s = self._sums
        s[0] += w
        s[1] += w * t_s
        s[2] += w * t_s * t_s
        s[3] += y
        s[4] += y * t_s
        s[5] += y * y
        if t_s < p.min_fit_s:
            return self.flagged
        n, st, stt, sy, sty, syy = s
        with np.errstate(invalid="ignore", divide="ignore"):
            sxx = stt - st * st / n
            slope = (sty - st * sy / n) / sxx  # mV/s
            intercept = (sy - slope * st) / n
            sse = np.maximum(syy - intercept * sy - slope * sty, 0.0)
            se = np.sqrt(sse / (n - 2) / sxx)
            self.t_stat = np.abs(slope) / se
        self.drift_mv_h = slope * SECONDS_PER_HOUR
        significant = self.t_stat >= p.min_t_stat
        if ocv_slope_v is not None:
            # dV/dt = -slope_ocv * I_leak / Q  ->  I_leak = -dV/dt * Q / slope_ocv
            self.leak_a = -(slope * 1e-3) * self.capacity_as / ocv_slope_v
            hit = significant & (self.leak_a >= p.leak_threshold_a)
        else:
            hit = significant & (-self.drift_mv_h >= p.drift_threshold_mv_h)
        new = hit & ~self.flagged
        self.flag_time_s[new] = now_s
        self.flagged |= hit
        return self.flagged


def balancing_demand_ah_day(bled_ah_per_day: np.ndarray, n_modules: int) -> np.ndarray:
    """Balancing demand caused by each cell, from what a passive balancer bled per cell and day.

    Passive bleeding drains every *other* cell down to the leaky one, so the leaky cell bleeds
    least: the demand it causes is its module's largest bleed minus its own.
    """
    bled = np.asarray(bled_ah_per_day, dtype=float).reshape(n_modules, -1)
    return (bled.max(axis=1, keepdims=True) - bled).reshape(-1)


def balancing_effort_flags(
    demand_ah_per_day: np.ndarray, n_modules: int, ratio: float, floor_ah_day: float
) -> np.ndarray:
    """Cells causing more than ``ratio`` x their module's median balancing demand (DOMAIN 7).

    The floor keeps a module of perfectly matched cells (median ~ 0) from flagging its noise.
    """
    demand = np.asarray(demand_ah_per_day, dtype=float)
    median = _group_median(demand, n_modules)
    with np.errstate(invalid="ignore"):
        return (demand > ratio * median) & (demand > floor_ah_day)


def apparent_r0_ohm(step_dv_v: np.ndarray, step_di_a: float, min_step_a: float) -> np.ndarray:
    """R0 seen on a current step: -dV/dI per cell (positive I discharges); NaN for small steps."""
    if not np.isfinite(step_di_a) or abs(step_di_a) < min_step_a:
        return np.full(np.shape(step_dv_v), np.nan)
    return -np.asarray(step_dv_v, dtype=float) / step_di_a


def r0_drop_flags(r0_ohm: np.ndarray, n_modules: int, drop_fraction: float) -> np.ndarray:
    """Cells whose apparent R0 lies more than ``drop_fraction`` below the module median.

    Weak for large cells (R0 || R_s falls by only R0/R_s), kept because it catches near-hard shorts.
    """
    median = _group_median(np.asarray(r0_ohm, dtype=float), n_modules)
    with np.errstate(invalid="ignore"):
        return r0_ohm < (1.0 - drop_fraction) * median


# -- thermal runaway (GB 38031-2025, C.5.3.7) -------------------------------------------------


@dataclass(frozen=True)
class RunawayParams:
    """GB 38031 confirmation: (drop > fraction OR T >= T_max) AND dT/dt >= rate for > hold."""

    voltage_drop_fraction: float
    temp_max_c: float
    rate_c_s: float
    rate_hold_s: float
    rate_interval_s: float
    reference_tau_s: float
    freeze_drop_fraction: float
    trend_interval_s: float = 10.0


def read_runaway(sec: Section) -> RunawayParams:
    """Read ``detectors.thermal_runaway`` of a ladder file."""
    params = RunawayParams(
        voltage_drop_fraction=sec.number("voltage_drop_fraction", above=0.0, max=1.0),
        temp_max_c=sec.number("temp_max_c", min=0.0, max=300.0),
        rate_c_s=sec.number("rate_c_s", above=0.0),
        rate_hold_s=sec.number("rate_hold_s", min=0.0),
        rate_interval_s=sec.number("rate_interval_s", above=0.0, max=1.0),
        reference_tau_s=sec.number("reference_tau_s", above=0.0),
        freeze_drop_fraction=sec.number("freeze_drop_fraction", above=0.0, max=1.0),
        trend_interval_s=sec.number("trend_interval_s", 10.0, min=1.0, max=600.0),
    )
    sec.done()
    return params


class ThermalRunawayDetector:
    """GB 38031-2025 runaway confirmation on raw AFE samples (>= 1 Hz), evaluated per module.

    dT/dt comes from consecutive ``rate_interval_s`` (<= 1 s, so >= 1 Hz) intervals of raw sensor
    readings, not from the 1 degC CAN signal. The "initial" voltage of each cell follows the cell
    slowly (``reference_tau_s``) and freezes as soon as its module looks suspicious, so a drop is
    measured against the voltage before the event. Confirmation latches.
    """

    def __init__(self, params: RunawayParams, n_cells: int, n_sensors: int, n_modules: int):
        self.params = params
        self.n_modules = n_modules
        self.initial_v = np.full(n_cells, np.nan)
        self.temp_ref_c = np.full(n_sensors, np.nan)
        self.ref_time_s = np.nan
        self.last_time_s = np.nan
        self.rate_c_s = np.full(n_sensors, np.nan)
        # The early-warning trend (info tier) over a longer window: over 1 s the sensors'
        # noise and 0.1 degC steps alone exceed 0.2 degC/s.
        self.trend_ref_c = np.full(n_sensors, np.nan)
        self.trend_time_s = np.nan
        self.trend_c_s = np.full(n_sensors, np.nan)
        self.high_since_s = np.full(n_sensors, np.inf)
        self.module_confirmed = np.zeros(n_modules, dtype=bool)
        self.confirmed = False
        self.confirmed_time_s = np.nan

    @property
    def max_rate_c_s(self) -> float:
        """Largest dT/dt of the last interval (NaN before the first interval completes)."""
        finite = self.rate_c_s[np.isfinite(self.rate_c_s)]
        return float(finite.max()) if finite.size else float("nan")

    @property
    def max_trend_c_s(self) -> float:
        """Largest dT/dt over the last ``trend_interval_s`` window (NaN before the first)."""
        finite = self.trend_c_s[np.isfinite(self.trend_c_s)]
        return float(finite.max()) if finite.size else float("nan")

    def update(
        self,
        now_s: float,
        cell_voltage_v: np.ndarray,
        temp_c: np.ndarray,
    ) -> bool:
        """Feed one raw sample (NaN = invalid); returns True once runaway is confirmed."""
        p = self.params
        m = self.n_modules
        if np.isnan(self.ref_time_s):
            self.ref_time_s = now_s
            self.temp_ref_c[:] = temp_c
        elif now_s - self.ref_time_s >= p.rate_interval_s - 1e-9:
            with np.errstate(invalid="ignore"):
                self.rate_c_s = (temp_c - self.temp_ref_c) / (now_s - self.ref_time_s)
                high = self.rate_c_s >= p.rate_c_s
            # the rise holds since the start of the first high interval
            self.high_since_s = np.where(
                high, np.minimum(self.high_since_s, self.ref_time_s), np.inf
            )
            self.ref_time_s = now_s
            self.temp_ref_c[:] = temp_c
        if np.isnan(self.trend_time_s):
            self.trend_time_s = now_s
            self.trend_ref_c[:] = temp_c
        elif now_s - self.trend_time_s >= p.trend_interval_s - 1e-9:
            self.trend_c_s = (temp_c - self.trend_ref_c) / (now_s - self.trend_time_s)
            self.trend_time_s = now_s
            self.trend_ref_c[:] = temp_c

        with np.errstate(invalid="ignore"):
            drop = (self.initial_v - cell_voltage_v) / self.initial_v
            rate_held = (now_s - self.high_since_s) > p.rate_hold_s
            hot = temp_c >= p.temp_max_c
            rising = self.rate_c_s >= p.rate_c_s
        cond_v = (drop > p.voltage_drop_fraction).reshape(m, -1).any(axis=1)
        cond_t = hot.reshape(m, -1).any(axis=1)
        cond_rate = rate_held.reshape(m, -1).any(axis=1)
        self.module_confirmed |= (cond_v | cond_t) & cond_rate
        if self.module_confirmed.any() and not self.confirmed:
            self.confirmed = True
            self.confirmed_time_s = now_s

        # Track the pre-event voltage: follow slowly, freeze in suspicious modules.
        suspect_module = rising.reshape(m, -1).any(axis=1)
        with np.errstate(invalid="ignore"):
            suspect = np.repeat(suspect_module, cell_voltage_v.size // m) | (
                drop > p.freeze_drop_fraction
            )
        fresh = np.isnan(self.initial_v)
        dt_s = 0.0 if np.isnan(self.last_time_s) else now_s - self.last_time_s
        gain = 1.0 - np.exp(-dt_s / p.reference_tau_s)
        follow = ~suspect & np.isfinite(cell_voltage_v)
        self.initial_v = np.where(
            fresh,
            cell_voltage_v,
            np.where(
                follow, self.initial_v + gain * (cell_voltage_v - self.initial_v), self.initial_v
            ),
        )
        self.last_time_s = now_s
        return self.confirmed

    def reset(self) -> None:
        """Clear the latched confirmation (service action after the event)."""
        self.module_confirmed[:] = False
        self.confirmed = False
        self.confirmed_time_s = np.nan
        self.high_since_s[:] = np.inf
