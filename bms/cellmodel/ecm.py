"""Second-order equivalent-circuit maths: pure, vectorised functions of numpy arrays.

Used by the virtual pack (with the plant's true state) and by the BMS model's estimator (with its
own estimate). Units: SOC as a fraction 0..1, temperatures in degC, pressure in MPa, ohms, seconds.
"""

from __future__ import annotations

import numpy as np

from bms.cellmodel.params import Ccd, CellParams, OcvTable, Resistance

GAS_CONSTANT_J_MOL_K = 8.314462618
KELVIN = 273.15


def arrhenius(temp_c: np.ndarray | float, ea_j_mol: float, temp_ref_c: float) -> np.ndarray:
    """Resistance multiplier exp[(Ea/R)(1/T - 1/T_ref)]: > 1 below the reference temperature."""
    inv = 1.0 / (np.asarray(temp_c) + KELVIN) - 1.0 / (temp_ref_c + KELVIN)
    return np.exp((ea_j_mol / GAS_CONSTANT_J_MOL_K) * inv)


def ocv_v(soc: np.ndarray, temp_c: np.ndarray | float, table: OcvTable) -> np.ndarray:
    """Open-circuit voltage OCV(SOC, T) from the table and its entropic coefficient."""
    soc = np.asarray(soc)
    u = np.interp(soc, table.soc, table.voltage_v)
    dudt = np.interp(soc, table.soc, table.dudt_v_per_k)
    return u + dudt * (np.asarray(temp_c) - table.temp_c)


def dudt_v_per_k(soc: np.ndarray, table: OcvTable) -> np.ndarray:
    """Entropic coefficient dU/dT at ``soc`` (V/K)."""
    return np.interp(soc, table.soc, table.dudt_v_per_k)


def ocv_slope_v(soc: np.ndarray, table: OcvTable) -> np.ndarray:
    """dOCV/dSOC (V per unit SOC) of the piecewise-linear table, for estimator Jacobians."""
    slopes = np.diff(table.voltage_v) / np.diff(table.soc)
    index = np.clip(np.searchsorted(table.soc, soc, side="right") - 1, 0, slopes.size - 1)
    return slopes[index]


def soc_from_ocv(voltage_v: np.ndarray, temp_c: np.ndarray | float, table: OcvTable) -> np.ndarray:
    """Invert the OCV table at temperature ``temp_c`` (clipped to 0..1)."""
    dudt_mean = float(np.mean(table.dudt_v_per_k))
    u_ref = np.asarray(voltage_v) - dudt_mean * (np.asarray(temp_c) - table.temp_c)
    return np.interp(u_ref, table.voltage_v, table.soc)


def r1_pressure_exponent(temp_c: np.ndarray | float, res: Resistance) -> np.ndarray:
    """R1's pressure exponent, growing linearly from n_p at T_ref to n_p_cold at the cold point."""
    span = res.temp_ref_c - res.r1_cold_temp_c
    frac = np.clip((res.temp_ref_c - np.asarray(temp_c)) / span, 0.0, 1.0)
    return res.r1_n_p + (res.r1_n_p_cold - res.r1_n_p) * frac


def resistances_ohm(
    temp_c: np.ndarray,
    pressure_mpa: np.ndarray,
    soc: np.ndarray,
    res: Resistance,
    contact: np.ndarray | float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R0, R1, R2 at temperature, stack pressure, SOC and contact fraction ``a`` (R1 ~ 1/a)."""
    p_rel = np.maximum(np.asarray(pressure_mpa), 1e-3) / res.pressure_ref_mpa
    r0 = res.r0_ohm * arrhenius(temp_c, res.r0_ea_j_mol, res.temp_ref_c) * p_rel**-res.r0_n_p
    r1 = (
        res.r1_ohm
        * arrhenius(temp_c, res.r1_ea_j_mol, res.temp_ref_c)
        * p_rel ** -r1_pressure_exponent(temp_c, res)
        * (1.0 + res.r1_low_soc_gain * np.exp(-np.asarray(soc) / res.r1_low_soc_scale))
        / np.asarray(contact)
    )
    r2 = res.r2_ohm * arrhenius(temp_c, res.r2_ea_j_mol, res.temp_ref_c) * p_rel**-res.r2_n_p
    return r0, r1, r2


def rc_decay(dt_s: float, r_ohm: np.ndarray, c_f: float) -> np.ndarray:
    """exp(-dt / (R C)): the exact zero-order-hold decay factor of an RC pair."""
    return np.exp(-dt_s / (r_ohm * c_f))


def rc_step(
    v_rc: np.ndarray, current_a: np.ndarray, r_ohm: np.ndarray, decay: np.ndarray
) -> np.ndarray:
    """RC voltage after one step with constant current: v' = a v + R (1 - a) i (exact)."""
    return decay * v_rc + r_ohm * (1.0 - decay) * current_a


def ccd_ma_cm2(
    temp_c: np.ndarray | float, pressure_mpa: np.ndarray | float, ccd: Ccd
) -> np.ndarray:
    """Critical current density for plating, J_CCD(T, P), in mA/cm² (DOMAIN.md section 5)."""
    p = np.clip(np.asarray(pressure_mpa), 1e-6, ccd.pressure_cap_mpa)
    return (
        ccd.j_ref_ma_cm2
        / arrhenius(temp_c, ccd.ea_j_mol, ccd.temp_ref_c)
        * (p / ccd.pressure_ref_mpa) ** ccd.n_p
    )


def terminal_voltage_v(
    cell: CellParams,
    soc: np.ndarray,
    temp_c: np.ndarray,
    pressure_mpa: np.ndarray,
    v1: np.ndarray,
    v2: np.ndarray,
    current_a: np.ndarray,
) -> np.ndarray:
    """Terminal voltage OCV - v1 - v2 - R0 i for the given RC states (positive i discharges)."""
    r0, _, _ = resistances_ohm(temp_c, pressure_mpa, soc, cell.resistance)
    return ocv_v(soc, temp_c, cell.ocv) - v1 - v2 - r0 * current_a
