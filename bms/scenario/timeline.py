"""Stimulus segments, environment schedules and the fault timeline of a scenario.

Everything here is data checked at load time; :mod:`bms.scenario.runner` plays it on the
simulated clock. Segment inputs are pure functions of the time since the segment started.
"""

from __future__ import annotations

import bisect
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bms.can.e2e import TxFault
from bms.config import Section
from bms.errors import InputError
from bms.firmware.codes import RequestMode
from bms.pack.faults import FAULT_TYPES, make_fault
from bms.scenario.conditions import Condition, SignalCatalog, parse_condition
from bms.scenario.units import check_duration, duration
from bms.vehicle import (
    VehicleParams,
    battery_power_w,
    concatenate,
    cycle_path,
    load_cycle,
    load_profile,
)

SEGMENT_KINDS = ("rest", "request", "wait_for", "drive", "current", "power", "charge")
REQUEST_MODES = ("standby", "drive", "charge")
ENVIRONMENT_KEYS = ("ambient_c", "coolant_c", "coolant_flow_lpm")
#: DBC node name -> the System attribute of the node that sends it.
NODE_NAMES = {"PACK": "pack", "BMS": "bms", "VCU": "vcu", "CHARGER": "charger"}
#: Parameters of a CAN fault: scenario key -> (E2ESender parameter, reader kind).
CAN_FAULT_PARAMS = {
    "delay": ("delay_s", "duration"),
    "drop_probability": ("drop_probability", "probability"),
    "skip_by": ("skip_by", "skip"),
    "wrong_dlc": ("wrong_dlc", "dlc"),
}


@dataclass(frozen=True)
class Series:
    """A time series played from a segment's start: held between points or on a uniform grid.

    ``period_s`` is the length of one pass; ``passes`` how many (0: repeat until the segment
    ends by ``duration``/``until``).
    """

    time_s: np.ndarray  # relative, starting at 0, increasing
    value: np.ndarray
    period_s: float
    passes: int = 1
    grid_s: float = 0.0  # > 0: uniform grid (value[k] holds on [k grid, (k+1) grid))
    _times: list[float] = field(default_factory=list, repr=False, compare=False)
    _values: list[float] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Python lists: a scalar bisect on them is much cheaper than numpy per tick.
        self._times.extend(self.time_s.tolist())
        self._values.extend(self.value.tolist())

    @property
    def length_s(self) -> float:
        """Natural length (inf when it repeats until stopped)."""
        return math.inf if self.passes == 0 else self.period_s * self.passes

    def at(self, t_s: float) -> float:
        """Value ``t_s`` seconds after the segment start (the last value after the end)."""
        if self.period_s > 0 and t_s >= self.period_s:
            if self.passes == 0 or t_s < self.period_s * self.passes:
                t_s = math.fmod(t_s, self.period_s)
            else:
                return self._values[-1]
        if self.grid_s > 0:
            return self._values[min(int(t_s / self.grid_s), len(self._values) - 1)]
        k = bisect.bisect_right(self._times, t_s) - 1
        return self._values[k if k >= 0 else 0]


@dataclass(frozen=True)
class Segment:
    """One stimulus step; ends at ``duration_s``, when ``until`` holds, or at its data's end."""

    index: int
    kind: str
    duration_s: float | None = None
    until: Condition | None = None
    mode: str = ""  # request
    clear_faults: bool = False  # request
    wait: Condition | None = None  # wait_for
    timeout_s: float | None = None  # wait_for
    series: Series | None = None  # drive/power: W, current: A (+ = discharge)
    charge_current_a: float = 0.0
    charge_voltage_v: float = 0.0
    description: str = ""

    @property
    def label(self) -> str:
        return f"stimulus[{self.index}].{self.kind}"

    @property
    def length_s(self) -> float:
        """Longest this segment can run (inf: only ``until`` or the scenario cap end it)."""
        limits = [math.inf]
        if self.duration_s is not None:
            limits.append(self.duration_s)
        if self.series is not None:
            limits.append(self.series.length_s)
        if self.kind == "wait_for" and self.timeout_s is not None:
            limits.append(self.timeout_s)
        if self.kind == "request" and self.duration_s is None:
            limits.append(0.0)
        return min(limits)


