"""Fault hooks and sensors change the cell or the reading the way DOMAIN.md says."""

from __future__ import annotations

import numpy as np
import pytest

from bms.pack import InitialState, Pack
from bms.pack.faults import FAULT_TYPES, make_fault


def _rest(pack: Pack, seconds: float, dt: float = 1.0) -> None:
    pack.set_load_current(0.0)
    pack.run(seconds, dt)


def test_soft_short_of_10_ohm_leaks_and_drifts_as_in_the_detectability_table(make_params):
    """DOMAIN.md section 7: 10 ohm -> 0.38 A, 0.42 %/h SOC loss, 2.1-4.6 mV/h at mid SOC."""
    pack = Pack(make_params(series=12), initial=InitialState(soc=0.5))
    _rest(pack, 600.0)
    make_fault("soft_short", cell=4, resistance_ohm=10.0).apply(pack)
    soc0, v0 = pack.soc.ravel().copy(), pack.cell_voltage_v.copy()
    _rest(pack, 3600.0)
    soc_loss = soc0 - pack.soc.ravel()
    assert soc_loss[4] * 100 == pytest.approx(0.42, rel=0.05)
    assert np.all(soc_loss[np.arange(12) != 4] == 0.0)
    drift_mv_h = ((v0 - pack.cell_voltage_v)[4] - np.median(v0 - pack.cell_voltage_v)) * 1e3
    assert 2.1 <= drift_mv_h <= 4.6


def test_soft_short_heats_its_cell(make_params):
    pack = Pack(make_params(series=12), initial=InitialState(soc=0.5))
    make_fault("soft_short", cell=6, resistance_ohm=0.2).apply(pack)
    _rest(pack, 1800.0)
    assert pack.temp_c.ravel()[6] > pack.temp_c.ravel()[0] + 2.0


def test_open_sense_wire_reads_zero_and_the_channel_above_reads_both(make_params):
    pack = Pack(make_params(series=12), initial=InitialState(soc=0.5))
    truth = pack.cell_voltage_v.copy()
    make_fault("sensor_open", sensor="cell_voltage", channel=3).apply(pack)
    seen = pack.measure().cell_voltage_v
    assert seen[3] == 0.0
    assert seen[4] == pytest.approx(truth[3] + truth[4], abs=0.01)
    np.testing.assert_allclose(np.delete(seen, [3, 4]), np.delete(truth, [3, 4]), atol=0.01)


def test_stuck_sensor_holds_its_last_reading_while_the_truth_moves(make_params):
    pack = Pack(make_params(series=12), initial=InitialState(soc=0.5, temp_c=20.0))
    first = pack.measure().cell_temp_c.copy()
    make_fault("sensor_stuck", sensor="cell_temperature", channel=0).apply(pack)
    pack.heater_w[:] = 20.0
    pack.run(1200.0, 1.0)
    later = pack.measure().cell_temp_c
    assert later[0] == first[0]
    assert later[1] > first[1] + 5.0


def test_offset_and_noise_faults_shift_and_widen_the_reading(make_params):
    pack = Pack(make_params(series=12), seed=2)
    base = np.array([pack.measure().current_a for _ in range(2000)])
    make_fault("sensor_offset", sensor="current", channel=0, offset=1.5).apply(pack)
    noisy = make_fault("sensor_noise", sensor="current", channel=0, sigma=2.0)
    noisy.apply(pack)
    faulty = np.array([pack.measure().current_a for _ in range(2000)])
    spec = pack.params.sensors["current"]
    assert faulty.mean() - base.mean() == pytest.approx(1.5, abs=0.15)
    assert base.std() == pytest.approx(spec.noise, rel=0.15)
    assert faulty.std() == pytest.approx(np.hypot(spec.noise, 2.0), rel=0.1)
    noisy.remove(pack)
    assert np.array([pack.measure().current_a for _ in range(500)]).std() < 0.2


def test_readings_are_quantised_and_clamped_to_the_sensor_range(make_params):
    pack = Pack(make_params(series=12))
    m = pack.measure()
    lsb = pack.params.sensors["cell_voltage"].lsb
    np.testing.assert_allclose(m.cell_voltage_v / lsb, np.round(m.cell_voltage_v / lsb), atol=1e-9)
    make_fault("sensor_offset", sensor="pressure", channel=0, offset=-50.0).apply(pack)
    assert pack.measure().pressure_mpa[0] == pack.params.sensors["pressure"].min


def test_broken_temperature_and_pressure_lines_read_their_open_values(make_params):
    pack = Pack(make_params(series=12))
    make_fault("sensor_open", sensor="cell_temperature", channel=1).apply(pack)
    make_fault("sensor_open", sensor="pressure", channel=0).apply(pack)
    m = pack.measure()
    assert m.cell_temp_c[1] == pack.params.sensors["cell_temperature"].open_value
    assert m.pressure_mpa[0] == pack.params.sensors["pressure"].open_value


