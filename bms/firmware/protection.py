"""The protection ladder: a YAML table of limits interpreted by one small, vectorised engine.

``load_ladder()`` reads ``bms/data/firmware/protection.yaml`` (or a user file) into flat
:class:`Rule` rows, one per (row, tier). :class:`ProtectionEngine` evaluates all rules at once
each 10 ms tick with time-based up/down debounce, the fresh-sample rule, value hysteresis and the
fatal pre-trip delay (DOMAIN.md section 8). Quantities come from a registry of named extractors
over :class:`ProtectionContext` (store + plausibility + detectors + inputs from other tasks), so
adding a protection is a YAML row, plus an extractor only for a new kind of quantity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bms.cellmodel.ecm import ccd_ma_cm2
from bms.cellmodel.params import CellParams
from bms.config import Section, load_yaml
from bms.data import resolve
from bms.errors import InputError
from bms.firmware.codes import FaultCode, Tier
from bms.firmware.detectors import (
    RunawayParams,
    SoftShortDetector,
    SoftShortParams,
    ThermalRunawayDetector,
    read_runaway,
    read_soft_short,
)
from bms.firmware.plausibility import PlausibilityChecker, PlausibilityParams, read_plausibility
from bms.firmware.store import SignalStore, standard_store

TIME_EPS_S = 1e-9  # float slack when comparing accumulated tick times with set/clear times
TIERS = {"info": Tier.INFO, "warning": Tier.WARNING, "fatal": Tier.FATAL}
DIRECTIONS = {"high": 1.0, "low": -1.0}


# -- ladder -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One tier of one ladder row: condition ``direction * (value - threshold) > 0``."""

    row: str
    code: FaultCode
    tier: Tier
    quantity: str
    direction: float
    threshold: float
    hysteresis: float
    set_s: float
    clear_s: float
    pretrip_s: float
    min_samples: int
    latch: bool
    when_quantity: str | None
    when_above: float
    when_below: float


@dataclass(frozen=True)
class Ladder:
    """A loaded ladder file: rules plus the parameters of store, plausibility and detectors."""

    rules: tuple[Rule, ...]
    sources: dict[str, tuple[float, float, str]]
    plausibility: PlausibilityParams
    soft_short: SoftShortParams
    runaway: RunawayParams
    rest_current_a: float
    request_timing_tolerance: float
    source: str = ""

    def quantities(self) -> list[str]:
        """Every quantity the rules read (values and gates), in first-use order."""
        names: dict[str, None] = {}
        for r in self.rules:
            names[r.quantity] = None
            if r.when_quantity:
                names[r.when_quantity] = None
        return list(names)


def load_ladder(name_or_path: str | Path = "protection") -> Ladder:
    """Load a shipped ladder by name or a ladder YAML file; every error is one located line."""
    doc = load_yaml(resolve("firmware", name_or_path))
    root = Section(doc)
    d = root.section("defaults")
    defaults = {
        "min_samples": d.integer("min_samples", 3, min=0),
        "clear_s": d.number("clear_s", 1.0, min=0.0),
        "hysteresis": d.number("hysteresis", 0.0, min=0.0),
    }
    d.done()
    c = root.section("context")
    rest_current_a = c.number("rest_current_a", above=0.0)
    tolerance = c.number("request_timing_tolerance", above=0.0, max=1.0)
    c.done()

    src = root.section("sources")
    sources: dict[str, tuple[float, float, str]] = {}
    for name in list(src.value):
        s = src.section(name)
        cycle = s.number("cycle_s", above=0.0)
        sources[name] = (cycle, s.number("timeout_s", above=0.0), s.string("bus", "pack"))
        s.done()
    src.done()
    for needed in ("cell_voltage_v", "cell_temp_c", "pressure_mpa", "current_a"):
        if needed not in sources:
            raise src.error_here(f"missing source {needed!r}")

    plaus = read_plausibility(root.section("plausibility"))
    det = root.section("detectors")
    soft = read_soft_short(det.section("soft_short"))
    runaway = read_runaway(det.section("thermal_runaway"))
    det.done()

    rules: list[Rule] = []
    seen: set[str] = set()
    for row in root.sections("rows"):
        rules.extend(_read_row(row, defaults, seen))
    if not rules:
        raise root.error("rows", "no protection rows")
    root.done()
    return Ladder(
        tuple(rules), sources, plaus, soft, runaway, rest_current_a, tolerance, str(doc.source)
    )


