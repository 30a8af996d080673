"""Contactor/precharge state machine against the foxBMS 2 contract of DOMAIN.md section 9.

A tiny fake plant runs inside the test: contactors follow their commands after 20 ms unless
welded or stuck; the DC link (1 mF) charges through the 50 ohm precharge resistor with the exact
exponential, and the pack current is the precharge current (or a set load once closed).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from bms.errors import InputError
from bms.firmware.codes import BmsState, FaultCode, RequestMode, Tier
from bms.firmware.statemachine import (
    Contactor,
    EventKind,
    PrechargeFailure,
    SmEvent,
    SmInputs,
    SmOutputs,
    StateMachine,
    load_statemachine_config,
)

CFG = load_statemachine_config()
SHIPPED_TEXT = Path(CFG.source).read_text(encoding="utf-8")
DT_S = 0.01  # the BMS node's task period
PACK_V = 370.0  # pack A nominal (DOMAIN.md section 3)
R_PRE_OHM = 50.0
C_LINK_F = 1e-3
TAU_S = R_PRE_OHM * C_LINK_F  # 50 ms
CONTACTOR_DELAY_S = 0.02
FRAME_PERIOD_S = 0.1
EPS = 1e-9
P, M, PRE = Contactor.PLUS, Contactor.MINUS, Contactor.PRECHARGE


class FakePlant:
    """Contactors with a 20 ms delay and welded/stuck faults; analytic RC precharge of the link."""

    def __init__(self) -> None:
        self.command = [False, False, False]
        self.changed_s = [0.0, 0.0, 0.0]
        self.closed = [False, False, False]  # physical state
        self.welded = [False, False, False]  # stays closed once closed
        self.stuck = [False, False, False]  # never closes
        self.feedback_lies_open = [False, False, False]
        self.link_v = 0.0
        self.link_load_ohm = math.inf  # parasitic DC-link load: makes precharge fail
        self.load_current_a = 0.0  # vehicle current while the main contactors are closed
        self.current_a = 0.0

    def apply(self, now_s: float, out: SmOutputs) -> None:
        for i, close in enumerate((out.close_plus, out.close_minus, out.close_precharge)):
            if close != self.command[i]:
                self.command[i], self.changed_s[i] = close, now_s

    def advance(self, now_s: float, dt_s: float) -> None:
        for i in range(3):
            if now_s - self.changed_s[i] >= CONTACTOR_DELAY_S - EPS:
                # A welded contactor that is closed stays closed; a stuck one never closes.
                follow = self.command[i] and not self.stuck[i]
                self.closed[i] = follow or (self.welded[i] and self.closed[i])
        if self.closed[P] and self.closed[M]:
            self.link_v, self.current_a = PACK_V, self.load_current_a
        elif self.closed[PRE] and self.closed[M]:
            # Thevenin equivalent of the precharge resistor and the parasitic link load.
            if math.isinf(self.link_load_ohm):
                v_th, r_th = PACK_V, R_PRE_OHM
            else:
                v_th = PACK_V * self.link_load_ohm / (self.link_load_ohm + R_PRE_OHM)
                r_th = R_PRE_OHM * self.link_load_ohm / (self.link_load_ohm + R_PRE_OHM)
            self.link_v = v_th + (self.link_v - v_th) * math.exp(-dt_s / (r_th * C_LINK_F))
            self.current_a = (PACK_V - self.link_v) / R_PRE_OHM
        else:
            self.current_a = 0.0
            if not math.isinf(self.link_load_ohm):
                self.link_v *= math.exp(-dt_s / (self.link_load_ohm * C_LINK_F))

    def feedback(self) -> tuple[bool, bool, bool]:
        return tuple(
            c and not lie for c, lie in zip(self.closed, self.feedback_lies_open, strict=True)
        )


class Rig:
    """Vehicle (request frames), fake plant and state machine on one simulated 10 ms clock."""

    def __init__(self, sm: StateMachine | None = None, mode: RequestMode = RequestMode.STANDBY):
        self.sm = sm or StateMachine(CFG)
        self.plant = FakePlant()
        self.mode = mode
        self.sending = True
        self.next_frame_s = 0.0
        self.jitter_s = 0.0  # spacing deviation of the frames (alternating sign)
        self.frames_sent = 0
        self.drop = set()  # frame indices that are lost
        self.clear_faults = False
        self.flags = dict(
            fatal_fault_active=False, open_requested=False, e2e_failed=False, charge_allowed=True
        )
        self.k = 0
        self.log: list[tuple[float, SmOutputs]] = []
        self.events: list[SmEvent] = []
        self.last_frame_s: float | None = None

    @property
    def now_s(self) -> float:
        return self.k * DT_S

    def tick(self) -> SmOutputs:
        now = self.now_s
        while self.sending and now >= self.next_frame_s - EPS:
            index = self.frames_sent
            # Odd frames late by jitter_s: spacings alternate period +/- jitter_s.
            send_s = self.next_frame_s + (self.jitter_s if index % 2 else 0.0)
            if index not in self.drop:
                self.sm.on_request_frame(send_s, self.mode, self.clear_faults)
                self.last_frame_s = send_s
            self.frames_sent += 1
            self.next_frame_s += FRAME_PERIOD_S
        self.plant.advance(now, DT_S)
        fb = self.plant.feedback()
        out = self.sm.step(
            SmInputs(
                now_s=now,
                pack_current_a=self.plant.current_a,
                pack_voltage_v=PACK_V,
                link_voltage_v=self.plant.link_v,
                plus_closed=fb[P],
                minus_closed=fb[M],
                precharge_closed=fb[PRE],
                **self.flags,
            )
        )
        self.plant.apply(now, out)
        self.log.append((now, out))
        self.events.extend(out.events)
        self.k += 1
        return out

    def run_for(self, duration_s: float) -> SmOutputs:
        out = self.tick()
        for _ in range(round(duration_s / DT_S) - 1):
            out = self.tick()
        return out

    def run_until(self, predicate, limit_s: float) -> float:
        """Tick until ``predicate(out)``; returns the time it first held (fails at the limit)."""
        end = self.now_s + limit_s
        while self.now_s <= end + EPS:
            now = self.now_s
            if predicate(self.tick()):
                return now
        raise AssertionError(f"condition not reached within {limit_s} s")

    def until_state(self, state: BmsState, limit_s: float) -> float:
        return self.run_until(lambda out: out.state is state, limit_s)

    def first_time(self, predicate, since_s: float = 0.0) -> float | None:
        return next((t for t, out in self.log if t >= since_s - EPS and predicate(out)), None)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]


def drive_rig(mode: RequestMode = RequestMode.DRIVE) -> Rig:
    rig = Rig(mode=mode)
    rig.until_state(BmsState.DRIVE if mode is RequestMode.DRIVE else BmsState.CHARGE, 3.0)
    return rig


# -- configuration ---------------------------------------------------------------------------------


def test_shipped_config_is_the_foxbms_contract():
    p, o, v = CFG.precharge, CFG.opening, CFG.vehicle_request
    assert (p.close_minus_wait_s, p.timeout_s, p.retry_wait_s, p.max_attempts) == (0.2, 2.0, 3, 3)
    assert (p.success_current_a, p.success_voltage_diff_v) == (0.05, 1.0)
    assert p.use_current and p.use_voltage
    assert (p.finish_wait_s, p.anti_chatter_s) == (0.5, 10.0)
    assert (o.precharge_open_wait_s, o.safe_break_current_a, o.request_break_wait_s) == (
        0.5,
        3.5,
        3.0,
    )
    assert (v.max_age_s, v.spacing_min_s, v.spacing_max_s) == (0.105, 0.095, 0.105)
    assert (v.trip_after_s, v.trip_delay_s) == (1.0, 0.2)


def test_bad_config_value_is_a_located_input_error(tmp_path):
    text = SHIPPED_TEXT.replace("timeout_s: 2.0", "timeout_s: -2.0")
    path = tmp_path / "sm.yaml"
    path.write_text(text, encoding="utf-8")
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "timeout_s: -2.0" in s)
    with pytest.raises(InputError, match=rf"sm.yaml:{line}: precharge.timeout_s: must be > 0"):
        load_statemachine_config(path)


def test_unknown_config_field_is_rejected(tmp_path):
    text = SHIPPED_TEXT.replace("  max_attempts: 3", "  max_attempts: 3\n  max_atempts: 4")
    path = tmp_path / "sm.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match="precharge.max_atempts: unknown field"):
        load_statemachine_config(path)


def test_clock_going_backwards_is_an_input_error():
    sm = StateMachine(CFG)
    sm.step(SmInputs(1.0, 0.0, PACK_V, 0.0, False, False, False))
    with pytest.raises(InputError, match="now_s went backwards"):
        sm.step(SmInputs(0.5, 0.0, PACK_V, 0.0, False, False, False))


# -- INIT, STANDBY, PRECHARGE, DRIVE, CHARGE -------------------------------------------------------


def test_init_waits_for_the_first_request_then_standby():
    rig = Rig()
    rig.sending = False
    assert rig.run_for(2.0).state is BmsState.INIT  # no VCU yet: no timeout trip, nothing closed
    assert not rig.events
    rig.sending, rig.next_frame_s = True, rig.now_s
    assert rig.tick().state is BmsState.STANDBY


def test_standby_precharge_drive_follows_the_sequence_and_the_rc_law():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.until_state(BmsState.DRIVE, 3.0)
    t_minus = rig.first_time(lambda o: o.close_minus)
    t_pre = rig.first_time(lambda o: o.close_precharge)
    t_plus = rig.first_time(lambda o: o.close_plus)
    t_pre_open = rig.first_time(lambda o: o.close_plus and not o.close_precharge)
    t_drive = rig.first_time(lambda o: o.state is BmsState.DRIVE)
    assert rig.first_time(lambda o: o.state is BmsState.PRECHARGE) == t_minus
    # Minus first, precharge 200 ms later (+ one tick for the feedback).
    assert t_pre - t_minus == pytest.approx(CFG.precharge.close_minus_wait_s, abs=DT_S + EPS)
    # Link within 1 V of the pack after tau*ln(V/1 V) = 0.296 s once precharge has closed.
    expected_s = CONTACTOR_DELAY_S + TAU_S * math.log(PACK_V / 1.0)
    assert t_plus - t_pre == pytest.approx(expected_s, abs=DT_S + EPS)
    # Precharge opens once plus reports closed; DRIVE after the 500 ms settle.
    assert t_pre_open - t_plus == pytest.approx(CONTACTOR_DELAY_S, abs=DT_S + EPS)
    assert t_drive - t_pre_open == pytest.approx(CFG.precharge.finish_wait_s, abs=DT_S + EPS)
    out = rig.log[-1][1]
    assert out.precharge_attempt == 1 and out.close_plus and out.close_minus
    assert not out.close_precharge and not out.emergency_shutoff
    assert rig.events == []


def test_current_only_criterion_ends_precharge_when_current_falls_below_50_ma():
    pre = dataclasses.replace(CFG.precharge, use_voltage=False)
    rig = Rig(StateMachine(dataclasses.replace(CFG, precharge=pre)), mode=RequestMode.DRIVE)
    rig.until_state(BmsState.DRIVE, 3.0)
    t_pre = rig.first_time(lambda o: o.close_precharge)
    t_plus = rig.first_time(lambda o: o.close_plus)
    # I = V/R exp(-t/tau) < 50 mA after tau*ln(V/(R*50 mA)) = 0.25 s once precharge has closed.
    expected_s = CONTACTOR_DELAY_S + TAU_S * math.log(PACK_V / R_PRE_OHM / 0.05)
    assert t_plus - t_pre == pytest.approx(expected_s, abs=DT_S + EPS)


def test_precharge_peak_current_is_pack_voltage_over_resistor():
    rig = Rig(mode=RequestMode.DRIVE)
    currents = []
    while rig.tick().state is not BmsState.DRIVE:
        currents.append(rig.plant.current_a)
    peak_a = max(currents)
    first_tick_a = PACK_V / R_PRE_OHM * math.exp(-DT_S / TAU_S)  # sampled one tick after closing
    assert peak_a == pytest.approx(first_tick_a, rel=1e-9)


def test_standby_precharge_charge():
    rig = Rig(mode=RequestMode.CHARGE)
    rig.until_state(BmsState.CHARGE, 3.0)
    assert [o.state for _, o in rig.log if o.state_changed] == [
        BmsState.STANDBY,
        BmsState.PRECHARGE,
        BmsState.CHARGE,
    ]


def test_charge_request_is_refused_while_charge_is_inhibited():
    rig = Rig(mode=RequestMode.CHARGE)
    rig.flags["charge_allowed"] = False
    assert rig.run_for(2.0).state is BmsState.STANDBY
    assert not any(o.close_minus for _, o in rig.log)
    rig.flags["charge_allowed"] = True
    rig.until_state(BmsState.CHARGE, 3.0)


def test_charge_inhibited_while_charging_opens_to_standby():
    rig = drive_rig(RequestMode.CHARGE)
    rig.flags["charge_allowed"] = False
    rig.until_state(BmsState.STANDBY, 1.0)
    assert EventKind.CHARGE_INHIBITED in rig.kinds()
    assert not rig.log[-1][1].emergency_shutoff


def test_drive_and_charge_switch_without_reopening():
    rig = drive_rig()
    rig.mode = RequestMode.CHARGE
    rig.until_state(BmsState.CHARGE, 0.3)
    rig.mode = RequestMode.DRIVE
    rig.until_state(BmsState.DRIVE, 0.3)
    assert all(o.close_plus and o.close_minus for _, o in rig.log[-40:])


def test_no_request_frames_keep_the_mode_and_the_link_alive():
    rig = drive_rig()
    rig.mode = RequestMode.NO_REQUEST
    assert rig.run_for(3.0).state is BmsState.DRIVE
    assert rig.events == []


# -- opening ---------------------------------------------------------------------------------------


def test_standby_request_opens_plus_first_on_discharge():
    rig = drive_rig()
    rig.plant.load_current_a = 2.0  # below the 3.5 A safe break current
    rig.run_for(0.1)
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.STANDBY, 1.0)
    t_req = rig.first_time(lambda o: o.state is BmsState.OPENING)
    t_plus = rig.first_time(lambda o: not o.close_plus, t_req)
    t_minus = rig.first_time(lambda o: not o.close_minus, t_req)
    assert t_plus == t_req  # precharge was open: no 500 ms wait, no current wait
    assert t_minus > t_plus
    assert rig.events == []


def test_standby_request_opens_minus_first_on_charge():
    rig = drive_rig(RequestMode.CHARGE)
    rig.plant.load_current_a = -2.0
    rig.run_for(0.1)
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.STANDBY, 1.0)
    t_req = rig.first_time(lambda o: o.state is BmsState.OPENING)
    assert rig.first_time(lambda o: not o.close_minus, t_req) < rig.first_time(
        lambda o: not o.close_plus, t_req
    )


def test_opening_under_high_current_waits_then_opens_anyway_with_an_event():
    rig = drive_rig()
    rig.plant.load_current_a = 100.0
    rig.run_for(0.1)
    rig.mode = RequestMode.STANDBY
    t_req = rig.until_state(BmsState.OPENING, 0.2)
    t_open = rig.run_until(lambda o: not o.close_plus, 5.0)
    assert t_open - t_req == pytest.approx(CFG.opening.request_break_wait_s, abs=DT_S + EPS)
    rig.until_state(BmsState.ERROR, 0.5)
    (event,) = [e for e in rig.events if e.kind is EventKind.OPENED_UNDER_LOAD]
    assert event.current_a == pytest.approx(100.0) and event.tier is Tier.FATAL
    assert event.time_s == pytest.approx(t_open)


def test_opening_waits_for_current_to_fall_then_opens_cleanly():
    rig = drive_rig()
    rig.plant.load_current_a = 100.0
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.OPENING, 0.2)
    rig.run_for(1.0)
    assert rig.log[-1][1].close_plus  # not opened under load
    rig.plant.load_current_a = 1.0  # VCU ramps down
    rig.until_state(BmsState.STANDBY, 0.5)
    assert rig.events == []


def test_standby_request_during_precharge_aborts_after_the_precharge_wait():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.run_until(lambda o: o.close_precharge, 1.0)
    rig.run_for(0.05)
    rig.mode = RequestMode.STANDBY
    t_open = rig.until_state(BmsState.OPENING, 0.2)
    assert not rig.log[-1][1].close_precharge
    t_minus = rig.run_until(lambda o: not o.close_minus, 1.0)
    assert t_minus - t_open == pytest.approx(CFG.opening.precharge_open_wait_s, abs=DT_S + EPS)
    rig.until_state(BmsState.STANDBY, 0.2)


def test_anti_chatter_delays_the_next_precharge_by_10_s():
    rig = drive_rig()
    rig.mode = RequestMode.STANDBY
    t_standby = rig.until_state(BmsState.STANDBY, 1.0)
    rig.mode = RequestMode.DRIVE
    t_pre = rig.until_state(BmsState.PRECHARGE, 12.0)
    assert t_pre - t_standby == pytest.approx(CFG.precharge.anti_chatter_s, abs=DT_S + EPS)


def test_a_fault_with_every_contactor_open_does_not_start_the_anti_chatter_wait():
    # A BMS powered up before its pack (a bench): faults at once, opens nothing, leaves ERROR
    # when the data comes; the first drive request must precharge at once, not 10 s later.
    rig = Rig(mode=RequestMode.STANDBY)
    rig.flags.update(fatal_fault_active=True, open_requested=True)
    rig.until_state(BmsState.ERROR, 1.0)
    rig.flags.update(fatal_fault_active=False, open_requested=False)
    rig.until_state(BmsState.STANDBY, 1.0)
    rig.mode = RequestMode.DRIVE
    t_request = rig.now_s
    t_pre = rig.until_state(BmsState.PRECHARGE, 1.0)
    assert t_pre - t_request <= 2 * FRAME_PERIOD_S + DT_S  # the next request frame or two


# -- precharge failure and retry -------------------------------------------------------------------


def test_precharge_timeout_then_retry_after_3_s_succeeds():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.plant.link_load_ohm = 500.0  # link settles 34 V short of the pack: criterion never met
    t_pre = rig.run_until(lambda o: o.close_precharge, 1.0)
    t_fail = rig.run_until(lambda o: bool(o.events), 3.0)
    (failed,) = [e for e in rig.events if e.kind is EventKind.PRECHARGE_FAILED]
    assert t_fail - t_pre == pytest.approx(CFG.precharge.timeout_s, abs=DT_S + EPS)
    assert failed.reason is PrechargeFailure.TIMEOUT and failed.tier is Tier.WARNING
    assert failed.code is FaultCode.PRECHARGE_FAILURE and failed.attempt == 1
    v_th = PACK_V * 500.0 / 550.0
    assert failed.voltage_diff_v == pytest.approx(PACK_V - v_th, rel=1e-3)
    out = rig.log[-1][1]
    assert not (out.close_plus or out.close_minus or out.close_precharge)
    rig.plant.link_load_ohm = math.inf  # the fault goes away
    t_retry = rig.run_until(lambda o: o.close_minus, 4.0)
    assert t_retry - t_fail == pytest.approx(CFG.precharge.retry_wait_s, abs=DT_S + EPS)
    assert EventKind.PRECHARGE_RETRY in rig.kinds()
    rig.until_state(BmsState.DRIVE, 2.0)
    assert rig.log[-1][1].precharge_attempt == 2
    assert rig.log[-1][1].state is BmsState.DRIVE and rig.log[-1][1].state_changed


def test_three_precharge_failures_go_to_error_and_no_fourth_attempt():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.plant.link_load_ohm = 500.0
    rig.until_state(BmsState.ERROR, 3 * (0.2 + 2.0) + 2 * 3.0 + 1.0)
    failures = [e for e in rig.events if e.kind is EventKind.PRECHARGE_FAILED]
    assert [e.tier for e in failures] == [Tier.WARNING, Tier.WARNING, Tier.FATAL]
    assert [e.attempt for e in failures] == [1, 2, 3]
    out = rig.run_for(10.0)  # Drive still requested: stays in ERROR, never closes again
    assert out.state is BmsState.ERROR and out.precharge_attempt == 3
    assert FaultCode.PRECHARGE_FAILURE in out.active_faults and out.emergency_shutoff
    minus_closings = sum(
        1
        for (_, a), (_, b) in zip(rig.log[:-1], rig.log[1:], strict=True)
        if b.close_minus and not a.close_minus
    )
    assert minus_closings == 3
    rig.mode = RequestMode.STANDBY
    out = rig.run_for(0.2)
    assert out.state is BmsState.STANDBY and not out.active_faults


def test_stuck_open_precharge_contactor_fails_the_attempt_and_retries():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.plant.stuck[PRE] = True
    rig.run_until(lambda o: any(e.kind is EventKind.PRECHARGE_FAILED for e in o.events), 1.0)
    stuck = [e for e in rig.events if e.kind is EventKind.STUCK_OPEN]
    failed = [e for e in rig.events if e.kind is EventKind.PRECHARGE_FAILED]
    assert stuck[0].contactor is Contactor.PRECHARGE and stuck[0].tier is Tier.WARNING
    assert stuck[0].code is FaultCode.CONTACTOR_STUCK_OPEN
    assert failed[0].reason is PrechargeFailure.STUCK_OPEN
    rig.plant.stuck[PRE] = False
    rig.until_state(BmsState.DRIVE, 5.0)


# -- faults ----------------------------------------------------------------------------------------


def test_fatal_fault_shuts_off_then_opens_at_once_under_load_and_goes_to_error():
    rig = drive_rig()
    rig.plant.load_current_a = 200.0
    rig.flags["fatal_fault_active"] = True  # protection's pre-trip delay runs
    out = rig.run_for(0.2)
    assert out.emergency_shutoff and out.state is BmsState.DRIVE and out.close_plus
    rig.flags["open_requested"] = True
    t_open = rig.now_s
    out = rig.tick()
    assert out.state is BmsState.OPENING and not out.close_plus  # no waiting on a fault
    rig.until_state(BmsState.ERROR, 0.2)
    assert rig.now_s - t_open <= 0.1  # within the contactor part of the reaction budget
    (event,) = [e for e in rig.events if e.kind is EventKind.OPENED_UNDER_LOAD]
    assert event.current_a == pytest.approx(200.0) and event.time_s == pytest.approx(t_open)


def test_fatal_fault_in_its_pre_trip_delay_blocks_a_precharge():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.flags["fatal_fault_active"] = True
    out = rig.run_for(1.0)
    assert out.state is BmsState.STANDBY and out.emergency_shutoff
    assert not any(o.close_minus for _, o in rig.log)
    rig.flags["fatal_fault_active"] = False
    rig.until_state(BmsState.DRIVE, 3.0)


def test_fatal_fault_in_standby_goes_to_error():
    rig = Rig()
    rig.run_for(0.1)
    rig.flags.update(fatal_fault_active=True, open_requested=True)
    rig.until_state(BmsState.ERROR, 0.05)
    assert not rig.events


def test_error_is_left_only_on_standby_with_no_fatal_fault():
    rig = drive_rig()
    rig.flags.update(fatal_fault_active=True, open_requested=True)
    rig.until_state(BmsState.ERROR, 0.2)
    rig.mode = RequestMode.STANDBY
    assert rig.run_for(1.0).state is BmsState.ERROR  # fault still active
    rig.flags["open_requested"] = False
    assert rig.run_for(1.0).state is BmsState.ERROR  # contactors open, fault still active
    rig.flags["fatal_fault_active"] = False
    rig.mode = RequestMode.DRIVE
    assert rig.run_for(1.0).state is BmsState.ERROR  # fault gone, but no Standby request
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.STANDBY, 0.2)


def test_error_exit_can_require_a_clear_faults_request():
    cfg = dataclasses.replace(CFG, error_exit_needs_clear_faults=True)
    rig = Rig(StateMachine(cfg), mode=RequestMode.DRIVE)
    rig.until_state(BmsState.DRIVE, 3.0)
    rig.flags["open_requested"] = True
    rig.until_state(BmsState.ERROR, 0.2)
    rig.flags["open_requested"] = False
    rig.mode = RequestMode.STANDBY
    assert rig.run_for(1.0).state is BmsState.ERROR
    rig.clear_faults = True
    rig.until_state(BmsState.STANDBY, 0.2)
    assert any(o.clear_faults for _, o in rig.log)


def test_welded_plus_found_on_opening_goes_to_error_and_holds_it():
    rig = drive_rig()
    rig.plant.welded[P] = True
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.ERROR, 1.0)
    (welded,) = [e for e in rig.events if e.kind is EventKind.WELDED_CONTACTOR]
    assert welded.contactor is Contactor.PLUS and welded.code is FaultCode.CONTACTOR_WELDED
    assert welded.tier is Tier.FATAL
    out = rig.log[-1][1]
    assert not out.close_minus and not out.close_plus  # the other one opened anyway
    assert not rig.plant.closed[M]
    assert rig.run_for(2.0).state is BmsState.ERROR  # Standby requested, but still welded
    rig.plant.welded[P] = False  # replaced
    rig.until_state(BmsState.STANDBY, 0.5)


def test_welded_contactor_at_power_up_goes_to_error():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.plant.closed[M] = True
    rig.plant.welded[M] = True
    rig.until_state(BmsState.ERROR, 0.5)
    assert not any(o.close_precharge or o.close_plus for _, o in rig.log)
    (welded,) = [e for e in rig.events if e.kind is EventKind.WELDED_CONTACTOR]
    assert welded.contactor is Contactor.MINUS


def test_current_with_all_contactors_open_reveals_a_welded_contactor_with_lying_feedback():
    rig = drive_rig()
    rig.plant.welded[P] = rig.plant.welded[M] = True
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.OPENING, 0.2)
    # Auxiliary contacts broken as the contacts weld: feedback says open from here on.
    rig.plant.feedback_lies_open[P] = rig.plant.feedback_lies_open[M] = True
    rig.until_state(BmsState.STANDBY, 0.2)
    rig.plant.load_current_a = 10.0  # vehicle auxiliaries still draw from the pack
    t_flow = rig.now_s
    t_error = rig.until_state(BmsState.ERROR, 1.0)
    assert t_error - t_flow <= CFG.feedback_timeout_s + 3 * DT_S
    (welded,) = [e for e in rig.events if e.kind is EventKind.WELDED_CONTACTOR]
    assert welded.contactor is None and welded.current_a == pytest.approx(10.0)


def test_main_contactor_dropping_out_in_drive_is_stuck_open_and_error():
    rig = drive_rig()
    rig.plant.stuck[M] = True  # coil supply lost: opens although commanded closed
    rig.until_state(BmsState.ERROR, 0.5)
    (stuck,) = [e for e in rig.events if e.kind is EventKind.STUCK_OPEN]
    assert stuck.contactor is Contactor.MINUS and stuck.tier is Tier.FATAL
    rig.plant.stuck[M] = False
    rig.mode = RequestMode.STANDBY
    rig.until_state(BmsState.STANDBY, 0.2)


# -- vehicle request supervision -------------------------------------------------------------------


def test_request_timeout_trips_after_about_1_s_and_opens_within_the_ftti():
    rig = drive_rig()
    rig.run_for(1.0)
    rig.sending = False
    t_last = rig.last_frame_s
    t_shutoff = rig.run_until(lambda o: o.emergency_shutoff, 2.0)
    t_open = rig.run_until(lambda o: not o.close_plus, 1.0)
    t_error = rig.until_state(BmsState.ERROR, 1.0)
    # Detection: 1.0 s of violations that start once the frame is older than 105 ms.
    assert 1.0 <= t_shutoff - t_last <= 1.0 + CFG.vehicle_request.max_age_s + DT_S
    assert t_open - t_shutoff == pytest.approx(CFG.vehicle_request.trip_delay_s, abs=DT_S + EPS)
    assert t_error - t_last <= 1.5  # FTTI of "vehicle request lost" (DOMAIN.md section 8)
    (timeout,) = [e for e in rig.events if e.kind is EventKind.REQUEST_TIMEOUT]
    assert timeout.code is FaultCode.VEHICLE_COMM_TIMEOUT and timeout.tier is Tier.FATAL
    assert timeout.time_s == pytest.approx(t_shutoff)
    assert FaultCode.VEHICLE_COMM_TIMEOUT in rig.log[-1][1].active_faults


def test_request_timeout_clears_once_frames_return_and_error_is_left_on_standby():
    rig = drive_rig()
    rig.sending = False
    rig.until_state(BmsState.ERROR, 2.0)
    rig.mode = RequestMode.STANDBY
    rig.sending, rig.next_frame_s = True, rig.now_s
    rig.until_state(BmsState.STANDBY, CFG.vehicle_request.trip_after_s + 0.2)


def test_request_timeout_in_standby_goes_to_error():
    rig = Rig()
    rig.run_for(0.5)
    rig.sending = False
    t_last = rig.last_frame_s
    t_error = rig.until_state(BmsState.ERROR, 2.0)
    assert 1.0 + CFG.vehicle_request.trip_delay_s <= t_error - t_last <= 1.5


def test_a_single_dropped_frame_does_not_trip():
    rig = drive_rig()
    rig.drop = {rig.frames_sent + 5}
    peak_s = 0.0
    for _ in range(300):
        rig.tick()
        peak_s = max(peak_s, rig.sm.request_supervisor.timer.level_s)
    # About 20 violating ticks (DOMAIN.md section 9): 9 of age, 10 of spacing.
    assert peak_s == pytest.approx(0.19, abs=0.02)
    assert rig.sm.request_supervisor.timer.level_s == 0.0
    assert rig.log[-1][1].state is BmsState.DRIVE and rig.events == []


def test_a_dropped_frame_every_second_does_not_trip():
    rig = drive_rig()
    rig.drop = {rig.frames_sent + 10 * n for n in range(1, 11)}
    assert rig.run_for(12.0).state is BmsState.DRIVE and rig.events == []


@pytest.mark.parametrize("jitter_s, trips", [(0.003, False), (0.008, True)])
def test_chronic_jitter_beyond_5_ms_trips(jitter_s, trips):
    rig = drive_rig()
    rig.jitter_s = jitter_s
    rig.run_for(3.0)
    timeouts = [e for e in rig.events if e.kind is EventKind.REQUEST_TIMEOUT]
    assert bool(timeouts) is trips
    assert (rig.log[-1][1].state is BmsState.ERROR) is trips


# -- E2E -------------------------------------------------------------------------------------------


def test_short_e2e_failure_is_a_warning_only():
    rig = drive_rig()
    rig.flags["e2e_failed"] = True
    rig.run_for(0.3)
    rig.flags["e2e_failed"] = False
    assert rig.run_for(2.0).state is BmsState.DRIVE
    (event,) = rig.events
    assert event.kind is EventKind.E2E_FAILURE and event.tier is Tier.WARNING
    assert event.code is FaultCode.E2E_FAILURE


def test_e2e_failure_blocks_the_start_of_a_precharge():
    rig = Rig(mode=RequestMode.DRIVE)
    rig.flags["e2e_failed"] = True
    rig.run_for(0.5)
    assert not any(o.close_minus for _, o in rig.log)
    rig.flags["e2e_failed"] = False
    rig.until_state(BmsState.DRIVE, 3.0)


def test_persistent_e2e_failure_trips_and_goes_to_error():
    rig = drive_rig()
    rig.flags["e2e_failed"] = True  # every frame fails: the CAN layer passes none on
    rig.sending = False
    t_fail = rig.now_s
    t_error = rig.until_state(BmsState.ERROR, 2.0)
    fatal = [e for e in rig.events if e.kind is EventKind.E2E_FAILURE and e.tier is Tier.FATAL]
    assert len(fatal) == 1
    assert fatal[0].time_s - t_fail == pytest.approx(CFG.e2e.trip_after_s, abs=DT_S + EPS)
    assert t_error - t_fail <= 1.5
    assert FaultCode.E2E_FAILURE in rig.log[-1][1].active_faults
