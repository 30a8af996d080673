"""SOC filter against a truth simulator built here from the exact ECM update (bms.cellmodel.ecm).

Oracle: the simulated cell's true SOC. Acceptance (issue 4): from a 20 % / 30 % wrong start with
1 mV voltage noise, current noise and a 0.5 % FS current offset, RMS error <= 1 % and max <= 2 %
after 10 minutes. Run with ``-s`` to see the measured figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from bms.cellmodel import ecm
from bms.cellmodel.params import CellParams, load_cell
from bms.errors import InputError
from bms.firmware.soc import (
    SocFilter,
    estimate_trace,
    load_estimation_params,
    pack_soc,
    with_ocv,
)

FULL_SCALE_A = 300.0
OFFSET_A = 0.005 * FULL_SCALE_A  # 0.5 % FS
CURRENT_NOISE_A = 0.3
VOLTAGE_NOISE_V = 0.001
SETTLE_S = 600.0


@pytest.fixture(scope="module")
def cell() -> CellParams:
    return load_cell("sslm90")


@pytest.fixture(scope="module")
def params():
    return load_estimation_params()


def drive_profile(rng: np.random.Generator, duration_s: float, seg_s: float) -> np.ndarray:
    """Drive-like current per ``seg_s`` segment: cruise, acceleration, regen and stops (A)."""
    out: list[float] = []
    while len(out) * seg_s < duration_s:
        kind = rng.choice(4, p=[0.45, 0.2, 0.2, 0.15])
        hold = int(rng.integers(2, 30) / seg_s)
        level = (
            rng.uniform(20, 70),  # cruise
            rng.uniform(80, 200),  # acceleration
            -rng.uniform(10, 60),  # regen
            0.0,  # standstill
        )[kind]
        out.extend([level] * max(hold, 1))
    return np.asarray(out[: int(duration_s / seg_s)])


def simulate(
    cell: CellParams,
    soc0: np.ndarray,
    current_a: np.ndarray,
    dt_s: float,
    temp_c: float,
    pressure_mpa: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Truth: exact zero-order-hold ECM steps; returns (soc, terminal voltage) after each step."""
    res = cell.resistance
    soc = np.array(soc0, dtype=float)
    n = soc.size
    v1 = np.zeros(n)
    v2 = np.zeros(n)
    temp = np.full(n, temp_c)
    pres = np.full(n, pressure_mpa)
    soc_out = np.empty((current_a.size, n))
    volt_out = np.empty((current_a.size, n))
    for k, i in enumerate(current_a):
        r0, r1, r2 = ecm.resistances_ohm(temp, pres, soc, res)
        eta = cell.coulombic_efficiency if i < 0 else 1.0
        soc = soc - eta * i * dt_s / (cell.capacity_ah * 3600.0)
        v1 = ecm.rc_step(v1, i, r1, ecm.rc_decay(dt_s, r1, res.c1_f))
        v2 = ecm.rc_step(v2, i, r2, ecm.rc_decay(dt_s, r2, res.c2_f))
        soc_out[k] = soc
        volt_out[k] = ecm.ocv_v(soc, temp, cell.ocv) - v1 - v2 - r0 * i
    return soc_out, volt_out


def measured(rng, current_a, volt_v):
    """Sensor model: 1 mV AFE noise, current noise and a +0.5 % FS offset."""
    cur = current_a + OFFSET_A + rng.normal(0.0, CURRENT_NOISE_A, current_a.shape)
    return cur, volt_v + rng.normal(0.0, VOLTAGE_NOISE_V, volt_v.shape)


def errors_after(time_s, est, truth):
    err = (est - truth)[time_s >= SETTLE_S]
    return float(np.sqrt(np.mean(err**2))), float(np.max(np.abs(err)))


def lfp_like(cell: CellParams) -> CellParams:
    """Flat LFP-like OCV: 3.20-3.35 V over 10-90 % (1.9 mV/%), steep ends."""
    soc = [0.0, 0.05, 0.10, 0.30, 0.60, 0.90, 0.95, 1.0]
    volt = [2.80, 3.10, 3.20, 3.26, 3.30, 3.35, 3.40, 3.60]
    return with_ocv(cell, soc, volt)