def _read_when(sec: Section, key: str, inherited: tuple[str | None, float, float]):
    if not sec.has(key):
        return inherited
    w = sec.section(key)
    name = _checked_quantity(w, "quantity")
    if not (w.has("above") or w.has("below")):
        raise w.error_here("needs 'above' or 'below'")
    above = w.number("above") if w.has("above") else -np.inf
    below = w.number("below") if w.has("below") else np.inf
    w.done()
    return name, above, below


def _checked_quantity(sec: Section, key: str, default: str | None = None) -> str:
    name = sec.string(key) if default is None else sec.string(key, default)
    if not is_known_quantity(name):
        raise sec.error(
            key,
            f"unknown quantity {name!r} (known: {', '.join(sorted(QUANTITIES))}, "
            "and the patterns pressure_rate_<N>s_max_mpa_s, "
            "discharge_current_<N>s_mean_a)",
        )
    return name


def _read_row(row: Section, defaults: dict, seen: set[str]) -> list[Rule]:
    name = row.string("name")
    if name in seen:
        raise row.error("name", f"duplicate row name {name!r}")
    seen.add(name)
    code_name = row.string("code", choices=tuple(c.name for c in FaultCode if c))
    quantity = _checked_quantity(row, "quantity")
    direction = DIRECTIONS[row.string("direction", choices=tuple(DIRECTIONS))]
    min_samples = row.integer("min_samples", defaults["min_samples"], min=0)
    when = _read_when(row, "when", (None, -np.inf, np.inf))
    out: list[Rule] = []
    for tier_name, tier in TIERS.items():
        if not row.has(tier_name):
            continue
        t = row.section(tier_name)
        tier_code = t.string("code", code_name, choices=tuple(c.name for c in FaultCode if c))
        t_when = _read_when(t, "when", when)
        rule = Rule(
            row=name,
            code=FaultCode[tier_code],
            tier=tier,
            quantity=_checked_quantity(t, "quantity", quantity),
            direction=direction,
            threshold=t.number("threshold"),
            hysteresis=t.number("hysteresis", defaults["hysteresis"], min=0.0),
            set_s=t.number("set_s", min=0.0),
            clear_s=t.number("clear_s", defaults["clear_s"], min=0.0),
            pretrip_s=t.number("pretrip_s", min=0.0) if tier == Tier.FATAL else 0.0,
            min_samples=t.integer("min_samples", min_samples, min=0),
            latch=t.boolean("latch", False),
            when_quantity=t_when[0],
            when_above=t_when[1],
            when_below=t_when[2],
        )
        t.done()
        # a later tier of the same quantity must be more severe, i.e. further out
        if (
            out
            and out[-1].quantity == rule.quantity
            and direction * (rule.threshold - out[-1].threshold) < 0
        ):
            raise row.error(
                tier_name,
                f"threshold {rule.threshold} is less severe than the "
                f"{out[-1].tier.name.lower()} tier's {out[-1].threshold}",
            )
        out.append(rule)
    if not out:
        raise row.error_here("needs at least one of info, warning, fatal")
    row.done()
    return out


# -- inputs from other tasks and the evaluation context ---------------------------------------


@dataclass
class ProtectionInputs:
    """Values the protection needs from other BMS tasks (NaN or None = not available)."""

    charge_current_limit_a: float = float("nan")  # I_chg,max from limits.py
    pressure_model_mpa: np.ndarray | None = None  # P(SOC, T) per module, if a model runs
    ocv_slope_v: np.ndarray | None = None  # dOCV/dSOC per cell, for the soft-short detector


