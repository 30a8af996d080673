"""Current limits against DOMAIN.md section 5 (sota-2025 table, worked I_V values, overrides)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bms.cellmodel.params import load_cell
from bms.errors import InputError
from bms.firmware.limits import (
    CurrentLimits,
    LimitRamp,
    charge_limit_a,
    current_limits,
    discharge_limit_a,
    discharge_voltage_limit_a,
    load_limit_params,
    strip_budget_a,
)

LIMITS_YAML = Path(__file__).parents[2] / "bms" / "data" / "firmware" / "limits.yaml"


@pytest.fixture(scope="module")
def cell():
    return load_cell("sslm90")


@pytest.fixture(scope="module")
def params():
    return load_limit_params()


# DOMAIN.md section 5, sota-2025 charge limits at SOC < 80 % (values rounded to 0.1 A there).
@pytest.mark.parametrize(
    ("temp_c", "pressure_mpa", "expected_a"),
    [
        (10.0, 1.0, 7.7),
        (10.0, 2.0, 10.9),
        (10.0, 5.0, 17.2),
        (25.0, 1.0, 15.9),
        (25.0, 2.0, 22.5),
        (25.0, 5.0, 35.6),
        (45.0, 1.0, 37.7),
        (45.0, 2.0, 53.3),
        (45.0, 5.0, 84.3),
        (60.0, 1.0, 67.2),
        (60.0, 2.0, 90.0),  # rated cap J_rated = 1C
    ],
)
def test_charge_limit_matches_domain_table(cell, params, temp_c, pressure_mpa, expected_a):
    got = charge_limit_a(cell, params, temp_c, pressure_mpa, 0.5)
    assert float(got) == pytest.approx(expected_a, abs=0.06)


def test_charge_blocked_below_zero_and_capped_in_the_cold(cell, params):
    assert float(charge_limit_a(cell, params, -0.5, 2.0, 0.5)) == 0.0
    # 0-5 degC: the CCD rule alone would allow 6.4 A at 2 MPa; the cold RSL caps it at 0.05C.
    assert float(charge_limit_a(cell, params, 2.0, 2.0, 0.5)) == pytest.approx(4.5)


def test_charge_soc_taper_above_80_percent(cell, params):
    """f_SOC,chg = 1 up to 80 %, linear to 0.2 at 100 %: 0.6 at 90 %."""
    base = 22.5
    got = charge_limit_a(cell, params, 25.0, 2.0, np.array([0.5, 0.8, 0.9]))
    np.testing.assert_allclose(got, [base, base, 0.6 * base], atol=0.01)
    # At 100 % the OCV sits at V_max: no headroom left, the charge limit is ~0.
    assert float(charge_limit_a(cell, params, 25.0, 2.0, 1.0)) < 0.5


def test_low_pressure_inhibits_fast_charge_and_opens_below_floor(cell, params):
    n = 4
    temp = np.full(n, 45.0)
    soc = np.full(n, 0.5)
    volt = np.full(n, 3.8)
    pres = np.array([2.0, 2.0, 0.7, 2.0])  # one module below the 0.8 MPa warning
    lim = current_limits(cell, params, temp, pres, soc, volt)
    assert lim.fast_charge_inhibit and not lim.open_contactors
    assert lim.charge_a == pytest.approx(4.5)  # 0.05C although 45 degC would allow 53 A
    pres[2] = 0.25
    lim = current_limits(cell, params, temp, pres, soc, volt)
    assert lim.open_contactors
    assert (lim.charge_a, lim.discharge_a) == (0.0, 0.0)


def test_contact_loss_scales_by_a_squared(cell, params):
    full = float(charge_limit_a(cell, params, 25.0, 2.0, 0.5))
    half = float(charge_limit_a(cell, params, 25.0, 2.0, 0.5, contact=0.5))
    assert half == pytest.approx(0.25 * full)
    dis = float(discharge_limit_a(cell, params, 25.0, 2.0, 0.5, contact=0.5))
    assert dis == pytest.approx(0.25 * 360.0)


# DOMAIN.md section 5: I_V at 50 % SOC and 2 MPa.
@pytest.mark.parametrize(
    ("temp_c", "expected_a"), [(25.0, 1190.0), (0.0, 271.0), (-10.0, 133.0), (-20.0, 60.0)]
)
def test_discharge_voltage_limit_matches_worked_values(cell, params, temp_c, expected_a):
    got = float(discharge_voltage_limit_a(cell, params, temp_c, 2.0, 0.5))
    assert got == pytest.approx(expected_a, rel=0.01)


def test_discharge_rated_cap_and_soc_taper(cell, params):
    """Rated 4C pulse governs at 25 degC; f_SOC,dis is 0.65 at 5 % (linear 1 -> 0.3 below 10 %)."""
    assert float(discharge_limit_a(cell, params, 25.0, 2.0, 0.5)) == pytest.approx(360.0)
    assert float(discharge_limit_a(cell, params, 25.0, 2.0, 0.05)) == pytest.approx(0.65 * 360.0)


def test_discharge_temperature_window(cell, params):
    got = discharge_limit_a(cell, params, np.array([-35.0, -25.0, 67.5, 75.0]), 2.0, 0.5)
    i_v_m25 = float(discharge_voltage_limit_a(cell, params, -25.0, 2.0, 0.5))
    np.testing.assert_allclose(got, [0.0, 0.5 * i_v_m25, 0.5 * 360.0, 0.0], rtol=1e-9)


def test_pack_limit_is_min_over_cells_and_cell_voltage_trapezoid(cell, params):
    temp = np.array([25.0, 25.0, 10.0])  # the cold cell governs charge
    pres = np.full(3, 2.0)
    soc = np.full(3, 0.5)
    lim = current_limits(cell, params, temp, pres, soc, np.array([3.8, 3.8, 3.8]))
    assert lim.charge_a == pytest.approx(10.9, abs=0.06)
    # Highest cell halfway between MOL 4.30 and RSL 4.32 V: charge limit halved.
    lim = current_limits(cell, params, temp, pres, soc, np.array([3.8, 4.31, 3.8]))
    assert lim.charge_a == pytest.approx(0.5 * 10.9, abs=0.05)
    # Lowest cell halfway between 3.00 and 2.90 V: discharge halved.
    lim = current_limits(cell, params, temp, pres, soc, np.array([3.8, 2.95, 3.8]))
    assert lim.discharge_a == pytest.approx(0.5 * 360.0)


def test_fault_and_invalid_inputs_give_zero(cell, params):
    args = (np.full(2, 25.0), np.full(2, 2.0), np.full(2, 0.5), np.full(2, 3.8))
    lim = current_limits(cell, params, *args, fault_active=True)
    assert (lim.charge_a, lim.discharge_a) == (0.0, 0.0)
    temp = np.array([25.0, np.nan])
    lim = current_limits(cell, params, temp, *args[1:])
    assert (lim.charge_a, lim.discharge_a) == (0.0, 0.0)
    lim = current_limits(cell, params, *args[:3], np.array([np.nan, np.nan]))
    assert (lim.charge_a, lim.discharge_a) == (0.0, 0.0)
    lim = current_limits(cell, params, *args[:1], np.array([2.0, np.nan]), *args[2:])
    assert lim.fast_charge_inhibit  # unknown pressure: no fast charge


def test_strip_budget(cell, params):
    """J_strip = 2 J_CCD = 4 mA/cm2 at 25 degC, 2 MPa: 22,500 cm2 * 4 mA/cm2 / 1.5 = 60 A."""
    assert float(strip_budget_a(cell, params, 25.0, 2.0)) == pytest.approx(60.0)


def test_ramp_derates_fast_recovers_slowly_and_zeroes_on_fault(params):
    ramp = LimitRamp()
    high = CurrentLimits(22.5, 360.0, False, False)
    low = CurrentLimits(4.5, 360.0, True, False)
    assert ramp.step(high, 0.1, params, 90.0).charge_a == 22.5  # wake-up adopts the target
    # Down at 1C/s = 90 A/s: 9 A per 100 ms step.
    assert ramp.step(low, 0.1, params, 90.0).charge_a == pytest.approx(13.5)
    assert ramp.step(low, 0.1, params, 90.0).charge_a == pytest.approx(4.5)
    # Up at 0.05C/s = 4.5 A/s: 18 A takes 4 s.
    out = [ramp.step(high, 0.1, params, 90.0).charge_a for _ in range(40)]
    assert out[19] == pytest.approx(4.5 + 9.0)
    assert out[-1] == pytest.approx(22.5)
    zero = ramp.step(high, 0.1, params, 90.0, fault_active=True)
    assert (zero.charge_a, zero.discharge_a) == (0.0, 0.0)
    assert ramp.step(high, 0.1, params, 90.0).charge_a == pytest.approx(0.45)


def test_bad_parameter_file_is_a_located_input_error(tmp_path):
    text = LIMITS_YAML.read_text().replace("temp_zero_c: 65.0", "temp_zero_c: 55.0")
    bad = tmp_path / "limits.yaml"
    bad.write_text(text)
    with pytest.raises(InputError, match=r"limits\.yaml:\d+: charge\.temp_zero_c: taper"):
        load_limit_params(bad)
    bad.write_text(LIMITS_YAML.read_text().replace("ramp:", "ramp:\n  derate_a_per_s: 3"))
    with pytest.raises(InputError, match="unknown field"):
        load_limit_params(bad)
