"""Real-time loop: absolute deadlines without drift, skip-and-count instead of catch-up bursts,
lateness statistics against the jitter budget, and the shared bench bus."""

from __future__ import annotations

import can
import numpy as np
import pytest

from bms.bench.buses import SharedBus
from bms.bench.realtime import (
    DeadlineLoop,
    JitterBudget,
    MonotonicClock,
    TimingReport,
    without_catch_up,
)
from bms.can import open_virtual_bus
from bms.firmware.node import BmsNode
from bms.vehicle import VcuNode


class FakeClock:
    """Deterministic clock: sleeping jumps to the target, work advances time explicitly."""

    def __init__(self) -> None:
        self.t = 0.0

    def now_s(self) -> float:
        return self.t

    def sleep_until(self, time_s: float) -> None:
        self.t = max(self.t, time_s)


def test_deadlines_are_absolute_so_jittery_work_does_not_drift():
    clock = FakeClock()
    loop = DeadlineLoop(0.01, clock, start_s=0.0)
    rng = np.random.default_rng(1)
    wakes = []
    for _ in range(1000):
        wakes.append(loop.wait())
        clock.t += rng.uniform(0.0, 0.009)  # work always shorter than a tick
    assert wakes == pytest.approx([0.01 * (k + 1) for k in range(1000)], abs=1e-12)
    assert loop.overruns == 0 and loop.skipped == 0


def test_a_long_tick_skips_passed_deadlines_once_instead_of_bursting():
    clock = FakeClock()
    loop = DeadlineLoop(0.01, clock, start_s=0.0)
    assert loop.wait() == pytest.approx(0.01)
    clock.t = 0.035  # work took 2.5 ticks: deadlines 0.02 and 0.03 have passed
    assert loop.wait() == pytest.approx(0.035)  # the latest passed deadline, once, 5 ms late
    assert loop.k == 3 and loop.skipped == 1 and loop.overruns == 1
    assert loop.tick_lateness_s[-1] == pytest.approx(0.005)
    assert loop.wait() == pytest.approx(0.04)  # back on the grid


def test_vcu_stepped_late_sends_one_request_and_counts_the_missed_slots():
    with open_virtual_bus("rt-vcu") as bus, open_virtual_bus("rt-vcu") as spy:
        vcu = VcuNode(bus)
        step = without_catch_up(vcu)
        step(0.0)
        step(0.35)  # 100 ms message: slots 0.1 and 0.2 passed, 0.3 is the latest
        frames = [m for m in iter(lambda: spy.recv(0.0), None) if m.arbitration_id == 0x210]
        assert len(frames) == 2
        assert vcu.scheduler.missed["VehicleRequest"] == 2
        assert vcu.scheduler.lateness_s[-1] == pytest.approx(0.05)


def test_bms_node_on_the_wall_clock_does_not_burst_its_10ms_command():
    with (
        open_virtual_bus("rt-bp") as pack_bus,
        open_virtual_bus("rt-bv") as veh_bus,
        open_virtual_bus("rt-bp") as spy,
    ):
        node = BmsNode(pack_bus, veh_bus)
        step = without_catch_up(node)
        step(0.01)
        step(0.055)  # 10 ms command: four slots passed (0.02 .. 0.05)
        ids = [m.arbitration_id for m in iter(lambda: spy.recv(0.0), None)]
        # one frame per step, for the latest passed slot: 0.01 (0.0 skipped), then 0.05
        assert ids.count(0x100) == 2
        assert node.pack.scheduler.missed["BmsContactorCmd"] == 1 + 3


def test_timing_report_checks_p99_max_and_overruns_against_the_budget():
    ok = TimingReport(1000, 1e-5, 2e-4, 1e-3, 0, 100, 1e-5, 1e-4, 1e-3, 0, 0)
    assert ok.violations(JitterBudget()) == []
    late = TimingReport(1000, 1e-5, 6e-4, 6e-3, 0, 100, 1e-5, 1e-4, 1e-3, 3, 0)
    problems = late.violations(JitterBudget(p99_s=5e-4, max_s=5e-3, max_overruns=2))
    assert len(problems) == 3 and "p99" in problems[0] and "max" in problems[1]


def test_shared_bus_restamps_on_the_local_clock_and_loops_back_between_local_views():
    clock = FakeClock()
    with open_virtual_bus("rt-shared") as peer:
        shared = SharedBus(open_virtual_bus("rt-shared"), clock, channel="pack")
        a, b = shared.view("a"), shared.view("b")
        clock.t = 12.5
        peer.send(can.Message(arbitration_id=0x108, is_extended_id=False, timestamp=1e9))
        for view in (a, b):
            msg = view.recv(0.0)
            assert msg is not None and msg.timestamp == 12.5 and msg.channel == "pack"
        a.send(can.Message(arbitration_id=0x100, is_extended_id=False, timestamp=12.5))
        assert a.recv(0.0) is None  # a sender does not hear itself
        assert b.recv(0.0).arbitration_id == 0x100  # another local node does
        assert peer.recv(1.0).arbitration_id == 0x100  # and so does the real bus
        shared.shutdown()


def test_monotonic_loop_keeps_the_10ms_grid_in_real_time():
    loop = DeadlineLoop(0.01, MonotonicClock(), start_s=None)
    last = loop.run(lambda now: None, duration_s=0.5)
    assert loop.k == 50 and last >= loop.deadline_s(50)
    late = np.asarray(loop.tick_lateness_s)
    assert late.min() >= 0.0
    assert np.percentile(late, 50) < 1e-3  # a loaded CI box still wakes within a millisecond