class _History:
    """Ring buffer of (time, values) pushed on fresh samples; windows are looked up by time."""

    def __init__(self, capacity: int, width: int) -> None:
        self.time_s = np.full(capacity, -np.inf)
        self.values = np.full((capacity, width), np.nan)
        self.head = -1
        self.seq = -1

    def push(self, now_s: float, values: np.ndarray) -> None:
        self.head = (self.head + 1) % self.time_s.size
        self.time_s[self.head] = now_s
        self.values[self.head] = values

    def index_before(self, cutoff_s: float) -> int:
        """Index of the newest sample at or before ``cutoff_s`` (-1 if none is that old)."""
        masked = np.where(self.time_s <= cutoff_s, self.time_s, -np.inf)
        idx = int(np.argmax(masked))
        return idx if np.isfinite(masked[idx]) else -1

    def mean_since(self, cutoff_s: float) -> float:
        """Mean of element 0 over samples newer than ``cutoff_s``, NaNs skipped (np.nanmean)."""
        recent = self.time_s > cutoff_s
        if not recent.any():
            return float("nan")
        vals = self.values[recent, 0]
        nan = np.isnan(vals)
        if nan.any():  # np.nanmean's own steps: NaN -> 0 in the sum, counted out of the divisor
            count = vals.size - int(np.count_nonzero(nan))
            return float(np.sum(np.where(nan, 0.0, vals)) / count) if count else float("nan")
        return float(np.sum(vals) / vals.size)


@dataclass
class ProtectionContext:
    """Everything quantity extractors may read: store, checks, detectors, inputs, histories.

    The BMS node updates ``inputs`` and runs ``plausibility.check`` / the detectors in its
    100 ms task; :meth:`ProtectionEngine.step` calls :meth:`update` and the extractors each tick.
    """

    ladder: Ladder
    store: SignalStore
    plausibility: PlausibilityChecker
    soft_short: SoftShortDetector
    runaway: ThermalRunawayDetector
    n_modules: int
    cell: CellParams | None = None
    inputs: ProtectionInputs = field(default_factory=ProtectionInputs)
    tick: int = 0
    rest_since_s: float = float("nan")
    _histories: dict[str, _History] = field(default_factory=dict)
    _windows: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        ladder: Ladder,
        n_cells: int,
        n_temp_sensors: int,
        n_modules: int,
        cell: CellParams | None = None,
    ) -> ProtectionContext:
        """Store, checker and detectors for one pack layout, all sized once."""
        if n_cells % n_modules or n_temp_sensors % n_modules:
            raise InputError(
                f"pack layout: {n_cells} cells and {n_temp_sensors} sensors must split evenly "
                f"into {n_modules} modules"
            )
        store = standard_store(n_cells, n_temp_sensors, n_modules, ladder.sources)
        capacity_ah = cell.capacity_ah if cell is not None else 90.0
        ctx = cls(
            ladder=ladder,
            store=store,
            plausibility=PlausibilityChecker(
                ladder.plausibility, n_cells, n_temp_sensors, n_modules
            ),
            soft_short=SoftShortDetector(ladder.soft_short, n_cells, n_modules, capacity_ah),
            runaway=ThermalRunawayDetector(ladder.runaway, n_cells, n_temp_sensors, n_modules),
            n_modules=n_modules,
            cell=cell,
        )
        for name in ladder.quantities():
            for pattern, (source, _) in _PATTERNS.items():
                m = pattern.fullmatch(name)
                if m:
                    window = float(m.group(1))
                    ctx._windows[source] = max(ctx._windows.get(source, 0.0), window)
        for source, window in ctx._windows.items():
            cycle_s = ladder.sources[source][0]
            capacity = int(np.ceil(window / cycle_s)) + 4
            ctx._histories[source] = _History(capacity, store[source].size)
        return ctx

    def update(self, now_s: float) -> None:
        """Advance the context's own state (rest timer, histories) to ``now_s``."""
        self.tick += 1
        current_a = self.store["current_a"].scalar()
        if np.isfinite(current_a) and abs(current_a) < self.ladder.rest_current_a:
            if np.isnan(self.rest_since_s):
                self.rest_since_s = now_s
        else:
            self.rest_since_s = float("nan")
        for source, hist in self._histories.items():
            src = self.store[source]
            if src.seq != hist.seq:
                hist.seq = src.seq
                hist.push(src.last_rx_s, src.value)


# -- quantity registry ------------------------------------------------------------------------