@dataclass(frozen=True)
class Schedule:
    """Piecewise-linear in time, held before the first and after the last point."""

    time_s: tuple[float, ...]
    value: tuple[float, ...]

    def at(self, t_s: float) -> float:
        times, values = self.time_s, self.value
        if t_s <= times[0]:
            return values[0]
        if t_s >= times[-1]:
            return values[-1]
        k = bisect.bisect_right(times, t_s)
        t0, t1 = times[k - 1], times[k]
        return values[k - 1] + (values[k] - values[k - 1]) * (t_s - t0) / (t1 - t0)

    @property
    def constant(self) -> bool:
        return len(set(self.value)) == 1


@dataclass(frozen=True)
class FaultSpec:
    """One fault: on at ``at_s`` or when ``when`` first holds, off after ``duration_s``."""

    index: int
    target: str  # "pack" | "can" | "charger" | "node"
    kind: str  # pack fault kind, TxFault value, "ignore_limits" or "stop"
    params: dict[str, Any]
    at_s: float | None = None
    when: Condition | None = None
    duration_s: float | None = None
    message: str = ""  # can: the message
    node: str = ""  # can/node: "pack" | "bms" | "vcu" | "charger"
    bus: str = ""  # can: "pack" | "vehicle"

    @property
    def label(self) -> str:
        return f"faults[{self.index}]"

    def describe(self) -> str:
        params = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items()
        )
        what = {
            "pack": f"pack fault {self.kind}",
            "can": f"CAN fault {self.kind} on {self.message} ({self.node})",
            "charger": f"charger {self.kind}",
            "node": f"node {self.node} {self.kind}",
        }[self.target]
        return f"{self.label}: {what}" + (f" ({params})" if params else "")


@dataclass
class LoadContext:
    """What the segment and fault readers need: names, files and the built pack to check against."""

    catalog: SignalCatalog
    base_dir: Path
    dt_s: float
    vehicle: VehicleParams
    pack: Any  # a throwaway bms.pack.Pack for fault validation
    charger_rated_current_a: float
    conditions: list[Condition] = field(default_factory=list)

    def path(self, text: str) -> Path:
        """A path written in the scenario, relative to the scenario file."""
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def condition(self, sec: Section) -> Condition:
        cond = parse_condition(sec, self.catalog)
        self.conditions.append(cond)
        return cond


# -- stimulus ----------------------------------------------------------------------------------
def parse_stimulus(root: Section, ctx: LoadContext) -> list[Segment]:
    """Read the ``stimulus`` list (optional: no segments means rest for the whole duration)."""
    segments = []
    for index, sec in enumerate(root.sections("stimulus", [])):
        segments.append(_segment(index, sec, ctx))
    return segments


def _segment(index: int, sec: Section, ctx: LoadContext) -> Segment:
    kinds = [k for k in SEGMENT_KINDS if sec.has(k)]
    if len(kinds) != 1:
        if not kinds:
            unknown = next((k for k in sec.value if k not in SEGMENT_KINDS), None)
            if unknown is not None and unknown not in ("duration", "until"):
                raise sec.error(
                    unknown, f"unknown segment kind (one of {', '.join(SEGMENT_KINDS)})"
                )
            raise sec.error_here(f"expected one segment kind of {', '.join(SEGMENT_KINDS)}")
        raise sec.error(kinds[1], f"one segment kind per list item (also has {kinds[0]!r})")
    kind = kinds[0]
    reader = {
        "rest": _rest,
        "request": _request,
        "wait_for": _wait_for,
        "drive": _drive,
        "current": _profile_segment,
        "power": _profile_segment,
        "charge": _charge,
    }[kind]
    segment = reader(index, kind, sec, ctx)
    sec.done()
    if math.isinf(segment.length_s) and segment.until is None and segment.kind != "wait_for":
        raise sec.error(kind, "open-ended segment: give 'duration:' or 'until:'")
    return segment


