"""The BMS firmware core: periodic tasks over one store of timestamped, decoded measurements.

The CAN side (:mod:`bms.firmware.node`) puts decoded signals into the store with their receive
time through the ``on_*`` writers and turns :attr:`Bms.out` into frames. Two tasks do the work:

* :meth:`Bms.task_10ms`: protection ladder (fast quantities every tick, the 100 ms quantities when
  fresh samples arrived), state machine, contactor commands, emergency shutoff.
* :meth:`Bms.task_100ms`: plausibility and substitution, SOC filter and pack SOC/SOE, current
  limits, balancing, soft-short and GB 38031 detectors, fault memory with freeze frames.

Nothing here reads a clock or touches a bus; positive current discharges the pack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from bms.cellmodel import ecm
from bms.errors import InputError
from bms.firmware.balancing import (
    BalancingState,
    balancing_allowed,
    balancing_step,
    load_balancing_params,
)
from bms.firmware.codes import BmsState, FaultCode, RequestMode, Tier
from bms.firmware.config import BmsConfig
from bms.firmware.detectors import balancing_demand_ah_day, balancing_effort_flags
from bms.firmware.faultmemory import FaultMemory, FaultRecord
from bms.firmware.limits import CurrentLimits, LimitRamp, current_limits, load_limit_params
from bms.firmware.protection import (
    ProtectionContext,
    ProtectionEngine,
    ProtectionResult,
    extractor_for,
    load_ladder,
)
from bms.firmware.soc import PackSoc, SocFilter, load_estimation_params, pack_soc
from bms.firmware.statemachine import SmInputs, SmOutputs, StateMachine, load_statemachine_config

SECONDS_PER_DAY = 86400.0

# Quantities computed from the 10 ms sources (current, timing, flags): refreshed every tick.
# All others depend on 100 ms sources or plausibility results, or are costly and tolerate 100 ms
# of latency against their own debounce (10 s current mean, CCD ratio with 2 s set time, pack
# staleness with 1 s): refreshed on ticks where a SLOW_SOURCES sample arrived and at least once
# per 100 ms task, so a silent pack still ages into a timeout.
FAST_QUANTITY_PREFIXES = (
    "current_",
    "charge_current",
    "discharge_current",
    "abs_current",
    "rest_time",
    "vehicle_request",
    "charger_stale",
    "e2e_failure",
    "thermal_runaway",
    "soft_short",
)
SLOW_QUANTITY_MARKS = ("_mean_", "_over_ccd_")
SLOW_SOURCES = ("cell_voltage_v", "cell_temp_c", "pressure_mpa", "h2s_ppm")

# E2E violation kinds that reject a frame (a skipped counter only means frames were lost: the
# frame itself is used and staleness/timing checks judge the loss).
REJECTING_E2E_KINDS = frozenset({"crc", "wrong_dlc", "counter_repeated", "counter_frozen"})

# Pack-bus E2E messages -> store sources whose frame was rejected.
PACK_E2E_SOURCES: dict[str, tuple[str, ...]] = {
    "PackCurrent": ("current_a",),
    "PackVoltages": ("pack_voltage_v", "link_voltage_v"),
    "ContactorFeedback": ("contactor_feedback",),
}

# Which measurement locates each fault code (BmsFaults.FaultLocation, 1-based; 0 = pack level).
_LOCATE_CELL_MAX = {FaultCode.CELL_OVERVOLTAGE}
_LOCATE_CELL_MIN = {FaultCode.CELL_UNDERVOLTAGE, FaultCode.DEEP_DISCHARGE}
_LOCATE_TEMP_MAX = {FaultCode.OVERTEMP_CHARGE, FaultCode.OVERTEMP_DISCHARGE}
_LOCATE_TEMP_MIN = {FaultCode.UNDERTEMP_CHARGE, FaultCode.UNDERTEMP_DISCHARGE}
_LOCATE_CELLS = _LOCATE_CELL_MAX | _LOCATE_CELL_MIN | {FaultCode.SOFT_SHORT, FaultCode.OPEN_WIRE}


@dataclass
class FaultEntry:
    """One active fault as reported in BmsFaults."""

    code: FaultCode
    tier: Tier
    location: int  # 1-based cell / sensor / module, 0 = pack level


@dataclass
class BmsOutputs:
    """Everything the node sends, refreshed by the tasks (read-only for the node)."""

    state: BmsState = BmsState.INIT
    state_changed: bool = False
    close_plus: bool = False
    close_minus: bool = False
    close_precharge: bool = False
    plus_closed: bool = False  # contactor feedback as received
    minus_closed: bool = False
    precharge_closed: bool = False
    emergency_shutoff: bool = False
    precharge_attempts: int = 0
    fault_info: bool = False
    fault_warning: bool = False
    fault_fatal: bool = False
    thermal_alarm: bool = False
    charge_inhibit: bool = False
    balancing_active: bool = False
    charge_limit_a: float = 0.0
    discharge_limit_a: float = 0.0
    max_charge_voltage_v: float = 0.0
    min_discharge_voltage_v: float = 0.0
    charger_max_voltage_v: float = 0.0
    charger_max_current_a: float = 0.0  # charger convention: positive INTO the pack
    charge_enable: bool = False
    soc: PackSoc | None = None
    cell_v_min: float = float("nan")
    cell_v_max: float = float("nan")
    cell_v_avg: float = float("nan")
    cell_v_min_index: int = 0  # 1-based, 0 = unknown
    cell_v_max_index: int = 0
    temp_min_c: float = float("nan")
    temp_max_c: float = float("nan")
    temp_avg_c: float = float("nan")
    temp_min_sensor: int = 0
    temp_max_sensor: int = 0
    pressure_min_mpa: float = float("nan")
    pressure_max_mpa: float = float("nan")
    pressure_median_mpa: float = float("nan")
    pressure_min_module: int = 0
    pressure_max_module: int = 0
    current_a: float = float("nan")
    pack_voltage_v: float = float("nan")
    link_voltage_v: float = float("nan")
    power_kw: float = float("nan")
    balancing: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    faults: list[FaultEntry] = field(default_factory=list)


def _index_of(values: np.ndarray, ok: np.ndarray, largest: bool) -> int:
    """0-based index of the largest/smallest ``ok`` value, -1 if none is ok."""
    if not ok.any():
        return -1
    fill = -np.inf if largest else np.inf
    masked = np.where(ok, values, fill)
    return int(np.argmax(masked) if largest else np.argmin(masked))


class Bms:
    """The BMS model: store writers, the 10 ms and 100 ms tasks, and :attr:`out` for the node."""

    def __init__(
        self,
        config: BmsConfig,
        *,
        stored_soc: float | np.ndarray | None = None,
        stored_soc_sigma: float | np.ndarray | None = None,
    ) -> None:
        self.config = config
        n, m = config.series, config.modules
        self.n_cells, self.n_modules = n, m
        self.n_temps = config.n_temp_sensors
        self.cell = config.group_cell()
        self.ladder = load_ladder(config.protection)
        self.ctx = ProtectionContext.build(self.ladder, n, self.n_temps, m, self.cell)
        self.store = self.ctx.store
        self.engine = ProtectionEngine(self.ladder)
        self.limit_params = load_limit_params(config.limits)
        # The board layout is the BMS's own: one bleed board per module of this pack.
        self.balancing_params = replace(
            load_balancing_params(config.limits), cells_per_module=config.series_per_module
        )
        self.estimation = load_estimation_params(config.estimation)
        self.sm = StateMachine(load_statemachine_config(config.statemachine))
        self.faults = FaultMemory()
        self.soc_filter: SocFilter | None = None
        self.stored_soc = stored_soc
        self.stored_soc_sigma = stored_soc_sigma
        self.ramp = LimitRamp()
        self.balancing = BalancingState.new(n, self.balancing_params)
        self.out = BmsOutputs(balancing=np.zeros(n, dtype=bool))
        self.out.max_charge_voltage_v = n * self.limit_params.chg_voltage_max_v
        self.out.min_discharge_voltage_v = n * self.limit_params.dis_voltage_min_v
        self.limits: CurrentLimits | None = None
        self._cold = True  # no temperature yet: charging is not allowed
        self.pack_status: dict[str, float] = {}
        self.charger: dict[str, float] = {}
        self.vehicle_e2e_failed = False  # newest VehicleRequest frame was rejected
        self.e2e_violations = 0
        self.freeze_queue: list[FaultRecord] = []  # new WARNING/FATAL records to send once
        self._freeze_sent: set[FaultCode] = set()
        self._event_faults: dict[FaultCode, Tier] = {}  # state-machine events since last update
        self._sm_faults: frozenset[FaultCode] = frozenset()
        self._start_s: float | None = None
        self._last_slow_s: float | None = None
        self._current_sum_a = 0.0
        self._current_count = 0
        self._sm_out: SmOutputs | None = None
        self._result: ProtectionResult | None = None
        self._afe_open_wire = np.zeros(n, dtype=bool)
        self._build_maps()
        self._build_quantity_split()

    # -- construction helpers ---------------------------------------------------------------
    def _build_maps(self) -> None:
        """Per-cell temperature by linear interpolation between the module's sensors (flat
        beyond the outer sensors) and per-cell pressure from the cell's module."""
        cfg = self.config
        spm = cfg.series_per_module
        sensor_pos = cfg.temp_sensor_position().reshape(cfg.modules, -1)
        per_module = sensor_pos.shape[1]
        lo = np.zeros(self.n_cells, dtype=np.intp)
        hi = np.zeros(self.n_cells, dtype=np.intp)
        weight = np.zeros(self.n_cells)
        for module in range(cfg.modules):  # setup only, once per module
            pos = sensor_pos[module].astype(float)
            cells = np.arange(module * spm, (module + 1) * spm)
            k = np.clip(np.searchsorted(pos, cells, side="right") - 1, 0, per_module - 1)
            k_hi = np.minimum(k + 1, per_module - 1)
            span = pos[k_hi] - pos[k]
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(span > 0, (cells - pos[k]) / span, 0.0)
            lo[cells] = module * per_module + k
            hi[cells] = module * per_module + k_hi
            weight[cells] = np.clip(w, 0.0, 1.0)
        self._t_lo, self._t_hi, self._t_w = lo, hi, weight
        self._t_nearest = np.where(weight < 0.5, lo, hi)
        self._cell_module = np.repeat(np.arange(cfg.modules), spm)
        self.cell_temp_c = np.full(self.n_cells, np.nan)
        self.cell_pressure_mpa = np.full(self.n_cells, np.nan)
        self._stale_cells = np.zeros(self.n_cells, dtype=bool)
        self._cell_ok = np.zeros(self.n_cells, dtype=bool)
        self.cell_voltage_v = np.full(self.n_cells, np.nan)

    def _build_quantity_split(self) -> None:
        names = self.engine.quantity_names
        fast = [
            i
            for i, q in enumerate(names)
            if q.startswith(FAST_QUANTITY_PREFIXES) and not any(m in q for m in SLOW_QUANTITY_MARKS)
        ]
        slow = [i for i in range(len(names)) if i not in fast]
        self._fast_q = [(i, extractor_for(names[i])) for i in fast]
        self._slow_q = [(i, extractor_for(names[i])) for i in slow]
        self._slow_sources = [self.store[s] for s in SLOW_SOURCES if s in self.store]
        self._slow_seq = -1

    # -- writers (the node calls these with decoded values and the receive time) --------------
    def on_cell_voltages(
        self,
        time_s: float,
        first_cell: int,
        values_v: Sequence[float],
        afe_fault: bool = False,
        open_wire_mask: int = 0,
    ) -> None:
        """One group of cell voltages from ``first_cell`` (0-based); groups beyond the pack are
        ignored. An AFE fault invalidates the group; open-wire bits flag single channels."""
        count = min(len(values_v), self.n_cells - first_cell)
        if count <= 0:
            return
        src = self.store["cell_voltage_v"]
        if afe_fault:
            src.invalidate(time_s, first_cell, count)
            return
        src.write(time_s, values_v[:count], first_cell)
        # Keep the value (the plausibility pattern check needs it) but remember the AFE's flag.
        flags = self._afe_open_wire[first_cell : first_cell + count]
        if open_wire_mask:
            for bit in range(count):  # at most 4 bits per frame
                flags[bit] = bool(open_wire_mask >> bit & 1)
        else:
            flags[:] = False  # the usual case: one slice store instead of one per bit

    def on_temperatures(
        self, time_s: float, first_sensor: int, values_c: Sequence[float], invalid_mask: int = 0
    ) -> None:
        """One group of temperature sensors; flagged sensors are stored invalid (NaN)."""
        self._write_group("cell_temp_c", self.n_temps, time_s, first_sensor, values_c, invalid_mask)

    def on_pressures(
        self, time_s: float, first_module: int, values_mpa: Sequence[float], invalid_mask: int = 0
    ) -> None:
        """One group of module pressures; flagged sensors are stored invalid (NaN)."""
        self._write_group(
            "pressure_mpa", self.n_modules, time_s, first_module, values_mpa, invalid_mask
        )

    def _write_group(
        self,
        source: str,
        size: int,
        time_s: float,
        first: int,
        values: Sequence[float],
        invalid_mask: int,
    ) -> None:
        count = min(len(values), size - first)
        if count <= 0:
            return
        if invalid_mask:
            values = [float("nan") if invalid_mask >> k & 1 else values[k] for k in range(count)]
        self.store[source].write(time_s, values[:count], first)

    def on_current(self, time_s: float, current_a: float, valid: bool = True) -> None:
        """Pack current sample (positive = discharge); an invalid sample is stored as NaN."""
        self.store["current_a"].write(time_s, current_a if valid else float("nan"))

    def on_voltages(
        self,
        time_s: float,
        pack_voltage_v: float,
        link_voltage_v: float,
        pack_valid: bool = True,
        link_valid: bool = True,
    ) -> None:
        """Pack-side and DC-link-side voltages of the contactors."""
        nan = float("nan")
        self.store["pack_voltage_v"].write(time_s, pack_voltage_v if pack_valid else nan)
        self.store["link_voltage_v"].write(time_s, link_voltage_v if link_valid else nan)

    def on_contactor_feedback(
        self, time_s: float, plus_closed: bool, minus_closed: bool, precharge_closed: bool
    ) -> None:
        """Auxiliary-contact feedback (True = closed)."""
        self.store["contactor_feedback"].write(
            time_s, (float(plus_closed), float(minus_closed), float(precharge_closed))
        )

    def on_gas(self, time_s: float, h2s_ppm: float, valid: bool = True) -> None:
        """H2S concentration in the enclosure."""
        self.store["h2s_ppm"].write(time_s, h2s_ppm if valid else float("nan"))

    def on_pack_status(self, time_s: float, status: dict[str, float]) -> None:
        """PackStatus heartbeat (counts and sensor-fault summary), kept for reports."""
        self.pack_status = dict(status, time_s=time_s)

    def on_vehicle_request(self, time_s: float, mode: int, clear_faults: bool = False) -> None:
        """A VehicleRequest that passed its E2E check."""
        self.vehicle_e2e_failed = False
        self.store["vehicle_request"].write(time_s, float(mode))
        self.sm.on_request_frame(time_s, mode, clear_faults)

    def on_charger_status(
        self,
        time_s: float,
        output_voltage_v: float,
        output_current_into_pack_a: float,
        state: int,
        fault: bool = False,
    ) -> None:
        """ChargerStatus; the charger's current is positive INTO the pack (kept as such)."""
        self.store["charger_status"].write(time_s, (output_current_into_pack_a, float(state)))
        self.charger = {
            "output_voltage_v": output_voltage_v,
            "output_current_into_pack_a": output_current_into_pack_a,
            "state": float(state),
            "fault": float(fault),
            "time_s": time_s,
        }

    def on_e2e_violation(self, time_s: float, message: str, kind: str) -> None:
        """An E2E violation reported by a receiver (``kind`` = :class:`E2EKind` value).

        A rejected VehicleRequest sets the state machine's ``e2e_failed`` level until the next
        good frame; a rejected pack-bus frame feeds the protection ladder's E2E_FAILURE row.
        Timeouts and skipped counters are left to the staleness and timing checks.
        """
        if kind not in REJECTING_E2E_KINDS:
            return
        self.e2e_violations += 1
        if message == "VehicleRequest":
            self.vehicle_e2e_failed = True
            return
        for source in PACK_E2E_SOURCES.get(message, ()):
            self.store[source].note_e2e_failure(time_s)

    # -- tasks --------------------------------------------------------------------------------
    def task_10ms(self, now_s: float) -> BmsOutputs:
        """Protection ladder, state machine, contactor commands and emergency shutoff."""
        if self._start_s is None:
            self._start_s = now_s
        store = self.store
        current_a = store["current_a"].scalar()
        if current_a == current_a:  # not NaN: averaged for the SOC filter's coulomb count
            self._current_sum_a += current_a
            self._current_count += 1

        # Protection: every tick for the 10 ms quantities, the rest on fresh slow samples.
        ctx, engine = self.ctx, self.engine
        ctx.update(now_s)
        values, samples = engine.values, engine.samples
        seq = 0
        for src in self._slow_sources:
            seq += src.seq
        if seq != self._slow_seq:
            self._slow_seq = seq
            for i, fn in self._slow_q:
                values[i], samples[i] = fn(ctx, now_s)
        for i, fn in self._fast_q:
            values[i], samples[i] = fn(ctx, now_s)
        result = engine.evaluate(now_s)
        self._result = result

        # State machine on plain inputs.
        # NaN (never received) reads as open; Python floats: cheaper than numpy scalar compares.
        fb_plus, fb_minus, fb_pre = store["contactor_feedback"].value.tolist()
        plus_closed, minus_closed, pre_closed = fb_plus > 0.5, fb_minus > 0.5, fb_pre > 0.5
        limits = self.limits
        # Charging is refused only where it is unsafe to stay connected (pressure floor, frost);
        # a full pack merely reports a zero limit and ChargeEnable = 0 to the charger.
        charge_allowed = not (limits is not None and limits.open_contactors) and not self._cold
        sm_out = self.sm.step(
            SmInputs(
                now_s=now_s,
                pack_current_a=current_a,
                pack_voltage_v=store["pack_voltage_v"].scalar(),
                link_voltage_v=store["link_voltage_v"].scalar(),
                plus_closed=plus_closed,
                minus_closed=minus_closed,
                precharge_closed=pre_closed,
                fatal_fault_active=result.emergency_shutoff,
                open_requested=result.open_contactors,
                e2e_failed=self.vehicle_e2e_failed,
                charge_allowed=charge_allowed,
            )
        )
        self._sm_out = sm_out
        for event in sm_out.events:
            if event.code is not FaultCode.NONE:
                tier = max(self._event_faults.get(event.code, Tier.NONE), event.tier)
                self._event_faults[event.code] = tier
        self._sm_faults = sm_out.active_faults

        out = self.out
        out.state_changed = sm_out.state_changed or out.state is not sm_out.state
        out.state = sm_out.state
        out.close_plus = sm_out.close_plus
        out.close_minus = sm_out.close_minus
        out.close_precharge = sm_out.close_precharge
        out.plus_closed = plus_closed
        out.minus_closed = minus_closed
        out.precharge_closed = pre_closed
        out.precharge_attempts = sm_out.precharge_attempt
        emergency = result.emergency_shutoff or sm_out.emergency_shutoff
        out.emergency_shutoff = emergency
        out.fault_fatal = result.worst_tier >= Tier.FATAL or bool(self._sm_faults)
        if result.worst_tier == Tier.NONE:  # no code active: skip the two array scans
            out.fault_warning = out.fault_info = False
        else:
            out.fault_warning = bool((result.code_tier == Tier.WARNING).any())
            out.fault_info = bool((result.code_tier == Tier.INFO).any())
        out.thermal_alarm = bool(ctx.runaway.confirmed)
        if emergency:
            # foxBMS: limits are 0 from the first tick of a fatal fault (pre-trip delay).
            out.charge_limit_a = out.discharge_limit_a = 0.0
            out.charger_max_current_a = 0.0
            out.charge_enable = False
        return out

    def task_100ms(self, now_s: float) -> BmsOutputs:
        """Plausibility, SOC/SOE, limits, balancing, detectors and fault memory."""
        dt_s = self.config.slow_task_s if self._last_slow_s is None else now_s - self._last_slow_s
        self._last_slow_s = now_s
        store, ctx = self.store, self.ctx
        plaus = ctx.plausibility
        plaus.check(store, now_s, ctx.inputs.pressure_model_mpa)
        # The AFE's own open-wire bits add to the pattern check: those channels are not cells.
        plaus.open_wire |= self._afe_open_wire
        plaus.cell_voltage_ok &= ~self._afe_open_wire

        cells = store["cell_voltage_v"]
        cells.stale_mask(now_s, self._stale_cells)
        np.logical_and(plaus.cell_voltage_ok, ~self._stale_cells, out=self._cell_ok)
        volt = self.cell_voltage_v
        np.copyto(volt, cells.value)
        volt[~self._cell_ok] = np.nan
        self._map_temperatures()
        press_src = store["pressure_mpa"]
        press = np.where(plaus.pressure_ok, press_src.value, np.nan)
        np.take(press, self._cell_module, out=self.cell_pressure_mpa)

        current_a = store["current_a"].scalar()
        mean_a = self._current_sum_a / self._current_count if self._current_count else float("nan")
        self._current_sum_a, self._current_count = 0.0, 0
        result = self._result
        fatal = bool(result is not None and result.emergency_shutoff) or self.out.emergency_shutoff

        # SOC: start once every cell has reported, then one filter step per task.
        cell_current_a = mean_a / self.config.parallel
        if self.soc_filter is None:
            self._init_soc(current_a)
        if self.soc_filter is not None:
            self.soc_filter.step(
                now_s, cell_current_a, volt, self.cell_temp_c, self.cell_pressure_mpa
            )
            temp_avg = np.nanmean(self.cell_temp_c) if np.isfinite(self.cell_temp_c).any() else 25
            self.out.soc = pack_soc(self.soc_filter.state, self.cell, self.estimation, temp_avg)
            soc = self.soc_filter.soc
        else:
            soc = np.full(self.n_cells, np.nan)  # unknown SOC: limits stay at zero

        self._limits_step(dt_s, soc, volt, fatal)
        self._balancing_step(now_s, dt_s, volt, soc)
        self._detectors_step(now_s, volt, current_a, soc)
        self._stats(volt, press, current_a)
        self._fault_memory_step(now_s)
        self._slow_seq = -1  # refresh the slow protection quantities at the next tick
        return self.out

    # -- 100 ms pieces ------------------------------------------------------------------------
    def _map_temperatures(self) -> None:
        """Per-cell temperature from the substituted sensor values; nearest sensor if one of
        the two interpolation points is unknown."""
        t = self.ctx.plausibility.cell_temp_c
        lo, hi = t[self._t_lo], t[self._t_hi]
        mapped = lo + self._t_w * (hi - lo)
        bad = ~np.isfinite(mapped)
        if bad.any():
            nearest = t[self._t_nearest]
            other = np.where(np.isfinite(lo), lo, hi)
            mapped = np.where(bad, np.where(np.isfinite(nearest), nearest, other), mapped)
        self.cell_temp_c[:] = mapped

    def _init_soc(self, current_a: float) -> None:
        cells = self.store["cell_voltage_v"]
        if not (self._cell_ok.all() and cells.valid.all() and np.isfinite(current_a)):
            return
        rest = abs(current_a) < self.estimation.rest_current_a
        cell_current = current_a / self.config.parallel
        if rest or self.stored_soc is None:
            # At rest the voltages are OCVs (tight start); under load from_ocv starts wide.
            self.soc_filter = SocFilter.from_ocv(
                self.cell,
                self.cell_voltage_v,
                self.cell_temp_c,
                current_a=cell_current,
                params=self.estimation,
            )
        else:
            self.soc_filter = SocFilter.from_stored(
                self.cell,
                self.stored_soc,
                self.stored_soc_sigma,
                n_cells=self.n_cells,
                params=self.estimation,
            )
        self.soc_init_at_rest = rest

    def _limits_step(self, dt_s: float, soc: np.ndarray, volt: np.ndarray, fatal: bool) -> None:
        target = current_limits(
            self.cell,
            self.limit_params,
            self.cell_temp_c,
            self.cell_pressure_mpa,
            soc,
            volt,
            fault_active=fatal,
        )
        if self.soc_filter is None:
            # Before the first SOC the limits are 0, but the ramp is not primed with that zero:
            # its first real target is adopted directly (wake-up), not ramped up at 0.05C/s.
            reported = replace(target, charge_a=0.0, discharge_a=0.0)
        else:
            reported = self.ramp.step(
                target, dt_s, self.limit_params, self.cell.capacity_ah, fault_active=fatal
            )
        self.limits = reported
        out = self.out
        out.charge_limit_a = reported.charge_a
        out.discharge_limit_a = reported.discharge_a
        temp_min = np.nanmin(self.cell_temp_c) if np.isfinite(self.cell_temp_c).any() else np.nan
        cold = not temp_min >= self.limit_params.chg_temp_min_c  # NaN: unknown counts as cold
        self._cold = cold
        out.charge_inhibit = bool(reported.fast_charge_inhibit or cold)
        self.ctx.inputs.charge_current_limit_a = target.charge_a
        out.charger_max_voltage_v = out.max_charge_voltage_v
        out.charge_enable = bool(
            out.state is BmsState.CHARGE and reported.charge_a > 0.0 and not out.emergency_shutoff
        )
        out.charger_max_current_a = reported.charge_a if out.charge_enable else 0.0
        if out.emergency_shutoff:
            out.charge_limit_a = out.discharge_limit_a = 0.0

    def _balancing_step(self, now_s: float, dt_s: float, volt: np.ndarray, soc: np.ndarray) -> None:
        params = self.balancing_params
        rest_s = 0.0 if np.isnan(self.ctx.rest_since_s) else now_s - self.ctx.rest_since_s
        allowed = (
            balancing_allowed(self.out.state, rest_s, params) and not self.out.emergency_shutoff
        )
        if params.mode == "soc" and not np.isfinite(soc).all():
            allowed = False
        temps = self.cell_temp_c
        ambient = float(np.nanmean(temps)) if np.isfinite(temps).any() else 25.0
        self.out.balancing = balancing_step(
            self.balancing,
            params,
            dt_s=dt_s,
            cell_voltage_v=volt,
            allowed=allowed,
            soc=soc if params.mode == "soc" else None,
            ambient_temp_c=ambient,
        )
        self.out.balancing_active = bool(self.out.balancing.any())

    def _detectors_step(
        self, now_s: float, volt: np.ndarray, current_a: float, soc: np.ndarray
    ) -> None:
        ctx = self.ctx
        slope = None
        if np.isfinite(soc).all():
            slope = ecm.ocv_slope_v(np.clip(soc, 0.0, 1.0), self.cell.ocv)
            ctx.inputs.ocv_slope_v = slope
        ctx.soft_short.update(now_s, volt, self._cell_ok, current_a, slope)
        # Balancing effort (DOMAIN 7): after a day of service, a cell causing > ratio x its
        # module's median bleed demand is flagged like a drifting one.
        days = (now_s - (self._start_s if self._start_s is not None else now_s)) / SECONDS_PER_DAY
        if days >= 1.0 and self.balancing.effort_ah.any():
            sp = self.ladder.soft_short
            demand = balancing_demand_ah_day(self.balancing.effort_ah / days, self.n_modules)
            ctx.soft_short.flagged |= balancing_effort_flags(
                demand, self.n_modules, sp.balancing_ratio, sp.balancing_floor_ah_day
            )
        temps = self.store["cell_temp_c"]
        raw_t = np.where(temps.valid, temps.value, np.nan)  # raw AFE samples, not substituted
        ctx.runaway.update(now_s, np.where(self.store["cell_voltage_v"].valid, volt, np.nan), raw_t)

    def _stats(self, volt: np.ndarray, press: np.ndarray, current_a: float) -> None:
        out, ok = self.out, self._cell_ok
        i_min, i_max = _index_of(volt, ok, False), _index_of(volt, ok, True)
        out.cell_v_min = float(volt[i_min]) if i_min >= 0 else float("nan")
        out.cell_v_max = float(volt[i_max]) if i_max >= 0 else float("nan")
        out.cell_v_avg = float(volt[ok].mean()) if i_min >= 0 else float("nan")
        out.cell_v_min_index, out.cell_v_max_index = i_min + 1, i_max + 1
        t = self.ctx.plausibility.cell_temp_c
        t_ok = np.isfinite(t)
        j_min, j_max = _index_of(t, t_ok, False), _index_of(t, t_ok, True)
        out.temp_min_c = float(t[j_min]) if j_min >= 0 else float("nan")
        out.temp_max_c = float(t[j_max]) if j_max >= 0 else float("nan")
        out.temp_avg_c = float(t[t_ok].mean()) if j_min >= 0 else float("nan")
        out.temp_min_sensor, out.temp_max_sensor = j_min + 1, j_max + 1
        p_ok = np.isfinite(press)
        k_min, k_max = _index_of(press, p_ok, False), _index_of(press, p_ok, True)
        out.pressure_min_mpa = float(press[k_min]) if k_min >= 0 else float("nan")
        out.pressure_max_mpa = float(press[k_max]) if k_max >= 0 else float("nan")
        out.pressure_median_mpa = float(np.median(press[p_ok])) if k_min >= 0 else float("nan")
        out.pressure_min_module, out.pressure_max_module = k_min + 1, k_max + 1
        store = self.store
        out.current_a = current_a
        out.pack_voltage_v = store["pack_voltage_v"].scalar()
        out.link_voltage_v = store["link_voltage_v"].scalar()
        out.power_kw = out.current_a * out.pack_voltage_v / 1000.0

    # -- fault memory -------------------------------------------------------------------------
    def active_faults(self) -> list[tuple[FaultCode, Tier]]:
        """Protection result, the state machine's held faults and its events since the last
        fault-memory update (an event is active for one update so that it is recorded)."""
        tiers: dict[FaultCode, Tier] = {}
        if self._result is not None:
            for code, tier in self._result.active():
                tiers[code] = tier
        for code in self._sm_faults:
            tiers[code] = Tier.FATAL
        for code, tier in self._event_faults.items():
            tiers[code] = max(tiers.get(code, Tier.NONE), tier)
        return list(tiers.items())

    def _fault_memory_step(self, now_s: float) -> None:
        sm_out = self._sm_out
        if sm_out is not None and sm_out.clear_faults:
            for code in self.faults.clear():
                self._freeze_sent.discard(code)
        active = self.active_faults()
        self._event_faults.clear()
        started = self.faults.update(now_s, active, self._freeze_snapshot)
        for rec in started:
            if rec.count == 1:
                rec.freeze.update(self._located(rec.code))
        entries = []
        for rec in self.faults.active():
            entries.append(FaultEntry(rec.code, rec.tier, self.locate(rec.code)))
            if rec.tier >= Tier.WARNING and rec.code not in self._freeze_sent:
                self._freeze_sent.add(rec.code)
                self.freeze_queue.append(rec)
        self.out.faults = entries

    def _freeze_snapshot(self) -> dict[str, float]:
        """Key signals at a fault's first occurrence (pack level; the location is added)."""
        out = self.out
        soc = out.soc.avg if out.soc is not None else float("nan")
        return {
            "current_a": self.store["current_a"].scalar(),
            "pack_voltage_v": self.store["pack_voltage_v"].scalar(),
            "cell_v_min": out.cell_v_min,
            "cell_v_max": out.cell_v_max,
            "temp_max_c": out.temp_max_c,
            "temp_min_c": out.temp_min_c,
            "pressure_min_mpa": out.pressure_min_mpa,
            "pressure_max_mpa": out.pressure_max_mpa,
            "soc_avg": soc,
            "state": float(out.state),
        }

    def _located(self, code: FaultCode) -> dict[str, float]:
        location = self.locate(code)
        volt = self.store["cell_voltage_v"].value
        cell_v = self.out.cell_v_min
        located_cell = code in _LOCATE_CELLS
        if located_cell and 1 <= location <= self.n_cells:
            cell_v = float(volt[location - 1])
        return {"location": float(location), "cell_voltage_v": cell_v}

    def locate(self, code: FaultCode) -> int:
        """1-based cell, sensor or module of the worst offender for ``code``; 0 = pack level."""
        plaus = self.ctx.plausibility
        if code in _LOCATE_CELL_MAX or code in _LOCATE_CELL_MIN:
            v = self.store["cell_voltage_v"].value
            ok = plaus.cell_voltage_ok & self.store["cell_voltage_v"].valid
            return _index_of(v, ok, code in _LOCATE_CELL_MAX) + 1
        if code in _LOCATE_TEMP_MAX or code in _LOCATE_TEMP_MIN:
            t = plaus.cell_temp_c
            return _index_of(t, np.isfinite(t), code in _LOCATE_TEMP_MAX) + 1
        if code in (FaultCode.PRESSURE_LOW, FaultCode.PRESSURE_HIGH):
            p = self.store["pressure_mpa"].value
            ok = plaus.pressure_ok & self.store["pressure_mpa"].valid
            return _index_of(p, ok, code is FaultCode.PRESSURE_HIGH) + 1
        flags = {
            FaultCode.SOFT_SHORT: self.ctx.soft_short.flagged,
            FaultCode.OPEN_WIRE: plaus.open_wire,
            FaultCode.THERMAL_RUNAWAY: self.ctx.runaway.module_confirmed,
            FaultCode.PRESSURE_PLAUSIBILITY: ~plaus.pressure_ok,
            FaultCode.TEMPERATURE_PLAUSIBILITY: ~plaus.temp_ok,
        }.get(code)
        if flags is not None and flags.any():
            return int(np.argmax(flags)) + 1
        return 0

    def pop_freeze_frames(self) -> list[FaultRecord]:
        """Records whose freeze frame is still to be sent (each once), oldest first."""
        queue, self.freeze_queue = self.freeze_queue, []
        return queue

    def requested_mode(self) -> RequestMode | None:
        """The vehicle request the state machine acts on (None: none valid)."""
        return self.sm.requested_mode()


def check_layout(config: BmsConfig, cell_count: int, module_count: int, temp_count: int) -> None:
    """Raise :class:`InputError` when the pack's reported counts differ from the configuration."""
    expected = (config.series, config.modules, config.n_temp_sensors)
    got = (cell_count, module_count, temp_count)
    if expected != got:
        raise InputError(
            f"{config.source or config.name}: configured for cells/modules/sensors "
            f"{expected}, pack reports {got}"
        )
