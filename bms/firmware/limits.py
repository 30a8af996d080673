"""Charge and discharge current limits of the BMS model (DOMAIN.md section 5), vectorised.

Targets come from pure functions of per-cell temperature, stack pressure, SOC and contact state;
the pack limit is the minimum over cells, derated by the measured extreme cell voltages. A small
rate limiter (:class:`LimitRamp`) lowers reported limits fast and raises them slowly; a fatal fault
zeroes them at once. Parameters: ``bms/data/firmware/limits.yaml``. Currents in A, positive values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.cellmodel import ecm
from bms.cellmodel.params import CellParams
from bms.config import Section, load_yaml
from bms.data import resolve

MA_PER_A = 1000.0


@dataclass(frozen=True)
class LimitParams:
    """Current-limit parameters (the ``charge``, ``discharge``, ``pressure``, ``ramp`` sections)."""

    j_rated_ma_cm2: float
    ccd_safety_factor: float
    chg_soc_taper_start: float
    chg_soc_end_factor: float
    chg_temp_min_c: float
    chg_cold_cap_below_c: float
    chg_cold_cap_c_rate: float
    chg_temp_taper_start_c: float
    chg_temp_zero_c: float
    chg_voltage_max_v: float
    chg_cell_v_taper_start_v: float
    chg_cell_v_zero_v: float
    dis_rated_continuous_c: float
    dis_rated_pulse_c: float
    dis_pulse_s: float
    dis_voltage_min_v: float
    dis_soc_taper_start: float
    dis_soc_end_factor: float
    dis_temp_low_zero_c: float
    dis_temp_low_taper_start_c: float
    dis_temp_high_taper_start_c: float
    dis_temp_high_zero_c: float
    dis_cell_v_taper_start_v: float
    dis_cell_v_zero_v: float
    strip_budget_safety: float
    inhibit_below_mpa: float
    inhibit_c_rate: float
    open_below_mpa: float
    derate_c_per_s: float
    recover_c_per_s: float


def load_limit_params(name_or_path: str | Path = "limits") -> LimitParams:
    """Load current-limit parameters (shipped ``limits`` or a YAML path), validated and located."""
    root = Section(load_yaml(resolve("firmware", name_or_path)))
    root.raw("balancing", None)  # read by bms.firmware.balancing
    c = root.section("charge")
    d = root.section("discharge")
    p = root.section("pressure")
    r = root.section("ramp")
    params = LimitParams(
        j_rated_ma_cm2=c.number("rated_current_density_ma_cm2", above=0, max=100),
        ccd_safety_factor=c.number("ccd_safety_factor", min=1.0, max=100),
        chg_soc_taper_start=c.number("soc_taper_start", min=0, max=1),
        chg_soc_end_factor=c.number("soc_taper_end_factor", min=0, max=1),
        chg_temp_min_c=c.number("temp_min_c", min=-60, max=60),
        chg_cold_cap_below_c=c.number("cold_cap_below_c", min=-60, max=60),
        chg_cold_cap_c_rate=c.number("cold_cap_c_rate", min=0, max=10),
        chg_temp_taper_start_c=c.number("temp_taper_start_c", min=-60, max=150),
        chg_temp_zero_c=c.number("temp_zero_c", min=-60, max=150),
        chg_voltage_max_v=c.number("voltage_max_v", above=0, max=6),
        chg_cell_v_taper_start_v=c.number("cell_voltage_taper_start_v", above=0, max=6),
        chg_cell_v_zero_v=c.number("cell_voltage_zero_v", above=0, max=6),
        dis_rated_continuous_c=d.number("rated_continuous_c", above=0, max=100),
        dis_rated_pulse_c=d.number("rated_pulse_c", above=0, max=100),
        dis_pulse_s=d.number("pulse_s", above=0, max=3600),
        dis_voltage_min_v=d.number("voltage_min_v", above=0, max=6),
        dis_soc_taper_start=d.number("soc_taper_start", min=0, max=1),
        dis_soc_end_factor=d.number("soc_taper_end_factor", min=0, max=1),
        dis_temp_low_zero_c=d.number("temp_low_zero_c", min=-80, max=60),
        dis_temp_low_taper_start_c=d.number("temp_low_taper_start_c", min=-80, max=60),
        dis_temp_high_taper_start_c=d.number("temp_high_taper_start_c", min=-60, max=150),
        dis_temp_high_zero_c=d.number("temp_high_zero_c", min=-60, max=150),
        dis_cell_v_taper_start_v=d.number("cell_voltage_taper_start_v", above=0, max=6),
        dis_cell_v_zero_v=d.number("cell_voltage_zero_v", above=0, max=6),
        strip_budget_safety=d.number("strip_budget_safety", min=1.0, max=100),
        inhibit_below_mpa=p.number("fast_charge_inhibit_below_mpa", min=0, max=50),
        inhibit_c_rate=p.number("inhibit_c_rate", min=0, max=10),
        open_below_mpa=p.number("open_contactors_below_mpa", min=0, max=50),
        derate_c_per_s=r.number("derate_c_per_s", above=0, max=1e4),
        recover_c_per_s=r.number("recover_c_per_s", above=0, max=1e4),
    )
    # Every taper must run the right way, or the limit would jump instead of ramping.
    pairs = (
        (c, "temp_zero_c", params.chg_temp_taper_start_c < params.chg_temp_zero_c),
        (c, "cell_voltage_zero_v", params.chg_cell_v_taper_start_v < params.chg_cell_v_zero_v),
        (d, "temp_low_zero_c", params.dis_temp_low_zero_c < params.dis_temp_low_taper_start_c),
        (d, "temp_high_zero_c", params.dis_temp_high_taper_start_c < params.dis_temp_high_zero_c),
        (d, "cell_voltage_zero_v", params.dis_cell_v_zero_v < params.dis_cell_v_taper_start_v),
        (p, "open_contactors_below_mpa", params.open_below_mpa <= params.inhibit_below_mpa),
        (c, "soc_taper_start", params.chg_soc_taper_start < 1.0),
        (d, "soc_taper_start", params.dis_soc_taper_start > 0.0),
    )
    for sec, key, ok in pairs:
        if not ok:
            raise sec.error(key, "taper runs the wrong way (zero point must lie beyond its start)")
    for sec in (c, d, p, r, root):
        sec.done()
    return params


def ramp_factor(x: np.ndarray, full_at: float, zero_at: float) -> np.ndarray:
    """Trapezoid derating: 1 at ``full_at``, linear to 0 at ``zero_at`` (either direction)."""
    return np.clip((np.asarray(x, dtype=float) - zero_at) / (full_at - zero_at), 0.0, 1.0)


def pulse_resistance_ohm(
    cell: CellParams,
    temp_c: np.ndarray,
    pressure_mpa: np.ndarray,
    soc: np.ndarray,
    pulse_s: float,
) -> np.ndarray:
    """R_pulse = R0 + R1 (1 - e^-t/tau1) + R2 (1 - e^-t/tau2) at T, P, SOC.

    Uses the reference time constants, as DOMAIN.md's worked values do: in the cold, where the
    real tau grows with R, this counts more of the RC drop and is conservative.
    """
    res = cell.resistance
    r0, r1, r2 = ecm.resistances_ohm(temp_c, pressure_mpa, soc, res)
    return (
        r0
        + r1 * (1.0 - np.exp(-pulse_s / res.r1_tau_s))
        + r2 * (1.0 - np.exp(-pulse_s / res.r2_tau_s))
    )


def _broadcast(*values: np.ndarray | float) -> list[np.ndarray]:
    """Float arrays of one shape (np.broadcast_arrays, skipped when the shapes already agree)."""
    arrays = [np.asarray(x, dtype=float) for x in values]
    shape = arrays[0].shape
    for arr in arrays:
        if arr.shape != shape:
            return list(np.broadcast_arrays(*arrays))
    return arrays


def _invalid(temp: np.ndarray, pres: np.ndarray, soc: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Cells with an unknown (NaN/inf) input: their limits are 0."""
    return ~(np.isfinite(temp) & np.isfinite(pres) & np.isfinite(soc) & np.isfinite(a))


