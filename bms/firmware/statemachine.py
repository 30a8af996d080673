"""Contactor and precharge state machine of the BMS model (DOMAIN.md sections 8, 9 and 12).

The BMS node calls :meth:`StateMachine.step` every 10 ms with plain measurements and flags and
gets back plain contactor commands; every VehicleRequest frame that passed its E2E check goes
to :meth:`StateMachine.on_request_frame`. No CAN, no protection-engine internals, no wall clock.

The logic is a small explicit table (``_TABLE``): per state an entry action, a "during" action
(the precharge and opening sub-sequences with their timers) and ordered guarded transitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from pathlib import Path

from bms.config import Section, load_yaml
from bms.data import resolve
from bms.errors import InputError
from bms.firmware.codes import BmsState, FaultCode, RequestMode, Tier

# Accumulated float time (n x 0.01 s) must still reach a threshold of exactly n x 0.01 s.
_TIME_EPS_S = 1e-9


class Contactor(IntEnum):
    """The three string contactors, also the index into command and feedback tuples."""

    PLUS = 0
    MINUS = 1
    PRECHARGE = 2


class PrechargeFailure(Enum):
    """Why one precharge attempt was abandoned."""

    TIMEOUT = "timeout"  # success criterion not met within precharge.timeout_s
    STUCK_OPEN = "stuck_open"  # a contactor of the sequence never reported closed


class EventKind(Enum):
    """What the state machine reports to the BMS node (fault memory, CAN flags)."""

    PRECHARGE_FAILED = "precharge_failed"
    PRECHARGE_RETRY = "precharge_retry"
    WELDED_CONTACTOR = "welded_contactor"
    STUCK_OPEN = "stuck_open"
    OPENED_UNDER_LOAD = "opened_under_load"
    REQUEST_TIMEOUT = "request_timeout"
    E2E_FAILURE = "e2e_failure"
    CHARGE_INHIBITED = "charge_inhibited"


@dataclass(frozen=True)
class SmEvent:
    """One event; ``code``/``tier`` say what the fault memory should store (NONE: nothing)."""

    kind: EventKind
    time_s: float
    code: FaultCode = FaultCode.NONE
    tier: Tier = Tier.INFO
    contactor: Contactor | None = None  # WELDED/STUCK_OPEN; None = cannot tell which
    reason: PrechargeFailure | None = None
    current_a: float | None = None  # pack current at the event (+ = discharge)
    voltage_diff_v: float | None = None  # V_pack - V_link at a precharge failure
    attempt: int = 0  # precharge attempt the event belongs to


# -- configuration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PrechargeConfig:
    """Precharge sequence timings and success criterion (foxBMS 2 defaults)."""

    close_minus_wait_s: float
    timeout_s: float
    use_current: bool
    use_voltage: bool
    success_current_a: float
    success_voltage_diff_v: float
    finish_wait_s: float
    retry_wait_s: float
    max_attempts: int
    anti_chatter_s: float


@dataclass(frozen=True)
class OpeningConfig:
    """Opening sequence: precharge first, then the main contactors below a safe current."""

    precharge_open_wait_s: float
    safe_break_current_a: float
    request_break_wait_s: float
    fault_break_wait_s: float
    first_on_discharge: Contactor
    first_on_charge: Contactor


@dataclass(frozen=True)
class SupervisorConfig:
    """Up/down violation timer: trips after ``trip_after_s`` net violation, opens after delay."""

    trip_after_s: float
    trip_delay_s: float
    max_age_s: float = math.inf
    spacing_min_s: float = 0.0
    spacing_max_s: float = math.inf


@dataclass(frozen=True)
class StateMachineConfig:
    """Everything in ``statemachine.yaml``."""

    precharge: PrechargeConfig
    opening: OpeningConfig
    feedback_timeout_s: float
    welded_current_a: float
    vehicle_request: SupervisorConfig
    e2e: SupervisorConfig
    error_exit_needs_clear_faults: bool
    source: str = ""


def load_statemachine_config(name_or_path: str | Path = "statemachine") -> StateMachineConfig:
    """Load a shipped (``statemachine``) or user state-machine YAML file, validating every field."""
    root = Section(load_yaml(resolve("firmware", name_or_path)))
    cfg = _read_config(root)
    root.done()
    return cfg


def _read_config(root: Section) -> StateMachineConfig:
    p = root.section("precharge")
    criterion = p.string("success_criterion", "both", choices=("current", "voltage", "both"))
    pre = PrechargeConfig(
        close_minus_wait_s=p.number("close_minus_wait_s", min=0, max=60),
        timeout_s=p.number("timeout_s", above=0, max=600),
        use_current=criterion in ("current", "both"),
        use_voltage=criterion in ("voltage", "both"),
        success_current_a=p.number("success_current_a", above=0, max=1000),
        success_voltage_diff_v=p.number("success_voltage_diff_v", above=0, max=1000),
        finish_wait_s=p.number("finish_wait_s", min=0, max=60),
        retry_wait_s=p.number("retry_wait_s", min=0, max=600),
        max_attempts=p.integer("max_attempts", min=1, max=100),
        anti_chatter_s=p.number("anti_chatter_s", min=0, max=3600),
    )
    p.done()

    o = root.section("opening")
    names = ("plus", "minus")
    opening = OpeningConfig(
        precharge_open_wait_s=o.number("precharge_open_wait_s", min=0, max=60),
        safe_break_current_a=o.number("safe_break_current_a", above=0, max=10000),
        request_break_wait_s=o.number("request_break_wait_s", min=0, max=600),
        fault_break_wait_s=o.number("fault_break_wait_s", 0.0, min=0, max=600),
        first_on_discharge=Contactor[o.string("first_on_discharge", "plus", choices=names).upper()],
        first_on_charge=Contactor[o.string("first_on_charge", "minus", choices=names).upper()],
    )
    o.done()

    c = root.section("contactor")
    feedback_timeout_s = c.number("feedback_timeout_s", above=0, max=60)
    welded_current_a = c.number("welded_current_a", above=0, max=10000)
    if feedback_timeout_s >= pre.timeout_s:
        raise c.error("feedback_timeout_s", f"must be below precharge.timeout_s ({pre.timeout_s})")
    c.done()

    v = root.section("vehicle_request")
    request = SupervisorConfig(
        trip_after_s=v.number("trip_after_s", above=0, max=600),
        trip_delay_s=v.number("trip_delay_s", min=0, max=600),
        max_age_s=v.number("max_age_s", above=0, max=600),
        spacing_min_s=v.number("spacing_min_s", min=0, max=600),
        spacing_max_s=v.number("spacing_max_s", above=0, max=600),
    )
    if request.spacing_max_s <= request.spacing_min_s:
        raise v.error("spacing_max_s", f"must be above spacing_min_s ({request.spacing_min_s})")
    v.done()

    e = root.section("e2e")
    e2e = SupervisorConfig(
        trip_after_s=e.number("trip_after_s", above=0, max=600),
        trip_delay_s=e.number("trip_delay_s", min=0, max=600),
    )
    e.done()

    x = root.section("error_exit", {})
    needs_clear = x.boolean("needs_clear_faults", False)
    x.done()
    return StateMachineConfig(
        precharge=pre,
        opening=opening,
        feedback_timeout_s=feedback_timeout_s,
        welded_current_a=welded_current_a,
        vehicle_request=request,
        e2e=e2e,
        error_exit_needs_clear_faults=needs_clear,
        source=root.doc.source,
    )


# -- per-tick interface ------------------------------------------------------------------------


@dataclass(frozen=True)
class SmInputs:
    """Plain inputs of one 10 ms tick. ``e2e_failed`` is a level: the newest VehicleRequest
    frame failed its E2E check (such frames are not passed to ``on_request_frame``)."""

    now_s: float
    pack_current_a: float  # + = discharge
    pack_voltage_v: float  # battery side of the contactors
    link_voltage_v: float  # DC-link (vehicle) side
    plus_closed: bool  # contactor feedback
    minus_closed: bool
    precharge_closed: bool
    fatal_fault_active: bool = False  # an MSL fault is active (pre-trip delay running or over)
    open_requested: bool = False  # protection engine: pre-trip delay over, open now
    e2e_failed: bool = False
    charge_allowed: bool = True  # e.g. False at low stack pressure


@dataclass(frozen=True)
class SmOutputs:
    """Plain outputs of one tick; ``events`` holds what happened during this tick."""

    state: BmsState
    state_changed: bool  # send BmsState at once
    close_plus: bool
    close_minus: bool
    close_precharge: bool
    emergency_shutoff: bool  # limits to 0 (pre-trip delay, opening for a fault, ERROR)
    precharge_attempt: int  # attempt of the current / last precharge sequence (0 = none yet)
    requested_mode: RequestMode | None  # the request acted on; None = none valid
    active_faults: frozenset[FaultCode]  # faults the state machine itself holds active
    clear_faults: bool  # a VehicleRequest asked to clear faults (forward to fault memory)
    events: tuple[SmEvent, ...]


# -- supervisors -------------------------------------------------------------------------------


class UpDownTimer:
    """Time-based up/down debounce: counts violation time up and good time down (at equal rate),
    detects at ``trip_after_s``, demands opening ``trip_delay_s`` later, clears back at zero."""

    def __init__(self, trip_after_s: float, trip_delay_s: float) -> None:
        self.trip_after_s = trip_after_s
        self.trip_delay_s = trip_delay_s
        self.level_s = 0.0
        self.detected_at_s: float | None = None

    def update(self, now_s: float, dt_s: float, violated: bool) -> bool:
        """Advance by ``dt_s``; True only on the tick the trip is detected."""
        if violated:
            self.level_s = min(self.trip_after_s, self.level_s + dt_s)
        else:
            self.level_s = max(0.0, self.level_s - dt_s)
        if self.detected_at_s is None:
            if self.level_s >= self.trip_after_s - _TIME_EPS_S:
                self.detected_at_s = now_s
                return True
        elif self.level_s <= _TIME_EPS_S:
            self.detected_at_s = None
        return False

    @property
    def detected(self) -> bool:
        """The fault is active (from detection until the level has decayed to zero)."""
        return self.detected_at_s is not None

    def open_demanded(self, now_s: float) -> bool:
        """Detected and the trip delay has run out."""
        return (
            self.detected_at_s is not None
            and now_s - self.detected_at_s >= self.trip_delay_s - _TIME_EPS_S
        )


class RequestSupervisor:
    """VehicleRequest timing check (foxBMS 2): every tick, the newest frame must be at most
    ``max_age_s`` old and the last two frames ``spacing_min_s..spacing_max_s`` apart."""

    def __init__(self, cfg: SupervisorConfig) -> None:
        self.cfg = cfg
        self.timer = UpDownTimer(cfg.trip_after_s, cfg.trip_delay_s)
        self.last_rx_s: float | None = None
        self.prev_rx_s: float | None = None

    def on_frame(self, time_s: float) -> None:
        """Record the receive time of one frame (late, out-of-order stamps are ignored)."""
        if self.last_rx_s is not None and time_s <= self.last_rx_s:
            return
        self.prev_rx_s, self.last_rx_s = self.last_rx_s, time_s

    def violated(self, now_s: float) -> bool:
        """The timing rule is broken at ``now_s`` (never before the first frame)."""
        if self.last_rx_s is None:
            return False
        if now_s - self.last_rx_s > self.cfg.max_age_s:
            return True
        if self.prev_rx_s is None:
            return False
        spacing_s = self.last_rx_s - self.prev_rx_s
        return not self.cfg.spacing_min_s <= spacing_s <= self.cfg.spacing_max_s

    def update(self, now_s: float, dt_s: float) -> bool:
        """Run the 10 ms check; True on the tick the timeout is detected."""
        return self.timer.update(now_s, dt_s, self.violated(now_s))


class ContactorMonitor:
    """Command-vs-feedback supervision: a mismatch beyond ``feedback_timeout_s`` is a welded
    (commanded open) or stuck-open (commanded closed) contactor; current flowing while all are
    open and report open means one is welded with lying feedback."""

    def __init__(self, feedback_timeout_s: float, welded_current_a: float) -> None:
        self.feedback_timeout_s = feedback_timeout_s
        self.welded_current_a = welded_current_a
        self._mismatch_since_s: list[float | None] = [None, None, None]
        self.welded = [False, False, False]
        self.stuck_open = [False, False, False]
        self._flow_since_s: float | None = None
        self.welded_unknown = False

    @property
    def any_welded(self) -> bool:
        """Some contactor is welded (by its feedback or by current flowing while all open)."""
        return self.welded_unknown or any(self.welded)

    @property
    def any_stuck(self) -> bool:
        """Some contactor commanded closed has not reported closed within the timeout."""
        return any(self.stuck_open)

    def update(
        self,
        now_s: float,
        command: list[bool],
        feedback: tuple[bool, bool, bool],
        current_a: float,
    ) -> list[SmEvent]:
        """Compare the commands in force with the feedback; events on new welded/stuck flags."""
        events: list[SmEvent] = []
        for index in Contactor:  # three contactors, not cells: a plain loop is the clear form
            if command[index] == feedback[index]:
                self._mismatch_since_s[index] = None
                self.welded[index] = self.stuck_open[index] = False
                continue
            since = self._mismatch_since_s[index]
            if since is None:
                self._mismatch_since_s[index] = now_s
                continue
            if now_s - since < self.feedback_timeout_s - _TIME_EPS_S:
                continue
            if command[index]:
                if not self.stuck_open[index]:
                    self.stuck_open[index] = True
                    events.append(
                        SmEvent(
                            EventKind.STUCK_OPEN,
                            now_s,
                            FaultCode.CONTACTOR_STUCK_OPEN,
                            Tier.FATAL,
                            contactor=index,
                            current_a=current_a,
                        )
                    )
            elif not self.welded[index]:
                self.welded[index] = True
                events.append(
                    SmEvent(
                        EventKind.WELDED_CONTACTOR,
                        now_s,
                        FaultCode.CONTACTOR_WELDED,
                        Tier.FATAL,
                        contactor=index,
                        current_a=current_a,
                    )
                )
        all_open = not any(command) and not any(feedback)
        if all_open and abs(current_a) > self.welded_current_a:
            if self._flow_since_s is None:
                self._flow_since_s = now_s
            elif (
                not self.welded_unknown
                and now_s - self._flow_since_s >= self.feedback_timeout_s - _TIME_EPS_S
            ):
                self.welded_unknown = True
                events.append(
                    SmEvent(
                        EventKind.WELDED_CONTACTOR,
                        now_s,
                        FaultCode.CONTACTOR_WELDED,
                        Tier.FATAL,
                        current_a=current_a,
                    )
                )
        else:
            self._flow_since_s = None
            self.welded_unknown = False
        return events


# -- the state machine -------------------------------------------------------------------------


class _Phase(Enum):
    """Sub-steps of PRECHARGE and OPENING, each with its own timer (``_phase_since_s``)."""

    NONE = 0
    CLOSE_MINUS = 1
    CLOSE_PRECHARGE = 2
    CLOSE_PLUS = 3
    SETTLE = 4
    RETRY_WAIT = 5
    OPEN_PRECHARGE = 6
    WAIT_CURRENT = 7
    BREAK_FIRST = 8
    BREAK_SECOND = 9


class StateMachine:
    """BMS contactor/precharge state machine: INIT, STANDBY, PRECHARGE, DRIVE, CHARGE, OPENING,
    ERROR, driven by ``step`` every 10 ms and by ``on_request_frame`` per VehicleRequest."""

    def __init__(self, config: StateMachineConfig | None = None) -> None:
        self.cfg = config if config is not None else load_statemachine_config()
        self.request_supervisor = RequestSupervisor(self.cfg.vehicle_request)
        self.e2e_supervisor = UpDownTimer(self.cfg.e2e.trip_after_s, self.cfg.e2e.trip_delay_s)
        self.monitor = ContactorMonitor(self.cfg.feedback_timeout_s, self.cfg.welded_current_a)
        self.state = BmsState.INIT
        self._cmd = [False, False, False]  # plus, minus, precharge: close commands in force
        self._mode: RequestMode | None = None  # last real mode received (NO_REQUEST holds it)
        self._clear_pending = False
        self._clear_seen_in_error = False
        self._last_now_s: float | None = None
        self._events: list[SmEvent] = []
        self._phase = _Phase.NONE
        self._phase_since_s = 0.0
        self._attempt = 0
        self._precharge_complete = False
        self._precharge_exhausted = False
        self._opening_for_fault = False  # OPENING demanded by a fault: no waiting for current
        self._error_latched = False  # the running opening ends in ERROR
        self._precharge_was_closed = False
        self._opening_breaks = False  # the running opening started with something closed
        self._first_break = Contactor.PLUS
        self._opening_done = False
        self._last_opened_s: float | None = None
        self._latched: set[FaultCode] = set()  # held until ERROR is left
        self._e2e_was_failed = False

    # -- inputs ---------------------------------------------------------------------------------
    def on_request_frame(
        self, time_s: float, mode: RequestMode | int, clear_faults: bool = False
    ) -> None:
        """Feed one VehicleRequest frame that passed E2E: receive time, mode, clear-faults bit.

        NO_REQUEST and values outside the table refresh the timing check but keep the last mode.
        """
        self.request_supervisor.on_frame(time_s)
        try:
            requested = RequestMode(int(mode))
        except ValueError:
            requested = RequestMode.NO_REQUEST
        if requested is not RequestMode.NO_REQUEST:
            self._mode = requested
        if clear_faults:
            self._clear_pending = True

    def requested_mode(self) -> RequestMode | None:
        """The request acted on: None before the first frame or while a timeout is detected."""
        if self.request_supervisor.timer.detected:
            return None
        return self._mode

    # -- the tick ---------------------------------------------------------------------------------
    def step(self, inp: SmInputs) -> SmOutputs:
        """Advance one tick: supervise, run the state's sequence, take at most one transition."""
        if self._last_now_s is not None and inp.now_s < self._last_now_s:
            raise InputError(
                f"state machine: now_s went backwards ({inp.now_s} < {self._last_now_s})"
            )
        dt_s = 0.0 if self._last_now_s is None else inp.now_s - self._last_now_s
        self._last_now_s = inp.now_s
        self._supervise(inp, dt_s)
        if self.state is BmsState.ERROR and self._clear_pending:
            self._clear_seen_in_error = True  # for error_exit.needs_clear_faults
        previous = self.state
        spec = _TABLE[self.state]
        spec.during(self, inp)
        for row in spec.transitions:
            if row.guard(self, inp):
                self._enter(row, inp)
                break
        clear = self._clear_pending
        self._clear_pending = False
        events = tuple(self._events)
        self._events.clear()
        return SmOutputs(
            state=self.state,
            state_changed=self.state is not previous,
            close_plus=self._cmd[Contactor.PLUS],
            close_minus=self._cmd[Contactor.MINUS],
            close_precharge=self._cmd[Contactor.PRECHARGE],
            emergency_shutoff=self._emergency(inp),
            precharge_attempt=self._attempt,
            requested_mode=self.requested_mode(),
            active_faults=self._active_faults(),
            clear_faults=clear,
            events=events,
        )

    def _supervise(self, inp: SmInputs, dt_s: float) -> None:
        now = inp.now_s
        if self.request_supervisor.update(now, dt_s):
            self._emit(EventKind.REQUEST_TIMEOUT, now, FaultCode.VEHICLE_COMM_TIMEOUT, Tier.FATAL)
        if inp.e2e_failed and not self._e2e_was_failed:
            # Each new episode is a warning; only a persistent one trips.
            self._emit(EventKind.E2E_FAILURE, now, FaultCode.E2E_FAILURE, Tier.WARNING)
        self._e2e_was_failed = inp.e2e_failed
        if self.e2e_supervisor.update(now, dt_s, inp.e2e_failed):
            self._emit(EventKind.E2E_FAILURE, now, FaultCode.E2E_FAILURE, Tier.FATAL)
        feedback = (inp.plus_closed, inp.minus_closed, inp.precharge_closed)
        for event in self.monitor.update(now, self._cmd, feedback, inp.pack_current_a):
            if event.kind is EventKind.STUCK_OPEN:
                if self.state is BmsState.PRECHARGE:
                    # During precharge a stuck contactor is a failed attempt and may be retried.
                    event = SmEvent(
                        event.kind,
                        event.time_s,
                        event.code,
                        Tier.WARNING,
                        contactor=event.contactor,
                        current_a=event.current_a,
                        attempt=self._attempt,
                    )
                else:
                    # A closed contactor that dropped out: fatal, held until ERROR is left.
                    self._latched.add(FaultCode.CONTACTOR_STUCK_OPEN)
            self._events.append(event)

    def _enter(self, row: _Transition, inp: SmInputs) -> None:
        if row.action is not None:
            row.action(self, inp)
        if row.to_error:
            self._error_latched = True
        self.state = row.target
        spec = _TABLE[row.target]
        spec.entry(self, inp)
        # A state acts in the tick it is entered, so commands go out without a tick of delay.
        spec.during(self, inp)

    # -- helpers used by the table ----------------------------------------------------------------
    def _emit(
        self,
        kind: EventKind,
        time_s: float,
        code: FaultCode = FaultCode.NONE,
        tier: Tier = Tier.INFO,
        **details: object,
    ) -> None:
        self._events.append(SmEvent(kind, time_s, code, tier, **details))  # type: ignore[arg-type]

    def _set_phase(self, phase: _Phase, now_s: float) -> None:
        self._phase = phase
        self._phase_since_s = now_s

    def _in_phase_s(self, now_s: float) -> float:
        # Small epsilon so n ticks of 0.01 s reach a wait of n x 0.01 s.
        return now_s - self._phase_since_s + _TIME_EPS_S

    def _command(self, plus: bool, minus: bool, precharge: bool) -> None:
        self._cmd[Contactor.PLUS] = plus
        self._cmd[Contactor.MINUS] = minus
        self._cmd[Contactor.PRECHARGE] = precharge

    def _internal_open_demand(self, inp: SmInputs) -> bool:
        now = inp.now_s
        return (
            self.request_supervisor.timer.open_demanded(now)
            or self.e2e_supervisor.open_demanded(now)
            or self.monitor.any_welded
            or FaultCode.CONTACTOR_STUCK_OPEN in self._latched
        )

    def _internal_faults_active(self) -> bool:
        return (
            self.request_supervisor.timer.detected
            or self.e2e_supervisor.detected
            or self.monitor.any_welded
        )

    def _emergency(self, inp: SmInputs) -> bool:
        return (
            inp.fatal_fault_active
            or inp.open_requested
            or self._internal_faults_active()
            or self.state is BmsState.ERROR
            or (self.state is BmsState.OPENING and self._opening_for_fault)
        )

    def _active_faults(self) -> frozenset[FaultCode]:
        codes = set(self._latched)
        if self.request_supervisor.timer.detected:
            codes.add(FaultCode.VEHICLE_COMM_TIMEOUT)
        if self.e2e_supervisor.detected:
            codes.add(FaultCode.E2E_FAILURE)
        if self.monitor.any_welded:
            codes.add(FaultCode.CONTACTOR_WELDED)
        return frozenset(codes)

    def _precharge_ok(self, inp: SmInputs) -> bool:
        p = self.cfg.precharge
        if not inp.precharge_closed:
            return False  # before the contactor closes, zero current proves nothing
        current_ok = abs(inp.pack_current_a) < p.success_current_a
        voltage_ok = abs(inp.pack_voltage_v - inp.link_voltage_v) < p.success_voltage_diff_v
        return (current_ok or not p.use_current) and (voltage_ok or not p.use_voltage)

    def _start_attempt(self, now_s: float) -> None:
        self._attempt += 1
        self._command(plus=False, minus=True, precharge=False)
        self._set_phase(_Phase.CLOSE_MINUS, now_s)

    def _fail_attempt(self, inp: SmInputs, reason: PrechargeFailure) -> None:
        last = self._attempt >= self.cfg.precharge.max_attempts
        self._emit(
            EventKind.PRECHARGE_FAILED,
            inp.now_s,
            FaultCode.PRECHARGE_FAILURE,
            Tier.FATAL if last else Tier.WARNING,
            reason=reason,
            current_a=inp.pack_current_a,
            voltage_diff_v=inp.pack_voltage_v - inp.link_voltage_v,
            attempt=self._attempt,
        )
        # Precharge current is limited by the resistor, so minus may open together with it.
        self._command(plus=False, minus=False, precharge=False)
        self._set_phase(_Phase.RETRY_WAIT, inp.now_s)
        if last:
            self._precharge_exhausted = True
            self._latched.add(FaultCode.PRECHARGE_FAILURE)


