"""DC charger node: follows the BMS's ``ChargerRequest`` with a CC-CV controller.

Charger messages count current positive INTO the pack; :meth:`ChargerNode.current_demand_a`
returns the pack convention (negative = charge) so the runner can apply it directly.

Controller (one law for both phases, run at every call on the measured pack voltage):
``I <- clip(I + k (V_target - V_pack) dt, 0, I_cc)`` with the increase also limited to
``ramp_up_a_per_s`` (soft start). Below the target the integral term saturates at the CC current
``I_cc = min(requested, BMS limit, rated)``; at the target it holds ``V_pack = V_target`` with
zero steady-state error and the current tapers. On a plant ``V = OCV + R I`` the loop is first
order with time constant ``1 / (k R)`` and stays stable while ``k R dt < 2``.
"""

from __future__ import annotations

import math
from enum import IntEnum

import can

from bms.can.busload import BusLoadMeter
from bms.can.codec import DbcCodecs
from bms.can.dbc import load_dbc
from bms.can.e2e import E2EConfig
from bms.can.node import Node
from bms.errors import InputError
from bms.vehicle.roadload import ChargerParams

STATUS_MESSAGE = "ChargerStatus"
RX_MESSAGES = ("ChargerRequest", "BmsLimits")


class ChargerState(IntEnum):
    """``ChargerStatus.ChargerState`` values."""

    OFF = 0
    READY = 1
    CHARGING = 2
    FINISHED = 3
    FAULT = 4


