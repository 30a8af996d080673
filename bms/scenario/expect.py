"""Expectations: assertions over the recorded bus signals and plant truth, judged after the run.

Each kind reads whole recorded arrays at once (vectorised): ``always``/``never`` over a window,
``eventually`` before a deadline, ``within`` a time after a fault or event, ``soc_error`` bounds
and ``faults`` seen on ``BmsFaults``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from bms.config import Section
from bms.firmware.codes import FaultCode, Tier
from bms.scenario.conditions import Compare, Condition
from bms.scenario.result import ExpectationResult
from bms.scenario.timeline import LoadContext
from bms.scenario.units import check_duration, duration, format_duration, fraction

KINDS = ("always", "never", "eventually", "within", "soc_error", "faults")
#: Trace columns the runner adds for ``soc_error`` (fractions, over the cells).
SOC_ERROR_MAX = "bms.soc_error_max"
SOC_ERROR_RMS = "bms.soc_error_rms"


@dataclass(frozen=True)
class Ref:
    """A point in time: absolute seconds, a fault's start or a condition's first occurrence."""

    time_s: float | None = None
    fault: int | None = None
    condition: Condition | None = None

    def text(self) -> str:
        if self.fault is not None:
            return f"faults[{self.fault}]"
        if self.condition is not None:
            return self.condition.describe()
        return format_duration(self.time_s or 0.0)


@dataclass(frozen=True)
class Expectation:
    """One ``expect`` entry, checked against the run's trace by :func:`evaluate`."""

    index: int
    name: str
    kind: str
    condition: Condition | None = None
    window: tuple[float, float | None] = (0.0, None)  # (start, end or None = end of run)
    after: Ref | None = None
    within_s: float | None = None
    before_s: float | None = None
    soc_max: float | None = None
    soc_rms: float | None = None
    codes: tuple[str, ...] = ()
    tier: str | None = None
    only: bool = False  # faults: none_except (True) or includes (False)

    @property
    def fast(self) -> bool:
        """Needs the 10 ms trace (reaction times)."""
        return self.kind == "within" or (self.kind == "eventually" and self.within_s is not None)

    def columns(self) -> set[str]:
        cols = set(self.condition.columns()) if self.condition else set()
        if self.after is not None and self.after.condition is not None:
            cols |= self.after.condition.columns()
        if self.kind == "soc_error":
            cols |= {SOC_ERROR_MAX, SOC_ERROR_RMS}
        return cols


@dataclass
class RunFacts:
    """What expectations need besides the traces: fault starts, codes seen, the run's end."""

    end_s: float
    fault_start_s: dict[int, float] = field(default_factory=dict)
    #: Fault code name -> (worst tier name seen, first time seen) on BmsFaults.
    codes_seen: dict[str, tuple[str, float]] = field(default_factory=dict)


@dataclass
class Trace:
    """Recorded samples: ``time_s`` (N,) and one (N,) array per column name."""

    time_s: np.ndarray
    columns: Mapping[str, np.ndarray]


# -- parsing -----------------------------------------------------------------------------------
def parse_expectations(root: Section, ctx: LoadContext, n_faults: int) -> list[Expectation]:
    """Read the ``expect`` list; names default to a readable summary of the entry."""
    out = []
    for index, sec in enumerate(root.sections("expect", [])):
        out.append(_expectation(index, sec, ctx, n_faults))
    return out