# -- entry and during actions ------------------------------------------------------------------


def _entry_all_open(sm: StateMachine, inp: SmInputs) -> None:
    sm._command(plus=False, minus=False, precharge=False)
    sm._set_phase(_Phase.NONE, inp.now_s)


def _entry_standby(sm: StateMachine, inp: SmInputs) -> None:
    _entry_all_open(sm, inp)
    sm._error_latched = False
    sm._opening_for_fault = False


def _entry_precharge(sm: StateMachine, inp: SmInputs) -> None:
    sm._attempt = 0
    sm._precharge_complete = False
    sm._precharge_exhausted = False
    sm._start_attempt(inp.now_s)


def _entry_closed(sm: StateMachine, inp: SmInputs) -> None:
    sm._command(plus=True, minus=True, precharge=False)
    sm._set_phase(_Phase.NONE, inp.now_s)


def _entry_opening(sm: StateMachine, inp: SmInputs) -> None:
    # Anti-chatter counts openings that broke a circuit: a fault while everything was open (a
    # BMS powered up before its pack, on a bench) must not hold the next precharge back.
    sm._opening_breaks = any(sm._cmd) or inp.plus_closed or inp.minus_closed or inp.precharge_closed
    sm._precharge_was_closed = sm._cmd[Contactor.PRECHARGE] or inp.precharge_closed
    sm._cmd[Contactor.PRECHARGE] = False
    sm._opening_for_fault = sm._error_latched
    sm._opening_done = False
    sm._set_phase(_Phase.OPEN_PRECHARGE, inp.now_s)


