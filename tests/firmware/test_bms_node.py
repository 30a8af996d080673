"""BMS node on python-can virtual buses: scripted pack and VCU frames in, BMS frames out.

The test side encodes with the project's codecs and E2E senders (counter + CRC) and decodes what
the BMS sends; it never touches the node's core except to compare decoded values with it. A
fake pack closes contactors 20 ms after the decoded command and charges the 1 mF DC link
through 50 ohm (exact exponential), so precharge works over CAN.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bms.can import DbcCodecs, E2EReceiver, E2ESender, TxFault, load_dbc, open_virtual_bus
from bms.firmware.codes import BmsState, FaultCode, RequestMode, Tier
from bms.firmware.node import BmsNode

DT_S = 0.01
OCV_60_V = 3.9061  # DOMAIN.md section 2: 60 % SOC
N_CELLS = 96
CONTACTORS = ("MainPlusClosed", "MainMinusClosed", "PrechargeClosed")
_channels = itertools.count()


class Harness:
    """Fake pack (pack bus) and VCU (vehicle bus) around one BmsNode, stepped per the contract:
    pack node, BMS node, VCU in that order each 10 ms tick."""

    def __init__(self) -> None:
        k = next(_channels)
        self.pack_codecs = DbcCodecs(load_dbc("pack"))
        self.veh_codecs = DbcCodecs(load_dbc("vehicle"))
        self.bms_pack_bus = open_virtual_bus(f"test_bms_pack_{k}")
        self.bms_veh_bus = open_virtual_bus(f"test_bms_vehicle_{k}")
        self.pack_bus = open_virtual_bus(f"test_bms_pack_{k}")
        self.veh_bus = open_virtual_bus(f"test_bms_vehicle_{k}")
        self.node = BmsNode(self.bms_pack_bus, self.bms_veh_bus, "bms_pack_a_96s")
        self.senders = {
            name: E2ESender(codecs[name])
            for codecs, names in (
                (self.pack_codecs, ("PackCurrent", "PackVoltages", "ContactorFeedback")),
                (self.pack_codecs, ("CellVoltages", "CellTemperatures", "ModulePressures")),
                (self.pack_codecs, ("PackGas", "PackStatus")),
                (self.veh_codecs, ("VehicleRequest",)),
            )
            for name in names
        }
        self.cell_v = np.full(N_CELLS, OCV_60_V)
        self.mode = RequestMode.STANDBY
        self.vcu_silent = False
        self.tick = 0
        self.command = [False, False, False]
        self.changed_s = [0.0, 0.0, 0.0]
        self.closed = [False, False, False]
        self.link_v = 0.0
        self.current_a = 0.0
        self.rx: list[tuple[float, str, dict]] = []  # vehicle-bus frames from the BMS
        self.pack_rx: list[tuple[float, str, dict]] = []
        self.bms_state_rx = E2EReceiver(self.veh_codecs["BmsState"])
        self.bms_state_rejected = 0
        self.requests: list[tuple[float, RequestMode]] = []

    def close(self) -> None:
        self.node.close()
        self.pack_bus.shutdown()
        self.veh_bus.shutdown()

    @property
    def now_s(self) -> float:
        return round(self.tick * DT_S, 9)

    def _send(self, bus, name: str, values, t: float) -> None:
        import can

        codec = self.senders[name].codec
        if codec.mux is not None:
            payloads = codec.encode_groups(np.asarray(values[0]), values[1])
        else:
            payloads = [codec.encode(values)]
        for payload in payloads:
            for frame in self.senders[name].transmit(payload, t):
                bus.send(
                    can.Message(
                        arbitration_id=frame.frame_id,
                        is_extended_id=False,
                        data=frame.data,
                        timestamp=t,
                    )
                )

    def _pack(self, t: float) -> None:
        # Commands from the BMS (sent last tick) act after the contactor delay.
        while (msg := self.pack_bus.recv(0.0)) is not None:
            codec = self.pack_codecs.by_id[(msg.arbitration_id, False)]
            values = codec.decode_dict(msg.data)
            self.pack_rx.append((msg.timestamp, codec.name, values))
            if codec.name == "BmsContactorCmd":
                cmd = [values["MainPlusCmd"], values["MainMinusCmd"], values["PrechargeCmd"]]
                for i, c in enumerate(cmd):
                    if bool(c) != self.command[i]:
                        self.command[i], self.changed_s[i] = bool(c), t
        for i in range(3):
            if t - self.changed_s[i] >= 0.02 - 1e-9:
                self.closed[i] = self.command[i]
        pack_v = float(self.cell_v.sum())
        if self.closed[0] and self.closed[1]:
            self.link_v, self.current_a = pack_v, 0.0
        elif self.closed[2] and self.closed[1]:
            self.link_v = pack_v + (self.link_v - pack_v) * math.exp(-DT_S / 0.05)
            self.current_a = (pack_v - self.link_v) / 50.0
        else:
            self.current_a = 0.0
        self._send(
            self.pack_bus, "PackCurrent", {"PackCurrent_A": self.current_a, "CurrentValid": 1}, t
        )
        self._send(
            self.pack_bus,
            "PackVoltages",
            {
                "PackVoltage_V": pack_v,
                "DcLinkVoltage_V": self.link_v,
                "PackVoltageValid": 1,
                "DcLinkVoltageValid": 1,
            },
            t,
        )
        self._send(
            self.pack_bus,
            "ContactorFeedback",
            dict(zip(CONTACTORS, self.closed, strict=True)),
            t,
        )
        if self.tick % 10 == 0:
            self._send(self.pack_bus, "CellVoltages", (self.cell_v.reshape(-1, 4), {}), t)
            self._send(self.pack_bus, "CellTemperatures", (np.full((8, 4), 25.0), {}), t)
            self._send(self.pack_bus, "ModulePressures", (np.full((2, 4), 2.0), {}), t)
            self._send(self.pack_bus, "PackGas", {"H2S_ppm": 0.0, "H2SValid": 1}, t)
            self._send(
                self.pack_bus,
                "PackStatus",
                {"CellCount": 96, "ModuleCount": 8, "TempSensorCount": 32, "ContactorSupplyOk": 1},
                t,
            )

    def _vcu(self, t: float) -> None:
        while (msg := self.veh_bus.recv(0.0)) is not None:
            codec = self.veh_codecs.by_id[(msg.arbitration_id, False)]
            if codec.name == "BmsState":
                ok, _ = self.bms_state_rx.check(bytes(msg.data), msg.timestamp)
                self.bms_state_rejected += not ok
            self.rx.append((msg.timestamp, codec.name, codec.decode_dict(msg.data)))
        if self.tick % 10 == 5 and not self.vcu_silent:  # VCU phase: 50 ms after the pack
            self.requests.append((t, self.mode))
            self._send(
                self.veh_bus, "VehicleRequest", {"RequestMode": int(self.mode), "ClearFaults": 0}, t
            )

    def step(self) -> None:
        self.tick += 1
        t = self.now_s
        self._pack(t)
        self.node.step(t)
        self._vcu(t)

    def run(self, duration_s: float) -> None:
        for _ in range(round(duration_s / DT_S)):
            self.step()

    def frames(self, name: str, since_s: float = -1.0) -> list[tuple[float, dict]]:
        return [(t, v) for t, n, v in self.rx if n == name and t >= since_s - 1e-9]


@pytest.fixture
def rig():
    h = Harness()
    yield h
    h.close()


def test_bms_state_every_100ms_and_at_once_on_change(rig):
    rig.run(1.0)
    states = rig.frames("BmsState", since_s=0.3)
    gaps = np.diff([t for t, _ in states])
    assert all(v["BmsState"] == BmsState.STANDBY for _, v in states)
    np.testing.assert_allclose(gaps, 0.1, atol=1e-6)  # cyclic, no change
    assert rig.bms_state_rejected == 0  # counter and CRC of every frame check out
    rig.mode = RequestMode.DRIVE
    rig.run(0.1)  # the request goes out at the next x.x5 s slot (VCU steps after the BMS)
    t_request = next(t for t, mode in rig.requests if mode == RequestMode.DRIVE)
    first = next(t for t, v in rig.frames("BmsState") if v["BmsState"] == BmsState.PRECHARGE)
    # seen by the BMS one tick later, which changes state and reports it in that same tick
    assert first == pytest.approx(t_request + DT_S)
    assert rig.node.state_events_sent >= 1
    rig.run(1.5)
    assert rig.frames("BmsState")[-1][1]["BmsState"] == BmsState.DRIVE


def test_limits_and_soc_frames_decode_to_core_values(rig):
    rig.run(1.05)
    out = rig.node.bms.out
    t_last, limits = rig.frames("BmsLimits")[-1]
    # DOMAIN.md 5 (sota-2025, 25 degC, 2 MPa, SOC 60 %): 22.5 A charge, 4C = 360 A discharge
    assert limits["MaxChargeCurrent_A"] == pytest.approx(22.5, abs=0.06)
    assert limits["MaxDischargeCurrent_A"] == pytest.approx(360.0, abs=0.06)
    assert limits["MaxChargeCurrent_A"] == pytest.approx(out.charge_limit_a, abs=0.051)
    _, soc = rig.frames("BmsSoc")[-1]
    assert soc["SocAvg_pct"] == pytest.approx(100 * out.soc.avg, abs=0.006)
    assert soc["SocAvg_pct"] == pytest.approx(60.0, abs=0.2)  # OCV 3.9061 V is 60 %
    assert soc["SocSigma_pct"] == pytest.approx(100 * out.soc.avg_sigma, abs=0.006)
    _, soe = rig.frames("BmsSoe")[-1]
    assert soe["SoeEnergy_kWh"] == pytest.approx(out.soc.soe_kwh, abs=0.006)
    _, vlim = rig.frames("BmsVoltageLimits")[-1]
    assert vlim["MaxChargeVoltage_V"] == pytest.approx(96 * 4.30, abs=0.06)  # 412.8 V (DOMAIN 3)
    _, stats = rig.frames("BmsCellStats")[-1]
    assert stats["MinCellVoltage_V"] == pytest.approx(OCV_60_V, abs=0.0006)
    _, faults = rig.frames("BmsFaults")[-1]
    assert faults["FaultSlot"] == 0 and faults["FaultCode"] == FaultCode.NONE


def test_contactor_commands_every_10ms_with_e2e(rig):
    rig.run(0.5)
    cmds = [(t, v) for t, n, v in rig.pack_rx if n == "BmsContactorCmd"]
    np.testing.assert_allclose(np.diff([t for t, _ in cmds]), 0.01, atol=1e-6)
    counters = [v["AliveCounter"] for _, v in cmds]
    assert all((b - a) % 16 == 1 for a, b in itertools.pairwise(counters))
    bal = [v for _, n, v in rig.pack_rx if n == "BmsBalancingCmd"]
    assert {v["BalGroup"] for v in bal} == {0, 1}  # 96 cells: two groups of 48 every 100 ms


def test_vehicle_request_timeout_gives_error_within_1_5s(rig):
    rig.mode = RequestMode.DRIVE
    rig.run(2.0)
    assert rig.frames("BmsState")[-1][1]["BmsState"] == BmsState.DRIVE
    t0 = rig.now_s
    rig.vcu_silent = True
    rig.run(2.0)
    t_err = next(t for t, v in rig.frames("BmsState", t0) if v["BmsState"] == BmsState.ERROR)
    assert t_err - t0 <= 1.5  # DOMAIN.md 8: request lost -> open within ~1.2 s
    codes = {v["FaultCode"] for _, v in rig.frames("BmsFaults", t_err)}
    assert FaultCode.VEHICLE_COMM_TIMEOUT in codes


def test_corrupted_crc_on_vehicle_request_is_rejected_and_reported(rig):
    rig.run(0.5)
    rig.senders["VehicleRequest"].inject(TxFault.CORRUPT_CRC)
    rig.mode = RequestMode.DRIVE  # only corrupted frames carry the DRIVE request
    rig.run(0.4)
    node = rig.node
    crc_events = [e for e in node.vehicle.events if e.message == "VehicleRequest"]
    kinds = [e.kind.value for e in crc_events]
    assert kinds.count("crc") == 4  # one per corrupted frame (x.55 .. x.85 s)
    assert set(kinds) <= {"crc", "timeout"}  # and no valid frame since: receiver timeout
    assert node.bms.vehicle_e2e_failed
    # the DRIVE request never acted: no precharge, the BMS stays in STANDBY
    assert rig.frames("BmsState")[-1][1]["BmsState"] == BmsState.STANDBY
    assert all(v["BmsState"] != BmsState.PRECHARGE for _, v in rig.frames("BmsState"))
    rig.run(1.5)  # persistent: the E2E supervisor trips (1 s + 0.2 s)
    t, fault = next(
        (t, v) for t, v in rig.frames("BmsFaults") if v["FaultCode"] == FaultCode.E2E_FAILURE
    )
    assert fault["FaultTier"] in (Tier.WARNING, Tier.FATAL)
    freeze = [v for _, v in rig.frames("BmsFaultFreeze")]
    assert [v["FaultCode"] for v in freeze].count(FaultCode.E2E_FAILURE) == 1  # once


def test_overvoltage_freeze_frame_and_fault_list(rig):
    rig.run(0.5)
    rig.cell_v[10] = 4.40
    rig.run(1.0)
    freeze = [v for _, v in rig.frames("BmsFaultFreeze") if v["FaultCode"] == 1]
    assert len(freeze) == 1
    assert freeze[0]["FaultLocation"] == 11 and freeze[0]["FaultTier"] == Tier.FATAL
    assert freeze[0]["FreezeCellVoltage_V"] == pytest.approx(4.40, abs=0.001)
    t_last = rig.frames("BmsFaults")[-1][0]
    last = [v for t, v in rig.frames("BmsFaults", t_last)]
    assert [v["FaultSlot"] for v in last] == list(range(int(last[0]["ActiveFaultCount"])))
    assert any(
        v["FaultCode"] == FaultCode.CELL_OVERVOLTAGE and v["FaultLocation"] == 11 for v in last
    )
    _, limits = rig.frames("BmsLimits")[-1]
    assert limits["MaxChargeCurrent_A"] == 0.0 and limits["MaxDischargeCurrent_A"] == 0.0
