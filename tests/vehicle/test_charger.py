"""Charger node: CC -> CV on a resistor + linear-OCV plant, stop conditions, overcharge fault.

A fake BMS node sends ChargerRequest and BmsLimits through a python-can virtual bus; the plant
(OCV rising linearly with charge, series resistance) lives in the test, on a 10 ms simulated tick.
"""

from __future__ import annotations

import itertools
import math

import can
import numpy as np
import pytest

from bms.can import DbcCodecs, Node, load_dbc, open_virtual_bus
from bms.errors import InputError
from bms.vehicle.charger import ChargerNode, ChargerState
from bms.vehicle.roadload import ChargerParams

TICK_S = 0.01
_channels = itertools.count()

# Plant: 10 Ah, OCV 370 V at empty rising 40 V to full, 0.1 ohm.
CAPACITY_AH = 10.0
OCV_EMPTY_V, OCV_SPAN_V = 370.0, 40.0
R_OHM = 0.1


class FakeBms(Node):
    """Sends ChargerRequest and BmsLimits with values the test sets; keeps ChargerStatus frames."""

    def __init__(self, bus: can.BusABC) -> None:
        super().__init__(
            bus,
            DbcCodecs(load_dbc("vehicle")),
            tx=["ChargerRequest", "BmsLimits"],
            rx=["ChargerStatus"],
        )
        self.max_voltage_v = 400.0
        self.max_current_a = 50.0
        self.enable = 1
        self.limit_a = 40.0
        self.status: list[dict[str, float]] = []

    def _fill(self, name: str, time_s: float) -> dict[str, float]:
        if name == "ChargerRequest":
            return {
                "ChargerMaxVoltage_V": self.max_voltage_v,
                "ChargerMaxCurrent_A": self.max_current_a,
                "ChargeEnable": self.enable,
            }
        return {"MaxChargeCurrent_A": self.limit_a, "MaxDischargeCurrent_A": 100.0}

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        self.status.append(dict(zip(self.codecs[name].signal_names, values, strict=True)))