def _entry_error(sm: StateMachine, inp: SmInputs) -> None:
    _entry_all_open(sm, inp)
    sm._clear_seen_in_error = False


def _during_nothing(sm: StateMachine, inp: SmInputs) -> None:
    return None


def _during_precharge(sm: StateMachine, inp: SmInputs) -> None:
    """Close minus, wait; close precharge until the criterion holds; close plus, open
    precharge, settle. A failed attempt opens everything and retries after ``retry_wait_s``."""
    p = sm.cfg.precharge
    now = inp.now_s
    stuck = sm.monitor.stuck_open
    phase, elapsed_s = sm._phase, sm._in_phase_s(now)
    if phase is _Phase.RETRY_WAIT:
        if not sm._precharge_exhausted and elapsed_s >= p.retry_wait_s:
            sm._emit(EventKind.PRECHARGE_RETRY, now, attempt=sm._attempt + 1)
            sm._start_attempt(now)
    elif phase is _Phase.CLOSE_MINUS:
        if stuck[Contactor.MINUS]:
            sm._fail_attempt(inp, PrechargeFailure.STUCK_OPEN)
        elif inp.minus_closed and elapsed_s >= p.close_minus_wait_s:
            sm._cmd[Contactor.PRECHARGE] = True
            sm._set_phase(_Phase.CLOSE_PRECHARGE, now)
    elif phase is _Phase.CLOSE_PRECHARGE:
        if stuck[Contactor.PRECHARGE]:
            sm._fail_attempt(inp, PrechargeFailure.STUCK_OPEN)
        elif sm._precharge_ok(inp):
            sm._cmd[Contactor.PLUS] = True
            sm._set_phase(_Phase.CLOSE_PLUS, now)
        elif elapsed_s >= p.timeout_s:
            sm._fail_attempt(inp, PrechargeFailure.TIMEOUT)
    elif phase is _Phase.CLOSE_PLUS:
        if stuck[Contactor.PLUS]:
            sm._fail_attempt(inp, PrechargeFailure.STUCK_OPEN)
        elif inp.plus_closed:
            sm._cmd[Contactor.PRECHARGE] = False
            sm._set_phase(_Phase.SETTLE, now)
    elif phase is _Phase.SETTLE and elapsed_s >= p.finish_wait_s:
        sm._precharge_complete = True