def _common(sec: Section, ctx: LoadContext) -> tuple[float | None, Condition | None]:
    dur = duration(sec, "duration", None)
    until = ctx.condition(sec.section("until")) if sec.has("until") else None
    return dur, until


def _rest(index: int, kind: str, sec: Section, ctx: LoadContext) -> Segment:
    value = sec.raw(kind, {})
    if isinstance(value, dict):
        inner = sec.section(kind)
        dur, until = _common(inner, ctx)
        inner.done()
    else:
        dur = duration(sec, kind)
        until = None
    if sec.has("until") or sec.has("duration"):
        more_dur, more_until = _common(sec, ctx)
        dur = more_dur if more_dur is not None else dur
        until = more_until or until
    return Segment(index, kind, dur, until)


def _request(index: int, kind: str, sec: Section, ctx: LoadContext) -> Segment:
    mode = sec.string(kind, choices=REQUEST_MODES)
    assert mode.upper() in RequestMode.__members__
    clear = sec.boolean("clear_faults", False)
    dur, until = _common(sec, ctx)
    return Segment(index, kind, dur, until, mode=mode, clear_faults=clear)


def _wait_for(index: int, kind: str, sec: Section, ctx: LoadContext) -> Segment:
    wait = ctx.condition(sec.section(kind))
    timeout = duration(sec, "timeout", None)
    return Segment(index, kind, wait=wait, timeout_s=timeout)


def _drive(index: int, kind: str, sec: Section, ctx: LoadContext) -> Segment:
    inner = sec.section(kind)
    names = inner.raw("cycle")
    names = names if isinstance(names, list) else [names]
    if not names:
        raise inner.error("cycle", "expected a cycle name or a list of them")
    cycles = []
    for k, name in enumerate(names):
        if not isinstance(name, str):
            raise inner.error("cycle", f"item {k}: expected a cycle name or CSV path, got {name!r}")
        try:
            path = cycle_path(name) if "/" not in name and not name.endswith(".csv") else None
        except InputError:
            path = None
        if path is None:
            path = ctx.path(name)
            if not path.exists() and "/" not in name and not name.endswith(".csv"):
                cycle_path(name)  # raises the "no such cycle, shipped: ..." message
        cycles.append(_located(inner, "cycle", lambda p=path: load_cycle(p)))
    cycle = concatenate(cycles)
    passes = _repeat(inner)
    dur, until = _common(inner, ctx)
    inner.done()
    # Road-load power on the tick grid, at each tick's midpoint (where speed and slope agree).
    grid = ctx.dt_s
    t = np.arange(0.0, cycle.duration_s, grid) + cycle.start_s + 0.5 * grid
    power_w = battery_power_w(cycle.speed_at(t), cycle.accel_at(t), ctx.vehicle)
    series = Series(t - t[0], power_w, cycle.duration_s, passes, grid_s=grid)
    return Segment(index, kind, dur, until, series=series, description=cycle.name)


def _repeat(sec: Section) -> int:
    value = sec.raw("repeat", 1)
    if value == "forever":
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise sec.error("repeat", f"expected a count >= 1 or 'forever', got {value!r}")
    return value


