"""Durations and percentages as scenario files write them: ``250 ms``, ``5 min``, ``90 %``.

Each parser raises :class:`ValueError` with the user-facing problem text; the ``Section`` helpers
turn it into a located :class:`~bms.errors.InputError` (``file:line: field: problem``).
"""

from __future__ import annotations

import math
import re
from typing import Any

from bms.config import Section

#: The problem text of every bad duration (the scenario format promises this wording).
DURATION_HINT = "expected a duration like '120 s'"
FRACTION_HINT = "expected a percentage like '90 %' or a fraction like 0.9"

#: Seconds per unit; a bare number is seconds.
DURATION_UNITS_S = {"ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|sec|min|h)?\s*$")
_PERCENT_RE = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*%\s*$")


def parse_duration_s(value: Any) -> float:
    """Seconds from ``"250 ms"``, ``"1.5 h"``, ``"90s"`` or a bare non-negative number."""
    if isinstance(value, bool):
        raise ValueError(DURATION_HINT)
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise ValueError(DURATION_HINT)
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * DURATION_UNITS_S[match.group(2) or "s"]
    raise ValueError(DURATION_HINT)


def is_percent(value: Any) -> bool:
    """True for text written as a percentage (``"90 %"``)."""
    return isinstance(value, str) and _PERCENT_RE.match(value) is not None


def parse_percent(value: str) -> float:
    """The number in front of ``%`` (``"90 %"`` -> 90.0)."""
    match = _PERCENT_RE.match(value)
    if match is None:
        raise ValueError(f"{FRACTION_HINT}, got {value!r}")
    return float(match.group(1))


def parse_fraction(value: Any) -> float:
    """A fraction from ``"90 %"`` (0.9) or a bare number taken as the fraction itself."""
    if isinstance(value, bool):
        raise ValueError(f"{FRACTION_HINT}, got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"{FRACTION_HINT}, got {value!r}")
        return float(value)
    if is_percent(value):
        return parse_percent(value) / 100.0
    raise ValueError(f"{FRACTION_HINT}, got {value!r}")


# -- located readers on a Section ----------------------------------------------------------------
_MISSING: Any = object()


def duration(
    sec: Section,
    key: str,
    default: Any = _MISSING,
    *,
    min_s: float | None = None,
    max_s: float | None = None,
    above_s: float | None = None,
) -> float:
    """A duration field of ``sec`` in seconds, located errors on bad text or range."""
    value = sec.raw(key) if default is _MISSING else sec.raw(key, default)
    if value is None:
        return value
    return check_duration(value, lambda p: sec.error(key, p), min_s, max_s, above_s)


def check_duration(
    value: Any,
    err: Any,
    min_s: float | None = None,
    max_s: float | None = None,
    above_s: float | None = None,
) -> float:
    """Parse ``value`` as a duration; ``err(problem)`` builds the located error to raise."""
    try:
        seconds = parse_duration_s(value)
    except ValueError as exc:
        raise err(str(exc)) from None
    if min_s is not None and seconds < min_s:
        raise err(f"must be at least {format_duration(min_s)}, got {value!r}")
    if max_s is not None and seconds > max_s:
        raise err(f"must be at most {format_duration(max_s)}, got {value!r}")
    if above_s is not None and seconds <= above_s:
        raise err(f"must be longer than {format_duration(above_s)}, got {value!r}")
    return seconds


def fraction(
    sec: Section,
    key: str,
    default: Any = _MISSING,
    *,
    min: float | None = 0.0,
    max: float | None = 1.0,
) -> float:
    """A SOC-like field of ``sec``: ``"90 %"`` or ``0.9``, checked against [min, max]."""
    value = sec.raw(key) if default is _MISSING else sec.raw(key, default)
    if value is None:
        return value
    try:
        out = parse_fraction(value)
    except ValueError as exc:
        raise sec.error(key, str(exc)) from None
    if (min is not None and out < min) or (max is not None and out > max):
        raise sec.error(key, f"must be within {min * 100:g} % .. {max * 100:g} %, got {value!r}")
    return out


def format_duration(seconds: float) -> str:
    """Readable text for a duration in seconds (``0.25`` -> ``"250 ms"``, ``7200`` -> ``"2 h"``)."""
    if seconds >= 3600 and seconds % 360 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 6 == 0:
        return f"{seconds / 60:g} min"
    if 0 < seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"