def _during_opening(sm: StateMachine, inp: SmInputs) -> None:
    """Open precharge (wait if it was closed), wait for |I| below the safe break current (not at
    all / briefly for a fault), open the contactor rated for the current direction, then the
    other; a forced break under load is recorded."""
    o = sm.cfg.opening
    now = inp.now_s
    if not sm._opening_for_fault and _g_fault(sm, inp):
        sm._opening_for_fault = sm._error_latched = True
    if sm._phase is _Phase.OPEN_PRECHARGE:
        wait_s = o.precharge_open_wait_s if sm._precharge_was_closed else 0.0
        if sm._in_phase_s(now) >= wait_s:
            sm._set_phase(_Phase.WAIT_CURRENT, now)
    if sm._phase is _Phase.WAIT_CURRENT:
        current_a = inp.pack_current_a
        limit_s = o.fault_break_wait_s if sm._opening_for_fault else o.request_break_wait_s
        if abs(current_a) >= o.safe_break_current_a and sm._in_phase_s(now) < limit_s:
            return  # give the vehicle (or the fuse) time to bring the current down
        if abs(current_a) >= o.safe_break_current_a:
            # Forced break: a vehicle-requested one is itself fatal (foxBMS ALERT).
            tier = Tier.WARNING if sm._opening_for_fault else Tier.FATAL
            sm._emit(EventKind.OPENED_UNDER_LOAD, now, tier=tier, current_a=current_a)
            sm._error_latched = True
        sm._first_break = o.first_on_charge if current_a < 0 else o.first_on_discharge
        sm._cmd[sm._first_break] = False
        sm._set_phase(_Phase.BREAK_FIRST, now)
    if sm._phase is _Phase.BREAK_FIRST:
        first_open = not (inp.plus_closed, inp.minus_closed)[sm._first_break]
        if first_open or sm._in_phase_s(now) >= sm.cfg.feedback_timeout_s:
            sm._command(plus=False, minus=False, precharge=False)
            sm._set_phase(_Phase.BREAK_SECOND, now)
    if sm._phase is _Phase.BREAK_SECOND:
        all_open = not (inp.plus_closed or inp.minus_closed or inp.precharge_closed)
        if all_open or sm._in_phase_s(now) >= sm.cfg.feedback_timeout_s:
            # A contactor still closed here is flagged welded by the monitor; ERROR follows.
            sm._opening_done = True
            if sm._opening_breaks:
                sm._last_opened_s = now
            if not all_open:
                sm._error_latched = True