def _profile_segment(index: int, kind: str, sec: Section, ctx: LoadContext) -> Segment:
    inner = sec.section(kind)
    quantity = "current_a" if kind == "current" else "power_w"
    scale = 1.0 if kind == "current" else 1000.0  # inline power is in kW, CSV power in W
    value_key = "value_a" if kind == "current" else "value_kw"
    given = [k for k in (value_key, "profile", "csv") if inner.has(k)]
    if len(given) != 1:
        raise inner.error_here(f"expected exactly one of {value_key}, profile, csv")
    source = given[0]
    if source == value_key:
        value = inner.number(
            value_key,
            min=-5000.0 if kind == "current" else -2000.0,
            max=5000.0 if kind == "current" else 2000.0,
        )
        series = Series(np.array([0.0]), np.array([value * scale]), 0.0, 1)
        passes = 1
        if inner.has("repeat"):
            raise inner.error("repeat", f"repeat applies to profile or csv, not {value_key}")
    elif source == "profile":
        times, values = _points(inner, "profile", increasing=True)
        passes = _repeat(inner)
        series = Series(times - times[0], values * scale, float(times[-1] - times[0]), passes)
    else:
        path = ctx.path(inner.string("csv"))
        prof = _located(inner, "csv", lambda: load_profile(path))
        if prof.quantity != quantity:
            raise inner.error(
                "csv", f"{path}: expected a time_s,{quantity} CSV, got {prof.quantity}"
            )
        passes = _repeat(inner)
        t0 = float(prof.time_s[0])
        series = Series(prof.time_s - t0, prof.value.astype(float), prof.duration_s, passes)
    dur, until = _common(inner, ctx)
    inner.done()
    if source == value_key and dur is None and until is None:
        raise inner.error(value_key, "a constant value needs 'duration:' or 'until:'")
    if source == value_key:
        series = Series(series.time_s, series.value, 0.0, 0)  # held until duration/until
    return Segment(index, kind, dur, until, series=series)


def _charge(index: int, kind: str, sec: Section, ctx: LoadContext) -> Segment:
    inner = sec.section(kind)
    current_a = inner.number("current_a", above=0.0, max=ctx.charger_rated_current_a)
    voltage_v = inner.number("voltage_v", above=0.0, max=2000.0)
    dur, until = _common(inner, ctx)
    inner.done()
    return Segment(index, kind, dur, until, charge_current_a=current_a, charge_voltage_v=voltage_v)