def _expectation(index: int, sec: Section, ctx: LoadContext, n_faults: int) -> Expectation:
    kinds = [k for k in KINDS if sec.has(k)]
    if "eventually" in kinds and "within" in kinds:
        kinds.remove("within")  # `eventually: ... within: 2 s` is a deadline, not a second kind
    if len(kinds) != 1:
        if kinds:
            raise sec.error(kinds[1], f"one expectation kind per entry (also has {kinds[0]!r})")
        unknown = next(
            (k for k in sec.value if k not in ("name", "during", "after", "before")), None
        )
        if unknown is not None:
            raise sec.error(unknown, f"unknown expectation kind (one of {', '.join(KINDS)})")
        raise sec.error_here(f"expected one expectation kind of {', '.join(KINDS)}")
    kind = kinds[0]
    name = sec.string("name", "")
    fields: dict = {}
    if kind in ("always", "never"):
        cond = ctx.condition(sec.section(kind))
        fields = dict(condition=cond, window=_window(sec))
        auto = f"{kind} {cond.describe()}"
    elif kind == "eventually":
        cond = ctx.condition(sec.section(kind))
        after = _ref(sec, "after", ctx, n_faults) if sec.has("after") else None
        before = duration(sec, "before", None)
        within = duration(sec, "within", None, above_s=0.0)
        if before is not None and within is not None:
            raise sec.error("within", "give 'before:' (absolute) or 'within:' (after 'after:')")
        if within is not None and after is None:
            raise sec.error("within", "'within:' needs 'after:' (a fault, a condition or a time)")
        fields = dict(condition=cond, after=after, before_s=before, within_s=within)
        auto = f"eventually {cond.describe()}" + (
            f" before {format_duration(before)}" if before is not None else ""
        )
    elif kind == "within":
        within = duration(sec, "within", above_s=0.0)
        after = _ref(sec, "after", ctx, n_faults)
        cond = ctx.condition(sec.section("condition"))
        fields = dict(condition=cond, after=after, within_s=within)
        auto = f"{cond.describe()} within {format_duration(within)} after {after.text()}"
    elif kind == "soc_error":
        inner = sec.section(kind)
        soc_max = fraction(inner, "at_most", None, min=0.0, max=1.0)
        soc_rms = fraction(inner, "rms_at_most", None, min=0.0, max=1.0)
        inner.done()
        if soc_max is None and soc_rms is None:
            raise sec.error(kind, "expected 'at_most:' and/or 'rms_at_most:'")
        after_s = duration(sec, "after", 0.0)
        fields = dict(soc_max=soc_max, soc_rms=soc_rms, window=(after_s, None))
        parts = [
            f"|error| <= {soc_max * 100:g} %" if soc_max is not None else "",
            f"RMS <= {soc_rms * 100:g} %" if soc_rms is not None else "",
        ]
        auto = "SOC " + " and ".join(p for p in parts if p) + f" after {format_duration(after_s)}"
    else:
        inner = sec.section(kind)
        modes = [k for k in ("none_except", "includes") if inner.has(k)]
        if len(modes) != 1:
            raise inner.error_here("expected exactly one of 'none_except:' or 'includes:'")
        mode = modes[0]
        codes = tuple(_code(inner, mode, k, c) for k, c in enumerate(inner.items(mode)))
        tier = (
            inner.string("tier", None, choices=tuple(t.name for t in Tier if t))
            if inner.has("tier")
            else None
        )
        if tier is not None and mode == "none_except":
            raise inner.error("tier", "tier applies to 'includes:'")
        inner.done()
        fields = dict(codes=codes, tier=tier, only=mode == "none_except")
        auto = f"faults {mode.replace('_', ' ')} {', '.join(codes) or 'nothing'}" + (
            f" at {tier}" if tier else ""
        )
    sec.done()
    return Expectation(index, name or auto, kind, **fields)


def _code(sec: Section, key: str, k: int, value: object) -> str:
    if (
        not isinstance(value, str)
        or value.upper() not in FaultCode.__members__
        or value.upper() == "NONE"
    ):
        names = ", ".join(c.name for c in FaultCode if c)
        raise Section(sec.doc, sec.path + (key,), {}).error(
            k, f"unknown fault code {value!r} (one of {names})"
        )
    return value.upper()


