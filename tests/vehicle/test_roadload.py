"""Road-load model against analytic forces and the DOMAIN.md section 11 drive-cycle figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bms.errors import InputError
from bms.vehicle import battery_power_w, friction_brake_power_w, load_cycle, load_vehicle
from bms.vehicle.roadload import GRAVITY_MPS2, wheel_power_w

EV = load_vehicle("compact_ev")


def test_shipped_vehicle_is_the_domain_illustrative_vehicle() -> None:
    assert (EV.mass_kg, EV.cda_m2, EV.crr) == (1600.0, 0.62, 0.009)
    assert (EV.traction_efficiency, EV.regen_efficiency, EV.aux_power_w) == (0.90, 0.85, 500.0)


def test_standstill_draws_only_the_aux_load() -> None:
    # No rolling resistance while parked: the brakes hold the car without dissipating power.
    assert battery_power_w(0.0, 0.0, EV) == pytest.approx(500.0)


def test_cruise_power_is_drag_plus_rolling_over_traction_efficiency() -> None:
    v = 25.0
    force_n = 0.5 * 1.2 * 0.62 * v**2 + 0.009 * 1600 * GRAVITY_MPS2
    assert battery_power_w(v, 0.0, EV) == pytest.approx(force_n * v / 0.90 + 500.0, rel=1e-12)


def test_braking_returns_regen_efficiency_and_is_capped_with_the_rest_to_friction() -> None:
    no_aux = dataclasses.replace(EV, aux_power_w=0.0, regen_limit_w=20_000.0)
    v, a = 20.0, -2.0
    wheel = (1600 * a + 0.5 * 1.2 * 0.62 * v**2 + 0.009 * 1600 * GRAVITY_MPS2) * v
    assert wheel < -20_000.0 / 0.85  # strong enough to hit the cap
    assert battery_power_w(v, a, no_aux) == pytest.approx(-20_000.0)
    friction = friction_brake_power_w(v, a, no_aux)
    assert friction == pytest.approx(-wheel - 20_000.0 / 0.85)
    gentle = -0.3
    wheel_gentle = float(wheel_power_w(v, gentle, no_aux))
    assert battery_power_w(v, gentle, no_aux) == pytest.approx(wheel_gentle * 0.85)
    assert friction_brake_power_w(v, gentle, no_aux) == 0.0


def test_kinetic_energy_round_trip_through_both_efficiencies() -> None:
    # Vacuum, no rolling, no aux: accelerate 0 -> 20 m/s and brake back at the same rate.
    ideal = dataclasses.replace(EV, cda_m2=0.0, crr=0.0, aux_power_w=0.0, regen_limit_w=1e9)
    dt, a = 1e-3, 2.0
    t = np.arange(0.0, 10.0, dt) + dt / 2
    v_up, v_down = a * t, 20.0 - a * t
    drawn_j = np.sum(battery_power_w(v_up, a, ideal)) * dt
    returned_j = -np.sum(battery_power_w(v_down, -a, ideal)) * dt
    kinetic_j = 0.5 * 1600 * 20.0**2
    assert drawn_j == pytest.approx(kinetic_j / 0.90, rel=1e-6)
    assert returned_j == pytest.approx(kinetic_j * 0.85, rel=1e-6)


def test_grade_adds_weight_component() -> None:
    hill = dataclasses.replace(EV, grade_pct=10.0, aux_power_w=0.0, cda_m2=0.0)
    theta = np.arctan(0.10)
    expected = 1600 * GRAVITY_MPS2 * (np.sin(theta) + 0.009 * np.cos(theta)) * 10.0 / 0.90
    assert battery_power_w(10.0, 0.0, hill) == pytest.approx(expected)


def test_vectorised_over_arrays() -> None:
    v = np.linspace(0, 30, 7)
    out = battery_power_w(v, np.zeros(7), EV)
    assert out.shape == (7,)
    assert out[0] == pytest.approx(500.0)
    assert np.all(np.diff(out) > 0)


@pytest.mark.parametrize(
    ("cycle", "kwh_per_100km", "peak_kw", "peak_regen_kw"),
    [("udds", 10.0, 38.0, 22.5), ("hwfet", 11.3, 31.0, 32.0)],
)
def test_drive_cycle_figures_match_domain_section_11(
    cycle: str, kwh_per_100km: float, peak_kw: float, peak_regen_kw: float
) -> None:
    # DOMAIN.md's figures are per 1 s interval: speed and slope of each segment at its midpoint.
    c = load_cycle(cycle)
    t = c.segment_midpoints_s()
    power_w = battery_power_w(c.speed_at(t), c.accel_at(t), EV)
    energy_kwh = float(np.sum(power_w * np.diff(c.time_s))) / 3.6e6
    assert energy_kwh / (c.distance_m / 1e5) == pytest.approx(kwh_per_100km, rel=0.01)
    assert power_w.max() / 1e3 == pytest.approx(peak_kw, rel=0.02)
    assert -power_w.min() / 1e3 == pytest.approx(peak_regen_kw, rel=0.02)


@pytest.mark.parametrize(("cycle", "regen_s"), [("udds", 94.0), ("hwfet", 24.0)])
def test_time_above_the_25c_charge_limit_matches_domain(cycle: str, regen_s: float) -> None:
    # Sampled at the 10 ms base tick: regen beyond 22.5 A at the 370 V nominal of pack A.
    c = load_cycle(cycle)
    t = np.arange(0.0, c.time_s[-1], 0.01)
    power_w = battery_power_w(c.speed_at(t), c.accel_at(t), EV)
    assert np.count_nonzero(power_w < -22.5 * 370.0) * 0.01 == pytest.approx(regen_s, abs=1.0)


def test_fine_sampling_keeps_energy_and_raises_peaks_slightly() -> None:
    # Within a 1 s segment speed grows linearly, so instantaneous power at the segment's end
    # exceeds the segment mean (why 10 ms sampling peaks ~5 % above the per-second figures).
    c = load_cycle("udds")
    t = np.arange(0.0, c.time_s[-1], 0.01) + 0.005
    power_w = battery_power_w(c.speed_at(t), c.accel_at(t), EV)
    per_100km = float(np.sum(power_w) * 0.01) / 3.6e6 / (c.distance_m / 1e5)
    assert per_100km == pytest.approx(10.0, rel=0.01)
    assert 38.0 < power_w.max() / 1e3 < 38.0 * 1.06


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "car.yaml"
    path.write_text(text)
    return path


BASE = """\
mass_kg: 1600
cda_m2: 0.62
crr: 0.009
efficiency:
  traction: 0.9
  regen: 0.85
