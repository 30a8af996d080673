"""Vehicle controller (VCU) node: mode requests to the BMS, and the power the inverter may draw.

The VCU sends ``VehicleRequest`` every 100 ms with the mode the runner chose and keeps the latest
BMS frames. :meth:`VcuNode.power_demand_w` turns the power the driver (drive cycle) asks for into
the power the inverter really draws from the pack: zero unless the BMS reports DRIVE with fresh
state and limits, clipped to the BMS current limits times the pack voltage, and rate limited.
Regen the battery may not take goes to the friction brakes (blended braking) and is accounted.
"""

from __future__ import annotations

from collections.abc import Iterable

import can

from bms.can.busload import BusLoadMeter
from bms.can.codec import DbcCodecs
from bms.can.dbc import load_dbc
from bms.can.e2e import E2EConfig, E2EViolation
from bms.can.node import Node
from bms.errors import InputError
from bms.firmware.codes import BmsState, RequestMode
from bms.vehicle.roadload import VcuParams

REQUEST_MESSAGE = "VehicleRequest"
#: BMS messages the VCU keeps; BmsState and BmsLimits must be fresh for any power to flow.
RX_MESSAGES = ("BmsState", "BmsLimits", "BmsVoltageLimits", "BmsPackValues", "BmsSoc")


