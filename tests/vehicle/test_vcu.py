"""VCU node: requests on the bus, limit clipping, blended braking, rate limit, stale/zero cases.

A small fake BMS node sends the BMS frames through a python-can virtual bus on a simulated clock.
"""

from __future__ import annotations

import itertools

import can
import numpy as np
import pytest

from bms.can import DbcCodecs, Node, load_dbc, open_virtual_bus
from bms.errors import InputError
from bms.firmware.codes import BmsState, RequestMode
from bms.vehicle import battery_power_w, load_cycle, load_vehicle
from bms.vehicle.roadload import VcuParams
from bms.vehicle.vcu import VcuNode

CODECS = DbcCodecs(load_dbc("vehicle"))
TICK_S = 0.01
_channels = itertools.count()


class FakeBms(Node):
    """Sends BmsState, BmsLimits and BmsPackValues with values the test sets; reads requests."""

    def __init__(self, bus: can.BusABC) -> None:
        super().__init__(
            bus,
            DbcCodecs(load_dbc("vehicle")),
            tx=["BmsState", "BmsLimits", "BmsPackValues"],
            rx=["VehicleRequest"],
        )
        self.state = BmsState.DRIVE
        self.shutoff = 0
        self.inhibit = 0
        self.charge_a = 20.0
        self.discharge_a = 100.0
        self.voltage_v = 370.0
        self.requests: list[tuple[float, int, int]] = []

    def _fill(self, name: str, time_s: float) -> dict[str, float]:
        if name == "BmsState":
            return {
                "BmsState": int(self.state),
                "EmergencyShutoff": self.shutoff,
                "ChargeInhibit": self.inhibit,
            }
        if name == "BmsLimits":
            return {"MaxChargeCurrent_A": self.charge_a, "MaxDischargeCurrent_A": self.discharge_a}
        return {"PackVoltage_V": self.voltage_v}

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        self.requests.append((time_s, int(values[0]), int(values[1])))


class Rig:
    """BMS, then VCU stepped each 10 ms tick in the system's fixed order."""

    def __init__(self, params: VcuParams | None = None) -> None:
        channel = f"test_vcu_{next(_channels)}"
        self.bms = FakeBms(open_virtual_bus(channel))
        self.vcu = VcuNode(open_virtual_bus(channel), params=params, mode=RequestMode.DRIVE)
        self.k = 0

    @property
    def now_s(self) -> float:
        return self.k * 10 / 1000

    def run(self, duration_s: float, requested_w: float | None = None) -> list[float]:
        out = []
        for _ in range(round(duration_s / TICK_S)):
            self.k += 1
            self.bms.step(self.now_s)
            self.vcu.step(self.now_s)
            if requested_w is not None:
                out.append(self.vcu.power_demand_w(requested_w))
        return out

    def close(self) -> None:
        self.bms.close()
        self.vcu.close()


@pytest.fixture
def rig():
    r = Rig(VcuParams(power_rate_w_per_s=1e9))  # rate limit out of the way unless tested
    yield r
    r.close()


def test_requests_go_out_every_100_ms_with_the_set_mode_and_valid_e2e(rig: Rig) -> None:
    rig.run(1.0)
    rig.vcu.request("charge", clear_faults=True)
    rig.run(0.5)
    times = [t for t, _, _ in rig.bms.requests]
    assert all(abs(b - a - 0.1) < 1e-9 for a, b in itertools.pairwise(times))
    assert [m for _, m, _ in rig.bms.requests[:10]] == [RequestMode.DRIVE] * 10
    assert rig.bms.requests[-1][1:] == (RequestMode.CHARGE, 1)
    assert rig.bms.events == []  # counters and CRCs all good


def test_bad_mode_is_an_input_error(rig: Rig) -> None:
    with pytest.raises(InputError, match="unknown request mode 'fly'"):
        rig.vcu.request("fly")


def test_latest_values_are_kept_by_signal_name(rig: Rig) -> None:
    rig.run(0.3)
    assert rig.vcu.bms_state is BmsState.DRIVE
    assert rig.vcu.latest["BmsLimits"]["MaxDischargeCurrent_A"] == pytest.approx(100.0)
    assert rig.vcu.latest["BmsPackValues"]["PackVoltage_V"] == pytest.approx(370.0)


def test_no_power_before_any_bms_frame() -> None:
    r = Rig()
    try:
        assert r.vcu.power_demand_w(20_000.0, 370.0) == 0.0
    finally:
        r.close()


def test_discharge_clipped_to_current_limit_times_voltage(rig: Rig) -> None:
    rig.run(0.3)
    out = rig.run(0.5, requested_w=50_000.0)
    assert out[-1] == pytest.approx(100.0 * 370.0)
    assert rig.vcu.unserved_energy_j > 0.0
    # With an explicit (measured) voltage the limit follows it (one tick later: growth needs time).
    later_s = rig.now_s + TICK_S
    assert rig.vcu.power_demand_w(50_000.0, 400.0, now_s=later_s) == pytest.approx(40_000.0)
    assert rig.vcu.power_demand_w(10_000.0, now_s=later_s) == pytest.approx(10_000.0)


def test_regen_above_charge_limit_goes_to_friction_brakes(rig: Rig) -> None:
    rig.run(0.3)
    assert rig.vcu.friction_energy_j == 0.0
    out = rig.run(2.0, requested_w=-20_000.0)
    assert out[-1] == pytest.approx(-20.0 * 370.0)
    # The first call has no elapsed time, so regen starts one tick later (all 20 kW to friction
    # for that tick); then friction takes 20 - 7.4 kW. The last result has not elapsed yet.
    assert out[0] == 0.0
    expected_j = 20_000 * TICK_S + (20_000 - 7_400) * (len(out) - 2) * TICK_S
    assert rig.vcu.friction_energy_j == pytest.approx(expected_j, rel=1e-9)
    rig.run(0.5, requested_w=-5_000.0)
    assert rig.vcu.power_w == pytest.approx(-5_000.0)


