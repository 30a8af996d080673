"""The BMS node: the firmware core (:class:`bms.firmware.bms.Bms`) on two CAN endpoints.

Pack bus: receives the pack's measurement frames, sends BmsContactorCmd (10 ms) and
BmsBalancingCmd (100 ms). Vehicle bus: receives VehicleRequest and ChargerStatus, sends BmsState
(100 ms and at once on any change), limits, statistics, SOC/SOE, the active-fault list (one
BmsFaults frame per active fault), BmsFaultFreeze (once per new WARNING/FATAL fault) and
ChargerRequest. :meth:`BmsNode.step` runs per 10 ms tick: receive, tasks, send.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import can
import numpy as np

from bms.can.codec import DbcCodecs, MessageCodec
from bms.can.dbc import load_dbc
from bms.can.e2e import E2EConfig, E2EViolation
from bms.can.node import FillValues, Frames, Node
from bms.firmware.bms import Bms, BmsOutputs
from bms.firmware.config import BmsConfig, load_bms_config

PACK_TX = ("BmsContactorCmd", "BmsBalancingCmd")
PACK_RX = (
    "PackCurrent",
    "PackVoltages",
    "ContactorFeedback",
    "CellVoltages",
    "CellTemperatures",
    "ModulePressures",
    "PackGas",
    "PackStatus",
)
VEHICLE_TX = (
    "BmsState",
    "BmsFaults",
    "BmsFaultFreeze",
    "BmsCellStats",
    "BmsLimits",
    "BmsVoltageLimits",
    "BmsTempStats",
    "BmsPressureStats",
    "BmsPackValues",
    "BmsSoc",
    "BmsSoe",
    "ChargerRequest",
)
VEHICLE_RX = ("VehicleRequest", "ChargerStatus")
MINUTES_PER_S = 1.0 / 60.0


def _num(x: float) -> float:
    """A finite number for the encoder (unknown values go out as 0, the signals' floor)."""
    return x if x == x and not math.isinf(x) else 0.0


class _Endpoint(Node):
    """One bus endpoint of the BMS; the hooks forward to the owning :class:`BmsNode`."""

    def __init__(self, owner: BmsNode, bus: can.BusABC, codecs: DbcCodecs, **kwargs: Any):
        super().__init__(bus, codecs, **kwargs)
        self._owner = owner

    def _fill(self, name: str, time_s: float) -> FillValues:
        return self._owner._fill(name, time_s)

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        self._owner._on_frame(name, values, time_s)

    def _on_violation(self, event: E2EViolation) -> None:
        self._owner._on_violation(event)


class _MuxIndex:
    """Where the values of each group of a multiplexed message sit in the decoded list."""

    def __init__(self, codec: MessageCodec) -> None:
        mux = codec.mux
        assert mux is not None
        self.selector = mux.selector.index
        self.slots = mux.slots
        self.groups = {g: [s.index for s in mux.groups[g]] for g in mux.group_ids}


class BmsNode:
    """The BMS on a pack bus and a vehicle bus; owns the core and two :class:`Node` endpoints."""

    def __init__(
        self,
        pack_bus: can.BusABC,
        vehicle_bus: can.BusABC,
        config: BmsConfig | str = "bms_pack_a_96s",
        *,
        bms: Bms | None = None,
        start_s: float = 0.0,
        phase_step_s: float = 0.001,
        e2e_config: E2EConfig | None = None,
        seed: int = 0,
    ) -> None:
        cfg = load_bms_config(config) if isinstance(config, str) else config
        self.config = cfg
        self.bms = bms if bms is not None else Bms(cfg)
        self.pack = _Endpoint(
            self,
            pack_bus,
            DbcCodecs(load_dbc("pack")),
            tx=PACK_TX,
            rx=PACK_RX,
            e2e_config=e2e_config,
            phase_step_s=phase_step_s,
            start_s=start_s,
            seed=seed,
        )
        self.vehicle = _Endpoint(
            self,
            vehicle_bus,
            DbcCodecs(load_dbc("vehicle")),
            tx=VEHICLE_TX,
            rx=VEHICLE_RX,
            e2e_config=e2e_config,
            phase_step_s=phase_step_s,
            start_s=start_s,
            seed=seed + 1,
        )
        self._slow_every = round(cfg.slow_task_s / cfg.fast_task_s)
        self._tick = 0
        self._templates = {
            name: ep.codecs[name].values_from({})
            for ep, names in ((self.pack, PACK_TX), (self.vehicle, VEHICLE_TX))
            for name in names
        }
        self._index = {
            name: ep.codecs[name].index
            for ep, names in (
                (self.pack, PACK_TX + PACK_RX),
                (self.vehicle, VEHICLE_TX + VEHICLE_RX),
            )
            for name in names
        }
        self._mux = {
            name: _MuxIndex(self.pack.codecs[name])
            for name in ("CellVoltages", "CellTemperatures", "ModulePressures")
        }
        n_bal = self.pack.codecs["BmsBalancingCmd"].mux.slots  # type: ignore[union-attr]
        self._bal_groups = -(-cfg.series // n_bal)
        self._bal_buf = np.zeros(self._bal_groups * n_bal)
        self._last_state_key: tuple | None = None
        self.state_events_sent = 0
        self.freeze_frames_sent = 0
        self._handlers = self._build_handlers()

    # -- public API ---------------------------------------------------------------------------
    def step(self, now_s: float) -> BmsOutputs:
        """One 10 ms tick: receive both buses, run the tasks due, send due and event frames."""
        self.pack.receive(now_s)
        self.vehicle.receive(now_s)
        bms = self.bms
        out = bms.task_10ms(now_s)
        if self._tick % self._slow_every == 0:
            out = bms.task_100ms(now_s)
        self._tick += 1
        self.pack.send_due(now_s)  # received above: only the due frames go out
        self.vehicle.send_due(now_s)
        if self._state_key(out) != self._last_state_key:
            self.vehicle.send_event("BmsState", self._fill_state(), now_s)  # at once on change
            self.state_events_sent += 1
        for rec in bms.pop_freeze_frames():
            f = rec.freeze
            self.vehicle.send_event(
                "BmsFaultFreeze",
                {
                    "FaultCode": int(rec.code),
                    "FaultTier": int(rec.tier),
                    "FreezeCellVoltage_V": _num(f.get("cell_voltage_v", math.nan)),
                    "FaultLocation": int(f.get("location", 0)),
                    "FreezeCurrent_A": _num(f.get("current_a", math.nan)),
                    "FreezeMaxTemp_C": _num(f.get("temp_max_c", math.nan)),
                },
                now_s,
            )
            self.freeze_frames_sent += 1
        return out

    def prepare(self, now_s: float, until_s: float) -> None:
        """Real time: hand both endpoints' slots due before ``until_s`` to their outboxes."""
        self.pack.prepare(now_s, until_s)
        self.vehicle.prepare(now_s, until_s)

    def close(self) -> None:
        """Shut both bus endpoints down."""
        self.pack.close()
        self.vehicle.close()

    def __enter__(self) -> BmsNode:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def report(self) -> dict[str, Any]:
        """Frame and violation counts of both endpoints (for the run report)."""
        return {
            "pack": self.pack.report(),
            "vehicle": self.vehicle.report(),
            "state_events_sent": self.state_events_sent,
            "freeze_frames_sent": self.freeze_frames_sent,
        }

    # -- receive ----------------------------------------------------------------------------------
    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        handler = self._handlers.get(name)
        if handler is not None:
            handler(values, time_s)

    def _build_handlers(self) -> dict[str, Any]:
        """One decoder per received message, with its signal indices bound once (a dict lookup
        per frame instead of a chain of name comparisons and index-table lookups)."""
        bms = self.bms

        def at(name: str, *signals: str) -> list[int]:
            ix = self._index[name]
            return [ix[sig] for sig in signals]

        i_cur, i_cur_ok = at("PackCurrent", "PackCurrent_A", "CurrentValid")
        i_pv, i_lv, i_pv_ok, i_lv_ok = at(
            "PackVoltages",
            "PackVoltage_V",
            "DcLinkVoltage_V",
            "PackVoltageValid",
            "DcLinkVoltageValid",
        )
        i_plus, i_minus, i_pre = at(
            "ContactorFeedback", "MainPlusClosed", "MainMinusClosed", "PrechargeClosed"
        )
        i_afe, i_ow = at("CellVoltages", "AfeFault", "OpenWireMask")
        (i_tinv,) = at("CellTemperatures", "TempInvalidMask")
        (i_pinv,) = at("ModulePressures", "PressureInvalidMask")
        i_h2s, i_h2s_ok = at("PackGas", "H2S_ppm", "H2SValid")
        i_mode, i_clear = at("VehicleRequest", "RequestMode", "ClearFaults")
        i_cv, i_ci, i_cs, i_cf = at(
            "ChargerStatus",
            "ChargerOutputVoltage_V",
            "ChargerOutputCurrent_A",
            "ChargerState",
            "ChargerFault",
        )
        status_names = self.pack.codecs["PackStatus"].signal_names
        group = self._group

        def current(v: list[float], t: float) -> None:
            bms.on_current(t, v[i_cur], v[i_cur_ok] > 0.5)

        def voltages(v: list[float], t: float) -> None:
            bms.on_voltages(t, v[i_pv], v[i_lv], v[i_pv_ok] > 0.5, v[i_lv_ok] > 0.5)

        def feedback(v: list[float], t: float) -> None:
            bms.on_contactor_feedback(t, v[i_plus] > 0.5, v[i_minus] > 0.5, v[i_pre] > 0.5)

        def cells(v: list[float], t: float) -> None:
            _, first, group_values = group("CellVoltages", v)
            if group_values is not None:
                bms.on_cell_voltages(t, first, group_values, v[i_afe] > 0.5, int(v[i_ow]))

        def temps(v: list[float], t: float) -> None:
            _, first, group_values = group("CellTemperatures", v)
            if group_values is not None:
                bms.on_temperatures(t, first, group_values, int(v[i_tinv]))

        def pressures(v: list[float], t: float) -> None:
            _, first, group_values = group("ModulePressures", v)
            if group_values is not None:
                bms.on_pressures(t, first, group_values, int(v[i_pinv]))

        def gas(v: list[float], t: float) -> None:
            bms.on_gas(t, v[i_h2s], v[i_h2s_ok] > 0.5)

        def status(v: list[float], t: float) -> None:
            bms.on_pack_status(t, dict(zip(status_names, v, strict=True)))

        def request(v: list[float], t: float) -> None:
            bms.on_vehicle_request(t, int(v[i_mode]), v[i_clear] > 0.5)

        def charger(v: list[float], t: float) -> None:
            # Charger convention: current positive INTO the pack; the core keeps it that way.
            bms.on_charger_status(t, v[i_cv], v[i_ci], int(v[i_cs]), v[i_cf] > 0.5)

        return {
            "PackCurrent": current,
            "PackVoltages": voltages,
            "ContactorFeedback": feedback,
            "CellVoltages": cells,
            "CellTemperatures": temps,
            "ModulePressures": pressures,
            "PackGas": gas,
            "PackStatus": status,
            "VehicleRequest": request,
            "ChargerStatus": charger,
        }

    def _group(self, name: str, values: list[float]) -> tuple[int, int, list[float] | None]:
        mux = self._mux[name]
        group = int(values[mux.selector])
        idx = mux.groups.get(group)
        if idx is None:
            return group, 0, None
        return group, group * mux.slots, [values[i] for i in idx]

    def _on_violation(self, event: E2EViolation) -> None:
        self.bms.on_e2e_violation(event.time_s, event.message, event.kind.value)

    # -- send -----------------------------------------------------------------------------------
    def _values(self, name: str, **signals: float) -> list[float]:
        vals = list(self._templates[name])
        ix = self._index[name]
        for key, value in signals.items():
            vals[ix[key]] = value
        return vals

    def _fill(self, name: str, time_s: float) -> FillValues:
        out = self.bms.out
        if name == "BmsContactorCmd":
            return self._values(
                name,
                MainPlusCmd=float(out.close_plus),
                MainMinusCmd=float(out.close_minus),
                PrechargeCmd=float(out.close_precharge),
            )
        if name == "BmsBalancingCmd":
            buf = self._bal_buf
            buf[: out.balancing.size] = out.balancing
            return buf.reshape(self._bal_groups, -1)
        if name == "BmsState":
            return self._fill_state()
        if name == "BmsFaults":
            return self._fill_faults()
        if name == "BmsLimits":
            return self._values(
                name,
                MaxChargeCurrent_A=_num(out.charge_limit_a),
                MaxDischargeCurrent_A=_num(out.discharge_limit_a),
            )
        if name == "BmsVoltageLimits":
            return self._values(
                name,
                MaxChargeVoltage_V=out.max_charge_voltage_v,
                MinDischargeVoltage_V=out.min_discharge_voltage_v,
            )
        if name == "BmsCellStats":
            return self._values(
                name,
                MinCellVoltage_V=_num(out.cell_v_min),
                MaxCellVoltage_V=_num(out.cell_v_max),
                AvgCellVoltage_V=_num(out.cell_v_avg),
                MinCellIndex=out.cell_v_min_index,
                MaxCellIndex=out.cell_v_max_index,
            )
        if name == "BmsTempStats":
            return self._values(
                name,
                MinTemp_C=_num(out.temp_min_c),
                MaxTemp_C=_num(out.temp_max_c),
                AvgTemp_C=_num(out.temp_avg_c),
                MinTempSensor=out.temp_min_sensor,
                MaxTempSensor=out.temp_max_sensor,
            )
        if name == "BmsPressureStats":
            return self._values(
                name,
                MinPressure_MPa=_num(out.pressure_min_mpa),
                MaxPressure_MPa=_num(out.pressure_max_mpa),
                MedianPressure_MPa=_num(out.pressure_median_mpa),
                MinPressureModule=out.pressure_min_module,
                MaxPressureModule=out.pressure_max_module,
            )
        if name == "BmsPackValues":
            return self._values(
                name,
                PackCurrent_A=_num(out.current_a),
                PackVoltage_V=_num(out.pack_voltage_v),
                DcLinkVoltage_V=_num(out.link_voltage_v),
                PackPower_kW=_num(out.power_kw),
            )
        if name == "BmsSoc":
            s = out.soc
            if s is None:
                return self._values(name)
            return self._values(
                name,
                SocMin_pct=100.0 * s.min,
                SocAvg_pct=100.0 * s.avg,
                SocMax_pct=100.0 * s.max,
                SocSigma_pct=100.0 * s.avg_sigma,
            )
        if name == "BmsSoe":
            s = out.soc
            if s is None:
                return self._values(name)
            return self._values(
                name,
                SoeEnergy_kWh=s.soe_kwh,
                Soe_pct=float(s.soe_pct),
                UsableSoc_pct=100.0 * s.usable,
                TimeSinceRest_min=min(s.time_since_rest_s * MINUTES_PER_S, 4095.0),
                SocConfident=float(s.confident),
            )
        if name == "ChargerRequest":
            # Charger convention: current positive INTO the pack (the charge limit as such).
            return self._values(
                name,
                ChargerMaxVoltage_V=out.charger_max_voltage_v,
                ChargerMaxCurrent_A=_num(out.charger_max_current_a),
                ChargeEnable=float(out.charge_enable),
            )
        raise KeyError(f"BMS node has no fill for {name}")

    @staticmethod
    def _state_key(out: BmsOutputs) -> tuple:
        return (
            out.state,
            out.plus_closed,
            out.minus_closed,
            out.precharge_closed,
            out.fault_info,
            out.fault_warning,
            out.fault_fatal,
            out.emergency_shutoff,
            out.thermal_alarm,
            out.charge_inhibit,
            out.balancing_active,
            out.precharge_attempts,
        )

    def _fill_state(self) -> list[float]:
        out = self.bms.out
        self._last_state_key = self._state_key(out)
        return self._values(
            "BmsState",
            BmsState=int(out.state),
            MainPlusClosed=float(out.plus_closed),
            MainMinusClosed=float(out.minus_closed),
            PrechargeClosed=float(out.precharge_closed),
            FaultInfo=float(out.fault_info),
            FaultWarning=float(out.fault_warning),
            FaultFatal=float(out.fault_fatal),
            EmergencyShutoff=float(out.emergency_shutoff),
            ThermalEventAlarm=float(out.thermal_alarm),
            ChargeInhibit=float(out.charge_inhibit),
            BalancingActive=float(out.balancing_active),
            PrechargeAttempts=min(out.precharge_attempts, 7),
        )

    def _fill_faults(self) -> Frames:
        """One frame per active fault (at most 63), all in the cyclic slot, slot 0 first."""
        faults = self.bms.out.faults
        count = min(len(faults), 63)
        frames = [
            self._values(
                "BmsFaults",
                FaultSlot=k,
                ActiveFaultCount=count,
                FaultCode=int(f.code),
                FaultTier=int(f.tier),
                FaultLocation=min(f.location, 255),
            )
            for k, f in enumerate(faults[:count])
        ] or [self._values("BmsFaults")]
        return Frames(frames)


def open_bms_node(
    pack_bus: can.BusABC,
    vehicle_bus: can.BusABC,
    config: str = "bms_pack_a_96s",
    **kwargs: Any,
) -> BmsNode:
    """Build a :class:`BmsNode` for a shipped configuration name or a YAML path."""
    return BmsNode(pack_bus, vehicle_bus, load_bms_config(config), **kwargs)


__all__: Iterable[str] = ("BmsNode", "open_bms_node", "PACK_TX", "PACK_RX", "VEHICLE_TX")
