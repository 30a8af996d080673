"""Passive balancing: threshold/hysteresis rule, permissions, hardware limits, effort in Ah.

Oracles: DOMAIN.md section 12 (foxBMS regression: two cells 50 mV apart at rest must bleed the
high cell and account non-zero charge), section 7 (100 ohm at 3.8 V bleeds ~0.9 Ah/day), and the
analytic steady state of the board's first-order thermal model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bms.errors import InputError
from bms.firmware.balancing import (
    BalancingState,
    balancing_allowed,
    balancing_step,
    bleed_current_a,
    load_balancing_params,
)
from bms.firmware.codes import BmsState

LIMITS_YAML = Path(__file__).parents[2] / "bms" / "data" / "firmware" / "limits.yaml"


@pytest.fixture(scope="module")
def params():
    return load_balancing_params()


def run(state, params, volt, steps, dt_s=1.0, allowed=True, **kw):
    out = None
    for _ in range(steps):
        out = balancing_step(
            state, params, dt_s=dt_s, cell_voltage_v=np.asarray(volt), allowed=allowed, **kw
        )
    return out


def test_two_cells_50mv_apart_at_rest_bleed_the_high_cell(params):
    """foxBMS regression (DOMAIN.md section 12): bleeding on the high cell and non-zero charge."""
    state = BalancingState.new(2, params)
    volt = np.array([3.800, 3.850])
    active = run(state, params, volt, steps=11, dt_s=1.0)
    assert active.tolist() == [False, True]
    # First call only decides; the next ten seconds bleed 3.85 V / 100 ohm.
    expected_ah = 3.85 / params.bleed_resistance_ohm * 10.0 / 3600.0
    np.testing.assert_allclose(state.effort_ah, [0.0, expected_ah], rtol=1e-12)
    assert state.effort_ah[1] > 0.0


def test_hundred_ohm_bleeds_0p9_ah_per_day(params):
    """DOMAIN.md section 7: a 100 ohm bleed resistor at 3.8 V removes ~0.9 Ah/day."""
    state = BalancingState.new(2, params)
    run(state, params, [3.75, 3.80], steps=1441, dt_s=60.0)
    assert state.effort_ah[1] == pytest.approx(0.912, abs=0.005)


def test_threshold_and_hysteresis(params):
    """Start above min + 15 mV, keep above min + 10 mV, no restart between 10 and 15 mV."""
    state = BalancingState.new(2, params)
    low = 3.700

    def step(delta_mv):
        return run(state, params, [low, low + delta_mv / 1000.0], steps=1)[1]

    assert not step(14.0)
    assert step(20.0)
    assert step(12.0)  # inside the hysteresis band: keeps bleeding
    assert not step(9.0)
    assert not step(12.0)  # inside the band again, but it was off: stays off


def test_only_when_allowed(params):
    state = BalancingState.new(2, params)
    assert not run(state, params, [3.8, 3.9], steps=3, allowed=False).any()
    assert state.effort_ah.sum() == 0.0
    assert run(state, params, [3.8, 3.9], steps=1).tolist() == [False, True]
    assert not run(state, params, [3.8, 3.9], steps=1, allowed=False).any()
    effort = state.effort_ah.copy()
    run(state, params, [3.8, 3.9], steps=5, allowed=False)
    np.testing.assert_array_equal(state.effort_ah, effort)  # switched off: no more charge bled


def test_voltage_floor_and_nan_cells(params):
    state = BalancingState.new(3, params)
    # 3.45 V is 50 mV above the lowest cell but below the 3.5 V floor.
    assert not run(state, params, [3.40, 3.45, np.nan], steps=2).any()
    state = BalancingState.new(3, params)
    active = run(state, params, [3.80, 3.85, np.nan], steps=2)
    assert active.tolist() == [False, True, False]


def test_max_active_channels_per_module_picks_highest(params):
    p = replace(params, cells_per_module=12, max_active_per_module=6)
    state = BalancingState.new(24, p)
    volt = np.full(24, 3.80)
    volt[:8] = 3.80 + np.arange(1, 9) * 0.010  # 8 high cells in module 0 (10..80 mV above)
    volt[12] = 3.83  # one in module 1
    active = run(state, p, volt, steps=1)
    assert active[:12].sum() == 6
    assert active[2:8].all()  # the six highest (30..80 mV) win
    assert active[12] and active[13:].sum() == 0


def test_board_temperature_reaches_analytic_steady_state_and_locks_out(params):
    # One board, 11 of 12 cells bleeding at 4.05 V: P = 11 * 4.05^2 / 100 = 1.80 W, tau = C/G.
    p = replace(params, max_active_per_module=12, board_temp_max_c=200.0)
    state = BalancingState.new(12, p, ambient_temp_c=25.0)
    volt = np.full(12, 4.05)
    volt[0] = 4.00
    run(state, p, volt, steps=300, dt_s=10.0, ambient_temp_c=25.0)  # 10 time constants
    power_w = 11 * 4.05**2 / p.bleed_resistance_ohm
    expected_c = 25.0 + power_w / p.board_conductance_w_per_k
    assert state.board_temp_c[0] == pytest.approx(expected_c, abs=0.01)

    # With a 35 degC limit the board locks out, cools below 35 - 5 K, then bleeds again.
    hot = replace(p, board_temp_max_c=35.0, board_temp_hysteresis_k=5.0)
    state = BalancingState.new(12, hot, ambient_temp_c=25.0)
    history = []
    for _ in range(600):
        on = balancing_step(state, hot, dt_s=10.0, cell_voltage_v=volt, allowed=True)
        history.append((on.any(), state.board_temp_c[0]))
    temps = np.array([t for _, t in history])
    assert temps.max() < 35.0 + 1.0  # one 10 s step of overshoot at most
    assert any(not on for on, _ in history[10:])  # locked out at some point
    assert sum(on for on, _ in history[-200:]) > 0  # and released after cooling
    assert temps[10:].min() > 30.0 - 1.0  # ... not before reaching max - hysteresis


def test_soc_mode(params):
    p = replace(params, mode="soc")
    state = BalancingState.new(3, p)
    active = run(state, p, [3.8, 3.8, 3.8], steps=1, soc=np.array([0.50, 0.52, 0.505]))
    assert active.tolist() == [False, True, False]
    with pytest.raises(ValueError, match="needs soc"):
        run(state, p, [3.8, 3.8, 3.8], steps=1)


def test_units_are_impossible_to_confuse(params):
    state = BalancingState.new(2, params)
    with pytest.raises(ValueError, match="millivolts"):
        run(state, params, [3800.0, 3850.0], steps=1)
    with pytest.raises(ValueError, match="percent"):
        run(state, replace(params, mode="soc"), [3.8, 3.85], steps=1, soc=np.array([50.0, 55.0]))


def test_bleed_current(params):
    got = bleed_current_a(np.array([3.8, 4.0, np.nan]), np.array([True, False, True]), params)
    np.testing.assert_allclose(got, [0.038, 0.0, 0.0])


def test_bad_parameters_are_located_input_errors(tmp_path):
    bad = tmp_path / "limits.yaml"
    bad.write_text(LIMITS_YAML.read_text().replace("hysteresis_mv: 5.0", "hysteresis_mv: 20.0"))
    with pytest.raises(InputError, match=r"limits\.yaml:\d+: balancing\.hysteresis_mv"):
        load_balancing_params(bad)
    bad.write_text(LIMITS_YAML.read_text().replace("mode: voltage", "mode: history"))
    with pytest.raises(InputError, match="balancing.mode: expected one of"):
        load_balancing_params(bad)


def test_permission_by_state_and_rest(params):
    assert balancing_allowed(BmsState.STANDBY, 600.0, params)
    assert not balancing_allowed(BmsState.STANDBY, 599.0, params)  # voltage mode needs rest
    assert balancing_allowed(BmsState.CHARGE, 600.0, params)
    for state in (BmsState.DRIVE, BmsState.ERROR, BmsState.PRECHARGE, BmsState.INIT):
        assert not balancing_allowed(state, 1e6, params)
    assert balancing_allowed(BmsState.CHARGE, 0.0, replace(params, mode="soc"))


def test_unknown_state_name_is_located(tmp_path):
    bad = tmp_path / "limits.yaml"
    bad.write_text(LIMITS_YAML.read_text().replace("[STANDBY, CHARGE]", "[STANDBY, SLEEP]"))
    with pytest.raises(InputError, match=r"balancing\.allowed_states: item 1: expected one of"):
        load_balancing_params(bad)