Extractor = Callable[[ProtectionContext, float], tuple[float, int]]
QUANTITIES: dict[str, Extractor] = {}


def quantity(name: str) -> Callable[[Extractor], Extractor]:
    """Register an extractor: ``fn(ctx, now_s) -> (value, sample_id)``.

    ``sample_id`` changes whenever a fresh sample of the deciding measurement arrived; the
    engine counts changes to apply the "at least N fresh samples" rule.
    """

    def wrap(fn: Extractor) -> Extractor:
        QUANTITIES[name] = fn
        return fn

    return wrap


def _pressure_rate(window_s: float) -> Extractor:
    def fn(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
        hist = ctx._histories["pressure_mpa"]
        src = ctx.store["pressure_mpa"]
        idx = hist.index_before(src.last_rx_s - window_s + TIME_EPS_S)
        if idx < 0 or hist.head < 0:
            return float("nan"), src.seq
        dt = hist.time_s[hist.head] - hist.time_s[idx]
        rate = np.abs(hist.values[hist.head] - hist.values[idx]) / dt
        finite = rate[np.isfinite(rate)]
        return (float(finite.max()) if finite.size else float("nan")), src.seq

    return fn


def _current_mean(window_s: float) -> Extractor:
    def fn(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
        hist = ctx._histories["current_a"]
        mean = hist.mean_since(now_s - window_s)
        return max(mean, 0.0) if np.isfinite(mean) else mean, ctx.store["current_a"].seq

    return fn


# name pattern -> (history source, extractor factory of the window in seconds)
_PATTERNS: dict[re.Pattern[str], tuple[str, Callable[[float], Extractor]]] = {
    re.compile(r"pressure_rate_([0-9.]+)s_max_mpa_s"): ("pressure_mpa", _pressure_rate),
    re.compile(r"discharge_current_([0-9.]+)s_mean_a"): ("current_a", _current_mean),
}


def is_known_quantity(name: str) -> bool:
    """True for registered names and for names of a windowed pattern."""
    return name in QUANTITIES or any(p.fullmatch(name) for p in _PATTERNS)


def extractor_for(name: str) -> Extractor:
    """The extractor of a registered or pattern quantity."""
    if name in QUANTITIES:
        return QUANTITIES[name]
    for pattern, (_, factory) in _PATTERNS.items():
        m = pattern.fullmatch(name)
        if m:
            return factory(float(m.group(1)))
    raise InputError(f"unknown quantity {name!r}")


def _median(values: np.ndarray) -> float:
    """np.median of a non-empty finite array, by one sort (np.median's overhead dominates here)."""
    ordered = np.sort(values)
    mid = ordered.size // 2
    if ordered.size % 2:
        return float(ordered[mid])
    return float((ordered[mid - 1] + ordered[mid]) / 2.0)


def _cells(ctx: ProtectionContext) -> tuple[np.ndarray, np.ndarray]:
    src = ctx.store["cell_voltage_v"]
    return src.value, ctx.plausibility.cell_voltage_ok & src.valid


def _nan() -> float:
    return float("nan")


@quantity("cell_voltage_max_v")
def _cell_v_max(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    v, ok = _cells(ctx)
    if not ok.any():
        return _nan(), ctx.store["cell_voltage_v"].seq
    i = int(np.argmax(np.where(ok, v, -np.inf)))
    return float(v[i]), int(ctx.store["cell_voltage_v"].elem_seq[i])


@quantity("cell_voltage_min_v")
def _cell_v_min(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    v, ok = _cells(ctx)
    if not ok.any():
        return _nan(), ctx.store["cell_voltage_v"].seq
    i = int(np.argmin(np.where(ok, v, np.inf)))
    return float(v[i]), int(ctx.store["cell_voltage_v"].elem_seq[i])


@quantity("cell_voltage_spread_v")
def _cell_spread(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    v, ok = _cells(ctx)
    seq = ctx.store["cell_voltage_v"].seq
    return (float(np.ptp(v[ok])) if ok.any() else _nan()), seq


@quantity("cell_voltage_below_median_max_v")
def _cell_below_median(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    v, ok = _cells(ctx)
    seq = ctx.store["cell_voltage_v"].seq
    if not ok.any():
        return _nan(), seq
    good = v[ok]
    return float(_median(good) - good.min()), seq


@quantity("cell_voltage_mean_deviation_max_v")
def _cell_mean_dev(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    v, ok = _cells(ctx)
    seq = ctx.store["cell_voltage_v"].seq
    return (float(np.abs(v[ok] - v[ok].mean()).max()) if ok.any() else _nan()), seq


def _temps(ctx: ProtectionContext) -> np.ndarray:
    return ctx.plausibility.cell_temp_c


@quantity("cell_temp_max_c")
def _temp_max(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    t = _temps(ctx)
    ok = np.isfinite(t)
    src = ctx.store["cell_temp_c"]
    if not ok.any():
        return _nan(), src.seq
    i = int(np.argmax(np.where(ok, t, -np.inf)))
    return float(t[i]), int(src.elem_seq[i])


@quantity("cell_temp_min_c")
def _temp_min(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    t = _temps(ctx)
    ok = np.isfinite(t)
    src = ctx.store["cell_temp_c"]
    if not ok.any():
        return _nan(), src.seq
    i = int(np.argmin(np.where(ok, t, np.inf)))
    return float(t[i]), int(src.elem_seq[i])


def _pressures(ctx: ProtectionContext) -> tuple[np.ndarray, np.ndarray]:
    src = ctx.store["pressure_mpa"]
    return src.value, ctx.plausibility.pressure_ok & src.valid


@quantity("pressure_min_mpa")
def _p_min(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    p, ok = _pressures(ctx)
    src = ctx.store["pressure_mpa"]
    if not ok.any():
        return _nan(), src.seq
    i = int(np.argmin(np.where(ok, p, np.inf)))
    return float(p[i]), int(src.elem_seq[i])


@quantity("pressure_max_mpa")
def _p_max(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    p, ok = _pressures(ctx)
    src = ctx.store["pressure_mpa"]
    if not ok.any():
        return _nan(), src.seq
    i = int(np.argmax(np.where(ok, p, -np.inf)))
    return float(p[i]), int(src.elem_seq[i])


@quantity("pressure_median_deviation_max_mpa")
def _p_median_dev(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    p, ok = _pressures(ctx)
    if np.count_nonzero(ok) < 3:  # a median of fewer than 3 sensors says nothing
        return _nan(), ctx.store["pressure_mpa"].seq
    good = p[ok]
    return float(np.abs(good - _median(good)).max()), ctx.store["pressure_mpa"].seq


@quantity("pressure_model_deviation_max_mpa")
def _p_model_dev(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    dev = ctx.plausibility.pressure_model_deviation_mpa
    ok = np.isfinite(dev)
    return (float(dev[ok].max()) if ok.any() else _nan()), ctx.store["pressure_mpa"].seq


def _scalar(source: str) -> Extractor:
    def fn(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
        src = ctx.store[source]
        return src.scalar(), src.seq

    return fn


QUANTITIES["current_a"] = _scalar("current_a")
QUANTITIES["h2s_ppm"] = _scalar("h2s_ppm")


@quantity("charge_current_a")
def _charge(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    src = ctx.store["current_a"]
    return max(-src.scalar(), 0.0) if src.valid[0] else _nan(), src.seq


@quantity("discharge_current_a")
def _discharge(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    src = ctx.store["current_a"]
    return max(src.scalar(), 0.0) if src.valid[0] else _nan(), src.seq


@quantity("abs_current_a")
def _abs_current(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    src = ctx.store["current_a"]
    return abs(src.scalar()), src.seq


@quantity("rest_time_s")
def _rest_time(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    rest = 0.0 if np.isnan(ctx.rest_since_s) else now_s - ctx.rest_since_s
    return rest, ctx.store["current_a"].seq


@quantity("charge_current_over_limit_ratio")
def _charge_ratio(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    charge_a, seq = _charge(ctx, now_s)
    limit_a = ctx.inputs.charge_current_limit_a
    if not (np.isfinite(charge_a) and np.isfinite(limit_a)):
        return _nan(), seq
    if limit_a <= 0.0:  # charging blocked: any real charge current is over the limit
        return (np.inf if charge_a >= ctx.ladder.rest_current_a else 0.0), seq
    return charge_a / limit_a, seq


@quantity("charge_current_over_ccd_ratio")
def _ccd_ratio(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    """Charge current over A_el * J_CCD at the coldest cell and the lowest module pressure."""
    charge_a, seq = _charge(ctx, now_s)
    t = _temps(ctx)
    p, ok = _pressures(ctx)
    if ctx.cell is None or not np.isfinite(charge_a) or not ok.any() or not np.isfinite(t).any():
        return _nan(), seq
    j_ma_cm2 = float(ccd_ma_cm2(np.nanmin(t), p[ok].min(), ctx.cell.ccd))
    ccd_a = j_ma_cm2 * ctx.cell.electrode_area_cm2 * 1e-3
    return charge_a / ccd_a, seq


@quantity("cell_sum_mismatch_v")
def _sum_mismatch(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    seq = ctx.store["pack_voltage_v"].seq if "pack_voltage_v" in ctx.store else 0
    return ctx.plausibility.sum_mismatch_v, seq + ctx.store["cell_voltage_v"].seq


def _count(attr: str, source: str) -> Extractor:
    def fn(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
        return float(getattr(ctx.plausibility, attr)), ctx.store[source].seq

    return fn


QUANTITIES["cell_voltage_invalid_count"] = _count("cell_voltage_invalid_count", "cell_voltage_v")
QUANTITIES["temp_invalid_count"] = _count("temp_invalid_count", "cell_temp_c")
QUANTITIES["pressure_invalid_count"] = _count("pressure_invalid_count", "pressure_mpa")


@quantity("open_wire_count")
def _open_wire(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return float(np.count_nonzero(ctx.plausibility.open_wire)), ctx.store["cell_voltage_v"].seq


@quantity("temp_unsubstituted_count")
def _temp_unsub(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    """Sensors neither valid nor substitutable (their whole module is blind)."""
    n = np.count_nonzero(~np.isfinite(ctx.plausibility.cell_temp_c))
    return float(n), ctx.store["cell_temp_c"].seq


@quantity("current_age_s")
def _current_age(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return ctx.store["current_a"].newest_age_s(now_s), ctx.tick


@quantity("pack_stale_flag")
def _pack_stale(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    """Any core pack source stale, or an optional one (``pack_optional``) that spoke and stopped."""
    stale = bool(ctx.store.stale_sources(now_s, "pack")) or any(
        ctx.store[n].seq > 0 for n in ctx.store.stale_sources(now_s, "pack_optional")
    )
    return float(stale), ctx.tick


@quantity("vehicle_request_timing_violation")
def _vehicle_timing(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    """foxBMS check each tick: last frame <= cycle(1+tol) old and last spacing within +-tol."""
    src = ctx.store["vehicle_request"]
    cycle_s = src.spec.cycle_s
    tol = ctx.ladder.request_timing_tolerance
    late = src.newest_age_s(now_s) > cycle_s * (1.0 + tol) + TIME_EPS_S
    gap = src.last_gap_s
    bad_gap = src.seq >= 2 and not (
        cycle_s * (1.0 - tol) - TIME_EPS_S <= gap <= cycle_s * (1.0 + tol) + TIME_EPS_S
    )
    return float(late or bad_gap), ctx.tick


@quantity("charger_stale_flag")
def _charger_stale(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    """A charger that spoke and went silent (none connected is not a fault)."""
    if "charger_status" not in ctx.store:
        return 0.0, ctx.tick
    src = ctx.store["charger_status"]
    return float(src.seq > 0 and src.is_stale(now_s)), ctx.tick


@quantity("e2e_failure_flag")
def _e2e(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return float(any(s.e2e_failed_last() for s in ctx.store)), ctx.tick


@quantity("thermal_runaway_flag")
def _runaway(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return float(ctx.runaway.confirmed), ctx.tick


@quantity("temp_rate_max_c_s")
def _temp_rate(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return ctx.runaway.max_rate_c_s, ctx.store["cell_temp_c"].seq


@quantity("temp_trend_max_c_s")
def _temp_trend(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return ctx.runaway.max_trend_c_s, ctx.store["cell_temp_c"].seq


@quantity("soft_short_count")
def _soft_short(ctx: ProtectionContext, now_s: float) -> tuple[float, int]:
    return float(np.count_nonzero(ctx.soft_short.flagged)), ctx.tick


# -- engine -----------------------------------------------------------------------------------


@dataclass
class ProtectionResult:
    """Outcome of one tick: tier per fault code, worst tier, and the fatal reaction flags."""

    code_tier: np.ndarray  # index = FaultCode value, value = Tier value
    worst_tier: Tier = Tier.NONE
    emergency_shutoff: bool = False  # a fatal tier is active: limits to 0 now
    open_contactors: bool = False  # a fatal tier's pre-trip delay has elapsed

    def active(self) -> list[tuple[FaultCode, Tier]]:
        """Active codes with their highest active tier, most severe first."""
        idx = np.flatnonzero(self.code_tier)
        pairs = [(FaultCode(int(i)), Tier(int(self.code_tier[i]))) for i in idx]
        return sorted(pairs, key=lambda p: (-p[1], p[0]))


class ProtectionEngine:
    """Interprets the ladder: one vectorised pass over all rules per tick, no per-quantity code.

    Per rule: an up/down timer counts time the condition held (down while absent); the tier sets
    when it reaches ``set_s`` and at least ``min_samples`` fresh samples arrived meanwhile. An
    active tier clears after the value stayed beyond ``threshold - hysteresis`` for ``clear_s``
    (never, if latched). Fatal tiers raise ``emergency_shutoff`` at once and ``open_contactors``
    after ``pretrip_s``.
    """

    def __init__(self, ladder: Ladder) -> None:
        self.ladder = ladder
        rules = ladder.rules
        self.rules = rules
        self.quantity_names = ladder.quantities()
        self._extractors = [extractor_for(n) for n in self.quantity_names]
        qi = {n: i for i, n in enumerate(self.quantity_names)}
        self.values = np.full(len(qi), np.nan)
        self.samples = np.zeros(len(qi), dtype=np.int64)

        def arr(get, dtype=float):
            return np.array([get(r) for r in rules], dtype=dtype)

        self._q = arr(lambda r: qi[r.quantity], np.int64)
        self._when = arr(lambda r: qi[r.when_quantity] if r.when_quantity else -1, np.int64)
        self._gated = self._when >= 0
        self._when_idx = np.where(self._gated, self._when, 0)
        self._above = arr(lambda r: r.when_above)
        self._below = arr(lambda r: r.when_below)
        self._dir = arr(lambda r: r.direction)
        self._thr = arr(lambda r: r.threshold)
        self._release = self._thr - self._dir * arr(lambda r: r.hysteresis)
        self._set_s = arr(lambda r: r.set_s) - TIME_EPS_S
        self._clear_s = arr(lambda r: r.clear_s) - TIME_EPS_S
        self._pretrip_s = arr(lambda r: r.pretrip_s) - TIME_EPS_S
        self._min_samples = arr(lambda r: r.min_samples, np.int64)
        self._latch = arr(lambda r: r.latch, bool)
        self._fatal = arr(lambda r: r.tier == Tier.FATAL, bool)
        self._code = arr(lambda r: int(r.code), np.int64)
        self._tier = arr(lambda r: int(r.tier), np.int64)
        n = len(rules)
        self.active = np.zeros(n, dtype=bool)
        self.up_s = np.zeros(n)
        self.absent_s = np.zeros(n)
        self.fresh = np.zeros(n, dtype=np.int64)
        self.set_time_s = np.full(n, np.nan)
        self._prev_over = np.zeros(n, dtype=bool)
        self._prev_absent = np.zeros(n, dtype=bool)
        self._last_sample = np.full(n, -1, dtype=np.int64)
        self._last_now_s = np.nan
        # True when no rule is active, over, or has a running timer or sample count: then a tick
        # with nothing over changes nothing (see evaluate).
        self._quiet = False
        self.result = ProtectionResult(np.zeros(max(int(c) for c in FaultCode) + 1, dtype=np.int64))

    def rule_index(self, row: str, tier: Tier) -> int:
        """Index of one rule (for tests and reports)."""
        for i, r in enumerate(self.rules):
            if r.row == row and r.tier == tier:
                return i
        raise KeyError(f"no rule {row}/{tier.name}")

    def step(self, now_s: float, ctx: ProtectionContext) -> ProtectionResult:
        """10 ms task: refresh every quantity from the context, then :meth:`evaluate`."""
        ctx.update(now_s)
        for i, fn in enumerate(self._extractors):
            value, sample = fn(ctx, now_s)
            self.values[i] = value
            self.samples[i] = sample
        return self.evaluate(now_s)

    def set_quantity(self, name: str, value: float, sample: int) -> None:
        """Set one quantity directly (tests, or a node computing a quantity itself)."""
        i = self.quantity_names.index(name)
        self.values[i] = value
        self.samples[i] = sample

    def evaluate(self, now_s: float) -> ProtectionResult:
        """Advance all debounce timers to ``now_s`` with the current quantity values."""
        dt_s = 0.0 if np.isnan(self._last_now_s) else max(now_s - self._last_now_s, 0.0)
        self._last_now_s = now_s
        v = self.values[self._q]
        gate_v = self.values[self._when_idx]
        with np.errstate(invalid="ignore"):
            gate = ~self._gated | ((gate_v > self._above) & (gate_v < self._below))
            over = gate & (self._dir * (v - self._thr) > 0)  # NaN -> False: unknown never trips
        sample = self.samples[self._q]
        if self._quiet and not over.any():
            # Nothing over, active, timing or counting: the full pass below would only rewrite
            # the same zeros (timers clip at 0, no set, no clear, result unchanged).
            self._last_sample[:] = sample
            return self.result
        with np.errstate(invalid="ignore"):
            beyond_release = gate & (self._dir * (v - self._release) > 0)
        new_sample = sample != self._last_sample
        self._last_sample[:] = sample

        pending = ~self.active
        # up/down timer: time counts between two ticks that agree, so a tier sets set_s after
        # the condition was first observed; chatter with > 50 % duty still accumulates.
        up = over & self._prev_over
        down = ~over & ~self._prev_over
        self.up_s += np.where(up, dt_s, np.where(down, -dt_s, 0.0))
        np.maximum(self.up_s, 0.0, out=self.up_s)
        self.fresh += pending & over & new_sample
        self.fresh[pending & ~over & (self.up_s <= 0.0)] = 0
        self._prev_over[:] = over
        set_now = pending & over & (self.up_s >= self._set_s) & (self.fresh >= self._min_samples)

        absent = self.active & ~beyond_release
        self.absent_s = np.where(absent & self._prev_absent, self.absent_s + dt_s, 0.0)
        self._prev_absent[:] = absent
        clear_now = absent & ~self._latch & (self.absent_s >= self._clear_s)

        if set_now.any():
            self.active |= set_now
            self.set_time_s[set_now] = now_s
        if clear_now.any():
            self.active &= ~clear_now
            self.set_time_s[clear_now] = np.nan
            self.up_s[clear_now] = 0.0
            self.fresh[clear_now] = 0
        self.up_s[set_now] = 0.0

        res = self.result
        res.code_tier[:] = 0
        np.maximum.at(res.code_tier, self._code[self.active], self._tier[self.active])
        res.worst_tier = Tier(int(res.code_tier.max()))
        fatal_active = self.active & self._fatal
        res.emergency_shutoff = bool(fatal_active.any())
        res.open_contactors = bool(
            (fatal_active & (now_s - self.set_time_s >= self._pretrip_s)).any()
        )
        self._quiet = not (
            self.active.any()
            or self._prev_over.any()
            or self._prev_absent.any()
            or self.up_s.any()
            or self.fresh.any()
            or self.absent_s.any()
        )
        return res

    def reset(self, code: FaultCode | None = None) -> None:
        """Explicit reset of latched tiers (deep discharge, runaway) of one code or all codes."""
        hit = self._latch & self.active
        if code is not None:
            hit &= self._code == int(code)
        self.active &= ~hit
        self.set_time_s[hit] = np.nan
        self.fresh[hit] = 0
