"""Run a loaded scenario on the simulated clock (or in real time on a bench) and judge it.

The closed loop is :class:`bms.sim.system.System` (pack, pack node, BMS node, VCU, charger on two
python-can virtual buses). The runner only adds what a scenario needs around it: segment inputs
before each tick; after it, the fault timeline and the online conditions (``until``, ``when``,
``stop_when``); a tap on every node's ``send`` that hands each frame to the recorder and decodes
only the messages the trace needs; and a decoded trace sampled on a 100 ms grid (10 ms for the
columns of reaction-time expectations), judged after the run.

With ``system_factory`` (e.g. :func:`bms.bench.realtime.bench_factory`) the same scenario drives a
:class:`~bms.bench.realtime.BenchSystem` paced in real time on a real interface: the tap is then
the system's bus observer, which sees every frame on the bus (an external BMS's too) stamped in
seconds since the run started, and the result carries the loop's timing report and a
``jitter budget`` entry judged against the scenario's ``realtime:`` budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import can
import numpy as np

from bms.config import load_yaml
from bms.errors import InputError, located
from bms.firmware.codes import FaultCode, Tier
from bms.pack import InitialState
from bms.pack.faults import make_fault
from bms.scenario.conditions import TRUTH_PREFIX, Condition, SignalCatalog, truth_column
from bms.scenario.expect import (
    SOC_ERROR_MAX,
    SOC_ERROR_RMS,
    RunFacts,
    Trace,
    evaluate,
)
from bms.scenario.result import ExpectationResult, Recorder, RunResult
from bms.scenario.schema import Scenario
from bms.scenario.timeline import FaultSpec, Segment
from bms.scenario.units import format_duration
from bms.sim.system import System, SystemConfig

#: Period of the recorded trace (s); reaction-time expectations get every tick.
SAMPLE_PERIOD_S = 0.1
#: Polling period of ``stop_check`` in simulated seconds (it may read a signal flag or a file).
STOP_CHECK_PERIOD_S = 0.1
_EPS_S = 1e-9

#: Name of the expectation-like entry a real-time run adds for its jitter budget.
JITTER_BUDGET = "jitter budget"

#: Bus signals always in the trace: what a reviewer looks at first.
FIXED_SIGNALS = (
    "BmsPackValues.PackCurrent_A",
    "BmsPackValues.PackVoltage_V",
    "BmsState.BmsState",
    "BmsLimits.MaxChargeCurrent_A",
    "BmsLimits.MaxDischargeCurrent_A",
    "BmsSoc.SocMin_pct",
    "BmsSoc.SocAvg_pct",
    "BmsSoc.SocMax_pct",
    "BmsSoc.SocSigma_pct",
    "BmsCellStats.MinCellVoltage_V",
    "BmsCellStats.MaxCellVoltage_V",
    "BmsTempStats.MinTemp_C",
    "BmsTempStats.MaxTemp_C",
    "BmsPressureStats.MinPressure_MPa",
    "BmsPressureStats.MaxPressure_MPa",
)
FIXED_TRUTH = (
    "soc_mean",
    "cell_voltage_min_v",
    "cell_voltage_max_v",
    "temp_max_c",
    "pressure_min_mpa",
    "current_a",
    "contactors_open",
)


def _truth_readers(system: System) -> dict[str, Callable[[], float]]:
    """Plant truth by name, read from the pack (the scenario layer may see both sides)."""
    pack = system.pack
    return {
        "soc_mean": lambda: float(pack.soc.mean()),
        "soc_min": lambda: float(pack.soc.min()),
        "soc_max": lambda: float(pack.soc.max()),
        "cell_voltage_max_v": lambda: float(pack.cell_voltage_v.max()),
        "cell_voltage_min_v": lambda: float(pack.cell_voltage_v.min()),
        "cell_voltage_spread_v": lambda: float(np.ptp(pack.cell_voltage_v)),
        "temp_max_c": lambda: float(pack.temp_c.max()),
        "temp_min_c": lambda: float(pack.temp_c.min()),
        "pressure_min_mpa": lambda: float(pack.pressure_mpa.min()),
        "pressure_max_mpa": lambda: float(pack.pressure_mpa.max()),
        "current_a": lambda: float(pack.current_a),
        "pack_voltage_v": lambda: float(pack.pack_voltage_v),
        "link_voltage_v": lambda: float(pack.link_voltage_v),
        "h2s_ppm": lambda: float(pack.h2s_ppm),
        "contactors_open": lambda: 0.0 if any(pack.contactors_closed[:2]) else 1.0,
        "time_s": lambda: float(system.time_s),
    }


class _TraceBuffer:
    """Preallocated rows of one trace (grown by doubling if a run outlives the estimate)."""

    def __init__(self, names: Sequence[str], rows: int) -> None:
        self.names = tuple(names)
        self.time_s = np.empty(max(rows, 16))
        self.data = np.empty((max(rows, 16), len(self.names)))
        self.n = 0

    def add(self, time_s: float, row: list[float]) -> None:
        if self.n == len(self.time_s):
            self.time_s = np.concatenate([self.time_s, np.empty_like(self.time_s)])
            self.data = np.concatenate([self.data, np.empty_like(self.data)])
        self.time_s[self.n] = time_s
        self.data[self.n] = row
        self.n += 1

    def trace(self) -> Trace:
        n = self.n
        return Trace(self.time_s[:n], {c: self.data[:n, k] for k, c in enumerate(self.names)})


class _Run:
    """The state of one run: segment cursor, fault timeline, latest values, traces."""

    def __init__(
        self, scenario: Scenario, system: System, recorder: Recorder | None, result: RunResult
    ) -> None:
        self.sc = scenario
        self.system = system
        self.recorder = recorder
        self.result = result
        #: A real-time bench system (frames read from its bus observer, not tapped at send).
        self.bench = hasattr(system, "observer")
        self.observers: list[tuple[Any, dict[int, Callable[..., None]], Callable[..., None]]] = []
        self.dt_s = scenario.dt_s
        self.catalog = SignalCatalog()
        self.truth = _truth_readers(system)
        # -- columns
        used: set[str] = set()
        for cond in scenario.conditions:
            used |= cond.columns()
        soc_cols = (
            (SOC_ERROR_MAX, SOC_ERROR_RMS)
            if any(e.kind == "soc_error" for e in scenario.expect)
            else ()
        )
        signals = list(FIXED_SIGNALS) + sorted(
            c for c in used if not c.startswith(TRUTH_PREFIX) and c not in FIXED_SIGNALS
        )
        truths = [truth_column(t) for t in FIXED_TRUTH] + sorted(
            c
            for c in used
            if c.startswith(TRUTH_PREFIX) and c[len(TRUTH_PREFIX) :] not in FIXED_TRUTH
        )
        self.names = tuple(signals + truths + list(soc_cols))
        self.now: dict[str, float] = {c: math.nan for c in self.names}
        self.truth_cols = [(c, self.truth[c[len(TRUTH_PREFIX) :]]) for c in truths]
        fast_cols: set[str] = set()
        for exp in scenario.expect:
            if exp.fast:
                fast_cols |= exp.columns()
        self.fast_names = tuple(sorted(fast_cols))
        self.fast_truth = [
            (c, self.truth[c[len(TRUTH_PREFIX) :]])
            for c in self.fast_names
            if c.startswith(TRUTH_PREFIX)
        ]
        est_rows = int(scenario.duration_s / SAMPLE_PERIOD_S) + 2
        self.slow = _TraceBuffer(self.names, est_rows)
        self.fast = (
            _TraceBuffer(self.fast_names, int(scenario.duration_s / self.dt_s) + 2)
            if self.fast_names
            else None
        )
        self.sample_every = max(1, round(SAMPLE_PERIOD_S / self.dt_s))
        # -- bus tap: which signals of which frame IDs feed which columns
        self.watch: dict[tuple[str, int], tuple[Any, list[tuple[int, str]]]] = {}
        for col in signals:
            message, signal = col.split(".")
            codec = self.catalog.codec(message)
            key = (self.catalog.bus_of(message), codec.frame_id)
            entry = self.watch.setdefault(key, (codec, []))
            entry[1].append((codec.index[signal], col))
        faults_codec = self.catalog.codec("BmsFaults")
        self.faults_key = ("vehicle", faults_codec.frame_id)
        self.faults_codec = faults_codec
        self.fault_idx = (faults_codec.index["FaultCode"], faults_codec.index["FaultTier"])
        self.facts = RunFacts(end_s=0.0)
        self._install_tap()
        # -- timeline state
        self.seg_index = -1
        self.segment: Segment | None = None
        self.seg_start_s = 0.0
        self.saved_charger: tuple[float, float] | None = None
        self.pending_at = sorted(
            (f for f in scenario.faults if f.at_s is not None), key=lambda f: (f.at_s, f.index)
        )
        self.pending_when = [f for f in scenario.faults if f.when is not None]
        self.active: list[tuple[float, FaultSpec, Any]] = []  # (end_s, spec, handle)
        self.stopped_steps: dict[str, Any] = {}
        self.env = {k: s for k, s in scenario.environment.items() if not s.constant}
        self._apply_environment(0.0, scenario.environment)

    # -- the bus tap ---------------------------------------------------------------------------
    def _install_tap(self) -> None:
        s = self.system
        if self.bench:
            self._install_observer()
            return
        endpoints = [
            (s.pack_node.bus, "pack"),
            (s.bms_node.pack.bus, "pack"),
            (s.bms_node.vehicle.bus, "vehicle"),
            (s.vcu.bus, "vehicle"),
            (s.charger.bus, "vehicle"),
        ]
        for bus, name in endpoints:
            bus.send = self._tapped(bus.send, name)  # type: ignore[method-assign]

    def _tapped(self, send: Callable[..., None], bus_name: str) -> Callable[..., None]:
        watch, now, recorder, result = self.watch, self.now, self.recorder, self.result
        faults_key = self.faults_key

        def tapped(msg: can.Message, timeout: float | None = None) -> None:
            send(msg, timeout)
            result.frames += 1
            if recorder is not None:
                recorder.on_frame(msg, bus_name)
            key = (bus_name, msg.arbitration_id)
            if key == faults_key:
                self._on_fault_frame(msg)
            entry = watch.get(key)
            if entry is None:
                return
            codec, pairs = entry
            if msg.dlc != codec.length:
                return  # a wrong-DLC frame: no receiver would decode it
            values = codec.decode(msg.data)
            for index, column in pairs:
                value = values[index]
                if value == value:  # NaN: a signal of another multiplexer group
                    now[column] = value

        return tapped

    def _install_observer(self) -> None:
        """Bench: read every frame on the bus through the system's observer view(s).

        One interface for both DBCs: the bus of a frame is the DBC that defines its ID (others
        are logged as pack-bus frames). Two interfaces: the observer's own bus.
        """
        s = self.system
        handlers = {name: self._tapped(_not_sent, name) for name in ("pack", "vehicle")}
        ids = {codec.frame_id: handlers[bus] for bus, codec in self.catalog.messages.values()}
        if s.observer_vehicle is None:
            self.observers = [(s.observer, ids, handlers["pack"])]
        else:
            self.observers = [
                (s.observer, {}, handlers["pack"]),
                (s.observer_vehicle, {}, handlers["vehicle"]),
            ]

    def observe(self) -> None:
        """Bench: hand every frame seen on the bus since the last call to the tap."""
        for view, by_id, default in self.observers:
            for msg in view.drain():
                by_id.get(msg.arbitration_id, default)(msg)

    def _on_fault_frame(self, msg: can.Message) -> None:
        if msg.dlc != self.faults_codec.length:
            return
        values = self.faults_codec.decode(msg.data)
        code_i, tier_i = self.fault_idx
        try:
            code = FaultCode(int(values[code_i])).name
            tier = Tier(int(values[tier_i])).name
        except ValueError:
            return
        if code == "NONE":
            return
        seen = self.facts.codes_seen
        if code not in seen:
            seen[code] = (tier, float(msg.timestamp))
        elif Tier[tier] > Tier[seen[code][0]]:
            seen[code] = (tier, seen[code][1])

    # -- helpers -------------------------------------------------------------------------------
    def _refresh(self, readers: list[tuple[str, Callable[[], float]]]) -> None:
        now = self.now
        for column, read in readers:
            now[column] = read()

    def _holds(self, cond: Condition) -> bool:
        truths = [c for c in cond.columns() if c.startswith(TRUTH_PREFIX)]
        now = self.now
        for c in truths:
            now[c] = self.truth[c[len(TRUTH_PREFIX) :]]()
        return cond.holds(now)

    def _apply_environment(self, now_s: float, schedules: dict) -> None:
        pack = self.system.pack
        for key, sched in schedules.items():
            value = sched.at(now_s)
            if key == "ambient_c":
                pack.ambient_temp_c = value
            elif key == "coolant_c":
                pack.coolant_temp_c = value
            else:
                pack.coolant_flow_lpm = value

    def _sample(self, now_s: float) -> None:
        self._refresh(self.truth_cols)
        now = self.now
        if SOC_ERROR_MAX in now:
            filt = self.system.bms.soc_filter
            if filt is not None:
                truth = self.system.pack.soc.mean(axis=1)
                err = np.abs(filt.soc - truth)
                now[SOC_ERROR_MAX] = float(err.max())
                now[SOC_ERROR_RMS] = float(np.sqrt(np.mean(err * err)))
        row = [now[c] for c in self.names]
        self.slow.add(now_s, row)
        if self.recorder is not None:
            self.recorder.on_sample(now_s, self.names, np.asarray(row))

    def _sample_fast(self, now_s: float) -> None:
        self._refresh(self.fast_truth)
        now = self.now
        self.fast.add(now_s, [now[c] for c in self.fast_names])  # type: ignore[union-attr]

    # -- segments ------------------------------------------------------------------------------
    def _start_segment(self, now_s: float) -> None:
        system = self.system
        self.seg_index += 1
        self.segment = seg = (
            self.sc.stimulus[self.seg_index] if self.seg_index < len(self.sc.stimulus) else None
        )
        self.seg_start_s = now_s
        system.requested_power_w = 0.0
        if seg is None:
            return
        if seg.kind == "request":
            system.request(seg.mode, seg.clear_faults)
        elif seg.kind == "charge":
            charger = system.charger
            self.saved_charger = (charger.rated_current_a, charger.rated_voltage_v)
            charger.rated_current_a = min(seg.charge_current_a, charger.rated_current_a)
            charger.rated_voltage_v = min(seg.charge_voltage_v, charger.rated_voltage_v)
            system.request("charge")

    def _end_segment(self) -> None:
        seg = self.segment
        if seg is not None and seg.kind == "charge" and self.saved_charger is not None:
            charger = self.system.charger
            charger.rated_current_a, charger.rated_voltage_v = self.saved_charger
            self.saved_charger = None
            self.system.request("standby")  # the plug is pulled
        self.system.requested_power_w = 0.0

    def _segment_done(self, now_s: float) -> bool:
        """Whether the current segment ends now; a wait_for timeout raises _WaitTimeout."""
        seg = self.segment
        if seg is None:
            return False
        elapsed = now_s - self.seg_start_s
        if seg.kind == "wait_for":
            if self._holds(seg.wait):  # type: ignore[arg-type]
                return True
            if seg.timeout_s is not None and elapsed >= seg.timeout_s - _EPS_S:
                raise _WaitTimeout(
                    f"{seg.label}: {seg.wait.describe()} not met within "  # type: ignore[union-attr]
                    f"{format_duration(seg.timeout_s)} (at {now_s:.2f} s)"
                )
            return False
        if elapsed >= seg.length_s - _EPS_S:
            return True
        return seg.until is not None and self._holds(seg.until)

    def _set_inputs(self, now_s: float) -> None:
        seg = self.segment
        if seg is None or seg.series is None:
            return
        value = seg.series.at(now_s - self.seg_start_s)
        if seg.kind == "current":
            value *= self.system.pack.link_voltage_v  # the inverter draws it as power
        self.system.requested_power_w = value

    # -- faults --------------------------------------------------------------------------------
    def _fault_on(self, spec: FaultSpec, now_s: float) -> None:
        system = self.system
        handle: Any = None
        if spec.target == "pack":
            handle = make_fault(spec.kind, **spec.params)
            handle.apply(system.pack)
        elif spec.target == "can":
            handle = self._can_node(spec)
            handle.inject(spec.message, spec.kind, **spec.params)
        elif spec.target == "charger":
            system.charger.set_ignore_limits(spec.params["current_a"])
        else:
            self._stop_node(spec.node)
        end = now_s + spec.duration_s if spec.duration_s is not None else math.inf
        self.active.append((end, spec, handle))
        self.facts.fault_start_s.setdefault(spec.index, now_s)
        self.result.fault_events.append((now_s, f"on {spec.describe()}"))

    def _fault_off(self, spec: FaultSpec, handle: Any, now_s: float) -> None:
        if spec.target == "pack":
            handle.remove(self.system.pack)
        elif spec.target == "can":
            handle.clear(spec.message, spec.kind)
        elif spec.target == "charger":
            self.system.charger.set_ignore_limits(None)
        else:
            self._resume_node(spec.node)
        self.result.fault_events.append((now_s, f"off {spec.describe()}"))

    def _can_node(self, spec: FaultSpec) -> Any:
        s = self.system
        if spec.node == "bms":
            return s.bms_node.pack if spec.bus == "pack" else s.bms_node.vehicle
        return {"pack": s.pack_node, "vcu": s.vcu, "charger": s.charger}[spec.node]

    def _node_parts(self, node: str) -> tuple[Any, list[Any]]:
        s = self.system
        if node == "bms":
            return s.bms_node, [s.bms_node.pack, s.bms_node.vehicle]
        target = {"pack": s.pack_node, "vcu": s.vcu, "charger": s.charger}[node]
        return target, [target]

    def _stop_node(self, node: str) -> None:
        if node in self.stopped_steps:
            return
        if self.bench:  # the bench system owns its step list and its between-tick senders
            self.system.stop_node(node)
            self.stopped_steps[node] = node
            return
        target, endpoints = self._node_parts(node)

        def stopped(now_s: float, *args: Any, **kwargs: Any) -> None:
            for ep in endpoints:  # a dead node reads nothing: what reaches it is lost
                _drain(ep.bus)

        target.step = stopped
        self.stopped_steps[node] = stopped

    def _resume_node(self, node: str) -> None:
        if self.bench:
            if self.stopped_steps.pop(node, None) is not None:
                self.system.resume_node(node)
            return
        target, endpoints = self._node_parts(node)
        if self.stopped_steps.pop(node, None) is not None:
            del target.step  # back to the class's step
            for ep in endpoints:
                _drain(ep.bus)

    def _faults_step(self, now_s: float) -> None:
        if self.active:
            ending = [a for a in self.active if a[0] <= now_s + _EPS_S]
            if ending:
                self.active = [a for a in self.active if a[0] > now_s + _EPS_S]
                for _, spec, handle in ending:
                    self._fault_off(spec, handle, now_s)
        while self.pending_at and self.pending_at[0].at_s <= now_s + _EPS_S:  # type: ignore[operator]
            self._fault_on(self.pending_at.pop(0), now_s)
        if self.pending_when:
            fired = [f for f in self.pending_when if self._holds(f.when)]  # type: ignore[arg-type]
            for spec in fired:
                self.pending_when.remove(spec)
                self._fault_on(spec, now_s)

    # -- the loop ------------------------------------------------------------------------------
    def execute(self, stop_check: Callable[[], bool] | None) -> None:
        system = self.system
        dt = self.dt_s
        end_s = self.sc.duration_s
        stop_when = self.sc.stop_when
        ticks = 0
        stop_every = max(1, round(STOP_CHECK_PERIOD_S / dt))
        sample_every = self.sample_every
        # Bench: ticks are the loop's deadline index (skipped deadlines count), so the trace and
        # the stop polls stay on their time grid; the sampling tests below are the simulated
        # path's ``ticks % n == 0`` when ticks advance by one.
        loop = getattr(system, "loop", None) if self.bench else None
        sampled = stopped = sampled_at = 0
        observe = self.observe if self.bench else None
        if self.bench:
            system.restart()  # set-up above took a while: time zero is now
        now_s = system.time_s
        self._faults_step(now_s)
        self._start_segment(now_s)
        while self._segment_done(now_s):
            self._end_segment()
            self._start_segment(now_s)
        self._sample(now_s)
        if self.fast is not None:
            self._sample_fast(now_s)
        env = self.env
        while now_s < end_s - _EPS_S:
            if env:
                self._apply_environment(now_s, env)
            self._set_inputs(now_s)
            system.step()
            ticks = ticks + 1 if loop is None else loop.k
            now_s = system.time_s
            if observe is not None:
                observe()
            self._faults_step(now_s)
            while self._segment_done(now_s):
                self._end_segment()
                self._start_segment(now_s)
            if self.fast is not None:
                self._sample_fast(now_s)
            if ticks // sample_every != sampled:
                sampled, sampled_at = ticks // sample_every, ticks
                self._sample(now_s)
            if stop_when is not None and self._holds(stop_when):
                self.result.fault_events.append((now_s, f"stop_when: {stop_when.describe()}"))
                break
            if stop_check is not None and ticks // stop_every != stopped:
                stopped = ticks // stop_every
                if stop_check():
                    raise _Stopped(f"stopped at {now_s:.2f} s")
        if sampled_at != ticks:
            self._sample(now_s)  # the last instant is always in the trace

    def judge(self) -> None:
        self.facts.end_s = self.system.time_s
        slow = self.slow.trace()
        fast = self.fast.trace() if self.fast is not None else None
        for exp in self.sc.expect:
            trace = fast if exp.fast and fast is not None else slow
            self.result.expectations.append(evaluate(exp, trace, self.facts))


class _WaitTimeout(Exception):
    """A ``wait_for`` segment timed out: the rest of the stimulus would not make sense."""


class _Stopped(Exception):
    """``stop_check`` asked the run to end (e.g. the CLI caught SIGTERM)."""


def _drain(bus: can.BusABC) -> None:
    while bus.recv(0.0) is not None:
        pass


def _not_sent(msg: can.Message, timeout: float | None = None) -> None:
    """The bench tap's ``send``: observed frames are already on the bus."""


