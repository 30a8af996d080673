"""CONDITION: a comparison on a DBC signal as seen on the bus or on plant truth, or any/all of them.

``{signal: BmsState.BmsState, equals: DRIVE}``, ``{truth: soc_mean, below: 20 %}``,
``{any: [CONDITION, ...]}``. Each condition reads named columns (``BmsState.BmsState``,
``truth.soc_mean``); the runner evaluates it online on the latest values (``holds``) and the
expectations evaluate it on whole recorded arrays at once (``mask``).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bms.can.codec import DbcCodecs, MessageCodec
from bms.can.dbc import load_dbc
from bms.config import Section
from bms.scenario.units import is_percent, parse_duration_s, parse_fraction, parse_percent

OPS = ("equals", "not_equals", "above", "below", "at_least", "at_most", "between")

#: Plant-truth quantities a condition may read (``truth: NAME``) and what they mean.
TRUTH_NAMES: dict[str, str] = {
    "soc_mean": "mean cell SOC (fraction; '20 %' works)",
    "soc_min": "lowest cell SOC (fraction)",
    "soc_max": "highest cell SOC (fraction)",
    "cell_voltage_max_v": "highest series-position voltage (V)",
    "cell_voltage_min_v": "lowest series-position voltage (V)",
    "cell_voltage_spread_v": "highest minus lowest series-position voltage (V)",
    "temp_max_c": "hottest cell (degC)",
    "temp_min_c": "coldest cell (degC)",
    "pressure_min_mpa": "lowest module stack pressure (MPa)",
    "pressure_max_mpa": "highest module stack pressure (MPa)",
    "current_a": "pack current (A, + = discharge)",
    "pack_voltage_v": "pack voltage, battery side (V)",
    "link_voltage_v": "DC-link voltage, load side (V)",
    "h2s_ppm": "H2S in the enclosure (ppm)",
    "contactors_open": "both main contactors open (true/false)",
    "time_s": "simulated time (s; '2 min' works)",
}
TRUTH_PREFIX = "truth."
_FRACTION_TRUTHS = frozenset({"soc_mean", "soc_min", "soc_max"})


def truth_column(name: str) -> str:
    """Trace column name of a truth quantity (``truth.soc_mean``)."""
    return TRUTH_PREFIX + name


class SignalCatalog:
    """Every message and signal of the pack and vehicle DBCs, for checking names in scenarios."""

    def __init__(self, buses: Mapping[str, DbcCodecs] | None = None) -> None:
        if buses is None:
            buses = {"pack": DbcCodecs(load_dbc("pack")), "vehicle": DbcCodecs(load_dbc("vehicle"))}
        self.buses = dict(buses)
        self.messages: dict[str, tuple[str, MessageCodec]] = {}
        for bus, codecs in self.buses.items():
            for name in codecs:
                self.messages[name] = (bus, codecs[name])

    def codec(self, message: str) -> MessageCodec:
        return self.messages[message][1]

    def bus_of(self, message: str) -> str:
        return self.messages[message][0]

    def sender(self, message: str) -> str:
        """The DBC node that transmits ``message`` (``PACK``, ``BMS``, ``VCU``, ``CHARGER``)."""
        senders = self.codec(message).message.senders
        return senders[0] if senders else ""

    def resolve(self, text: Any, err: Callable[[str], Exception]) -> tuple[str, str]:
        """``"Message.Signal"`` -> (message, signal); unknown names list close matches."""
        if not isinstance(text, str) or text.count(".") != 1:
            raise err(f"expected MESSAGE.SIGNAL (e.g. BmsState.BmsState), got {text!r}")
        message, signal = text.split(".")
        if message not in self.messages:
            near = difflib.get_close_matches(message, list(self.messages), n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise err(f"unknown message {message!r}{hint}")
        codec = self.codec(message)
        if signal not in codec.index:
            near = difflib.get_close_matches(signal, list(codec.signal_names), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(near)}?" if near else ", ".join(codec.signal_names[:8])
            raise err(f"message {message} has no signal {signal!r} ({hint})")
        return message, signal


# -- condition tree ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Compare:
    """``column OP value`` (``between``: ``lo <= x <= hi``); NaN (never received) never holds."""

    column: str
    op: str
    value: float
    high: float = math.nan
    text: str = ""

    def columns(self) -> set[str]:
        return {self.column}

    def holds(self, latest: Mapping[str, float]) -> bool:
        """Whether it holds for scalar values by column (missing or NaN: False)."""
        return bool(_compare(np.float64(latest.get(self.column, math.nan)), self))

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Where it holds along recorded arrays of equal length."""
        return _compare(np.asarray(columns[self.column]), self)

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class AnyOf:
    """True when at least one part holds."""

    parts: tuple[Condition, ...]

    def columns(self) -> set[str]:
        return set().union(*(p.columns() for p in self.parts))

    def holds(self, latest: Mapping[str, float]) -> bool:
        return any(p.holds(latest) for p in self.parts)

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.logical_or.reduce([p.mask(columns) for p in self.parts])

    def describe(self) -> str:
        return "any(" + ", ".join(p.describe() for p in self.parts) + ")"