def _during_error(sm: StateMachine, inp: SmInputs) -> None:
    sm._command(plus=False, minus=False, precharge=False)


# -- guards -------------------------------------------------------------------------------------


def _g_fault(sm: StateMachine, inp: SmInputs) -> bool:
    """A fault demands the contactors open (protection after its pre-trip delay, or our own)."""
    return inp.open_requested or sm._internal_open_demand(inp)


def _g_first_request(sm: StateMachine, inp: SmInputs) -> bool:
    return sm.request_supervisor.last_rx_s is not None


def _g_start_precharge(sm: StateMachine, inp: SmInputs) -> bool:
    mode = sm.requested_mode()
    if mode not in (RequestMode.DRIVE, RequestMode.CHARGE):
        return False
    if mode is RequestMode.CHARGE and not inp.charge_allowed:
        return False
    if inp.fatal_fault_active or inp.e2e_failed or sm._internal_faults_active():
        return False
    if inp.plus_closed or inp.minus_closed or inp.precharge_closed:
        return False
    anti_chatter_s = sm.cfg.precharge.anti_chatter_s
    return sm._last_opened_s is None or inp.now_s - sm._last_opened_s >= anti_chatter_s


def _g_standby_requested(sm: StateMachine, inp: SmInputs) -> bool:
    return sm.requested_mode() is RequestMode.STANDBY


