"""Vehicle road-load model: speed and acceleration -> battery power, plus the vehicle parameter set.

Wheel force ``F = m a + 1/2 rho CdA v^2 + Crr m g cos(theta) + m g sin(theta)`` (rolling
resistance only while moving); traction draws ``F v / eta_traction`` from the battery, braking
returns ``F v * eta_regen`` up to the regen limit (the rest goes to the friction brakes); the
auxiliary load is always on. Positive battery power discharges the pack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bms.config import Section, load_yaml
from bms.data import resolve

#: Standard gravity (m/s^2): a physical constant, not a vehicle parameter.
GRAVITY_MPS2 = 9.80665


@dataclass(frozen=True)
class VcuParams:
    """Vehicle-controller settings: how fast the inverter power may step, and stale-data policy."""

    #: Largest rate at which the drawn or regenerated power may GROW (W/s); reductions are
    #: immediate so a falling BMS limit is never exceeded.
    power_rate_w_per_s: float = 200_000.0


@dataclass(frozen=True)
class ChargerParams:
    """DC-charger control settings (CC-CV on the measured pack voltage)."""

    #: Integral gain of the CV loop, A per (V s): dI/dt = k (V_target - V_pack).
    cv_gain_a_per_v_s: float = 200.0
    #: Soft start: largest rate of current increase (A/s); stops are immediate.
    ramp_up_a_per_s: float = 100.0
    #: Below this current in CV the charger reports FINISHED and stops (0 = never; BMS decides).
    finish_current_a: float = 0.0
    #: Voltage margin (V) below the target from which the status reports CV rather than CC.
    cv_band_v: float = 0.5


@dataclass(frozen=True)
class VehicleParams:
    """Road-load parameters of one vehicle (SI units; efficiencies as fractions)."""

    name: str
    mass_kg: float
    cda_m2: float
    crr: float
    air_density_kg_m3: float
    traction_efficiency: float
    regen_efficiency: float
    regen_limit_w: float
    aux_power_w: float
    grade_pct: float = 0.0
    description: str = ""
    vcu: VcuParams = field(default_factory=VcuParams)
    charger: ChargerParams = field(default_factory=ChargerParams)
    source: str = ""

    @classmethod
    def from_section(cls, sec: Section, name: str = "", source: str = "") -> VehicleParams:
        """Read a vehicle mapping (a file or a scenario's ``vehicle:`` block), errors located."""
        eff = sec.section("efficiency")
        params = cls(
            name=sec.string("name", name or "vehicle"),
            description=sec.string("description", ""),
            mass_kg=sec.number("mass_kg", above=0.0),
            cda_m2=sec.number("cda_m2", min=0.0),
            crr=sec.number("crr", min=0.0, max=0.1),
            air_density_kg_m3=sec.number("air_density_kg_m3", 1.2, above=0.0, max=2.0),
            traction_efficiency=eff.number("traction", above=0.0, max=1.0),
            regen_efficiency=eff.number("regen", min=0.0, max=1.0),
            regen_limit_w=sec.number("regen_limit_w", min=0.0),
            aux_power_w=sec.number("aux_power_w", 0.0, min=0.0),
            grade_pct=sec.number("grade_pct", 0.0, min=-30.0, max=30.0),
            vcu=_vcu_params(sec.section("vcu", {})),
            charger=_charger_params(sec.section("charger", {})),
            source=source,
        )
        eff.done()
        sec.done()
        return params


def _vcu_params(sec: Section) -> VcuParams:
    d = VcuParams()
    out = VcuParams(
        power_rate_w_per_s=sec.number("power_rate_w_per_s", d.power_rate_w_per_s, above=0.0)
    )
    sec.done()
    return out


def _charger_params(sec: Section) -> ChargerParams:
    d = ChargerParams()
    out = ChargerParams(
        cv_gain_a_per_v_s=sec.number("cv_gain_a_per_v_s", d.cv_gain_a_per_v_s, above=0.0),
        ramp_up_a_per_s=sec.number("ramp_up_a_per_s", d.ramp_up_a_per_s, above=0.0),
        finish_current_a=sec.number("finish_current_a", d.finish_current_a, min=0.0),
        cv_band_v=sec.number("cv_band_v", d.cv_band_v, min=0.0),
    )
    sec.done()
    return out


def load_vehicle(name_or_path: str | Path) -> VehicleParams:
    """Load a shipped vehicle (``compact_ev``) or a vehicle YAML file, validating every field."""
    path = resolve("vehicles", name_or_path)
    return VehicleParams.from_section(Section(load_yaml(path)), Path(path).stem, str(path))


def wheel_power_w(
    speed_mps: np.ndarray | float, accel_mps2: np.ndarray | float, params: VehicleParams
) -> np.ndarray:
    """Mechanical power at the wheels (W): positive drives the car, negative is braking power."""
    v = np.asarray(speed_mps, dtype=float)
    a = np.asarray(accel_mps2, dtype=float)
    theta = np.arctan(params.grade_pct / 100.0)
    weight_n = params.mass_kg * GRAVITY_MPS2
    # Rolling resistance only while moving: a car at standstill on its brakes dissipates nothing.
    rolling_n = np.where(v > 0.0, params.crr * weight_n * np.cos(theta), 0.0)
    force_n = (
        params.mass_kg * a
        + 0.5 * params.air_density_kg_m3 * params.cda_m2 * v * v
        + rolling_n
        + weight_n * np.sin(theta)
    )
    return force_n * v


def battery_power_w(
    speed_mps: np.ndarray | float, accel_mps2: np.ndarray | float, params: VehicleParams
) -> np.ndarray:
    """Battery power (W, positive = discharge) for speed and acceleration arrays.

    Traction divides by the traction efficiency; braking multiplies by the regen efficiency and is
    capped at ``regen_limit_w`` (the remainder is friction braking); the aux load is added.
    """
    wheel = wheel_power_w(speed_mps, accel_mps2, params)
    traction = np.maximum(wheel, 0.0) / params.traction_efficiency
    regen = np.maximum(np.minimum(wheel, 0.0) * params.regen_efficiency, -params.regen_limit_w)
    return traction + regen + params.aux_power_w


def friction_brake_power_w(
    speed_mps: np.ndarray | float, accel_mps2: np.ndarray | float, params: VehicleParams
) -> np.ndarray:
    """Braking power (W, >= 0, at the wheels) left to the friction brakes by the regen limit."""
    wheel = wheel_power_w(speed_mps, accel_mps2, params)
    braking = np.maximum(-wheel, 0.0)
    recoverable = params.regen_limit_w / params.regen_efficiency if params.regen_efficiency else 0.0
    return np.maximum(braking - recoverable, 0.0)
