"""Bus load: exact stuffed frame length against an independent bit-level reference and bounds."""

from __future__ import annotations

import numpy as np
import pytest

from bms.can.busload import (
    BusLoadMeter,
    crc15_can,
    frame_bits,
    frame_bits_worst_case,
)


def _reference_bits(can_id: int, extended: bool, data: bytes) -> int:
    """Straight from ISO 11898-1: build the bit string, CRC-15 bit by bit, stuff, add the tail."""
    bits = [0]  # SOF
    if extended:
        bits += [int(b) for b in f"{can_id >> 18:011b}"] + [1, 1]  # base ID, SRR, IDE
        bits += [int(b) for b in f"{can_id & 0x3FFFF:018b}"] + [0, 0, 0]  # ext ID, RTR, r1, r0
    else:
        bits += [int(b) for b in f"{can_id:011b}"] + [0, 0, 0]  # ID, RTR, IDE, r0
    bits += [int(b) for b in f"{len(data):04b}"]
    for byte in data:
        bits += [int(b) for b in f"{byte:08b}"]
    crc = 0
    for bit in bits:
        nxt = bit ^ (crc >> 14)
        crc = (crc << 1) & 0x7FFF
        if nxt:
            crc ^= 0x4599
    bits += [int(b) for b in f"{crc:015b}"]
    stuffed, run, prev = 0, 0, None
    for bit in bits:
        run = run + 1 if bit == prev else 1
        prev = bit
        if run == 5:
            stuffed += 1
            prev, run = 1 - bit, 1
    return len(bits) + stuffed + 13


def test_crc15_check_value() -> None:
    # CRC-15/CAN catalogue check value over "123456789"
    bits = np.unpackbits(np.frombuffer(b"123456789", dtype=np.uint8))
    assert int(crc15_can(bits)[0]) == 0x059E


@pytest.mark.parametrize("extended", [False, True])
@pytest.mark.parametrize("dlc", [0, 1, 4, 8])
def test_exact_frame_bits_match_the_reference_and_stay_within_bounds(
    extended: bool, dlc: int
) -> None:
    rng = np.random.default_rng(dlc + 10 * extended)
    id_max = (1 << 29) if extended else (1 << 11)
    ids = rng.integers(0, id_max, 200)
    payloads = rng.integers(0, 256, (200, dlc), dtype=np.uint8)
    # include the stuffing-heavy extremes
    payloads[0] = 0
    payloads[1] = 0xFF
    ids[0] = 0
    bits = frame_bits(ids, extended, payloads)
    no_stuff = (67 if extended else 47) + 8 * dlc
    for k in range(200):
        assert bits[k] == _reference_bits(int(ids[k]), extended, payloads[k].tobytes())
    assert bits.min() >= no_stuff
    assert bits.max() <= frame_bits_worst_case(dlc, extended)


def test_worst_case_bound_values() -> None:
    # standard 8-byte frame: 111 bits unstuffed + 24 stuff bits at most (Davis et al. 2007)
    assert frame_bits_worst_case(8, False) == 135
    assert frame_bits_worst_case(8, True) == 160


def test_meter_reports_bits_per_second_and_load_at_the_bitrate() -> None:
    meter = BusLoadMeter(bitrate_bps=500_000, batch=64)
    rng = np.random.default_rng(1)
    frames = [(int(rng.integers(0, 0x7FF)), rng.bytes(8)) for _ in range(1000)]
    expected = 0
    for can_id, data in frames:
        meter.add(can_id, False, data)
        expected += _reference_bits(can_id, False, data)
    report = meter.report(duration_s=2.0)
    assert report.frames == 1000 and report.bits == expected
    assert report.bits_per_s == pytest.approx(expected / 2.0)
    assert report.load_pct == pytest.approx(100 * expected / 2.0 / 500_000)
