"""Fault memory: first/last occurrence, count, freeze frame, clear rules, CAN slot pages."""

from bms.firmware.codes import FaultCode, Tier
from bms.firmware.faultmemory import FaultMemory

OV = FaultCode.CELL_OVERVOLTAGE
H2S = FaultCode.H2S


def test_counts_occurrences_and_keeps_first_and_last_times_and_first_freeze_frame():
    mem = FaultMemory()
    frames = iter([{"cell_voltage_max_v": 4.36}, {"cell_voltage_max_v": 4.40}])
    pattern = [(0.0, False), (1.0, True), (1.1, True), (2.0, False), (3.0, True), (4.0, False)]
    for t, on in pattern:
        mem.update(t, [(OV, Tier.WARNING)] if on else [], freeze=lambda: next(frames))
    rec = mem.get(OV)
    assert rec.count == 2  # two inactive -> active transitions, not ticks
    assert (rec.first_s, rec.last_s) == (1.0, 3.0)
    assert rec.freeze == {"cell_voltage_max_v": 4.36}  # taken at the first occurrence only
    assert not rec.active and rec.worst_tier == Tier.WARNING


def test_tier_escalation_is_remembered_and_active_codes_are_ordered_by_severity():
    mem = FaultMemory()
    mem.update(0.0, [(OV, Tier.INFO), (H2S, Tier.WARNING)])
    started = mem.update(0.1, [(OV, Tier.FATAL), (H2S, Tier.WARNING)])
    assert started == []  # still the same occurrence
    assert [(r.code, r.tier) for r in mem.active()] == [(OV, Tier.FATAL), (H2S, Tier.WARNING)]
    assert mem.get(OV).worst_tier == Tier.FATAL and mem.get(OV).count == 1


def test_clear_on_request_only_erases_inactive_faults():
    mem = FaultMemory()
    mem.update(0.0, [(OV, Tier.FATAL), (H2S, Tier.INFO)])
    mem.update(1.0, [(OV, Tier.FATAL)])
    assert mem.clear() == [H2S]
    assert mem.get(H2S) is None and mem.get(OV) is not None
    assert mem.clear(OV) == []


def test_pages_fill_can_slots_and_pad_with_no_fault():
    mem = FaultMemory()
    assert mem.pages(4) == [[(FaultCode.NONE, Tier.NONE)] * 4]
    codes = [FaultCode(c) for c in range(1, 7)]
    mem.update(0.0, [(c, Tier.WARNING) for c in codes])
    pages = mem.pages(4)
    assert len(pages) == 2 and all(len(p) == 4 for p in pages)
    assert [c for p in pages for c, _ in p if c] == codes
    assert pages[1][2:] == [(FaultCode.NONE, Tier.NONE)] * 2