def _window(sec: Section) -> tuple[float, float | None]:
    if not sec.has("during"):
        return (0.0, None)
    items = sec.items("during")
    holder = Section(sec.doc, sec.path + ("during",), {})
    if len(items) != 2:
        raise sec.error("during", "expected [start, end] (end may be 'end')")
    start = check_duration(items[0], lambda p: holder.error(0, p))
    end = None if items[1] == "end" else check_duration(items[1], lambda p: holder.error(1, p))
    if end is not None and end < start:
        raise sec.error("during", "end before start")
    return (start, end)


def _ref(sec: Section, key: str, ctx: LoadContext, n_faults: int) -> Ref:
    value = sec.raw(key)
    if isinstance(value, str) and value.startswith("faults["):
        try:
            index = int(value[len("faults[") : value.index("]")])
        except ValueError:
            raise sec.error(key, f"expected faults[N], got {value!r}") from None
        if not 0 <= index < n_faults:
            raise sec.error(key, f"{value}: the scenario has {n_faults} fault(s)")
        return Ref(fault=index)
    if isinstance(value, dict):
        return Ref(condition=ctx.condition(sec.section(key)))
    return Ref(time_s=duration(sec, key))


# -- evaluation --------------------------------------------------------------------------------
def evaluate(exp: Expectation, trace: Trace, facts: RunFacts) -> ExpectationResult:
    """The verdict of one expectation on the recorded trace."""
    try:
        return _EVALUATORS[exp.kind](exp, trace, facts)
    except _NotJudged as exc:
        return ExpectationResult(exp.name, False, str(exc))


class _NotJudged(Exception):
    """The expectation could not be judged (e.g. its fault never started): it fails."""


def _slice(trace: Trace, start: float, end: float | None) -> np.ndarray:
    t = trace.time_s
    stop = math.inf if end is None else end
    return (t >= start - 1e-9) & (t <= stop + 1e-9)


def _value_text(cond: Condition, trace: Trace, k: int) -> str:
    if isinstance(cond, Compare):
        return f"{cond.column} = {float(trace.columns[cond.column][k]):g}"
    return "condition"


def _always(exp: Expectation, trace: Trace, facts: RunFacts) -> ExpectationResult:
    sel = _slice(trace, *exp.window)
    if not sel.any():
        raise _NotJudged("no samples in the window (did the run end before it?)")
    cond = exp.condition
    held = cond.mask(trace.columns)  # type: ignore[union-attr]
    # Samples before a referenced signal was first seen on the bus claim nothing either way.
    known = np.logical_and.reduce(
        [np.isfinite(trace.columns[c]) for c in cond.columns()]  # type: ignore[union-attr]
    )
    bad = sel & known & (~held if exp.kind == "always" else held)
    if bad.any():
        k = int(np.argmax(bad))
        t = float(trace.time_s[k])
        verb = "violated" if exp.kind == "always" else "happened"
        return ExpectationResult(
            exp.name, False, f"{verb} at {t:.2f} s: {_value_text(exp.condition, trace, k)}", t
        )
    if not (sel & known).any():
        raise _NotJudged("its signals were never seen on the bus in the window")
    return ExpectationResult(exp.name, True, f"held over {int((sel & known).sum())} samples")


def _ref_time(ref: Ref, trace: Trace, facts: RunFacts) -> float:
    if ref.fault is not None:
        if ref.fault not in facts.fault_start_s:
            raise _NotJudged(f"faults[{ref.fault}] never started")
        return facts.fault_start_s[ref.fault]
    if ref.condition is not None:
        held = ref.condition.mask(trace.columns)
        if not held.any():
            raise _NotJudged(f"the event never happened: {ref.condition.describe()}")
        return float(trace.time_s[int(np.argmax(held))])
    return float(ref.time_s or 0.0)


def _first_in(exp: Expectation, trace: Trace, start: float, end: float | None) -> float | None:
    held = exp.condition.mask(trace.columns) & _slice(trace, start, end)  # type: ignore[union-attr]
    return float(trace.time_s[int(np.argmax(held))]) if held.any() else None


