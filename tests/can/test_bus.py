"""Frames through the virtual bus: nodes, simulated timestamps, complete cell sweeps, faults."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import can
import numpy as np
import pytest

from bms.can.bus import open_bus, open_virtual_bus
from bms.can.busload import BusLoadMeter
from bms.can.clock import SimClock
from bms.can.codec import DbcCodecs
from bms.can.dbc import load_dbc
from bms.can.e2e import E2EKind, E2EViolation
from bms.can.node import Node
from bms.errors import InputError

_channels = itertools.count()


def _channel() -> str:
    return f"test_bus_{next(_channels)}"  # a fresh virtual channel per test


class PackLike(Node):
    """Sends every PACK message of pack.dbc with fixed, known values."""

    def __init__(self, bus: can.BusABC, codecs: DbcCodecs, cells: int, **kw: object) -> None:
        tx = [m.name for m in codecs.db.messages if "PACK" in m.senders]
        super().__init__(bus, codecs, tx=tx, **kw)
        rng = np.random.default_rng(cells)
        self.voltage_v = np.round(rng.uniform(3.0, 4.3, cells), 3)

    def _fill(self, name: str, time_s: float):
        codec = self.codecs[name]
        if name == "CellVoltages":
            return self.voltage_v.reshape(-1, codec.mux.slots)
        if codec.mux is not None:  # other mux messages: all groups at the signals' start values
            return np.zeros((len(codec.mux.group_ids), codec.mux.slots))
        return {}


class BmsLike(Node):
    """Receives every PACK message; records cell voltages and their frame times."""

    def __init__(self, bus: can.BusABC, codecs: DbcCodecs, cells: int, **kw: object) -> None:
        rx = [m.name for m in codecs.db.messages if "PACK" in m.senders]
        super().__init__(bus, codecs, rx=rx, **kw)
        self.voltage_v = np.full(cells, np.nan)
        self.cell_time_s = np.full(cells, np.nan)
        codec = codecs["CellVoltages"]
        self._cell_index = {codec.index[f"Cell{c + 1:03d}_V"]: c for c in range(cells)}
        self.names: list[str] = []
        self.seen: list[E2EViolation] = []

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        self.names.append(name)
        if name == "CellVoltages":
            for i, cell in self._cell_index.items():
                if values[i] == values[i]:  # not NaN: this frame's group
                    self.voltage_v[cell] = values[i]
                    self.cell_time_s[cell] = time_s

    def _on_violation(self, event: E2EViolation) -> None:
        self.seen.append(event)


def test_message_keeps_standard_id_and_simulated_timestamp_through_virtual_bus() -> None:
    codecs = DbcCodecs(load_dbc("pack"))
    codec = codecs["PackCurrent"]
    channel = _channel()
    with open_virtual_bus(channel) as tx, open_virtual_bus(channel) as rx:
        data = codec.encode({"PackCurrent_A": -123.45, "CurrentValid": 1})
        tx.send(
            can.Message(
                arbitration_id=codec.frame_id,
                is_extended_id=codec.is_extended_id,
                dlc=8,
                data=data,
                timestamp=42.125,
            )
        )
        msg = rx.recv(1.0)
    assert msg is not None and msg.is_extended_id is False
    assert msg.timestamp == 42.125  # simulated time survives (preserve_timestamps)
    assert codec.decode_dict(bytes(msg.data))["PackCurrent_A"] == pytest.approx(-123.45)


@pytest.mark.parametrize("cells", [96, 192])
def test_all_cell_voltages_arrive_complete_within_one_cycle(cells: int) -> None:
    codecs_tx, codecs_rx = DbcCodecs(load_dbc("pack")), DbcCodecs(load_dbc("pack"))
    channel = _channel()
    clock = SimClock()
    with (
        PackLike(open_virtual_bus(channel), codecs_tx, cells, phase_step_s=0.001) as pack,
        BmsLike(open_virtual_bus(channel), codecs_rx, cells) as bms,
    ):
        cycle_s = codecs_tx["CellVoltages"].cycle_time_s
        while clock.now_s() <= cycle_s + 1e-9:
            pack.step(clock.now_s())
            bms.step(clock.now_s())
            clock.advance(0.001)
        bms.step(clock.now_s())
        assert not np.isnan(bms.voltage_v).any()
        np.testing.assert_allclose(bms.voltage_v, pack.voltage_v, atol=1e-9)
        # all groups of one sweep carry the same slot time, inside the first cycle
        first_slot = bms.cell_time_s.min()
        assert first_slot < cycle_s
        assert set(np.unique(bms.cell_time_s)) <= {first_slot, first_slot + cycle_s}
        assert bms.events == []  # clean traffic: no E2E violations, no timeouts
        report = bms.report()
        assert report["violations"] == {} and report["frames_received"] > 0


def test_fault_switched_on_and_off_through_the_node_is_seen_only_in_its_window() -> None:
    codecs_tx, codecs_rx = DbcCodecs(load_dbc("pack")), DbcCodecs(load_dbc("pack"))
    channel = _channel()
    clock = SimClock()
    with (
        PackLike(open_virtual_bus(channel), codecs_tx, 96) as pack,
        BmsLike(open_virtual_bus(channel), codecs_rx, 96) as bms,
    ):
        while clock.now_s() <= 1.0:
            now_s = clock.now_s()
            if abs(now_s - 0.5) < 1e-9:
                pack.inject("PackCurrent", "corrupt_crc")
            if abs(now_s - 0.55) < 1e-9:
                pack.clear("PackCurrent", "corrupt_crc")
            pack.step(now_s)
            bms.step(now_s)
            clock.advance(0.001)
    crc = [e for e in bms.seen if e.kind is E2EKind.CRC]
    assert len(crc) == 5  # 10 ms message, 50 ms window
    assert all(0.5 <= e.time_s < 0.55 for e in crc) and all(e.message == "PackCurrent" for e in crc)
    # 50 ms without a valid frame > 3 x 10 ms: a timeout once, at the first step after 0.52 s;
    # the five rejected frames still advanced the sender's counter: one skip on recovery
    others = [e for e in bms.seen if e.kind is not E2EKind.CRC]
    assert [e.kind for e in others] == [E2EKind.TIMEOUT, E2EKind.COUNTER_SKIPPED]
    assert others[0].time_s == pytest.approx(0.521)
    assert others[1].time_s == pytest.approx(0.55)


def test_bus_load_meter_counts_what_a_node_sends() -> None:
    codecs = DbcCodecs(load_dbc("pack"))
    meter = BusLoadMeter(codecs.bitrate_bps)
    channel = _channel()
    clock = SimClock()
    with PackLike(open_virtual_bus(channel), codecs, 192, busload=meter) as pack:
        while clock.now_s() < 1.0 - 1e-9:
            pack.step(clock.now_s())
            clock.advance(0.01)
        report = meter.report(1.0)
        assert report.frames == pack.frames_sent
    # 111..135 bits per 8-byte standard frame (no stuffing .. worst case)
    assert 111 * report.frames <= report.bits <= 135 * report.frames
    assert report.load_pct == pytest.approx(100 * report.bits / 500_000)


def test_unknown_interface_is_a_one_line_input_error() -> None:
    with pytest.raises(InputError, match="cannot open"):
        open_bus("no_such_interface", "x", ignore_config=True)


def test_event_message_only_through_send_event() -> None:
    codecs = DbcCodecs(load_dbc("vehicle"))
    channel = _channel()

    class Bms(Node):
        def _fill(self, name: str, time_s: float) -> Mapping[str, float]:
            return {}

    with (
        Bms(open_virtual_bus(channel), codecs, tx=["BmsFaultFreeze", "BmsSoc"]) as node,
        open_virtual_bus(channel) as listener,
    ):
        assert node.scheduler.names == ("BmsSoc",)  # the event message is not scheduled
        node.send_event("BmsFaultFreeze", {}, 0.25)
        msg = listener.recv(1.0)
        assert msg is not None and msg.arbitration_id == codecs["BmsFaultFreeze"].frame_id
        assert msg.timestamp == 0.25
        with pytest.raises(InputError):
            node.send_event("BmsLimits", {}, 0.3)
