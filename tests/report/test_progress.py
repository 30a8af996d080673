"""Progress bar: silent off a terminal and in CI, throttled, real-time factor from the clock."""

from __future__ import annotations

import io

import numpy as np

from bms.report.progress import REDRAW_S, Progress, interactive


class FakeTty(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeClock:
    """Wall clock the test advances by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_silent_when_output_is_not_a_terminal_or_in_ci():
    plain = io.StringIO()
    with Progress(60.0, stream=plain, environ={}) as bar:
        for t in np.arange(0.0, 60.0, 0.1):
            bar.update(float(t))
    assert plain.getvalue() == ""
    assert interactive(FakeTty(), {}) is True
    assert interactive(FakeTty(), {"CI": "true"}) is False
    assert interactive(FakeTty(), {"GITHUB_ACTIONS": "true"}) is False
    assert interactive(FakeTty(), {"TERM": "dumb"}) is False
    assert interactive(FakeTty(), {"CI": "0"}) is True  # CI explicitly off
    ci = FakeTty()
    with Progress(60.0, stream=ci, environ={"CI": "1"}) as bar:
        bar.update(30.0)
    assert ci.getvalue() == ""


def test_real_time_factor_percent_and_eta_from_the_injected_clock():
    clock, out = FakeClock(), FakeTty()
    bar = Progress(3600.0, label="udds", stream=out, clock=clock, environ={})
    clock.now_s += 9.0
    bar.update(900.0)  # 15 min simulated in 9 s of wall time: 100x, 45 min left -> 27 s
    line = out.getvalue().split("\r")[-1]
    assert line.startswith("udds [")
    assert " 25% " in line and "15:00/1:00:00 sim" in line
    assert "100x real time" in line and "ETA 0:27" in line


def test_redraws_are_throttled_to_the_wall_clock():
    clock, out = FakeClock(), FakeTty()
    bar = Progress(100.0, stream=out, clock=clock, environ={})
    for k in range(1000):  # 1000 updates within REDRAW_S / 2 of wall time
        clock.now_s += REDRAW_S / 2000
        bar.update(k * 0.1)
    assert out.getvalue().count("\r") == 1
    clock.now_s += REDRAW_S
    bar.update(100.0)
    bar.close()
    bar.close()  # idempotent
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "100%" in text.split("\r")[-1]


def test_wrapped_recorder_forwards_everything_and_moves_the_bar():
    class Recorder:
        def __init__(self) -> None:
            self.frames, self.samples, self.closed, self.paths = [], [], 0, {"trace": "x"}

        def on_frame(self, msg, bus):
            self.frames.append((msg, bus))

        def on_sample(self, time_s, names, values):
            self.samples.append(time_s)

        def close(self):
            self.closed += 1

    inner = Recorder()
    bar = Progress(10.0, enabled=False)
    tap = bar.wrap(inner)
    tap.on_frame("m", "pack")
    tap.on_sample(2.5, ("a",), np.zeros(1))
    tap.close()
    assert inner.frames == [("m", "pack")] and inner.samples == [2.5] and inner.closed == 1
    assert bar.sim_s == 2.5 and tap.paths == {"trace": "x"}
    Progress(1.0, enabled=False).wrap(None).on_sample(0.5, (), np.zeros(0))  # no recorder