def test_fixture_relaxation_drops_pressure_and_raises_interface_resistance(make_params):
    pack = Pack(make_params(series=24, modules=2), initial=InitialState(soc=0.5))
    r1_before = pack._r1.reshape(2, 12).mean(axis=1)
    make_fault("pressure_loss", module=1, target_mpa=0.2, tau_s=60.0).apply(pack)
    pack.run(600.0, 0.5)
    assert pack.pressure_mpa[1] < 0.3 < 1.5 < pack.pressure_mpa[0]
    r1_after = pack._r1.reshape(2, 12).mean(axis=1)
    ratio = r1_after[1] / r1_before[1]
    assert ratio == pytest.approx((pack.pressure_mpa[1] / 2.0) ** -0.5, rel=0.08)
    assert r1_after[0] == pytest.approx(r1_before[0], rel=0.01)


def test_coolant_loss_hook_cuts_the_cold_plate(make_params):
    pack = Pack(make_params(series=12))
    fault = make_fault("coolant_loss")
    fault.apply(pack)
    assert pack.coolant_lost
    fault.remove(pack)
    assert not pack.coolant_lost


def test_thermal_runaway_meets_the_gb38031_confirmation_signature(make_params):
    """Trigger cell: voltage drop > 25 %, T >= 80 degC and dT/dt >= 1 degC/s for > 3 s;
    neighbours heat up and the enclosure sees gas."""
    pack = Pack(make_params(series=12), initial=InitialState(soc=0.9))
    v_initial = pack.cell_voltage_v[5]
    make_fault("thermal_runaway", cell=5, ramp_s=60.0).apply(pack)
    dt, temps, volts = 0.1, [], []
    for _ in range(int(240 / dt)):
        pack.step(dt)
        temps.append(pack.temp_c.ravel()[5])
        volts.append(pack.cell_voltage_v[5])
    temps, volts = np.array(temps), np.array(volts)
    rate = np.gradient(temps, dt)
    longest = run = 0
    for fast in rate >= 1.0:
        run = run + 1 if fast else 0
        longest = max(longest, run)
    assert longest * dt > 3.0
    assert volts.min() < 0.75 * v_initial
    assert temps.max() > 500.0  # DOMAIN.md: peak 700-900 degC
    assert pack.runaway_active.ravel()[5]
    assert pack.temp_c.ravel()[4] > 80.0 and pack.temp_c.ravel()[6] > 80.0
    assert pack.h2s_ppm > 50.0


def test_casing_breach_builds_up_h2s_at_the_configured_rate(make_params):
    pack = Pack(make_params(series=12))
    make_fault("casing_breach").apply(pack)
    pack.run(300.0, 1.0)
    gas = pack.params.gas
    expected = gas.breach_rate_ppm_per_s * gas.ventilation_tau_s * (1 - np.exp(-300.0 / 1800.0))
    assert pack.h2s_ppm == pytest.approx(expected, rel=0.01)


def test_every_registered_fault_can_switch_on_and_off(make_params):
    params = {
        "soft_short": {"cell": 0, "resistance_ohm": 5.0},
        "sensor_stuck": {"sensor": "cell_voltage", "channel": 0},
        "sensor_offset": {"sensor": "pressure", "channel": 0, "offset": 0.1},
        "sensor_noise": {"sensor": "h2s", "channel": 0, "sigma": 1.0},
        "sensor_open": {"sensor": "link_voltage", "channel": 0},
        "pressure_loss": {"module": 0},
        "coolant_loss": {},
        "contactor_welded": {"contactor": "plus"},
        "contactor_stuck_open": {"contactor": "minus"},
        "thermal_runaway": {"cell": 1, "heater_w": 100.0},
        "casing_breach": {},
        "external_short": {"resistance_ohm": 1.0},
    }
    assert set(params) == set(FAULT_TYPES)
    pack = Pack(make_params(series=12))
    for kind, kwargs in params.items():
        fault = make_fault(kind, **kwargs)
        fault.validate(pack)
        fault.apply(pack)
        pack.run(1.0, 0.1)
        fault.remove(pack)


def test_fault_parameters_are_checked_against_the_pack(make_params):
    pack = Pack(make_params(series=12))
    with pytest.raises(ValueError, match="cell 12 out of range"):
        make_fault("soft_short", cell=12, resistance_ohm=1.0).validate(pack)
    with pytest.raises(ValueError, match="unknown sensor"):
        make_fault("sensor_stuck", sensor="humidity", channel=0).validate(pack)
    with pytest.raises(ValueError, match="unknown fault"):
        make_fault("meteor_strike")
    with pytest.raises(ValueError, match="soft_short"):
        make_fault("soft_short", cell=1)


def test_same_seed_gives_bit_identical_arrays_and_readings(reference_params):
    def run(seed: int):
        pack = Pack(reference_params, seed=seed, initial=InitialState(soc=0.8))
        pack.command_contactors(True, True, True)
        pack.set_load_power(30_000.0)
        readings = []
        for _ in range(50):
            pack.run(0.1, 0.01)
            readings.append(pack.measure().cell_voltage_v)
        return pack, np.array(readings)

    a, ra = run(11)
    b, rb = run(11)
    c, rc = run(12)
    for name in ("soc", "v1", "v2", "temp_c", "pressure_mpa", "capacity_ah"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert np.array_equal(ra, rb)
    assert not np.array_equal(a.capacity_ah, c.capacity_ah)
    assert not np.array_equal(ra, rc)
