"""Thermal network and stack pressure against analytic solutions and DOMAIN.md relations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bms.pack import InitialState, Pack


def test_uniform_heating_reaches_the_analytic_steady_state(make_params):
    """With equal heat in every cell no heat crosses cell faces: T = T_c + Q / (G_c + G_a)."""
    params = make_params(series=12)
    pack = Pack(params, initial=InitialState(temp_c=25.0))
    pack.heater_w[:] = 6.0
    pack.run(3 * 3600.0, 1.0)
    th = params.thermal
    expected = 25.0 + 6.0 / (th.coolant_w_per_k + th.ambient_w_per_k)
    np.testing.assert_allclose(pack.temp_c, expected, atol=1e-3)


def test_one_heated_cell_matches_the_conductance_network_solution(make_params):
    """Steady state of a heated cell in a 12-cell stack equals the solved linear network
    G_n (2T_i - T_i-1 - T_i+1) + (G_c + G_a)(T_i - T_c) = Q_i."""
    params = make_params(series=12)
    pack = Pack(params, initial=InitialState(temp_c=20.0))
    pack.heater_w.flat[5] = 30.0
    pack.run(4 * 3600.0, 1.0)
    th = params.thermal
    n, g_n, g_b = 12, th.neighbour_w_per_k, th.coolant_w_per_k + th.ambient_w_per_k
    matrix = np.diag(np.full(n, g_b))
    for i in range(n - 1):
        matrix[i, i] += g_n
        matrix[i + 1, i + 1] += g_n
        matrix[i, i + 1] -= g_n
        matrix[i + 1, i] -= g_n
    q = np.zeros(n)
    q[5] = 30.0
    expected = 20.0 + np.linalg.solve(matrix, q)
    np.testing.assert_allclose(pack.temp_c.ravel(), expected, atol=1e-3)
    assert expected[5] - expected[0] > 1.0  # the gradient is real, not a uniform offset


def test_adiabatic_energy_balance_heat_plus_stored_equals_electrical_loss(make_params, make_closed):
    """Energy conservation: integral of I (OCV - V) = C dT + energy left in the RC capacitors."""
    from bms.cellmodel import ecm

    params = make_params(series=1)
    th = dataclasses.replace(
        params.thermal, coolant_w_per_k=0.0, ambient_w_per_k=0.0, reversible_heat=False
    )
    pack = make_closed(dataclasses.replace(params, thermal=th), soc=0.8)
    t0 = float(pack.temp_c[0, 0])
    pack.set_load_current(90.0)
    dt, loss_j = 0.05, 0.0
    for _ in range(int(1800 / dt)):
        ocv = ecm.ocv_v(pack.soc, pack.temp_c, params.cell.ocv)
        pack.step(dt)
        loss_j += float(pack.cell_current_a[0, 0] * (ocv[0, 0] - pack.pack_voltage_v)) * dt
    res = params.cell.resistance
    stored_j = (
        0.5 * res.c1_f * float(pack.v1[0, 0]) ** 2 + 0.5 * res.c2_f * float(pack.v2[0, 0]) ** 2
    )
    heat_j = params.cell.heat_capacity_j_per_k * (float(pack.temp_c[0, 0]) - t0)
    assert heat_j + stored_j == pytest.approx(loss_j, rel=0.01)
    # The RC pairs really carried energy (the test would be blind to them otherwise).
    assert stored_j > 0.01 * heat_j


def test_steady_polarisation_heat_at_1c_matches_domain(make_params, make_closed):
    """DOMAIN.md: at 1C and 25 degC steady state about 10.8 W per cell (0.84 K/min adiabatic)."""
    pack = make_closed(make_params(series=1, isothermal=True), soc=0.95)
    pack.set_load_current(90.0)
    pack.run(2400.0, 0.1)  # six tau2: polarisation settled, SOC still mid-range
    heat_w = (90.0**2 * pack._r0 + pack.v1**2 / pack._r1 + pack.v2**2 / pack._r2).item()
    assert heat_w == pytest.approx(10.8, rel=0.03)
    assert heat_w * 60.0 / 770.0 == pytest.approx(0.84, rel=0.03)


def test_coolant_flow_and_loss_change_the_steady_state(make_params):
    params = make_params(series=12)
    runs = {}
    for label, flow, lost in (("nominal", 8.0, False), ("half", 4.0, False), ("lost", 8.0, True)):
        pack = Pack(params, initial=InitialState(temp_c=25.0))
        pack.coolant_flow_lpm = flow
        pack.coolant_lost = lost
        pack.heater_w[:] = 4.0
        pack.run(6 * 3600.0, 2.0)
        runs[label] = float(pack.temp_c.mean())
    th = params.thermal
    g_half = th.coolant_w_per_k * 0.5**0.8
    assert runs["half"] == pytest.approx(25.0 + 4.0 / (g_half + th.ambient_w_per_k), abs=0.01)
    g_lost = th.coolant_w_per_k * th.coolant_min_fraction
    assert runs["lost"] == pytest.approx(25.0 + 4.0 / (g_lost + th.ambient_w_per_k), abs=0.05)
    assert runs["nominal"] < runs["half"] < runs["lost"]


def test_pressure_change_over_a_full_charge_is_thickness_times_stiffness(make_params, make_closed):
    """dP = k_eff * n_cells * layers * (4.85 um * q - cathode contraction) / A; DOMAIN.md gives
    about 0.14 MPa for a 12-cell module on the compliant fixture."""
    params = make_params(series=12, creep_tau_s=1e12)
    pack = make_closed(params, soc=0.0)
    p0 = pack.pressure_mpa.copy()
    pack.set_load_current(-90.0)
    pack.run(3600.0 / params.cell.coulombic_efficiency, 0.1)
    assert pack.soc.mean() == pytest.approx(1.0, abs=1e-3)
    mech, fix = params.cell.mechanics, params.fixture
    area = mech.footprint_cm2 * 1e-4
    length = 12 * mech.thickness_mm * 1e-3
    k_eff = 1.0 / (1.0 / (fix.stack_modulus_pa * area / length) + 1.0 / fix.stiffness_n_per_m)
    growth_m = (
        12
        * mech.layers
        * (
            mech.li_um_per_mah_cm2 * mech.areal_capacity_mah_cm2 * pack.soc.mean()
            - mech.cathode_contraction_um
        )
        * 1e-6
    )
    temp_rise = pack.temp_c.mean() - 25.0
    thermal_mpa = k_eff * mech.cte_difference_per_k * length * temp_rise / area * 1e-6
    expected = k_eff * growth_m / area * 1e-6 + thermal_mpa
    assert float(pack.pressure_mpa[0] - p0[0]) == pytest.approx(expected, rel=0.01)
    assert 0.12 < expected < 0.16


def test_stiff_fixture_swings_ten_times_more(make_params, make_closed):
    compliant = make_params(series=12, creep_tau_s=1e12)
    stiff = dataclasses.replace(
        compliant, fixture=dataclasses.replace(compliant.fixture, stiffness_n_per_m=15e6)
    )
    swings = []
    for params in (compliant, stiff):
        lo = make_closed(params, soc=0.0).pressure_mpa[0]
        hi = make_closed(params, soc=1.0).pressure_mpa[0]
        swings.append(hi - lo)
    assert swings[1] / swings[0] == pytest.approx(10.0, rel=0.05)
    assert 1.2 < swings[1] < 1.6  # DOMAIN.md: about 1.4 MPa for the stiff frame


def test_creep_relaxes_pressure_back_to_preload_with_its_time_constant(make_params, make_closed):
    params = make_params(series=12, creep_tau_s=3600.0)
    pack = make_closed(params, soc=1.0)
    excess0 = pack.pressure_mpa[0] - params.fixture.preload_mpa
    pack.run(3600.0, 1.0)
    excess = pack.pressure_mpa[0] - params.fixture.preload_mpa
    assert excess == pytest.approx(excess0 * np.exp(-1.0), rel=0.02)


def test_low_pressure_raises_interface_resistance_as_p_to_minus_half(make_params, make_closed):
    """R1 ~ P^-0.5 (DOMAIN.md section 4): at 0.3 MPa R1 is 2.58 x its 2 MPa value."""
    params = make_params(series=1)
    nominal = make_closed(params, soc=0.5, pressure_mpa=2.0)
    low = make_closed(params, soc=0.5, pressure_mpa=0.3)
    ratio = (low._r1 / nominal._r1).item()
    assert ratio == pytest.approx((0.3 / 2.0) ** -0.5, rel=0.01)