regen_limit_w: 50000
"""


def test_vehicle_file_from_path_with_defaults(tmp_path: Path) -> None:
    params = load_vehicle(_write(tmp_path, BASE))
    assert params.name == "car"
    assert params.aux_power_w == 0.0 and params.air_density_kg_m3 == 1.2


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (BASE.replace("mass_kg: 1600", "mass_kg: -5"), ":1: mass_kg: must be > 0.0"),
        (BASE.replace("traction: 0.9", "traction: 1.2"), ":5: efficiency.traction: must be <="),
        (BASE.replace("crr: 0.009", "crr: abc"), ":3: crr: expected a number"),
        (BASE.replace("cda_m2: 0.62\n", ""), "cda_m2: missing required field"),
        (BASE + "mass: 3\n", ":8: mass: unknown field"),
        (BASE + "vcu:\n  power_rate_w_per_s: 0\n", ":9: vcu.power_rate_w_per_s: must be > 0"),
    ],
)
def test_bad_vehicle_files_give_located_errors(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(InputError, match=where.replace(".", r"\.")):
        load_vehicle(_write(tmp_path, text))


def test_unknown_shipped_vehicle_lists_choices() -> None:
    with pytest.raises(InputError, match="compact_ev"):
        load_vehicle("no_such_car")