def _soc_clipped(soc: np.ndarray, nan_as: float) -> np.ndarray:
    """SOC clipped to 0..1 with NaN read as ``nan_as`` (np.nan_to_num then np.clip)."""
    nan = np.isnan(soc)
    return np.clip(np.where(nan, nan_as, soc) if nan.any() else soc, 0.0, 1.0)


def charge_limit_a(
    cell: CellParams,
    params: LimitParams,
    temp_c: np.ndarray | float,
    pressure_mpa: np.ndarray | float,
    soc: np.ndarray | float,
    contact: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Per-cell charge limit (A): CCD rule x SOC taper x a^2, temperature, pressure and headroom.

    I = A_el min(J_CCD(T,P)/SF, J_rated) f_SOC a^2, zero below ``temp_min_c``, capped at
    0.05C in the cold and below the fast-charge pressure, zero below the contactor-open pressure,
    tapered to zero at high temperature, and at most (V_max - OCV)/R_pulse. NaN inputs give 0.
    """
    temp, pres, soc_a, a = _broadcast(temp_c, pressure_mpa, soc, contact)
    soc_c = _soc_clipped(soc_a, 1.0)
    return _charge_limit(
        cell,
        params,
        temp,
        pres,
        a,
        soc_c,
        ecm.ccd_ma_cm2(temp, pres, cell.ccd),
        ecm.ocv_v(soc_c, temp, cell.ocv),
        pulse_resistance_ohm(cell, temp, pres, soc_c, params.dis_pulse_s),
        _invalid(temp, pres, soc_a, a),
    )


def _charge_limit(
    cell: CellParams,
    p: LimitParams,
    temp: np.ndarray,
    pres: np.ndarray,
    a: np.ndarray,
    soc_c: np.ndarray,
    ccd_ma_cm2: np.ndarray,
    ocv_v: np.ndarray,
    r_pulse: np.ndarray,
    invalid: np.ndarray,
) -> np.ndarray:
    """:func:`charge_limit_a` from precomputed J_CCD, OCV and R_pulse (shared with discharge)."""
    cap_a = cell.capacity_ah
    j_ma_cm2 = np.minimum(ccd_ma_cm2 / p.ccd_safety_factor, p.j_rated_ma_cm2)
    f_soc = p.chg_soc_end_factor + (1.0 - p.chg_soc_end_factor) * ramp_factor(
        soc_c, p.chg_soc_taper_start, 1.0
    )
    limit = cell.electrode_area_cm2 * j_ma_cm2 / MA_PER_A * f_soc * np.clip(a, 0.0, 1.0) ** 2
    limit *= ramp_factor(temp, p.chg_temp_taper_start_c, p.chg_temp_zero_c)
    headroom_v = p.chg_voltage_max_v - ocv_v
    limit = np.minimum(limit, np.maximum(headroom_v, 0.0) / r_pulse)
    limit = np.where(
        temp < p.chg_cold_cap_below_c, np.minimum(limit, p.chg_cold_cap_c_rate * cap_a), limit
    )
    limit = np.where(pres < p.inhibit_below_mpa, np.minimum(limit, p.inhibit_c_rate * cap_a), limit)
    blocked = (temp < p.chg_temp_min_c) | (pres < p.open_below_mpa)
    return np.where(blocked | invalid, 0.0, limit)


def discharge_voltage_limit_a(
    cell: CellParams,
    params: LimitParams,
    temp_c: np.ndarray | float,
    pressure_mpa: np.ndarray | float,
    soc: np.ndarray | float,
) -> np.ndarray:
    """I_V = (OCV(SOC, T) - V_min) / R_pulse: the pulse current that keeps the cell above V_min."""
    temp, pres, soc_a = _broadcast(temp_c, pressure_mpa, soc)
    soc_c = np.clip(soc_a, 0.0, 1.0)
    r_pulse = pulse_resistance_ohm(cell, temp, pres, soc_c, params.dis_pulse_s)
    return _voltage_limit(params, ecm.ocv_v(soc_c, temp, cell.ocv), r_pulse)


def _voltage_limit(params: LimitParams, ocv_v: np.ndarray, r_pulse: np.ndarray) -> np.ndarray:
    headroom_v = ocv_v - params.dis_voltage_min_v
    return np.maximum(headroom_v, 0.0) / r_pulse


def discharge_limit_a(
    cell: CellParams,
    params: LimitParams,
    temp_c: np.ndarray | float,
    pressure_mpa: np.ndarray | float,
    soc: np.ndarray | float,
    contact: np.ndarray | float = 1.0,
) -> np.ndarray:
    """Per-cell 10 s discharge limit (A): min(I_rated, I_V) f_SOC a^2 f_T; NaN inputs give 0."""
    temp, pres, soc_a, a = _broadcast(temp_c, pressure_mpa, soc, contact)
    soc_c = _soc_clipped(soc_a, 0.0)
    return _discharge_limit(
        cell,
        params,
        temp,
        pres,
        a,
        soc_c,
        ecm.ocv_v(soc_c, temp, cell.ocv),
        pulse_resistance_ohm(cell, temp, pres, soc_c, params.dis_pulse_s),
        _invalid(temp, pres, soc_a, a),
    )


def _discharge_limit(
    cell: CellParams,
    p: LimitParams,
    temp: np.ndarray,
    pres: np.ndarray,
    a: np.ndarray,
    soc_c: np.ndarray,
    ocv_v: np.ndarray,
    r_pulse: np.ndarray,
    invalid: np.ndarray,
) -> np.ndarray:
    """:func:`discharge_limit_a` from precomputed OCV and R_pulse (shared with charge)."""
    rated_a = p.dis_rated_pulse_c * cell.capacity_ah
    limit = np.minimum(rated_a, _voltage_limit(p, ocv_v, r_pulse))
    f_soc = p.dis_soc_end_factor + (1.0 - p.dis_soc_end_factor) * ramp_factor(
        soc_c, p.dis_soc_taper_start, 0.0
    )
    f_temp = ramp_factor(temp, p.dis_temp_low_taper_start_c, p.dis_temp_low_zero_c)
    f_temp = f_temp * ramp_factor(temp, p.dis_temp_high_taper_start_c, p.dis_temp_high_zero_c)
    limit = limit * f_soc * np.clip(a, 0.0, 1.0) ** 2 * f_temp
    blocked = pres < p.open_below_mpa
    return np.where(blocked | invalid, 0.0, limit)


def strip_budget_a(
    cell: CellParams,
    params: LimitParams,
    temp_c: np.ndarray | float,
    pressure_mpa: np.ndarray | float,
    contact: np.ndarray | float = 1.0,
) -> np.ndarray:
    """60 s mean discharge current budget A_el J_strip,crit a / safety (reported, not enforced).

    Sustained stripping above it is allowed but costs contact (DOMAIN.md section 5).
    """
    return _strip_budget(
        cell, params, ecm.ccd_ma_cm2(temp_c, pressure_mpa, cell.ccd), np.asarray(contact)
    )


def _strip_budget(
    cell: CellParams, params: LimitParams, ccd_ma_cm2: np.ndarray, contact: np.ndarray
) -> np.ndarray:
    j_strip = cell.ccd.strip_factor * ccd_ma_cm2
    area_cm2 = cell.electrode_area_cm2 * np.clip(np.asarray(contact, dtype=float), 0.0, 1.0)
    return area_cm2 * j_strip / MA_PER_A / params.strip_budget_safety


@dataclass(frozen=True)
class CurrentLimits:
    """Pack current limits (A, both positive) and the pressure flags the BMS reports."""

    charge_a: float
    discharge_a: float
    fast_charge_inhibit: bool  # lowest stack pressure below the fast-charge threshold (or unknown)
    open_contactors: bool  # lowest stack pressure below the contactor-open threshold
    strip_budget_a: float = float("inf")  # 60 s mean discharge budget (information)


def current_limits(
    cell: CellParams,
    params: LimitParams,
    temp_c: np.ndarray | float,
    pressure_mpa: np.ndarray | float,
    soc: np.ndarray | float,
    cell_voltage_v: np.ndarray | float,
    *,
    contact: np.ndarray | float = 1.0,
    fault_active: bool = False,
) -> CurrentLimits:
    """Target pack limits: min over cells of the per-cell limits, derated by extreme cell voltages.

    Inputs are per cell (pressure expanded from modules by the caller, e.g. ``np.repeat``). A
    fatal fault gives zero. Voltages derate by the foxBMS trapezoid: charge from the highest
    cell, discharge from the lowest; NaN voltages are ignored, all-NaN gives zero.
    """
    p = params
    pres = np.asarray(pressure_mpa, dtype=float)
    finite_p = pres[np.isfinite(pres)]
    p_min = float(np.min(finite_p)) if finite_p.size else float("nan")
    inhibit = not (p_min >= p.inhibit_below_mpa) or finite_p.size < pres.size
    open_request = bool(p_min < p.open_below_mpa)
    if fault_active or open_request:
        return CurrentLimits(0.0, 0.0, inhibit, open_request, 0.0)
    temp, pres, soc_a, a = _broadcast(temp_c, pressure_mpa, soc, contact)
    invalid = _invalid(temp, pres, soc_a, a)
    ccd = ecm.ccd_ma_cm2(temp, pres, cell.ccd)
    soc_chg = _soc_clipped(soc_a, 1.0)
    ocv_chg = ecm.ocv_v(soc_chg, temp, cell.ocv)
    r_chg = pulse_resistance_ohm(cell, temp, pres, soc_chg, p.dis_pulse_s)
    chg = _charge_limit(cell, p, temp, pres, a, soc_chg, ccd, ocv_chg, r_chg, invalid)
    soc_dis = _soc_clipped(soc_a, 0.0)
    if soc_dis is soc_chg or np.array_equal(soc_dis, soc_chg):  # no NaN SOC: same OCV, R_pulse
        ocv_dis, r_dis = ocv_chg, r_chg
    else:
        ocv_dis = ecm.ocv_v(soc_dis, temp, cell.ocv)
        r_dis = pulse_resistance_ohm(cell, temp, pres, soc_dis, p.dis_pulse_s)
    dis = _discharge_limit(cell, p, temp, pres, a, soc_dis, ocv_dis, r_dis, invalid)
    volt = np.asarray(cell_voltage_v, dtype=float)
    volt = volt[np.isfinite(volt)]
    if volt.size == 0:
        return CurrentLimits(0.0, 0.0, inhibit, open_request, 0.0)
    f_chg = float(ramp_factor(np.max(volt), p.chg_cell_v_taper_start_v, p.chg_cell_v_zero_v))
    f_dis = float(ramp_factor(np.min(volt), p.dis_cell_v_taper_start_v, p.dis_cell_v_zero_v))
    budget = _strip_budget(cell, p, ccd, np.asarray(contact))
    return CurrentLimits(
        charge_a=float(np.min(chg)) * f_chg,
        discharge_a=float(np.min(dis)) * f_dis,
        fast_charge_inhibit=inhibit,
        open_contactors=open_request,
        strip_budget_a=float(np.nanmin(budget)) if np.any(np.isfinite(budget)) else 0.0,
    )


@dataclass
class LimitRamp:
    """Rate limiter of the reported limits: fast down, slow up, immediate zero on a fatal fault.

    ``None`` until the first step, which adopts the target directly (wake-up).
    """

    charge_a: float | None = None
    discharge_a: float | None = None

    def step(
        self,
        target: CurrentLimits,
        dt_s: float,
        params: LimitParams,
        capacity_ah: float,
        *,
        fault_active: bool = False,
    ) -> CurrentLimits:
        """Move the reported limits toward ``target`` over ``dt_s``; returns what to report."""
        if fault_active or target.open_contactors:
            self.charge_a, self.discharge_a = 0.0, 0.0
        else:
            down_a = params.derate_c_per_s * capacity_ah * max(dt_s, 0.0)
            up_a = params.recover_c_per_s * capacity_ah * max(dt_s, 0.0)
            self.charge_a = _toward(self.charge_a, target.charge_a, down_a, up_a)
            self.discharge_a = _toward(self.discharge_a, target.discharge_a, down_a, up_a)
        return CurrentLimits(
            charge_a=self.charge_a,
            discharge_a=self.discharge_a,
            fast_charge_inhibit=target.fast_charge_inhibit,
            open_contactors=target.open_contactors,
            strip_budget_a=target.strip_budget_a,
        )


def _toward(value: float | None, target: float, down: float, up: float) -> float:
    if value is None:
        return target
    return max(value - down, target) if target < value else min(value + up, target)