class Rig:
    """Plant, BMS and charger stepped in the system order each 10 ms tick."""

    def __init__(self, soc: float = 0.55, params: ChargerParams | None = None) -> None:
        channel = f"test_charger_{next(_channels)}"
        self.bms = FakeBms(open_virtual_bus(channel))
        self.charger = ChargerNode(
            open_virtual_bus(channel), rated_current_a=100.0, rated_voltage_v=450.0, params=params
        )
        self.soc = soc
        self.current_a = 0.0  # pack convention: negative = charge
        self.k = 0

    @property
    def voltage_v(self) -> float:
        return OCV_EMPTY_V + OCV_SPAN_V * self.soc - R_OHM * self.current_a

    def run(self, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
        n = round(duration_s / TICK_S)
        current, voltage = np.empty(n), np.empty(n)
        for i in range(n):
            self.soc -= self.current_a * TICK_S / 3600.0 / CAPACITY_AH  # physics t-dt -> t
            self.k += 1
            now_s = self.k * 10 / 1000
            self.bms.step(now_s)
            self.charger.step(now_s)
            self.current_a = self.charger.current_demand_a(self.voltage_v, now_s)
            current[i], voltage[i] = self.current_a, self.voltage_v
        return current, voltage

    def close(self) -> None:
        self.bms.close()
        self.charger.close()


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def test_cc_then_cv_holds_the_voltage_and_the_current_tapers(rig: Rig) -> None:
    current, voltage = rig.run(250.0)
    t = np.arange(1, len(current) + 1) * TICK_S
    charge_a = -current
    # CC at min(request 50, BMS 40, rated 100) = 40 A after the 100 A/s soft start.
    assert charge_a[(t > 1.0) & (t < 80.0)] == pytest.approx(40.0, abs=1e-9)
    # CV starts when OCV + R I reaches 400 V: OCV 396 V, i.e. 0.1 of 10 Ah at 40 A = 90 s.
    t_cv = t[np.argmax((charge_a < 39.99) & (t > 1.0))]
    assert t_cv == pytest.approx(90.0 + 0.2, abs=0.5)
    cv = t > t_cv + 2.0
    assert np.max(np.abs(voltage[cv] - 400.0)) < 0.003  # within 3 mV
    assert np.all(np.diff(charge_a[cv]) <= 1e-12)  # tapers monotonically
    # Taper: I = (400 - OCV) / R decays with tau = R Q / (dOCV/dQ) = 0.1 * 36000 / 40 = 90 s.
    tau_s = R_OHM * CAPACITY_AH * 3600.0 / OCV_SPAN_V
    late = t > t_cv + 10.0
    expected = 40.0 * np.exp(-(t[late] - t_cv) / tau_s)
    assert charge_a[late] == pytest.approx(expected, rel=0.02)
    assert rig.charger.phase == "cv" and rig.charger.state is ChargerState.CHARGING
    # Status frames on the bus: charger convention, positive current into the pack.
    last = rig.bms.status[-1]
    assert last["ChargerState"] == ChargerState.CHARGING
    assert last["ChargerOutputCurrent_A"] == pytest.approx(charge_a[-1], abs=0.1)
    assert last["ChargerOutputVoltage_V"] == pytest.approx(400.0, abs=0.1)
    # Coulomb count of the charger equals the plant's SOC gain.
    assert rig.charger.charge_ah == pytest.approx((rig.soc - 0.55) * CAPACITY_AH, rel=1e-3)


def test_soft_start_ramp() -> None:
    r = Rig(params=ChargerParams(ramp_up_a_per_s=20.0))
    try:
        current, _ = r.run(3.0)
        # Frames arrive from t = 0.01 s; the first call has no elapsed time: ramp from 0.02 s.
        t = np.arange(1, len(current) + 1) * TICK_S
        expected = np.minimum(20.0 * np.maximum(t - 0.01, 0.0), 40.0)
        assert -current == pytest.approx(expected, abs=1e-9)
    finally:
        r.close()


def test_stop_on_charge_enable_zero(rig: Rig) -> None:
    rig.run(2.0)
    rig.bms.enable = 0
    current, _ = rig.run(0.2)
    assert current[-1] == 0.0
    # The next ChargerRequest (within one 100 ms cycle) stops the current in that tick.
    assert np.count_nonzero(current) <= 10
    assert rig.charger.state is ChargerState.READY
    rig.bms.enable = 1
    current, _ = rig.run(1.0)
    assert current[-1] < 0.0


def test_stop_on_bms_limit_zero(rig: Rig) -> None:
    rig.run(2.0)
    rig.bms.limit_a = 0.0
    current, _ = rig.run(0.2)
    assert current[-1] == 0.0


def test_bms_limit_below_request_governs(rig: Rig) -> None:
    rig.run(2.0)
    rig.bms.limit_a = 12.5
    current, _ = rig.run(0.2)
    assert -current[-1] == pytest.approx(12.5)


@pytest.mark.parametrize("message", ["ChargerRequest", "BmsLimits"])
def test_stop_on_timeout(rig: Rig, message: str) -> None:
    rig.run(2.0)
    rig.bms.inject(message, "stop")
    current, _ = rig.run(0.5)
    # Last good frame at t = 2.0 s, timeout 3 x 100 ms: current is zero from 2.31 s.
    t = 2.0 + np.arange(1, len(current) + 1) * TICK_S
    assert np.all(current[t < 2.295] < 0.0)
    assert np.all(current[t > 2.305] == 0.0)
    assert rig.charger.state is (
        ChargerState.OFF if message == "ChargerRequest" else ChargerState.READY
    )


def test_corrupted_requests_are_rejected_then_time_out(rig: Rig) -> None:
    rig.run(2.0)
    rig.bms.inject("ChargerRequest", "corrupt_crc")
    rig.bms.max_current_a = 100.0  # carried only by rejected frames
    current, _ = rig.run(0.5)
    assert -current.min() == pytest.approx(40.0)
    assert current[-1] == 0.0
    assert any(e.kind.value == "crc" for e in rig.charger.events)


def test_finish_current_ends_the_charge() -> None:
    r = Rig(soc=0.62, params=ChargerParams(finish_current_a=20.0))
    try:
        current, _ = r.run(120.0)
        assert current[-1] == 0.0
        assert r.charger.state is ChargerState.FINISHED
        # Finished when I fell below 20 A in CV: OCV = 400 - 0.1 * 20 = 398 V, SOC 0.7.
        assert r.soc == pytest.approx(0.70, abs=0.001)
    finally:
        r.close()


def test_ignore_limits_fault_overcharges_past_every_stop(rig: Rig) -> None:
    rig.run(2.0)
    rig.charger.set_ignore_limits(45.0)  # 0.5C of a 90 Ah cell, as DOMAIN's overcharge test
    rig.bms.limit_a = 0.0
    rig.bms.enable = 0
    current, voltage = rig.run(150.0)
    assert current[-1] == pytest.approx(-45.0)
    assert voltage.max() > 400.0 + 1.0  # far beyond the CV target
    assert rig.charger.state is ChargerState.CHARGING
    assert rig.bms.status[-1]["ChargerFault"] == 0
    rig.charger.set_ignore_limits(None)
    current, _ = rig.run(0.2)
    assert current[-1] == 0.0


@pytest.mark.parametrize("bad", [0.0, -5.0, 150.0, math.nan])
def test_bad_fault_current(rig: Rig, bad: float) -> None:
    with pytest.raises(InputError, match="ignore_limits current"):
        rig.charger.set_ignore_limits(bad)


def test_bad_rating() -> None:
    with open_virtual_bus("test_charger_bad") as bus, pytest.raises(InputError, match="rated"):
        ChargerNode(bus, rated_current_a=0.0, rated_voltage_v=400.0)