@dataclass
class RealtimeRunResult(RunResult):
    """A real-time run's result: the :class:`RunResult` plus the loop's timing report.

    ``timing``: :meth:`bms.bench.realtime.TimingReport.as_dict` (seconds and counts: frame
    lateness p50/p99/max, missed slots, tick lateness, overruns, skipped ticks); ``budget``: the
    scenario's jitter budget it was judged against.
    """

    timing: dict[str, float | int] = field(default_factory=dict)
    budget: dict[str, float | int | None] = field(default_factory=dict)
    dut: str = "internal"


#: Builds the closed loop from the scenario's configuration (default: the simulated System).
SystemFactory = Callable[[SystemConfig], Any]


def run_scenario(
    scenario: Scenario,
    recorder: Recorder | None = None,
    *,
    stop_check: Callable[[], bool] | None = None,
    system_factory: SystemFactory | None = None,
) -> RunResult:
    """Run ``scenario`` to its end, its ``stop_when`` or a failure, and judge its expectations.

    Every frame and trace row reaches ``recorder`` as it happens; the recorder is closed on every
    path. ``stop_check`` is polled every 100 ms of simulated time; True ends the run as failed.
    KeyboardInterrupt and SystemExit propagate (after the recorder is closed); any other error
    becomes ``RunResult.error`` and a failed run.

    ``system_factory(config)`` builds the closed loop (a context manager with the
    :class:`~bms.sim.system.System` driver API); default the simulated System. A real-time
    :class:`~bms.bench.realtime.BenchSystem` makes the result a :class:`RealtimeRunResult` whose
    ``jitter budget`` entry fails when the scenario's ``realtime:`` budget is exceeded.
    """
    sc = scenario
    result: RunResult = RunResult(name=sc.name, source=sc.source, seed=sc.pack.seed)
    wall0 = time.perf_counter()  # reporting only: the run itself never reads a clock
    run: _Run | None = None
    try:
        config = SystemConfig(
            pack=sc.pack.file,
            bms=sc.pack.bms,
            seed=sc.pack.seed,
            initial=sc.pack.initial,
            dt_s=sc.dt_s,
            stored_soc=sc.pack.stored_soc,
            charger_rated_current_a=sc.charger_rated_current_a,
        )
        with (system_factory or System)(config) as system:
            if hasattr(system, "timing_report"):
                result = RealtimeRunResult(
                    name=sc.name,
                    source=sc.source,
                    seed=sc.pack.seed,
                    budget=asdict(sc.realtime),
                    dut="internal" if getattr(system, "bms", None) is not None else "external",
                )
            if getattr(system, "bms", True) is None:  # external DUT: only its frames are known
                problems = external_dut_problems(sc)
                if problems:
                    raise InputError(problems[0])
            _use_vehicle(system, sc)
            run = _Run(sc, system, recorder, result)
            try:
                run.execute(stop_check)
            except (_WaitTimeout, _Stopped) as exc:
                result.error = str(exc)
            result.sim_s = system.time_s
            run.judge()
            if isinstance(result, RealtimeRunResult):
                _judge_timing(result, system.timing_report(), sc)
    except InputError as exc:
        result.error = str(exc)
    except (KeyboardInterrupt, SystemExit):
        result.error = "interrupted"
        raise
    except Exception as exc:  # a crash is a failed run with a one-line reason, not a traceback
        result.error = f"{type(exc).__name__}: {exc}"
        if run is not None:
            result.sim_s = run.system.time_s
    finally:
        result.wall_s = time.perf_counter() - wall0
        result.passed = result.error is None and all(e.passed for e in result.expectations)
        if recorder is not None:
            recorder.close()
    return result