def _g_precharge_exhausted(sm: StateMachine, inp: SmInputs) -> bool:
    return sm._precharge_exhausted


def _g_charge_inhibited(sm: StateMachine, inp: SmInputs) -> bool:
    return sm.requested_mode() is RequestMode.CHARGE and not inp.charge_allowed


def _g_precharged_charge(sm: StateMachine, inp: SmInputs) -> bool:
    return sm._precharge_complete and sm.requested_mode() is RequestMode.CHARGE


def _g_precharged_drive(sm: StateMachine, inp: SmInputs) -> bool:
    return sm._precharge_complete


def _g_charge_requested(sm: StateMachine, inp: SmInputs) -> bool:
    return sm.requested_mode() is RequestMode.CHARGE and inp.charge_allowed


def _g_drive_requested(sm: StateMachine, inp: SmInputs) -> bool:
    return sm.requested_mode() is RequestMode.DRIVE


def _g_opened(sm: StateMachine, inp: SmInputs) -> bool:
    return sm._opening_done


def _g_opened_to_error(sm: StateMachine, inp: SmInputs) -> bool:
    return sm._opening_done and sm._error_latched


def _g_error_exit(sm: StateMachine, inp: SmInputs) -> bool:
    """ERROR is left only on a Standby request with no fault active (foxBMS 2)."""
    if sm.requested_mode() is not RequestMode.STANDBY:
        return False
    if inp.fatal_fault_active or inp.open_requested or inp.e2e_failed:
        return False
    if sm._internal_faults_active():
        return False
    if abs(inp.pack_current_a) > sm.cfg.welded_current_a:
        return False  # current with every contactor open: a weld is about to be confirmed
    return sm._clear_seen_in_error or not sm.cfg.error_exit_needs_clear_faults


