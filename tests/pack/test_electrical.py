"""Electrical behaviour of the virtual pack against circuit theory and charge conservation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bms.cellmodel import ecm
from bms.pack import electrical


def _charge_as(pack, seconds: float, dt: float) -> float:
    """Step and integrate the pack terminal current (A s)."""
    total = 0.0
    for _ in range(int(round(seconds / dt))):
        pack.step(dt)
        total += pack.current_a * dt
    return total


def test_charge_balance_per_cell_discharge_and_charge(make_params, make_closed):
    """SOC change equals integrated current / capacity; only CE of charge current is stored."""
    params = make_params(series=4, isothermal=True, spread=None)
    pack = make_closed(params, soc=0.5)
    q_as = 3600.0 * pack.capacity_ah
    soc0 = pack.soc.copy()
    pack.set_load_current(45.0)
    out_as = _charge_as(pack, 600.0, 0.01)
    assert out_as == pytest.approx(45.0 * 600.0, rel=1e-6)
    np.testing.assert_allclose(soc0 - pack.soc, out_as / q_as, rtol=1e-9)

    soc1 = pack.soc.copy()
    pack.set_load_current(-30.0)
    in_as = -_charge_as(pack, 600.0, 0.01)
    eta = params.cell.coulombic_efficiency
    np.testing.assert_allclose(pack.soc - soc1, eta * in_as / q_as, rtol=1e-9)


def test_self_discharge_drains_at_the_configured_rate(make_params, make_closed):
    params = make_params(series=2, no_self_discharge=False)
    pack = make_closed(params, soc=0.5)
    soc0 = pack.soc.copy()
    pack.run(3600.0, 0.1)
    expected = params.cell.self_discharge_per_s * 3600.0
    # Applied with the 100 ms slow update, so up to one update interval may lag.
    np.testing.assert_allclose(soc0 - pack.soc, expected, rtol=1e-4)


def test_rc_step_response_matches_the_analytic_exponentials(make_params, make_closed):
    """V(t) = OCV(SOC(t)) - I R0 - I R1 (1 - e^-t/tau1) - I R2 (1 - e^-t/tau2)."""
    params = make_params(series=1, isothermal=True)
    pack = make_closed(params, soc=0.6)
    res = params.cell.resistance
    soc0 = float(pack.soc[0, 0])
    p = pack.pressure_mpa[:1]
    r0, r1, r2 = (
        float(r[0]) for r in ecm.resistances_ohm(np.array([25.0]), p, np.array([soc0]), res)
    )
    tau1, tau2 = r1 * res.c1_f, r2 * res.c2_f
    current, dt = 90.0, 0.01
    pack.set_load_current(current)
    times = np.arange(1, 60001) * dt
    volts = np.empty(times.size)
    for k in range(times.size):
        pack.step(dt)
        volts[k] = pack.pack_voltage_v
    # SOC of the step's start: the model holds OCV over each step (zero-order hold).
    soc_start = soc0 - current * (times - dt) / (3600.0 * params.cell.capacity_ah)
    expected = (
        ecm.ocv_v(soc_start, 25.0, params.cell.ocv)
        - current * r0
        - current * r1 * (1.0 - np.exp(-times / tau1))
        - current * r2 * (1.0 - np.exp(-times / tau2))
    )
    np.testing.assert_allclose(volts, expected, atol=2e-5)
    # The response is really dynamic: the RC pairs add most of the drop after 10 minutes.
    assert expected[0] - expected[-1] > 0.05


def test_parallel_cells_share_voltage_and_split_current_by_impedance(make_params, make_closed):
    params = make_params(series=2, parallel=3, spread=None)
    pack = make_closed(params, soc=0.5, seed=7)
    pack.set_load_current(150.0)
    dt = 0.01
    ocv = ecm.ocv_v(pack.soc, pack.temp_c, params.cell.ocv) + 0.0
    v1_old, v2_old = pack.v1.copy(), pack.v2.copy()
    pack.step(dt)
    i = pack.cell_current_a
    # Kirchhoff: each group's cells carry the pack current together (the load's 150 A less the
    # little the DC-link capacitor supplies as the terminal voltage sags).
    np.testing.assert_allclose(i.sum(axis=1), pack.current_a, rtol=1e-12)
    assert pack.current_a == pytest.approx(150.0, rel=1e-3)
    # Each cell's own branch equation gives the shared group voltage.
    r0 = pack._r0
    v_cell = ocv - (pack._a1 * v1_old + pack._b1 * i) - (pack._a2 * v2_old + pack._b2 * i) - r0 * i
    np.testing.assert_allclose(v_cell, np.repeat(pack.group_voltage_v[:, None], 3, 1), atol=1e-9)
    # Spread matters: the currents really differ between parallel cells.
    assert np.ptp(i, axis=1).min() > 0.1


def test_power_demand_is_met_at_the_terminals(make_params, make_closed):
    params = make_params(series=12)
    pack = make_closed(params, soc=0.7)
    pack.set_load_power(20_000.0)
    pack.run(1.0, 0.01)
    assert pack.pack_voltage_v * pack.current_a == pytest.approx(20_000.0, rel=1e-3)
    pack.set_load_power(-10_000.0)
    pack.run(1.0, 0.01)
    assert pack.pack_voltage_v * pack.current_a == pytest.approx(-10_000.0, rel=1e-3)


def test_power_beyond_the_maximum_is_clamped_and_flagged():
    current, limited = electrical.current_for_power(400.0, 0.1, 1e6)
    assert limited and current == pytest.approx(400.0 / 0.2)
    current, limited = electrical.current_for_power(400.0, 0.1, 40_000.0)
    assert not limited and (400.0 - 0.1 * current) * current == pytest.approx(40_000.0)


def test_no_current_flows_with_contactors_open(make_params):
    from bms.pack import Pack

    pack = Pack(make_params(series=4))
    pack.set_load_current(100.0)
    soc0 = pack.soc.copy()
    pack.run(10.0, 0.01)
    assert pack.current_a == 0.0
    np.testing.assert_array_equal(pack.soc, soc0)


def test_overcharge_keeps_raising_the_voltage_beyond_the_table(make_params, make_closed):
    params = make_params(series=1)
    cell = dataclasses.replace(params.cell, self_discharge_per_s=0.0)
    pack = make_closed(dataclasses.replace(params, cell=cell), soc=0.99)
    pack.set_load_current(-45.0)
    pack.run(0.2 * 3600 * 90 / 45.0, 0.1)  # +20 % SOC at C/2
    assert pack.soc[0, 0] > 1.15
    assert pack.pack_voltage_v > 4.35