@dataclass(frozen=True)
class AllOf:
    """True when every part holds."""

    parts: tuple[Condition, ...]

    def columns(self) -> set[str]:
        return set().union(*(p.columns() for p in self.parts))

    def holds(self, latest: Mapping[str, float]) -> bool:
        return all(p.holds(latest) for p in self.parts)

    def mask(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.logical_and.reduce([p.mask(columns) for p in self.parts])

    def describe(self) -> str:
        return "all(" + ", ".join(p.describe() for p in self.parts) + ")"


Condition = Compare | AnyOf | AllOf


def _compare(x: np.ndarray, c: Compare) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        op = c.op
        if op == "equals":
            return x == c.value
        if op == "not_equals":
            return (x == x) & (x != c.value)  # NaN: not received yet, so nothing is claimed
        if op == "above":
            return x > c.value
        if op == "below":
            return x < c.value
        if op == "at_least":
            return x >= c.value
        if op == "at_most":
            return x <= c.value
        return (x >= c.value) & (x <= c.high)


# -- parsing -----------------------------------------------------------------------------------
def parse_condition(sec: Section, catalog: SignalCatalog) -> Condition:
    """Read one CONDITION mapping; every problem is a located error."""
    combiners = [k for k in ("any", "all") if sec.has(k)]
    if combiners:
        key = combiners[0]
        if len(sec.value) != 1:
            other = next(k for k in sec.value if k != key)
            raise sec.error(other, f"'{key}' must stand alone in its condition")
        parts = tuple(parse_condition(s, catalog) for s in sec.sections(key))
        if not parts:
            raise sec.error(key, "expected at least one condition")
        sec.done()
        return AnyOf(parts) if key == "any" else AllOf(parts)
    sources = [k for k in ("signal", "truth") if sec.has(k)]
    if len(sources) != 1:
        raise sec.error_here(
            "a condition needs exactly one of 'signal: MESSAGE.SIGNAL', 'truth: NAME', "
            "'any: [...]' or 'all: [...]'"
        )
    ops = [k for k in OPS if sec.has(k)]
    if len(ops) != 1:
        unknown = [k for k in sec.value if k not in (*OPS, "signal", "truth")]
        if unknown:
            raise sec.error(unknown[0], f"unknown field (operators: {', '.join(OPS)})")
        raise sec.error_here(f"expected exactly one operator of {', '.join(OPS)}")
    op = ops[0]
    if sources[0] == "signal":
        message, signal = catalog.resolve(sec.raw("signal"), lambda p: sec.error("signal", p))
        column = f"{message}.{signal}"
        layout = catalog.codec(message).signals[catalog.codec(message).index[signal]]
        convert = _signal_value(layout.choices, layout.unit, column)
    else:
        name = sec.string("truth")
        if name not in TRUTH_NAMES:
            near = difflib.get_close_matches(name, list(TRUTH_NAMES), n=3, cutoff=0.5)
            hint = (
                f"did you mean {', '.join(near)}?" if near else "one of " + ", ".join(TRUTH_NAMES)
            )
            raise sec.error("truth", f"unknown truth quantity {name!r} ({hint})")
        column = truth_column(name)
        convert = _truth_value(name)
    raw = sec.raw(op)
    err = lambda p: sec.error(op, p)  # noqa: E731 - a one-line error factory
    if op == "between":
        if not isinstance(raw, list) or len(raw) != 2:
            raise err("expected [low, high]")
        lo, hi = convert(raw[0], err), convert(raw[1], err)
        if hi < lo:
            raise err(f"low must not exceed high, got {raw!r}")
        text = f"{column} between {raw[0]} and {raw[1]}"
        sec.done()
        return Compare(column, op, lo, hi, text)
    value = convert(raw, err)
    sec.done()
    return Compare(column, op, value, text=f"{column} {op.replace('_', ' ')} {_show(raw)}")


def _show(raw: Any) -> str:
    return str(raw).lower() if isinstance(raw, bool) else str(raw)


def _signal_value(
    choices: Mapping[int, str], unit: str, column: str
) -> Callable[[Any, Callable[[str], Exception]], float]:
    by_name = {str(text).upper(): raw for raw, text in choices.items()}

    def convert(raw: Any, err: Callable[[str], Exception]) -> float:
        if isinstance(raw, bool):
            return 1.0 if raw else 0.0
        if isinstance(raw, int | float):
            if not math.isfinite(raw):
                raise err(f"expected a finite number, got {raw!r}")
            return float(raw)
        if isinstance(raw, str):
            if is_percent(raw) and unit == "%":
                return parse_percent(raw)
            if raw.upper() in by_name:
                return float(by_name[raw.upper()])
            if by_name:
                names = ", ".join(str(t) for t in choices.values())
                raise err(f"{column} has no value {raw!r} (values: {names})")
        raise err(f"expected a number for {column} (it has no value table), got {raw!r}")

    return convert


def _truth_value(name: str) -> Callable[[Any, Callable[[str], Exception]], float]:
    def convert(raw: Any, err: Callable[[str], Exception]) -> float:
        if name == "contactors_open":
            if not isinstance(raw, bool):
                raise err(f"contactors_open compares with true or false, got {raw!r}")
            return 1.0 if raw else 0.0
        if isinstance(raw, bool):
            raise err(f"expected a number, got {raw!r}")
        try:
            if name in _FRACTION_TRUTHS:
                return parse_fraction(raw)
            if name == "time_s":
                return parse_duration_s(raw)
        except ValueError as exc:
            raise err(str(exc)) from None
        if isinstance(raw, int | float) and math.isfinite(raw):
            return float(raw)
        raise err(f"expected a number, got {raw!r}")

    return convert


def condition_columns(conditions: Sequence[Condition]) -> set[str]:
    """All columns the conditions read."""
    return set().union(*(c.columns() for c in conditions)) if conditions else set()
