"""Cyclic scheduler: exact slots on the simulated clock, no catch-up bursts on the wall clock."""

from __future__ import annotations

from collections import defaultdict

import pytest

from bms.can.clock import SimClock, WallClock
from bms.can.codec import DbcCodecs
from bms.can.dbc import load_dbc
from bms.can.schedule import CyclicScheduler, periods_from
from bms.errors import InputError


@pytest.mark.parametrize("dbc", ["pack", "vehicle"])
def test_sim_clock_every_message_appears_exactly_at_its_cycle_time(dbc: str) -> None:
    periods = periods_from(DbcCodecs(load_dbc(dbc)).values())
    assert periods, "the DBC has cyclic messages"
    step_s, phase_step_s, run_s = 0.001, 0.001, 2.0
    scheduler = CyclicScheduler.from_periods(periods, phase_step_s)
    clock = SimClock()
    stamps: dict[str, list[float]] = defaultdict(list)
    while clock.now_s() <= run_s + 1e-9:
        for due in scheduler.due(clock.now_s()):
            stamps[due.name].append(due.deadline_s)
        clock.advance(step_s)
    for i, (name, period_s) in enumerate(periods.items()):
        phase_s = round(i * phase_step_s * 1e9) % round(period_s * 1e9) / 1e9
        expected = [
            phase_s + k * period_s for k in range(int((run_s - phase_s) / period_s + 1e-9) + 1)
        ]
        assert stamps[name] == pytest.approx(expected, abs=1e-12), name
    assert scheduler.lateness().max_s == 0.0  # periods and phases sit on the 1 ms step grid


def test_sim_clock_large_steps_deliver_every_slot_in_deadline_order() -> None:
    scheduler = CyclicScheduler.from_periods({"fast": 0.01, "slow": 0.1})
    due = scheduler.due(0.1)  # one jump over ten fast slots
    assert [d.name for d in due].count("fast") == 11
    assert [d.deadline_s for d in due] == sorted(d.deadline_s for d in due)
    # equal deadlines keep registration order (deterministic)
    assert [d.name for d in due[:2]] == ["fast", "slow"]
    assert [d.name for d in due[-2:]] == ["fast", "slow"]


def test_wall_policy_skips_and_counts_missed_slots_instead_of_bursting() -> None:
    scheduler = CyclicScheduler.from_periods({"m10": 0.01})
    assert [d.deadline_s for d in scheduler.due(0.0, catch_up=False)] == [0.0]
    late = scheduler.due(0.055, catch_up=False)  # slots 10..50 ms passed while we were stalled
    assert [(d.name, d.deadline_s) for d in late] == [("m10", pytest.approx(0.05))]
    assert late[0].lateness_s == pytest.approx(0.005)
    assert scheduler.missed["m10"] == 4
    assert scheduler.next_deadline_s() == pytest.approx(0.06)


def test_bad_period_or_phase_is_an_input_error() -> None:
    with pytest.raises(InputError, match="period must be > 0"):
        CyclicScheduler().add("x", 0.0)
    with pytest.raises(InputError, match="phase must be in"):
        CyclicScheduler().add("x", 0.01, 0.02)


def test_wall_clock_lateness_is_measured() -> None:
    """Real time for 0.6 s: 10 ms and 100 ms messages; only loose bounds (CI machines vary)."""
    clock = WallClock()
    scheduler = CyclicScheduler.from_periods({"m10a": 0.01, "m10b": 0.01, "m100": 0.1}, 0.002)
    counts: dict[str, int] = defaultdict(int)
    while clock.now_s() < 0.6:
        clock.sleep_until(scheduler.next_deadline_s())
        for due in scheduler.due(clock.now_s(), catch_up=False):
            counts[due.name] += 1
    stats = scheduler.lateness()
    print(
        f"wall-clock lateness: n={stats.count} p50={stats.p50_s * 1e3:.3f} ms "
        f"p99={stats.p99_s * 1e3:.3f} ms max={stats.max_s * 1e3:.3f} ms missed={stats.missed}"
    )
    assert 0.0 <= stats.p50_s < 0.005
    assert stats.p99_s < 0.05
    # every slot is either sent once or counted as missed: nothing is sent twice
    for name, period_s in (("m10a", 0.01), ("m10b", 0.01), ("m100", 0.1)):
        slots = counts[name] + scheduler.missed[name]
        assert abs(slots - 0.6 / period_s) <= 2, name