class VcuNode(Node):
    """Vehicle controller on the vehicle bus (sends ``VehicleRequest``, reads the BMS frames)."""

    def __init__(
        self,
        bus: can.BusABC,
        codecs: DbcCodecs | None = None,
        *,
        params: VcuParams | None = None,
        mode: RequestMode | int = RequestMode.STANDBY,
        seed: int = 0,
        e2e_config: E2EConfig | None = None,
        phase_step_s: float = 0.0,
        start_s: float = 0.0,
        busload: BusLoadMeter | None = None,
        rx: Iterable[str] = RX_MESSAGES,
    ) -> None:
        codecs = codecs if codecs is not None else DbcCodecs(load_dbc("vehicle"))
        rx = tuple(rx)
        for needed in ("BmsState", "BmsLimits"):
            if needed not in rx:
                raise InputError(f"VCU: must receive {needed} to compute the power demand")
        super().__init__(
            bus,
            codecs,
            tx=[REQUEST_MESSAGE],
            rx=rx,
            e2e_config=e2e_config,
            phase_step_s=phase_step_s,
            start_s=start_s,
            busload=busload,
            seed=seed,
        )
        self.params = params or VcuParams()
        self.mode = RequestMode.STANDBY
        self.clear_faults = False
        self.request(mode)
        #: Latest accepted values per received message, by signal name (physical units).
        self.latest: dict[str, dict[str, float]] = {}
        #: Simulated time of the latest accepted frame per message.
        self.latest_time_s: dict[str, float] = {}
        self.now_s = start_s
        #: Power the inverter draws now (W, positive = discharge), as last returned.
        self.power_w = 0.0
        #: Battery-side regen the pack did not take (friction brakes), integrated (J).
        self.friction_energy_j = 0.0
        #: Traction power asked for but not delivered (limits, mode, ramp), integrated (J).
        self.unserved_energy_j = 0.0
        self._friction_w = 0.0
        self._unserved_w = 0.0
        self._last_demand_s: float | None = None

    # -- runner interface --------------------------------------------------------------------------
    def request(self, mode: RequestMode | int | str, clear_faults: bool = False) -> None:
        """Set the mode sent in every ``VehicleRequest`` from now on (and the ClearFaults bit).

        ClearFaults stays set in every frame until the next call: pulse it by calling again.
        """
        try:
            self.mode = RequestMode[mode.upper()] if isinstance(mode, str) else RequestMode(mode)
        except (KeyError, ValueError):
            names = ", ".join(m.name.lower() for m in RequestMode)
            raise InputError(f"VCU: unknown request mode {mode!r} (expected {names})") from None
        self.clear_faults = bool(clear_faults)

    def step(self, now_s: float, catch_up: bool = True) -> None:
        """Receive BMS frames, check timeouts, send a due ``VehicleRequest``."""
        self.now_s = now_s
        super().step(now_s, catch_up)

    def fresh(self, name: str, now_s: float | None = None) -> bool:
        """True when ``name`` has been received and has not timed out (E2E receiver's timeout)."""
        receiver = self.receivers.get(name)
        if receiver is None or name not in self.latest:
            return False
        now = self.now_s if now_s is None else now_s
        timeout = receiver.timeout_s
        return not receiver.timed_out and (timeout is None or now - receiver.last_ok_s <= timeout)

    @property
    def bms_state(self) -> BmsState | None:
        """The BMS state from the latest accepted ``BmsState`` frame (None before any)."""
        values = self.latest.get("BmsState")
        if values is None:
            return None
        try:
            return BmsState(int(values["BmsState"]))
        except ValueError:
            return None

    def power_limits_w(self, pack_voltage_v: float | None = None) -> tuple[float, float]:
        """(max discharge power, max charge power) in W, both >= 0, from the BMS current limits.

        Zero unless BmsState and BmsLimits are fresh, the state is DRIVE and no emergency shutoff
        is announced; the charge limit is also zero while the BMS sets ChargeInhibit.
        """
        voltage_v = self._voltage(pack_voltage_v)
        if (
            voltage_v <= 0.0
            or self.bms_state is not BmsState.DRIVE
            or not (self.fresh("BmsState") and self.fresh("BmsLimits"))
        ):
            return 0.0, 0.0
        state = self.latest["BmsState"]
        if state.get("EmergencyShutoff", 0.0) >= 0.5:
            return 0.0, 0.0
        limits = self.latest["BmsLimits"]
        discharge_w = max(limits["MaxDischargeCurrent_A"], 0.0) * voltage_v
        charge_w = max(limits["MaxChargeCurrent_A"], 0.0) * voltage_v
        if state.get("ChargeInhibit", 0.0) >= 0.5:
            charge_w = 0.0
        return discharge_w, charge_w

    def power_demand_w(
        self, requested_w: float, pack_voltage_v: float | None = None, now_s: float | None = None
    ) -> float:
        """Power (W, positive = discharge) the inverter draws for a requested battery power.

        ``pack_voltage_v`` defaults to the BMS's reported pack voltage; ``now_s`` to the time of
        the last :meth:`step`. Call once per tick: the result holds until the next call, and the
        friction and unserved energies integrate the previous result over the elapsed time.

        Rate limit: the magnitude of the drawn (or regenerated) power may grow by at most
        ``power_rate_w_per_s`` per second, from zero after a change of direction; any reduction
        of magnitude takes effect at once, so a falling BMS limit is never exceeded.
        """
        now = self.now_s if now_s is None else now_s
        dt_s = 0.0 if self._last_demand_s is None else max(now - self._last_demand_s, 0.0)
        self._last_demand_s = now
        self.friction_energy_j += self._friction_w * dt_s
        self.unserved_energy_j += self._unserved_w * dt_s
        discharge_w, charge_w = self.power_limits_w(pack_voltage_v)
        target_w = min(max(requested_w, -charge_w), discharge_w)
        step_w = self.params.power_rate_w_per_s * dt_s
        upper_w = max(self.power_w, 0.0) + step_w
        lower_w = min(self.power_w, 0.0) - step_w
        power_w = min(max(target_w, lower_w), upper_w)
        self.power_w = power_w
        # Blended braking: regen the battery does not take is done by the friction brakes.
        self._friction_w = max(power_w - requested_w, 0.0) if requested_w < 0.0 else 0.0
        self._unserved_w = max(requested_w - power_w, 0.0) if requested_w > 0.0 else 0.0
        return power_w

    # -- node hooks ----------------------------------------------------------------------------
    def _fill(self, name: str, time_s: float) -> dict[str, float]:
        return {"RequestMode": int(self.mode), "ClearFaults": int(self.clear_faults)}

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        names = self.codecs[name].signal_names
        self.latest[name] = dict(zip(names, values, strict=True))
        self.latest_time_s[name] = time_s

    def _on_violation(self, event: E2EViolation) -> None:
        """Kept in :attr:`events`; staleness itself is read from the receivers' timeouts."""

    # -- helpers -------------------------------------------------------------------------------
    def _voltage(self, pack_voltage_v: float | None) -> float:
        if pack_voltage_v is not None:
            return float(pack_voltage_v)
        values = self.latest.get("BmsPackValues")
        return float(values["PackVoltage_V"]) if values and self.fresh("BmsPackValues") else 0.0
