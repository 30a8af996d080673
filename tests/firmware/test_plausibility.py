"""Plausibility: open-wire signature, stuck sensor, cell sum vs pack voltage, substitution."""

import numpy as np

from bms.firmware.plausibility import (
    PlausibilityChecker,
    StuckDetector,
    cell_sum_mismatch_v,
    clamped,
    open_wire_mask,
    substitute_group_median,
)
from bms.firmware.protection import load_ladder
from bms.firmware.store import standard_store

RNG = np.random.default_rng(4)


def test_open_wire_signature_flags_the_zero_channel_and_its_doubled_neighbour():
    v = 3.80 + RNG.normal(0, 0.001, 12)
    v[5] = 0.01  # broken tap: this channel sees ~0 V
    v[6] = 7.60  # and its neighbour the sum of both cells
    out = np.zeros(12, dtype=bool)
    open_wire_mask(v, 0.2, 0.15, out)
    assert np.flatnonzero(out).tolist() == [5, 6]


def test_open_wire_is_silent_on_healthy_cells_a_lone_low_cell_and_nan():
    v = 3.80 + RNG.normal(0, 0.001, 12)
    out = np.zeros(12, dtype=bool)
    assert not open_wire_mask(v, 0.2, 0.15, out).any()
    v[3] = 0.0  # a collapsed cell without the doubled neighbour is a cell problem, not a wire
    assert not open_wire_mask(v, 0.2, 0.15, out).any()
    assert not open_wire_mask(np.full(12, np.nan), 0.2, 0.15, out).any()


def test_stuck_detector_counts_only_repeated_fresh_samples_while_current_flows():
    det = StuckDetector(3, quantum=1e-4, samples=5)
    seq = np.zeros(3, dtype=np.int64)
    for k in range(1, 7):
        seq += 1
        values = np.array([3.8, 3.8 + RNG.normal(0, 1e-3), 3.8])
        det.update(values, seq, active=k <= 6)
    # channel 0 and 2 repeated their value 5 times after the first sample; channel 1 is noisy
    assert det.stuck.tolist() == [True, False, True]
    det2 = StuckDetector(1, quantum=1e-4, samples=5)
    s = np.zeros(1, dtype=np.int64)
    for _ in range(20):
        s += 1
        det2.update(np.array([3.8]), s, active=False)  # at rest: a constant voltage is normal
    assert not det2.stuck[0]
    for _ in range(20):
        det2.update(np.array([3.8]), s, active=True)  # no fresh sample: nothing to count
    assert not det2.stuck[0]


def test_cell_sum_mismatch_against_pack_sensor():
    v = np.full(96, 3.8)
    ok = np.ones(96, dtype=bool)
    assert cell_sum_mismatch_v(v, ok, 96 * 3.8) < 1e-9
    assert abs(cell_sum_mismatch_v(v, ok, 96 * 3.8 - 3.5) - 3.5) < 1e-9
    ok[10] = False  # an invalid channel counts at the median, not at 0 V
    v[10] = 0.0
    assert cell_sum_mismatch_v(v, ok, 96 * 3.8) < 1e-9
    assert np.isnan(cell_sum_mismatch_v(v, ok, float("nan")))


def test_temperature_clamps_and_module_median_substitution():
    t = np.array([25.0, 26.0, -40.0, 27.0, 30.0, 150.0, 31.0, np.nan])
    bad = np.zeros(8, dtype=bool)
    clamped(t, -40.0, 150.0, bad)
    assert np.flatnonzero(bad).tolist() == [2, 5]
    valid = ~bad & np.isfinite(t)
    out = np.empty(8)
    sub = np.zeros(8, dtype=bool)
    substitute_group_median(t, valid, 2, out, sub)
    assert out[2] == 26.0  # median of 25, 26, 27
    assert out[5] == 30.5 and out[7] == 30.5  # median of 30, 31
    assert np.flatnonzero(sub).tolist() == [2, 5, 7]


def test_checker_catches_open_wire_and_stuck_channel_through_the_store():
    ladder = load_ladder()
    store = standard_store(24, 8, 2, ladder.sources)
    chk = PlausibilityChecker(ladder.plausibility, 24, 8, 2)
    n_stuck = ladder.plausibility.voltage_stuck_samples
    for k in range(n_stuck + 2):
        t = k * 0.1
        v = 3.8 - 0.0005 * k + RNG.normal(0, 5e-4, 24)  # discharging under load
        v[7] = 3.9  # frozen channel
        store["cell_voltage_v"].write(t, v)
        store["current_a"].write(t, 90.0)
        store["pack_voltage_v"].write(t, float(v.sum()))
        store["cell_temp_c"].write(t, 25 + RNG.normal(0, 0.05, 8))
        store["pressure_mpa"].write(t, 2 + RNG.normal(0, 0.01, 2))
        chk.check(store, t)
    assert chk.cell_voltage_invalid_count == 1 and not chk.cell_voltage_ok[7]
    v[12], v[13] = 0.0, 2 * 3.8
    store["cell_voltage_v"].write(10.0, v)
    chk.check(store, 10.0)
    assert chk.open_wire[12] and chk.open_wire[13] and chk.open_wire.sum() == 2


def test_checker_survives_missing_and_nan_data():
    ladder = load_ladder()
    store = standard_store(24, 8, 2, ladder.sources)
    chk = PlausibilityChecker(ladder.plausibility, 24, 8, 2)
    chk.check(store, 0.0)  # nothing received at all
    assert chk.cell_voltage_invalid_count == 24 and np.isnan(chk.sum_mismatch_v)
    assert np.isnan(chk.cell_temp_c).all()