def _eventually(exp: Expectation, trace: Trace, facts: RunFacts) -> ExpectationResult:
    start = _ref_time(exp.after, trace, facts) if exp.after is not None else 0.0
    end = exp.before_s if exp.before_s is not None else None
    if exp.within_s is not None:
        end = start + exp.within_s
    if end is not None and facts.end_s < end - 1e-9:
        hit = _first_in(exp, trace, start, end)
        if hit is None:
            raise _NotJudged(f"the run ended at {facts.end_s:.2f} s, before the deadline {end:g} s")
    hit = _first_in(exp, trace, start, end)
    if hit is None:
        limit = f" by {end:.2f} s" if end is not None else " before the end of the run"
        return ExpectationResult(exp.name, False, f"never held{limit}")
    return ExpectationResult(exp.name, True, f"held at {hit:.2f} s", hit)


def _within(exp: Expectation, trace: Trace, facts: RunFacts) -> ExpectationResult:
    start = _ref_time(exp.after, trace, facts)  # type: ignore[arg-type]
    end = start + (exp.within_s or 0.0)
    hit = _first_in(exp, trace, start, end)
    if hit is None:
        if facts.end_s < end - 1e-9:
            raise _NotJudged(f"the run ended at {facts.end_s:.2f} s, before {end:.2f} s")
        return ExpectationResult(
            exp.name, False, f"not within {format_duration(exp.within_s or 0.0)} of {start:.2f} s"
        )
    return ExpectationResult(
        exp.name, True, f"after {(hit - start) * 1000:.0f} ms (at {hit:.2f} s)", hit
    )


def _soc_error(exp: Expectation, trace: Trace, facts: RunFacts) -> ExpectationResult:
    sel = _slice(trace, *exp.window)
    err_max = trace.columns[SOC_ERROR_MAX][sel]
    err_rms = trace.columns[SOC_ERROR_RMS][sel]
    ok = np.isfinite(err_max)
    if not ok.any():
        raise _NotJudged("no SOC estimate in the window")
    worst = float(err_max[ok].max())
    rms = float(np.sqrt(np.mean(err_rms[ok] ** 2)))
    detail = f"max |error| {worst * 100:.2f} %, RMS {rms * 100:.2f} %"
    if exp.soc_max is not None and worst > exp.soc_max:
        k = int(np.flatnonzero(sel)[ok][int(np.argmax(err_max[ok]))])
        return ExpectationResult(exp.name, False, detail, float(trace.time_s[k]))
    if exp.soc_rms is not None and rms > exp.soc_rms:
        return ExpectationResult(exp.name, False, detail)
    return ExpectationResult(exp.name, True, detail)


def _faults(exp: Expectation, trace: Trace, facts: RunFacts) -> ExpectationResult:
    seen = facts.codes_seen
    if exp.only:
        extra = sorted(c for c in seen if c not in exp.codes)
        if extra:
            first = min(extra, key=lambda c: seen[c][1])
            text = ", ".join(f"{c} ({seen[c][0]} at {seen[c][1]:.2f} s)" for c in extra)
            return ExpectationResult(exp.name, False, f"unexpected: {text}", seen[first][1])
        return ExpectationResult(exp.name, True, f"seen: {', '.join(sorted(seen)) or 'none'}")
    floor = Tier[exp.tier] if exp.tier else Tier.INFO
    missing = [c for c in exp.codes if c not in seen or Tier[seen[c][0]] < floor]
    if missing:
        text = ", ".join(
            f"{c} (only {seen[c][0]})" if c in seen else f"{c} (never)" for c in missing
        )
        return ExpectationResult(exp.name, False, f"missing: {text}")
    last = max(seen[c][1] for c in exp.codes) if exp.codes else None
    return ExpectationResult(exp.name, True, "all seen", last)


_EVALUATORS = {
    "always": _always,
    "never": _always,
    "eventually": _eventually,
    "within": _within,
    "soc_error": _soc_error,
    "faults": _faults,
}
