"""HV path: precharge against RC theory, contactor timing and contactor faults."""

from __future__ import annotations

import numpy as np
import pytest

from bms.pack import Pack
from bms.pack.faults import make_fault


def test_precharge_follows_the_rc_charging_curve(reference_params):
    """V_link(t) = E (1 - exp(-t / tau)), tau = (R_pre + R_pack) C; peak current E / R_pre."""
    pack = Pack(reference_params, seed=3)
    hv = reference_params.hv
    pack.command_contactors(False, True, True)
    dt = 0.001
    pack.run(hv.contactor_close_s, dt)  # minus and precharge close after their delay
    assert pack.contactors_closed == (False, True, True)
    e_pack = pack.open_circuit_voltage_v
    tau = (hv.precharge_resistance_ohm + pack._r_pack) * hv.dc_link_capacitance_f
    t0 = pack.time_s
    peak = 0.0
    for _ in range(400):
        pack.step(dt)
        peak = max(peak, pack.current_a)
        t = pack.time_s - t0 + dt  # the link started charging in the step that closed the relay
        assert pack.link_voltage_v == pytest.approx(e_pack * (1 - np.exp(-t / tau)), rel=2e-3)
    assert peak == pytest.approx(e_pack / (hv.precharge_resistance_ohm + pack._r_pack), rel=0.03)
    # DOMAIN.md sizing: pack A within 1 V after about 0.30 s, peak about 7.4 A.
    assert 7.0 < peak < 8.5
    assert e_pack - pack.link_voltage_v < 1.0


def test_contactors_follow_commands_after_their_delays(reference_params):
    pack = Pack(reference_params)
    hv = reference_params.hv
    pack.command_contactors(True, True, False)
    pack.run(hv.contactor_close_s - 0.002, 0.001)
    assert pack.contactors_closed == (False, False, False)
    pack.run(0.003, 0.001)
    assert pack.contactors_closed == (True, True, False)
    pack.command_contactors(False, False, False)
    pack.run(hv.contactor_open_s + 0.001, 0.001)
    assert pack.contactors_closed == (False, False, False)


def test_welded_contactor_stays_closed_and_current_keeps_flowing(make_params, make_closed):
    pack = make_closed(make_params(series=12))
    make_fault("contactor_welded", contactor="plus").apply(pack)
    make_fault("contactor_welded", contactor="minus").apply(pack)
    pack.set_load_current(50.0)
    pack.command_contactors(False, False, False)
    pack.run(1.0, 0.01)
    assert pack.contactors_closed[:2] == (True, True)
    assert pack.current_a == pytest.approx(50.0, rel=1e-3)


def test_stuck_open_contactor_never_closes_and_precharge_draws_nothing(reference_params):
    pack = Pack(reference_params)
    make_fault("contactor_stuck_open", contactor="minus").apply(pack)
    pack.command_contactors(False, True, True)
    pack.run(1.0, 0.01)
    assert pack.contactors_closed == (False, False, True)
    assert pack.current_a == 0.0
    assert pack.link_voltage_v == 0.0


def test_closing_onto_an_empty_link_causes_an_inrush(reference_params):
    """Skipping precharge: the capacitor's charge C * V arrives within the closing step."""
    pack = Pack(reference_params)
    pack.command_contactors(True, True, False)
    dt = 0.001
    charge = 0.0
    for _ in range(40):
        pack.step(dt)
        charge += pack.current_a * dt
    c = reference_params.hv.dc_link_capacitance_f
    assert charge == pytest.approx(c * pack.pack_voltage_v, rel=0.01)


def test_external_short_draws_the_short_circuit_current(make_params, make_closed):
    pack = make_closed(make_params(series=12))
    fault = make_fault("external_short", resistance_ohm=0.05)
    fault.apply(pack)
    pack.step(0.001)
    e, r = pack.open_circuit_voltage_v, pack._r_pack
    assert pack.current_a == pytest.approx(e / (r + 0.05), rel=0.02)
    fault.remove(pack)
    pack.run(0.01, 0.001)
    assert abs(pack.current_a) < 1.0


def test_a_shorted_dc_link_cannot_be_precharged(reference_params):
    """With 5 ohm across the link the precharge divider holds it at E R_x / (R_pre + R_x)."""
    pack = Pack(reference_params, seed=3)
    make_fault("external_short", resistance_ohm=5.0).apply(pack)
    pack.command_contactors(False, True, True)
    pack.run(2.0, 0.001)
    e_pack = pack.open_circuit_voltage_v
    r_series = reference_params.hv.precharge_resistance_ohm + pack._r_pack
    assert pack.link_voltage_v == pytest.approx(e_pack * 5.0 / (r_series + 5.0), rel=1e-3)
    assert pack.current_a == pytest.approx(e_pack / (r_series + 5.0), rel=1e-3)
    assert e_pack - pack.link_voltage_v > 300.0  # far outside the 1 V precharge criterion