# Issue target RMS <= 1 %, max <= 2 %; at -10 degC the DOMAIN.md section 10 protocol's pass
# criterion (RMS <= 1.5 %, max <= 3 %), since the current offset times the cold R_dc is ~18 mV.
@pytest.mark.parametrize(
    ("start_error", "temp_c", "rms_max", "abs_max"),
    [
        (+0.20, 25.0, 0.01, 0.02),
        (-0.30, 25.0, 0.01, 0.02),
        (-0.20, 10.0, 0.01, 0.02),
        (+0.20, -10.0, 0.015, 0.03),
    ],
)
def test_bms_rate_filter_meets_accuracy_from_wrong_start(
    cell, params, start_error, temp_c, rms_max, abs_max
):
    """Three cells, 100 ms task, 25 min drive, wrong start: accuracy after 10 min."""
    rng = np.random.default_rng(7)
    dt_s = 0.1
    current = np.repeat(drive_profile(rng, 1500.0, 1.0), 10)  # 1 s segments, 10 samples each
    soc0 = np.array([0.75, 0.70, 0.78])
    soc_true, volt_true = simulate(cell, soc0, current, dt_s, temp_c)
    cur_meas, volt_meas = measured(rng, current, volt_true)
    filt = SocFilter.from_stored(cell, np.clip(soc0 + start_error, 0, 1), params=params)
    time_s = dt_s * np.arange(1, current.size + 1)
    est = np.empty_like(soc_true)
    sig = np.empty_like(soc_true)
    for k in range(time_s.size):
        filt.step(time_s[k], cur_meas[k], volt_meas[k], temp_c, 2.0)
        est[k] = filt.soc
        sig[k] = filt.soc_sigma
    rms, worst = errors_after(time_s, est, soc_true)
    late = time_s >= SETTLE_S
    cover = float(np.mean(np.abs(est - soc_true)[late] <= sig[late]))
    print(
        f"\nBMS 100 ms, start {start_error:+.0%}, {temp_c} degC: RMS {rms:.3%}, max {worst:.3%}, "
        f"1-sigma coverage {cover:.1%}, mean sigma {np.mean(sig[late]):.3%}, "
        f"offset {filt.state.offset_a} A (true {OFFSET_A} A)"
    )
    assert rms <= rms_max
    assert worst <= abs_max
    # The 1-sigma bound covers the true error most of the time (Gaussian: 68 %).
    assert cover >= 0.6
    assert np.mean(sig[late]) < 2 * abs_max  # ... and is still informative
    # The offset state learns the sensor offset (started at 0, true +1.5 A).
    assert 0.5 < np.mean(filt.state.offset_a) < 2.5


