"""The closed loop on one simulated clock: virtual pack, pack node, BMS node, VCU and charger.

The nodes talk only through python-can virtual buses ("pack" and "vehicle" channels, one bus
endpoint per node); the system applies the physical links itself: the inverter's power and the
charger's current flow into the :class:`~bms.pack.Pack`, as cables would, never over CAN.

Per base tick (10 ms by default): ``pack.step(dt)``, then ``pack_node``, ``bms_node``, ``vcu``
and ``charger`` step in that fixed order, then the inverter and charger set the load for the next
tick. The order is part of the determinism contract: same configuration and seed, same frames.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from bms.can.bus import open_virtual_bus
from bms.can.clock import SimClock
from bms.firmware.bms import Bms
from bms.firmware.codes import BmsState, RequestMode
from bms.firmware.config import load_bms_config
from bms.firmware.node import BmsNode
from bms.pack import InitialState, Pack, load_pack
from bms.pack.node import PackNode
from bms.vehicle import ChargerNode, VcuNode, load_vehicle

_instance = itertools.count()


@dataclass(frozen=True)
class SystemConfig:
    """What to build: pack and BMS parameter files, vehicle, seed and initial conditions."""

    pack: str | Path = "pack_a_96s"
    bms: str | Path = "bms_pack_a_96s"
    vehicle: str | Path = "compact_ev"
    seed: int = 0
    initial: InitialState = field(default_factory=InitialState)
    dt_s: float = 0.01
    #: SOC the BMS believes from its non-volatile memory (None: it initialises from OCV).
    stored_soc: float | None = None
    charger_rated_current_a: float = 200.0


class DriverControls:
    """What a test, a scenario or a driver does with a running system (simulated or bench).

    The host provides ``time_s``, ``step()``, ``bms_state()``, ``vcu`` and the
    ``charger_connected`` flag; these controls are the same on both clocks.
    """

    time_s: float
    vcu: VcuNode
    charger_connected: bool

    def step(self) -> None:
        raise NotImplementedError

    def bms_state(self) -> BmsState | None:
        raise NotImplementedError

    def run(self, duration_s: float) -> None:
        """Step for ``duration_s`` of (simulated or wall-clock paced) time."""
        end = self.time_s + duration_s
        while self.time_s < end - 1e-9:
            self.step()

    def run_until(self, condition: Any, timeout_s: float) -> float | None:
        """Step until ``condition(self)`` holds; returns the time, or None after ``timeout_s``."""
        end = self.time_s + timeout_s
        while self.time_s < end - 1e-9:
            self.step()
            if condition(self):
                return self.time_s
        return None

    def request(self, mode: RequestMode | str, clear_faults: bool = False) -> None:
        """What the driver or the charging station asks the VCU for (standby, drive, charge)."""
        mode = RequestMode[mode.upper()] if isinstance(mode, str) else RequestMode(mode)
        self.charger_connected = mode == RequestMode.CHARGE
        self.vcu.request(mode, clear_faults)

    def start(self, mode: RequestMode | str = RequestMode.DRIVE, timeout_s: float = 10.0) -> float:
        """Request ``mode`` and run until the BMS reports it (contactors closed)."""
        self.request(mode)
        target = BmsState.CHARGE if self.charger_connected else BmsState.DRIVE
        reached = self.run_until(lambda s: s.bms_state() == target, timeout_s)
        if reached is None:
            raise RuntimeError(f"BMS did not reach {target.name} within {timeout_s} s")
        return reached


class System(DriverControls):
    """All nodes of one simulated vehicle, stepped together; use as a context manager."""

    def __init__(self, config: SystemConfig | None = None) -> None:
        self.config = cfg = config or SystemConfig()
        tag = f"sim{next(_instance)}"
        self.clock = SimClock()
        self.pack = Pack(load_pack(cfg.pack), seed=cfg.seed, initial=cfg.initial)
        bms_config = load_bms_config(cfg.bms)
        if bms_config.series != self.pack.n_series or bms_config.modules != self.pack.n_modules:
            raise ValueError(
                f"BMS configuration {bms_config.name} ({bms_config.series}s, "
                f"{bms_config.modules} modules) does not match pack {self.pack.params.name}"
            )
        self._buses: list[can.BusABC] = []
        pack_ch, vehicle_ch = f"{tag}-pack", f"{tag}-vehicle"
        vehicle_params = load_vehicle(cfg.vehicle)
        max_v = self.pack.n_series * self.pack.cell.voltage_max_v * 1.05
        self.pack_node = PackNode(self._bus(pack_ch), self.pack, seed=cfg.seed)
        self.bms = Bms(bms_config, stored_soc=cfg.stored_soc)
        self.bms_node = BmsNode(self._bus(pack_ch), self._bus(vehicle_ch), bms_config, bms=self.bms)
        self.vehicle = vehicle_params
        self.vcu = VcuNode(self._bus(vehicle_ch), params=vehicle_params.vcu, seed=cfg.seed)
        self.charger = ChargerNode(
            self._bus(vehicle_ch),
            rated_current_a=cfg.charger_rated_current_a,
            rated_voltage_v=max_v,
            params=vehicle_params.charger,
            seed=cfg.seed,
        )
        #: Battery power the driver asks for (W, + = discharge), before the VCU applies limits.
        self.requested_power_w = 0.0
        #: Plug state: the charger pushes current only while plugged in.
        self.charger_connected = False

    def _bus(self, channel: str) -> can.BusABC:
        bus = open_virtual_bus(channel)
        self._buses.append(bus)
        return bus

    # ------------------------------------------------------------------ stepping
    @property
    def time_s(self) -> float:
        return self.clock.now_s()

    def step(self) -> None:
        """One base tick: physics, then every node in the fixed order, then the physical links."""
        dt = self.config.dt_s
        self.pack.step(dt)
        self.clock.advance(dt)
        now = self.clock.now_s()
        self.pack_node.step(now)
        self.bms_node.step(now)
        self.vcu.step(now)
        self.charger.step(now)
        self._apply_loads(now)

    def _apply_loads(self, now: float) -> None:
        link_v = self.pack.link_voltage_v
        if self.charger_connected:
            self.pack.set_load_current(self.charger.current_demand_a(link_v, now))
        else:
            self.pack.set_load_power(self.vcu.power_demand_w(self.requested_power_w, link_v, now))

    def run(self, duration_s: float) -> None:
        """Step for ``duration_s`` of simulated time (a whole number of ticks)."""
        for _ in range(int(round(duration_s / self.config.dt_s))):
            self.step()

    def bms_state(self) -> BmsState:
        """The BMS model's own state (the bench system reads it from the bus instead)."""
        return self.bms.out.state

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        for bus in self._buses:
            bus.shutdown()
        self._buses.clear()

    def __enter__(self) -> System:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