def _judge_timing(result: RealtimeRunResult, report: Any, sc: Scenario) -> None:
    """Attach the timing report and judge it against the scenario's jitter budget."""
    result.timing = report.as_dict()
    problems = report.violations(sc.realtime)
    detail = "; ".join(problems) if problems else f"within budget: {report.summary()}"
    result.expectations.append(ExpectationResult(JITTER_BUDGET, not problems, detail))


def external_dut_problems(scenario: Scenario) -> list[str]:
    """Why ``scenario`` cannot run against an external BMS: one located line per entry.

    Such a BMS is only known by its frames, so entries that need the emulated BMS's internals
    are refused: ``soc_error`` (the per-cell estimate; judge ``BmsSoc.*`` signals instead),
    ``node: bms`` and ``can:`` faults on BMS-sent messages, and ``pack.stored_soc``.
    """
    found: list[tuple[tuple[str | int, ...], str]] = []
    if scenario.pack.stored_soc is not None:
        found.append(
            (("pack", "stored_soc"), "sets the emulated BMS's memory; set it on the device")
        )
    for spec in scenario.faults:
        if spec.node != "bms":
            continue
        if spec.target == "node":
            found.append((("faults", spec.index, "node"), "cannot stop an external BMS"))
        elif spec.target == "can":
            found.append(
                (
                    ("faults", spec.index, "can"),
                    f"{spec.message} is sent by the external BMS; its frames cannot be faulted",
                )
            )
    for exp in scenario.expect:
        if exp.kind == "soc_error":
            found.append(
                (
                    ("expect", exp.index, "soc_error"),
                    "needs the emulated BMS's per-cell SOC estimate; judge BmsSoc signals instead",
                )
            )
    if not found:
        return []
    try:
        doc: Any = load_yaml(scenario.source)
    except (InputError, OSError):
        doc = None  # located lines are a courtesy: the file was already validated
    out = []
    for path, problem in found:
        line = doc.line(path) if doc is not None else None
        field_path = ".".join(str(p) for p in path if isinstance(p, str))
        if len(path) == 3:
            field_path = f"{path[0]}[{path[1]}].{path[2]}"
        out.append(str(located(scenario.source, line, field_path, f"{problem} (--dut external)")))
    return out


def _use_vehicle(system: System, sc: Scenario) -> None:
    """The scenario's vehicle (it may be an inline mapping rather than a file System can load)."""
    system.vehicle = sc.vehicle
    system.vcu.params = sc.vehicle.vcu
    system.charger.params = sc.vehicle.charger


__all__ = [
    "FIXED_SIGNALS",
    "FIXED_TRUTH",
    "JITTER_BUDGET",
    "InitialState",
    "RealtimeRunResult",
    "SystemFactory",
    "external_dut_problems",
    "run_scenario",
]