def test_charge_inhibit_blocks_all_regen(rig: Rig) -> None:
    rig.bms.inhibit = 1
    out = rig.run(0.5, requested_w=-10_000.0)
    assert out[-1] == 0.0
    assert rig.run(0.1, requested_w=10_000.0)[-1] == pytest.approx(10_000.0)


@pytest.mark.parametrize("state", [BmsState.STANDBY, BmsState.PRECHARGE, BmsState.CHARGE])
def test_zero_outside_drive(rig: Rig, state: BmsState) -> None:
    assert rig.run(0.3, requested_w=10_000.0)[-1] == pytest.approx(10_000.0)
    rig.bms.state = state
    # BmsState is cyclic at 100 ms: within one cycle the new state arrives and power drops at once.
    out = rig.run(0.2, requested_w=10_000.0)
    assert out[-1] == 0.0
    assert rig.run(0.1, requested_w=-10_000.0)[-1] == 0.0


def test_emergency_shutoff_zeroes_power_at_once(rig: Rig) -> None:
    rig.run(0.3, requested_w=30_000.0)
    rig.bms.shutoff = 1
    assert rig.run(0.2, requested_w=30_000.0)[-1] == 0.0


def test_stale_limits_give_zero_after_the_timeout(rig: Rig) -> None:
    rig.run(0.5, requested_w=10_000.0)
    rig.bms.inject("BmsLimits", "stop")
    out = rig.run(0.5, requested_w=10_000.0)
    zero_from = next(i for i, p in enumerate(out) if p == 0.0)
    # Timeout = 3 cycles of 100 ms after the last good frame (sent at t = 0.5 s): power stops at
    # the first tick later than 0.8 s.
    assert 0.5 + (zero_from + 1) * TICK_S == pytest.approx(0.81)
    assert out[zero_from:] == [0.0] * (len(out) - zero_from)
    rig.bms.clear("BmsLimits")
    assert rig.run(0.2, requested_w=10_000.0)[-1] == pytest.approx(10_000.0)


def test_corrupted_limits_frames_are_rejected_and_go_stale(rig: Rig) -> None:
    rig.run(0.5, requested_w=10_000.0)
    rig.bms.inject("BmsLimits", "corrupt_crc")
    rig.bms.discharge_a = 500.0  # never seen: the frames carrying it fail their CRC
    out = rig.run(0.5, requested_w=100_000.0)
    assert max(out) == pytest.approx(100.0 * 370.0)
    assert out[-1] == 0.0
    assert any(e.kind.value == "crc" for e in rig.vcu.events)


def test_rate_limit_on_growth_and_immediate_reduction() -> None:
    r = Rig(VcuParams(power_rate_w_per_s=100_000.0))
    try:
        r.run(0.3)
        out = r.run(0.5, requested_w=30_000.0)
        # 1 kW per 10 ms tick: 30 kW after 30 ticks (the first call has no elapsed time).
        assert out[:4] == pytest.approx([0.0, 1_000.0, 2_000.0, 3_000.0])
        assert out[30] == pytest.approx(30_000.0)
        assert r.run(0.01, requested_w=5_000.0)[-1] == pytest.approx(5_000.0)
        # Reversal: discharge drops to zero at once and regen grows from zero.
        assert r.run(0.01, requested_w=-5_000.0)[-1] == pytest.approx(-1_000.0)
        assert r.run(0.04, requested_w=-5_000.0)[-1] == pytest.approx(-5_000.0)
    finally:
        r.close()


def test_vcu_side_can_faults_reach_the_bms() -> None:
    r = Rig()
    try:
        r.run(0.3)
        r.vcu.inject("VehicleRequest", "freeze_counter")
        r.run(0.5)
        assert any(e.kind.value == "counter_frozen" for e in r.bms.events)
    finally:
        r.close()


def test_udds_blended_braking_energy_matches_the_road_load_integral() -> None:
    # First 300 s of UDDS through the VCU with a 22.5 A charge limit at 370 V (DOMAIN section 11):
    # the friction brakes take exactly the regen above 8.325 kW, integrated on the same ticks.
    cycle, ev = load_cycle("udds"), load_vehicle("compact_ev")
    r = Rig(VcuParams(power_rate_w_per_s=1e9))
    r.bms.charge_a, r.bms.discharge_a = 22.5, 300.0
    try:
        r.run(0.3)
        start_s = r.now_s
        n = 30_000
        t = start_s + np.arange(1, n + 1) * TICK_S
        requested = battery_power_w(cycle.speed_at(t - start_s), cycle.accel_at(t - start_s), ev)
        for i in range(n):
            r.k += 1
            r.bms.step(r.now_s)
            r.vcu.step(r.now_s)
            r.vcu.power_demand_w(float(requested[i]))
        limit_w = 22.5 * 370.0
        expected_j = np.sum(np.maximum(-requested[:-1] - limit_w, 0.0)) * TICK_S
        assert expected_j > 50_000.0  # the limit really bites on this stretch
        assert r.vcu.friction_energy_j == pytest.approx(expected_j, rel=1e-6)
        assert r.vcu.unserved_energy_j == pytest.approx(requested[0] * TICK_S, rel=1e-6)
    finally:
        r.close()
