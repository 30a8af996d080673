"""E2E: CRC-8 SAE J1850 per spec, counter handling, and detection of every injected fault kind."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from crccheck.crc import Crc8SaeJ1850

from bms.can.codec import DbcCodecs, MessageCodec
from bms.can.dbc import load_dbc
from bms.can.e2e import (
    E2EConfig,
    E2EKind,
    E2EReceiver,
    E2ESender,
    TxFault,
    crc8_j1850,
    e2e_crc,
)
from bms.errors import InputError

CYCLE_S = 0.01  # PackCurrent is a 10 ms message


@pytest.fixture()
def codec() -> MessageCodec:
    return DbcCodecs(load_dbc("pack"))["PackCurrent"]


def test_crc8_matches_the_sae_j1850_check_value_and_crccheck() -> None:
    # catalogue check value of CRC-8/SAE-J1850 over "123456789"
    assert crc8_j1850(b"123456789") == 0x4B
    rng_bytes = [os.urandom(n) for n in range(12)]
    for data in rng_bytes:
        assert crc8_j1850(data) == Crc8SaeJ1850.calc(data)


def test_frame_crc_covers_id_little_endian_then_bytes_0_to_6() -> None:
    payload = bytes([1, 2, 3, 4, 5, 6, 7, 0])
    expected = Crc8SaeJ1850.calc(bytes([0x08, 0x01]) + payload[:7])
    assert e2e_crc(0x108, payload) == expected


def test_sender_fills_incrementing_counter_and_valid_crc(codec: MessageCodec) -> None:
    sender = E2ESender(codec)
    payload = codec.encode({"PackCurrent_A": 12.5} if "PackCurrent_A" in codec.index else {})
    counters = []
    for k in range(20):
        (frame,) = sender.transmit(payload, k * CYCLE_S)
        assert frame.data[7] == e2e_crc(codec.frame_id, frame.data)
        counters.append(codec.decode_dict(frame.data)["AliveCounter"])
        assert frame.data[:6] == payload[:6]  # the application signals are untouched
    assert counters == [(k + 1) % 16 for k in range(20)]


def _run(
    codec: MessageCodec,
    frames: int,
    fault: TxFault | None = None,
    start: int = 10,
    length: int = 5,
    config: E2EConfig | None = None,
    **params: float,
):
    """Send ``frames`` cycles; switch ``fault`` on for ``length`` cycles from cycle ``start``."""
    sender = E2ESender(codec)
    receiver = E2EReceiver(codec, config)
    payload = codec.encode({})
    events, accepted = [], []
    for k in range(frames):
        now_s = k * CYCLE_S
        if fault is not None and k == start:
            sender.inject(fault, **params)
        if fault is not None and k == start + length:
            sender.clear(fault)
        for frame in sender.transmit(payload, now_s):
            ok, found = receiver.check(frame.data, frame.time_s)
            events += found
            accepted.append((k, ok))
        events += receiver.poll(now_s)
    return events, accepted, receiver


def test_clean_traffic_has_no_violations(codec: MessageCodec) -> None:
    events, accepted, receiver = _run(codec, 100)
    assert events == []
    assert all(ok for _, ok in accepted) and receiver.accepted == 100


def test_corrupt_crc_is_detected_each_frame_and_rejected(codec: MessageCodec) -> None:
    events, accepted, _ = _run(codec, 40, TxFault.CORRUPT_CRC, start=10, length=2)
    kinds = Counter(e.kind for e in events)
    assert kinds[E2EKind.CRC] == 2
    assert [k for k, ok in accepted if not ok] == [10, 11]
    assert all(e.message == "PackCurrent" for e in events)


def test_wrong_dlc_is_detected(codec: MessageCodec) -> None:
    events, accepted, _ = _run(codec, 40, TxFault.WRONG_DLC, start=10, length=3, wrong_dlc=6)
    assert Counter(e.kind for e in events)[E2EKind.WRONG_DLC] == 3
    assert [k for k, ok in accepted if not ok] == [10, 11, 12]


def test_skipped_counter_is_detected(codec: MessageCodec) -> None:
    events, _, _ = _run(codec, 40, TxFault.SKIP_COUNTER, start=10, length=1, skip_by=2)
    skips = [e for e in events if e.kind is E2EKind.COUNTER_SKIPPED]
    assert len(skips) == 1 and skips[0].time_s == pytest.approx(10 * CYCLE_S)
    assert "skipped 2" in skips[0].detail


def test_dropped_frames_show_as_a_counter_skip_after_recovery(codec: MessageCodec) -> None:
    events, accepted, _ = _run(codec, 40, TxFault.DROP, start=10, length=2)
    assert len(accepted) == 38
    (skip,) = [e for e in events if e.kind is E2EKind.COUNTER_SKIPPED]
    assert skip.time_s == pytest.approx(12 * CYCLE_S) and "skipped 2" in skip.detail


def test_frozen_counter_reports_repeat_then_frozen_then_timeout(codec: MessageCodec) -> None:
    config = E2EConfig(timeout_cycles=3.0, frozen_after=3)
    events, _, _ = _run(codec, 40, TxFault.FREEZE_COUNTER, start=10, length=10, config=config)
    kinds = [e.kind for e in events]
    # frame 10 repeats frame 9's counter; frames 9, 10, 11 carry the same value (3 = frozen)
    assert kinds[:3] == [E2EKind.COUNTER_REPEATED, E2EKind.COUNTER_FROZEN, E2EKind.TIMEOUT]
    assert events[0].time_s == pytest.approx(10 * CYCLE_S)
    assert events[1].time_s == pytest.approx(11 * CYCLE_S)
    # last accepted frame at cycle 9 -> timeout at the first poll beyond 9 + 3 cycles
    assert events[2].time_s == pytest.approx(13 * CYCLE_S)
    assert kinds.count(E2EKind.TIMEOUT) == 1


def test_stop_sending_times_out_once_and_recovers(codec: MessageCodec) -> None:
    events, accepted, receiver = _run(codec, 60, TxFault.STOP, start=10, length=20)
    (timeout,) = [e for e in events if e.kind is E2EKind.TIMEOUT]
    # last frame at cycle 9; timeout = 3 cycles -> reported at the first poll beyond 0.12 s
    assert timeout.time_s == pytest.approx(13 * CYCLE_S)
    assert not receiver.timed_out and accepted[-1] == (59, True)
    # a stopped sender does not advance its counter: no skip on recovery
    assert all(e.kind is E2EKind.TIMEOUT for e in events)


def test_delay_beyond_the_timeout_is_reported_then_frames_arrive_late(codec: MessageCodec) -> None:
    sender = E2ESender(codec)
    receiver = E2EReceiver(codec)
    payload = codec.encode({})
    events, arrivals = [], []
    for k in range(30):
        now_s = k * CYCLE_S
        if k == 10:
            sender.inject("delay", delay_s=0.05)
        for frame in sender.transmit(payload, now_s):
            ok, found = receiver.check(frame.data, frame.time_s)
            events += found
            arrivals.append(frame.time_s)
        events += receiver.poll(now_s)
    assert [e.kind for e in events] == [E2EKind.TIMEOUT]
    assert events[0].time_s == pytest.approx(13 * CYCLE_S)
    # delayed frames keep their order and leave exactly 50 ms after their slot
    assert arrivals[10] == pytest.approx(15 * CYCLE_S)
    assert arrivals == sorted(arrivals)


def test_unknown_fault_name_is_an_input_error(codec: MessageCodec) -> None:
    with pytest.raises(InputError, match="unknown CAN fault 'explode'"):
        E2ESender(codec).inject("explode")


def test_e2e_protected_messages_of_both_dbcs_have_the_fixed_layout() -> None:
    for dbc in ("pack", "vehicle"):
        for codec in DbcCodecs(load_dbc(dbc)).values():
            if codec.e2e:
                assert (codec.counter_byte, codec.counter_shift) == (6, 0)
