"""Fault memory: active and stored fault codes with occurrence times, counts and freeze frames.

Fed each tick with the protection result's active (code, tier) pairs; a record keeps its first
and last occurrence, how often it became active, the worst tier it reached, and a freeze frame
of key signals taken at its first occurrence. Stored records are cleared only on request and
only while inactive. :meth:`FaultMemory.pages` slices the active codes into CAN message slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from bms.firmware.codes import FaultCode, Tier


@dataclass
class FaultRecord:
    """One fault code's history; ``tier`` is the current tier (NONE when inactive)."""

    code: FaultCode
    tier: Tier
    worst_tier: Tier
    first_s: float
    last_s: float
    count: int
    freeze: dict[str, float] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.tier != Tier.NONE


class FaultMemory:
    """Active and stored fault codes; one record per code (the tier travels with it)."""

    def __init__(self) -> None:
        self._records: dict[FaultCode, FaultRecord] = {}

    def update(
        self,
        now_s: float,
        active: Iterable[tuple[FaultCode, Tier]],
        freeze: Mapping[str, float] | Callable[[], Mapping[str, float]] | None = None,
    ) -> list[FaultRecord]:
        """Record this tick's active faults; returns the records that became active just now.

        ``freeze`` may be a callable so the snapshot of key signals is built only when a code
        occurs for the first time, not every tick.
        """
        now_active = {FaultCode(c): Tier(t) for c, t in active if Tier(t) != Tier.NONE}
        started: list[FaultRecord] = []
        for code, tier in now_active.items():
            rec = self._records.get(code)
            if rec is None:
                snapshot = freeze() if callable(freeze) else freeze
                rec = FaultRecord(code, tier, tier, now_s, now_s, 1, dict(snapshot or {}))
                self._records[code] = rec
                started.append(rec)
            elif not rec.active:
                rec.count += 1
                rec.last_s = now_s
                started.append(rec)
            rec.tier = tier
            rec.worst_tier = max(rec.worst_tier, tier)
        for code, rec in self._records.items():
            if code not in now_active:
                rec.tier = Tier.NONE
        return started

    def active(self) -> Iterator[FaultRecord]:
        """Active records, most severe first, then by code."""
        recs = [r for r in self._records.values() if r.active]
        return iter(sorted(recs, key=lambda r: (-r.tier, r.code)))

    def stored(self) -> list[FaultRecord]:
        """Every record (active or not), by code."""
        return [self._records[c] for c in sorted(self._records)]

    def get(self, code: FaultCode) -> FaultRecord | None:
        return self._records.get(code)

    def clear(self, code: FaultCode | None = None) -> list[FaultCode]:
        """Erase stored records on request; active faults are kept. Returns the erased codes."""
        targets = [code] if code is not None else list(self._records)
        erased = [c for c in targets if c in self._records and not self._records[c].active]
        for c in erased:
            del self._records[c]
        return erased

    def pages(self, slots: int) -> list[list[tuple[FaultCode, Tier]]]:
        """Active (code, tier) pairs in pages of ``slots``, padded with (NONE, NONE).

        One page per multiplexed ``BmsFaults`` frame; with no active fault there is one empty
        page, so the message still goes out and says "no fault".
        """
        if slots < 1:
            raise ValueError("slots must be >= 1")
        pairs = [(r.code, r.tier) for r in self.active()]
        pages = [pairs[i : i + slots] for i in range(0, len(pairs), slots)] or [[]]
        for page in pages:
            page.extend([(FaultCode.NONE, Tier.NONE)] * (slots - len(page)))
        return pages