# -- actions on transitions ------------------------------------------------------------------


def _a_charge_inhibited(sm: StateMachine, inp: SmInputs) -> None:
    sm._emit(EventKind.CHARGE_INHIBITED, inp.now_s, tier=Tier.INFO)


def _a_leave_error(sm: StateMachine, inp: SmInputs) -> None:
    sm._latched.clear()
    sm._precharge_exhausted = False


# -- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Transition:
    """One guarded transition; ``to_error`` makes the opening it starts end in ERROR."""

    guard: Callable[[StateMachine, SmInputs], bool]
    target: BmsState
    to_error: bool = False
    action: Callable[[StateMachine, SmInputs], None] | None = None


@dataclass(frozen=True)
class _StateSpec:
    """Entry action, per-tick action and ordered transitions (first true guard wins)."""

    entry: Callable[[StateMachine, SmInputs], None]
    during: Callable[[StateMachine, SmInputs], None]
    transitions: tuple[_Transition, ...]


_S = BmsState
_FAULT = _Transition(_g_fault, _S.OPENING, to_error=True)
_STANDBY_REQUEST = _Transition(_g_standby_requested, _S.OPENING)
_CHARGE_INHIBITED = _Transition(_g_charge_inhibited, _S.OPENING, action=_a_charge_inhibited)

