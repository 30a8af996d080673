"""One cyclic scheduler for all periodic frames of a node, on an injected clock.

Deadlines are absolute (``start + phase + k * period``, integer nanoseconds), so nothing drifts.
On the simulated clock every slot is delivered (stamped with its exact deadline); on the wall clock
a slot that is already overtaken by the next one is skipped and counted, never sent as a burst,
and the lateness of every delivered slot is recorded.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from bms.errors import InputError


class Due(NamedTuple):
    """A slot to send now: message name, its deadline and how late ``due()`` was called for it."""

    name: str
    deadline_s: float
    lateness_s: float


@dataclass
class _Entry:
    name: str
    period_ns: int
    phase_ns: int
    k: int = 0  # index of the next slot


@dataclass(frozen=True)
class LatenessStats:
    """Summary of delivered-slot lateness in seconds, and slots skipped on the wall clock."""

    count: int
    p50_s: float
    p99_s: float
    max_s: float
    missed: int


class CyclicScheduler:
    """Heap of absolute deadlines; ties are broken by registration order (deterministic)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._start_ns = round(start_s * 1e9)
        self._entries: list[_Entry] = []
        self._heap: list[tuple[int, int]] = []
        self.lateness_s: list[float] = []
        self.missed: dict[str, int] = {}

    def add(self, name: str, period_s: float, phase_s: float = 0.0) -> None:
        """Schedule ``name`` every ``period_s`` starting at ``start + phase_s``."""
        if not period_s > 0:
            raise InputError(f"cyclic message {name}: period must be > 0 s, got {period_s}")
        if not 0 <= phase_s < period_s:
            raise InputError(f"cyclic message {name}: phase must be in [0, period), got {phase_s}")
        entry = _Entry(name, round(period_s * 1e9), round(phase_s * 1e9))
        self._entries.append(entry)
        self.missed[name] = 0
        heapq.heappush(self._heap, (self._start_ns + entry.phase_ns, len(self._entries) - 1))

    @classmethod
    def from_periods(
        cls,
        periods_s: Mapping[str, float],
        phase_step_s: float = 0.0,
        start_s: float = 0.0,
        phase_offset_s: float = 0.0,
    ) -> CyclicScheduler:
        """Scheduler for ``{name: period_s}``; message i gets phase ``offset + i*step mod period``.

        A phase step spreads the bus load (foxBMS offsets its periodic messages the same way).
        """
        scheduler = cls(start_s)
        for i, (name, period_s) in enumerate(periods_s.items()):
            phase_ns = round((phase_offset_s + i * phase_step_s) * 1e9)
            phase = (phase_ns % round(period_s * 1e9)) / 1e9
            scheduler.add(name, period_s, phase)
        return scheduler

    @property
    def names(self) -> tuple[str, ...]:
        """Scheduled messages in registration order."""
        return tuple(e.name for e in self._entries)

    def next_deadline_s(self) -> float:
        """Earliest pending deadline (inf when nothing is scheduled)."""
        return self._heap[0][0] / 1e9 if self._heap else float("inf")

    def due(self, now_s: float, catch_up: bool = True, record: bool = True) -> list[Due]:
        """Slots due at or before ``now_s``, in deadline order.

        ``catch_up=True`` (simulated clock): every passed slot is returned once. ``False`` (wall
        clock): of several passed slots of one message only the latest is returned, the older ones
        are counted in :attr:`missed`. ``record=False`` leaves :attr:`lateness_s` alone (slots
        handed to a transmit thread, which records when they really leave).
        """
        now_ns = round(now_s * 1e9)
        heap = self._heap
        out: list[Due] = []
        while heap and heap[0][0] <= now_ns:
            deadline_ns, index = heapq.heappop(heap)
            entry = self._entries[index]
            if not catch_up:
                latest_k = (now_ns - self._start_ns - entry.phase_ns) // entry.period_ns
                if latest_k > entry.k:
                    self.missed[entry.name] += latest_k - entry.k
                    entry.k = latest_k
                    deadline_ns = self._start_ns + entry.phase_ns + entry.k * entry.period_ns
            lateness = (now_ns - deadline_ns) / 1e9
            if record:
                self.lateness_s.append(lateness)
            out.append(Due(entry.name, deadline_ns / 1e9, lateness))
            entry.k += 1
            heapq.heappush(
                heap, (self._start_ns + entry.phase_ns + entry.k * entry.period_ns, index)
            )
        return out

    def upcoming(self, now_s: float, until_s: float) -> list[Due]:
        """Wall clock, prepared ahead: the slots with deadlines before ``until_s``.

        Slots already passed at ``now_s`` are handled as by ``due(now_s, catch_up=False)`` (only
        the latest of each message, the older ones counted missed); the future ones are all
        returned, each once. Nothing is recorded: the sender records the real lateness.
        """
        out = self.due(now_s, catch_up=False, record=False)
        until_ns = round(until_s * 1e9) - 1  # exclusive: a slot at until_s is the next call's
        if until_ns > round(now_s * 1e9):
            out += self.due(until_ns / 1e9, catch_up=True, record=False)
        return out

    def lateness(self) -> LatenessStats:
        """p50/p99/max of recorded lateness and the number of skipped slots."""
        missed = sum(self.missed.values())
        if not self.lateness_s:
            return LatenessStats(0, 0.0, 0.0, 0.0, missed)
        values = np.asarray(self.lateness_s)
        p50, p99 = np.percentile(values, [50, 99])
        return LatenessStats(len(values), float(p50), float(p99), float(values.max()), missed)


def periods_from(codecs: Iterable[object], names: Iterable[str] | None = None) -> dict[str, float]:
    """``{name: cycle_time_s}`` of the cyclic ``codecs`` (optionally only those in ``names``)."""
    wanted = None if names is None else set(names)
    out = {}
    for codec in codecs:
        name = codec.name  # type: ignore[attr-defined]
        cycle = codec.cycle_time_s  # type: ignore[attr-defined]
        if cycle and (wanted is None or name in wanted):
            out[name] = cycle
    return out