class ChargerNode(Node):
    """CC-CV DC charger on the vehicle bus (reads ``ChargerRequest``/``BmsLimits``, sends status).

    Stops at once (current 0) on ChargeEnable = 0, on a ``ChargerRequest`` or ``BmsLimits``
    timeout, or when the BMS charge limit is 0. The ``ignore_limits`` fault keeps CC at a set
    current beyond every BMS limit, the voltage target and the enable bit (overcharge scenario).
    """

    def __init__(
        self,
        bus: can.BusABC,
        codecs: DbcCodecs | None = None,
        *,
        rated_current_a: float,
        rated_voltage_v: float,
        params: ChargerParams | None = None,
        seed: int = 0,
        e2e_config: E2EConfig | None = None,
        phase_step_s: float = 0.0,
        start_s: float = 0.0,
        busload: BusLoadMeter | None = None,
    ) -> None:
        for label, value in (
            ("rated_current_a", rated_current_a),
            ("rated_voltage_v", rated_voltage_v),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise InputError(f"charger: {label} must be a number > 0, got {value!r}")
        codecs = codecs if codecs is not None else DbcCodecs(load_dbc("vehicle"))
        super().__init__(
            bus,
            codecs,
            tx=[STATUS_MESSAGE],
            rx=RX_MESSAGES,
            e2e_config=e2e_config,
            phase_step_s=phase_step_s,
            start_s=start_s,
            busload=busload,
            seed=seed,
        )
        self.rated_current_a = float(rated_current_a)
        self.rated_voltage_v = float(rated_voltage_v)
        self.params = params or ChargerParams()
        self.latest: dict[str, dict[str, float]] = {}
        self.now_s = start_s
        #: Output current, charger convention (A, >= 0 into the pack), as last computed.
        self.output_current_a = 0.0
        #: Pack voltage the charger last measured at its terminals (V).
        self.pack_voltage_v = 0.0
        self.state = ChargerState.OFF
        #: "cc" or "cv": which limit governs the output (for status and traces).
        self.phase = "cc"
        self.ignore_limits = False
        self.fault_current_a = 0.0
        #: Charge delivered into the pack (Ah), integrated over the calls.
        self.charge_ah = 0.0
        self._last_s: float | None = None

    # -- fault switch --------------------------------------------------------------------------
    def set_ignore_limits(self, current_a: float | None) -> None:
        """Overcharge fault: hold CC at ``current_a`` (into the pack) whatever the BMS says.

        ``None`` switches the fault off. The rated current still caps it (charger hardware).
        """
        if current_a is None:
            self.ignore_limits = False
            return
        if not (isinstance(current_a, int | float) and 0 < current_a <= self.rated_current_a):
            raise InputError(
                f"charger: ignore_limits current must be in (0, {self.rated_current_a:g}] A, "
                f"got {current_a!r}"
            )
        self.ignore_limits = True
        self.fault_current_a = float(current_a)

    # -- runner interface ----------------------------------------------------------------------
    def step(self, now_s: float, catch_up: bool = True) -> None:
        """Receive BMS frames, check timeouts, send a due ``ChargerStatus``."""
        self.now_s = now_s
        super().step(now_s, catch_up)

    def fresh(self, name: str, now_s: float | None = None) -> bool:
        """True when ``name`` has been received and has not timed out."""
        receiver = self.receivers[name]
        if name not in self.latest:
            return False
        now = self.now_s if now_s is None else now_s
        timeout = receiver.timeout_s
        return not receiver.timed_out and (timeout is None or now - receiver.last_ok_s <= timeout)

    def setpoints(self, now_s: float | None = None) -> tuple[float, float]:
        """(CC current limit A, CV voltage target V) now; current 0 means "stop"."""
        if not (self.fresh("ChargerRequest", now_s) and self.fresh("BmsLimits", now_s)):
            return 0.0, 0.0
        request = self.latest["ChargerRequest"]
        if request["ChargeEnable"] < 0.5:
            return 0.0, 0.0
        current_a = min(
            request["ChargerMaxCurrent_A"],
            self.latest["BmsLimits"]["MaxChargeCurrent_A"],
            self.rated_current_a,
        )
        voltage_v = min(request["ChargerMaxVoltage_V"], self.rated_voltage_v)
        return max(current_a, 0.0), voltage_v

    def current_demand_a(self, pack_voltage_v: float, now_s: float) -> float:
        """DC current pushed into the pack now, in the PACK convention (A, negative = charge).

        Call once per tick with the measured pack voltage; the result holds until the next call.
        """
        dt_s = 0.0 if self._last_s is None else max(now_s - self._last_s, 0.0)
        self._last_s = now_s
        self.charge_ah += self.output_current_a * dt_s / 3600.0
        self.pack_voltage_v = float(pack_voltage_v)
        previous_a = self.output_current_a
        ramp_a = previous_a + self.params.ramp_up_a_per_s * dt_s
        if self.ignore_limits:
            # Faulty charger: constant current, no voltage loop, no stop from the BMS.
            self.output_current_a = min(self.fault_current_a, ramp_a)
            self.state, self.phase = ChargerState.CHARGING, "cc"
            return -self.output_current_a
        limit_a, target_v = self.setpoints(now_s)
        if limit_a <= 0.0:
            self.output_current_a = 0.0
            request = self.latest.get("ChargerRequest")
            enabled = self.fresh("ChargerRequest", now_s) and request is not None
            self.state = ChargerState.READY if enabled else ChargerState.OFF
            return 0.0
        if self.state is ChargerState.FINISHED:
            self.output_current_a = 0.0  # latched until the BMS withdraws the enable
            return 0.0
        integral_a = previous_a + self.params.cv_gain_a_per_v_s * (target_v - pack_voltage_v) * dt_s
        current_a = min(max(integral_a, 0.0), ramp_a, limit_a)
        self.output_current_a = current_a
        near_target = pack_voltage_v >= target_v - self.params.cv_band_v
        self.phase = "cv" if near_target and current_a < min(limit_a, ramp_a) else "cc"
        finish_a = self.params.finish_current_a
        if self.phase == "cv" and finish_a > 0.0 and current_a < finish_a:
            self.state = ChargerState.FINISHED
            self.output_current_a = 0.0
            return 0.0
        self.state = ChargerState.CHARGING
        return -current_a

    # -- node hooks ----------------------------------------------------------------------------
    def _fill(self, name: str, time_s: float) -> dict[str, float]:
        return {
            "ChargerOutputVoltage_V": self.pack_voltage_v,
            "ChargerOutputCurrent_A": self.output_current_a,
            "ChargerState": int(self.state),
            "ChargerFault": 0,  # an overcharging charger does not know it is faulty
        }

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        names = self.codecs[name].signal_names
        self.latest[name] = dict(zip(names, values, strict=True))