_TABLE: dict[BmsState, _StateSpec] = {
    _S.INIT: _StateSpec(
        _entry_all_open,
        _during_nothing,
        (
            _FAULT,
            _Transition(_g_first_request, _S.STANDBY),
        ),
    ),
    _S.STANDBY: _StateSpec(
        _entry_standby,
        _during_nothing,
        (
            _FAULT,
            _Transition(_g_start_precharge, _S.PRECHARGE),
        ),
    ),
    _S.PRECHARGE: _StateSpec(
        _entry_precharge,
        _during_precharge,
        (
            _FAULT,
            _Transition(_g_precharge_exhausted, _S.OPENING, to_error=True),
            _STANDBY_REQUEST,
            _CHARGE_INHIBITED,
            _Transition(_g_precharged_charge, _S.CHARGE),
            _Transition(_g_precharged_drive, _S.DRIVE),
        ),
    ),
    _S.DRIVE: _StateSpec(
        _entry_closed,
        _during_nothing,
        (
            _FAULT,
            _STANDBY_REQUEST,
            _Transition(_g_charge_requested, _S.CHARGE),
        ),
    ),
    _S.CHARGE: _StateSpec(
        _entry_closed,
        _during_nothing,
        (
            _FAULT,
            _STANDBY_REQUEST,
            _CHARGE_INHIBITED,
            _Transition(_g_drive_requested, _S.DRIVE),
        ),
    ),
    _S.OPENING: _StateSpec(
        _entry_opening,
        _during_opening,
        (
            _Transition(_g_opened_to_error, _S.ERROR),
            _Transition(_g_opened, _S.STANDBY),
        ),
    ),
    _S.ERROR: _StateSpec(
        _entry_error,
        _during_error,
        (_Transition(_g_error_exit, _S.STANDBY, action=_a_leave_error),),
    ),
}
