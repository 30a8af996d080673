"""Expectations judged on synthetic traces whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from bms.scenario.conditions import AllOf, AnyOf, Compare
from bms.scenario.expect import Expectation, Ref, RunFacts, Trace, evaluate

T = np.arange(0.0, 10.0 + 1e-9, 0.1)  # 101 samples, 100 ms grid
RAMP = T * 10.0  # crosses 50 at 5.0 s
CURRENT = Compare("truth.current_a", "above", 50.0, text="current above 50")


def _trace(**extra: np.ndarray) -> Trace:
    return Trace(T, {"truth.current_a": RAMP, **extra})


def test_always_reports_the_first_violation():
    exp = Expectation(0, "a", "always", Compare("truth.current_a", "at_most", 50.0))
    result = evaluate(exp, _trace(), RunFacts(10.0))
    assert not result.passed and result.time_s == pytest.approx(5.1)
    assert "truth.current_a = 51" in result.detail


def test_always_inside_a_window_ignores_what_lies_outside():
    exp = Expectation(0, "a", "always", Compare("truth.current_a", "at_most", 50.0), window=(0, 5))
    assert evaluate(exp, _trace(), RunFacts(10.0)).passed


def test_never_and_unseen_signals():
    sig = np.where(T < 3.0, np.nan, 1.0)  # first seen on the bus at 3 s
    exp = Expectation(0, "n", "never", Compare("M.S", "equals", 0.0))
    assert evaluate(exp, _trace(**{"M.S": sig}), RunFacts(10.0)).passed
    exp = Expectation(0, "a", "always", Compare("M.S", "equals", 1.0))
    assert evaluate(exp, _trace(**{"M.S": sig}), RunFacts(10.0)).passed  # NaN claims nothing


def test_eventually_before_a_deadline():
    ok = Expectation(0, "e", "eventually", CURRENT, before_s=6.0)
    late = Expectation(0, "e", "eventually", CURRENT, before_s=4.0)
    assert evaluate(ok, _trace(), RunFacts(10.0)).time_s == pytest.approx(5.1)
    assert not evaluate(late, _trace(), RunFacts(10.0)).passed


def test_a_deadline_after_the_end_of_the_run_cannot_be_judged():
    exp = Expectation(0, "e", "eventually", CURRENT, before_s=20.0)
    result = evaluate(exp, Trace(T[:40], {"truth.current_a": RAMP[:40]}), RunFacts(3.9))
    assert not result.passed and "before the deadline" in result.detail


def test_within_after_a_fault_start():
    facts = RunFacts(10.0, fault_start_s={0: 4.0})
    ok = Expectation(0, "w", "within", CURRENT, after=Ref(fault=0), within_s=1.2)
    short = Expectation(0, "w", "within", CURRENT, after=Ref(fault=0), within_s=1.0)
    assert evaluate(ok, _trace(), facts).passed
    assert "not within 1 s" in evaluate(short, _trace(), facts).detail
    never = Expectation(0, "w", "within", CURRENT, after=Ref(fault=1), within_s=1.0)
    assert "faults[1] never started" in evaluate(never, _trace(), facts).detail


def test_within_after_an_event():
    event = Compare("truth.current_a", "at_least", 20.0)
    exp = Expectation(0, "w", "within", CURRENT, after=Ref(condition=event), within_s=3.15)
    result = evaluate(exp, _trace(), RunFacts(10.0))
    assert result.passed and result.time_s == pytest.approx(5.1)  # event at 2.0 s


def test_any_and_all():
    low = Compare("truth.current_a", "below", 10.0)
    high = Compare("truth.current_a", "above", 90.0)
    assert AnyOf((low, high)).mask({"truth.current_a": RAMP}).sum() == 10 + 10  # 0..9 and 91..100
    assert not AllOf((low, high)).mask({"truth.current_a": RAMP}).any()
    assert Compare("x", "between", 2.0, 3.0).mask({"x": np.array([1.9, 2, 3, 3.1])}).tolist() == [
        False, True, True, False
    ]  # fmt: skip


def test_soc_error_bounds():
    err = np.full_like(T, 0.01)
    err[50] = 0.03
    trace = _trace(**{"bms.soc_error_max": err, "bms.soc_error_rms": err / 2})
    assert not evaluate(Expectation(0, "s", "soc_error", soc_max=0.02), trace, RunFacts(10)).passed
    late = Expectation(0, "s", "soc_error", soc_max=0.02, window=(5.05, None))
    assert evaluate(late, trace, RunFacts(10.0)).passed
    rms = Expectation(0, "s", "soc_error", soc_rms=0.004)
    assert not evaluate(rms, trace, RunFacts(10.0)).passed  # RMS of 0.5 % with one 1.5 % spike


def test_fault_codes_seen():
    facts = RunFacts(10.0, codes_seen={"CELL_OVERVOLTAGE": ("WARNING", 3.0)})
    only = Expectation(0, "f", "faults", codes=("CELL_VOLTAGE_SPREAD",), only=True)
    assert "CELL_OVERVOLTAGE (WARNING at 3.00 s)" in evaluate(only, _trace(), facts).detail
    fatal = Expectation(0, "f", "faults", codes=("CELL_OVERVOLTAGE",), tier="FATAL")
    assert "only WARNING" in evaluate(fatal, _trace(), facts).detail
    seen = Expectation(0, "f", "faults", codes=("CELL_OVERVOLTAGE",), tier="WARNING")
    assert evaluate(seen, _trace(), facts).passed