def test_offline_trace_30pct_wrong_start_irregular_sampling(cell):
    """estimate_trace on a ~1 Hz trace with jittered timestamps, from a 30 % wrong start."""
    rng = np.random.default_rng(11)
    dt_s = 0.1
    current = np.repeat(drive_profile(rng, 3000.0, 2.0), 20)
    soc_true, volt_true = simulate(cell, np.array([0.6]), current, dt_s, 25.0)
    # Irregular sampling: keep about every 10th fine step, with a random skip of 5..15.
    idx = np.cumsum(rng.integers(5, 16, size=current.size // 5))
    idx = idx[idx < current.size]
    cur_meas, volt_meas = measured(rng, current[idx], volt_true[idx, 0])
    time_s = dt_s * (idx + 1)
    soc, sigma = estimate_trace(cell, time_s, cur_meas, volt_meas, 25.0, initial_soc=0.9)
    rms, worst = errors_after(time_s, soc, soc_true[idx, 0])
    print(f"\noffline irregular, start +30 %: RMS {rms:.3%}, max {worst:.3%}")
    assert rms <= 0.01
    assert worst <= 0.02
    assert np.all(sigma > 0)


def test_flat_lfp_like_curve_stays_bounded(cell):
    """On a 1.9 mV/% plateau the filter leans on coulomb counting yet converges, bounded."""
    lfp = lfp_like(cell)
    rng = np.random.default_rng(5)
    dt_s = 0.1
    current = np.repeat(drive_profile(rng, 3000.0, 1.0), 10)
    soc_true, volt_true = simulate(lfp, np.array([0.7]), current, dt_s, 25.0)
    step = 10  # 1 Hz trace
    cur_meas, volt_meas = measured(rng, current[step - 1 :: step], volt_true[step - 1 :: step, 0])
    time_s = dt_s * np.arange(step, current.size + 1, step)
    soc, sigma = estimate_trace(lfp, time_s, cur_meas, volt_meas, 25.0, initial_soc=0.4)
    truth = soc_true[step - 1 :: step, 0]
    rms, worst = errors_after(time_s, soc, truth)
    print(f"\nflat LFP-like, start -30 %: RMS {rms:.3%}, max {worst:.3%}")
    assert np.all(np.isfinite(soc))
    assert rms <= 0.01
    assert worst <= 0.02


def test_init_from_ocv_at_rest_is_tight_and_correct(cell, params):
    """A rested voltage inverts the OCV table; sigma follows ocv_sigma / slope."""
    soc_true = np.array([0.2, 0.5, 0.8])
    volt = ecm.ocv_v(soc_true, 25.0, cell.ocv)
    filt = SocFilter.from_ocv(cell, volt, 25.0, params=params)
    np.testing.assert_allclose(filt.soc, soc_true, atol=1e-3)
    slope = ecm.ocv_slope_v(soc_true, cell.ocv)
    expected = np.maximum(params.init_ocv_sigma_v / slope, params.init_min_sigma)
    np.testing.assert_allclose(filt.soc_sigma, expected, rtol=1e-6)


def test_steep_end_is_not_over_trusted(cell, params):
    """At 0.5 % SOC the OCV slope is ~51 V per unit; the start sigma must use the capped slope."""
    volt = ecm.ocv_v(np.array([0.005]), 25.0, cell.ocv)
    filt = SocFilter.from_ocv(cell, volt, 25.0, params=params)
    assert filt.soc_sigma[0] >= params.init_ocv_sigma_v / params.max_ocv_slope_v - 1e-12
    assert filt.soc_sigma[0] > 0.001  # not the 0.01 % that the raw cliff slope would claim


def test_coulomb_counting_with_efficiency_when_voltage_missing(cell, params):
    """All voltages NaN: SOC follows the current integral exactly (CE on charge) and sigma grows."""
    filt = SocFilter.from_stored(cell, [0.5, 0.5], 0.01, params=params)
    filt.step(0.0, 0.0, [np.nan, np.nan])
    for k in range(1, 601):  # 60 s at +90 A, then 60 s at -90 A
        filt.step(0.1 * k, 90.0, [np.nan, np.nan])
    for k in range(601, 1201):
        filt.step(0.1 * k, -90.0, [np.nan, np.nan])
    ce = cell.coulombic_efficiency
    expected = 0.5 - 90.0 * 60.0 / (90.0 * 3600.0) * (1.0 - ce)
    np.testing.assert_allclose(filt.soc, expected, atol=1e-9)
    assert np.all(filt.soc_sigma > 0.01)


def test_nan_cell_skips_update_others_converge(cell, params):
    """One cell's voltage missing: it coulomb-counts, the others converge; nothing crashes."""
    soc_true = np.array([0.6, 0.6, 0.6])
    volt = ecm.ocv_v(soc_true, 25.0, cell.ocv)
    volt[1] = np.nan
    filt = SocFilter.from_stored(cell, [0.4, 0.4, 0.4], 0.2, params=params)
    for k in range(200):
        filt.step(0.1 * k, 0.0, volt, [25.0, np.nan, 25.0], np.nan)
    assert abs(filt.soc[0] - 0.6) < 0.01 and abs(filt.soc[2] - 0.6) < 0.01
    assert filt.soc[1] == pytest.approx(0.4, abs=1e-6)
    filt.step(100.0, np.nan, volt)  # missing current: no crash, SOC sigma widens
    filt.step(99.0, 0.0, volt)  # time going backwards is ignored
    assert np.all(np.isfinite(filt.soc))


def test_rest_correction_waits_for_tau2_scaled_time(cell, params):
    """Rest update happens once after max(min_time, k tau2(T)); at -10 degC it waits longer."""
    for temp_c in (25.0, -10.0):
        filt = SocFilter.from_stored(cell, [0.5], 0.05, params=params)
        volt = ecm.ocv_v(np.array([0.5]), temp_c, cell.ocv)
        t = 0.0
        corrected_at = None
        while t < 20000.0 and corrected_at is None:
            filt.step(t, 0.0, volt, temp_c)
            if filt.state.time_since_rest_s == 0.0:
                corrected_at = t
            t += 10.0
        _, _, r2 = ecm.resistances_ohm(
            np.array([temp_c]), np.array([2.0]), np.array([0.5]), cell.resistance
        )
        tau2_s = float(r2[0]) * cell.resistance.c2_f
        expected = min(
            max(params.rest_min_time_s, params.rest_tau2_multiple * tau2_s), params.rest_max_time_s
        )
        assert corrected_at == pytest.approx(expected, abs=10.0)


def test_pack_report_min_avg_max_usable_and_soe(cell, params):
    """Report values against hand computations: usable window and OCV energy integral."""
    filt = SocFilter.from_stored(cell, [0.30, 0.50, 0.70], [0.01, 0.02, 0.03], params=params)
    rep = pack_soc(filt.state, cell, params, temp_c=25.0)
    assert (rep.min, rep.avg, rep.max) == pytest.approx((0.30, 0.50, 0.70))
    assert (rep.min_sigma, rep.max_sigma) == pytest.approx((0.01, 0.03))
    lo, hi = params.usable_soc_min, params.usable_soc_max
    assert rep.usable == pytest.approx((0.30 - lo) / ((0.30 - lo) + (hi - 0.70)))
    assert 0 < rep.usable_sigma < 0.03
    assert rep.confident  # 3 % is the confidence limit
    wide = SocFilter.from_stored(cell, [0.5, 0.5], [0.01, 0.2], params=params)
    assert not pack_soc(wide.state, cell, params).confident

    # SOE: trapezoid of the OCV table over [lo, soc], computed independently on the table knots.
    def energy_wh(s):
        grid = np.linspace(lo, s, 2001)
        return np.trapezoid(np.interp(grid, cell.ocv.soc, cell.ocv.voltage_v), grid) * 90.0

    expected_kwh = sum(energy_wh(s) for s in (0.30, 0.50, 0.70)) / 1000.0
    assert rep.soe_kwh == pytest.approx(expected_kwh, rel=2e-3)
    assert rep.soe_pct == pytest.approx(100 * expected_kwh * 1000 / (3 * energy_wh(hi)), rel=2e-3)


def test_full_pack_at_top_reports_100_percent(cell, params):
    filt = SocFilter.from_stored(cell, np.ones(4), 0.01, params=params)
    rep = pack_soc(filt.state, cell, params)
    assert rep.usable == pytest.approx(1.0)
    assert rep.soe_pct == pytest.approx(100.0)


def test_trace_validation_is_one_line_input_error(cell):
    with pytest.raises(InputError, match="not increasing"):
        estimate_trace(cell, [0.0, 1.0, 1.0], [0, 0, 0], [3.8, 3.8, 3.8], 25.0)
    with pytest.raises(InputError, match="current_a has 2 values"):
        estimate_trace(cell, [0.0, 1.0, 2.0], [0, 0], [3.8, 3.8, 3.8], 25.0)
    with pytest.raises(InputError, match="fraction"):
        estimate_trace(cell, [0.0, 1.0], [0, 0], [3.8, 3.8], 25.0, initial_soc=50.0)


def test_trace_without_initial_soc_starts_from_rest_ocv(cell):
    """Starting at rest, the first estimate is the OCV inversion of the first voltage."""
    volt = float(ecm.ocv_v(np.array([0.65]), 25.0, cell.ocv)[0])
    soc, _ = estimate_trace(cell, [0.0, 1.0, 2.0], [0.0, 0.0, 0.0], [volt] * 3, 25.0)
    assert soc[0] == pytest.approx(0.65, abs=2e-3)


def test_ten_hour_trace_runs_in_seconds(cell):
    """A 10 h 1 Hz trace in a few seconds (issue acceptance), timed on 1.5 h, extrapolated."""
    n = 3600 + 1800
    rng = np.random.default_rng(1)
    time_s = np.arange(n, dtype=float)
    current = np.repeat(drive_profile(rng, n, 1.0), 1)[:n] * 0.2
    volt = 3.8 + rng.normal(0, 0.001, n)
    t0 = time.perf_counter()
    soc, _ = estimate_trace(cell, time_s, current, volt, 25.0, initial_soc=0.8)
    ten_hours_s = (time.perf_counter() - t0) * 36000 / n
    print(f"\n10 h 1 Hz trace (extrapolated): {ten_hours_s:.2f} s")
    assert np.all(np.isfinite(soc))
    assert ten_hours_s < 20.0  # generous: CI shares 2 cores; measured ~5 s on an idle machine


def test_model_corrects_residual_diffusion_after_short_rest(cell):
    """DOMAIN.md section 10 (4): 10 min after 30 min at 1C about 11 mV of diffusion overpotential
    remain (1-3 % SOC by table lookup); the filter carries v2 and is not fooled."""
    rng = np.random.default_rng(3)
    dt_s = 1.0  # the truth steps are exact for a constant current, so 1 s loses nothing
    current = np.concatenate((np.full(1800, 90.0), np.zeros(600)))
    soc_true, volt_true = simulate(cell, np.array([0.75]), current, dt_s, 25.0)
    cur_meas, volt_meas = measured(rng, current, volt_true[:, 0])
    time_s = dt_s * np.arange(1, current.size + 1)
    soc, _ = estimate_trace(cell, time_s, cur_meas, volt_meas, 25.0, initial_soc=0.75)
    lookup = float(ecm.soc_from_ocv(np.array([volt_true[-1, 0]]), 25.0, cell.ocv)[0])
    lookup_error = abs(lookup - soc_true[-1, 0])
    filter_error = abs(soc[-1] - soc_true[-1, 0])
    print(f"\nafter 10 min rest: table lookup error {lookup_error:.2%}, filter {filter_error:.2%}")
    assert lookup_error > 0.01  # the trap is real
    assert filter_error < 0.3 * lookup_error


def test_bad_estimation_file_is_located_input_error(tmp_path):
    shipped = Path(__file__).parents[2] / "bms" / "data" / "firmware" / "estimation.yaml"
    bad = tmp_path / "estimation.yaml"
    bad.write_text(shipped.read_text().replace("voltage_noise_v: 0.001", "voltage_noise_v: -1"))
    with pytest.raises(InputError, match=r"estimation\.yaml:\d+: sensors\.voltage_noise_v"):
        load_estimation_params(bad)


def test_steep_end_discharge_stays_bounded(cell):
    """0.5C from 40 % into the 510 mV/% tail (0.6 % SOC), then rest: no divergence, error small."""
    rng = np.random.default_rng(2)
    current = np.concatenate((np.full(2835, 45.0), np.zeros(600)))
    soc_true, volt_true = simulate(cell, np.array([0.40]), current, 1.0, 25.0)
    cur_meas, volt_meas = measured(rng, current, volt_true[:, 0])
    time_s = np.arange(1.0, current.size + 1)
    soc, sigma = estimate_trace(cell, time_s, cur_meas, volt_meas, 25.0, initial_soc=0.55)
    err = soc - soc_true[:, 0]
    print(
        f"\nsteep end: true end SOC {soc_true[-1, 0]:.2%}, max error after 10 min "
        f"{np.max(np.abs(err[600:])):.3%}, end error {err[-1]:.3%}"
    )
    assert soc_true[-1, 0] < 0.01  # the test really reaches the cliff
    assert np.all(np.isfinite(soc)) and np.all(sigma > 0)
    assert np.max(np.abs(err[600:])) < 0.01