def _points(sec: Section, key: str, *, increasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """``[[time, value], ...]`` with durations as times; times strictly increasing."""
    items = sec.items(key)
    if not items:
        raise sec.error(key, "expected at least one [time, value] point")
    times, values = [], []
    for k, item in enumerate(items):
        err = _item_error(sec, key, k)
        if not isinstance(item, list) or len(item) != 2:
            raise err(f"expected [time, value], got {item!r}")
        times.append(check_duration(item[0], err))
        value = item[1]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise err(f"expected a number as the value, got {value!r}")
        values.append(float(value))
        if increasing and k and times[-1] <= times[-2]:
            raise err("times must increase")
    return np.array(times), np.array(values)


def _item_error(sec: Section, key: str, k: int) -> Callable[[str], InputError]:
    """Error factory located at item ``k`` of the list ``key`` (``environment.ambient_c[2]``)."""
    holder = Section(sec.doc, sec.path + (key,), {})
    return lambda problem: holder.error(k, problem)


def _located(sec: Section, key: str, load: Callable[[], Any]) -> Any:
    """Run a file loader; its InputError (naming the referenced file) is prefixed with the field."""
    try:
        return load()
    except InputError as exc:
        raise sec.error(key, str(exc)) from None


# -- environment -------------------------------------------------------------------------------
def parse_environment(root: Section) -> dict[str, Schedule]:
    """``environment``: ambient and coolant temperature, coolant flow; ``[[time, value], ...]``."""
    env = root.section("environment", {})
    out = {}
    for key in ENVIRONMENT_KEYS:
        if env.has(key):
            times, values = _points(env, key, increasing=True)
            lo, hi = (0.0, 1000.0) if key == "coolant_flow_lpm" else (-60.0, 150.0)
            bad = np.flatnonzero((values < lo) | (values > hi))
            if bad.size:
                raise _item_error(env, key, int(bad[0]))(f"value must be within {lo:g}..{hi:g}")
            out[key] = Schedule(tuple(times.tolist()), tuple(values.tolist()))
    env.done()
    return out


# -- faults ------------------------------------------------------------------------------------
def parse_faults(root: Section, ctx: LoadContext) -> list[FaultSpec]:
    """Read the ``faults`` list; every fault is built and checked against the pack and DBCs."""
    return [_fault(index, sec, ctx) for index, sec in enumerate(root.sections("faults", []))]


def _fault(index: int, sec: Section, ctx: LoadContext) -> FaultSpec:
    has_at, has_when = sec.has("at"), sec.has("when")
    if has_at == has_when:
        raise sec.error_here("a fault needs exactly one of 'at: TIME' or 'when: CONDITION'")
    at_s = duration(sec, "at") if has_at else None
    when = ctx.condition(sec.section("when")) if has_when else None
    dur = duration(sec, "duration", None, above_s=0.0)
    targets = [k for k in ("pack", "can", "charger", "node") if sec.has(k)]
    if len(targets) != 1:
        raise sec.error_here("a fault needs exactly one of 'pack:', 'can:', 'charger:', 'node:'")
    target = targets[0]
    common = dict(index=index, at_s=at_s, when=when, duration_s=dur)
    if target == "pack":
        kind = sec.string("pack")
        if kind not in FAULT_TYPES:
            raise sec.error(
                "pack", f"unknown pack fault {kind!r} (one of {', '.join(sorted(FAULT_TYPES))})"
            )
        params = {}
        used = {"pack", "at", "when", "duration"}
        for key in sec.value:
            if key in used:
                continue
            value = sec.raw(key)
            if key.endswith("_s") and isinstance(value, str):
                value = duration(sec, key)
            params[key] = value
        try:
            make_fault(kind, **params).validate(ctx.pack)
        except (ValueError, TypeError) as exc:
            bad = next((k for k in params if f"'{k}'" in str(exc) or str(exc).startswith(k)), None)
            raise (sec.error(bad, str(exc)) if bad else sec.error("pack", str(exc))) from None
        sec.done()
        return FaultSpec(target="pack", kind=kind, params=params, **common)
    if target == "can":
        kinds = [f.value for f in TxFault]
        kind = sec.string("can", choices=tuple(kinds))
        message = _message(sec, ctx)
        sender = ctx.catalog.sender(message)
        node = NODE_NAMES.get(sender)
        if node is None:
            raise sec.error(
                "message", f"{message} is sent by {sender or 'no node'}, not an emulated node"
            )
        params = {}
        for key, (name, reader) in CAN_FAULT_PARAMS.items():
            if not sec.has(key):
                continue
            if reader == "duration":
                params[name] = duration(sec, key, max_s=10.0)
            elif reader == "probability":
                params[name] = sec.number(key, min=0.0, max=1.0)
            elif reader == "skip":
                params[name] = float(sec.integer(key, min=1, max=14))
            else:
                params[name] = float(sec.integer(key, min=0, max=8))
        sec.done()
        return FaultSpec(
            target="can",
            kind=kind,
            params=params,
            message=message,
            node=node,
            bus=ctx.catalog.bus_of(message),
            **common,
        )
    if target == "charger":
        kind = sec.string("charger", choices=("ignore_limits",))
        current_a = sec.number("current_a", above=0.0, max=ctx.charger_rated_current_a)
        sec.done()
        return FaultSpec(target="charger", kind=kind, params={"current_a": current_a}, **common)
    node = sec.string("node", choices=tuple(NODE_NAMES.values()))
    action = sec.string("action", choices=("stop",))
    sec.done()
    return FaultSpec(target="node", kind=action, params={}, node=node, **common)


def _message(sec: Section, ctx: LoadContext) -> str:
    name = sec.string("message")
    if name not in ctx.catalog.messages:
        near = difflib.get_close_matches(name, list(ctx.catalog.messages), n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise sec.error("message", f"unknown message {name!r}{hint}")
    return name
