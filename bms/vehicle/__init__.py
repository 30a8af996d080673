"""Vehicle side of the emulator: road-load model, drive cycles and profiles, VCU and charger nodes.

The VCU and the charger talk to the BMS only through vehicle-bus frames; the power they draw or
push is applied to the pack by the runner (a physical link, not CAN).
"""

from bms.vehicle.charger import ChargerNode, ChargerState
from bms.vehicle.cycles import (
    DriveCycle,
    Profile,
    concatenate,
    cycle_path,
    load_cycle,
    load_profile,
    read_columns,
    shipped_cycles,
)
from bms.vehicle.roadload import (
    ChargerParams,
    VcuParams,
    VehicleParams,
    battery_power_w,
    friction_brake_power_w,
    load_vehicle,
    wheel_power_w,
)
from bms.vehicle.vcu import VcuNode

__all__ = [
    "ChargerNode",
    "ChargerParams",
    "ChargerState",
    "DriveCycle",
    "Profile",
    "VcuNode",
    "VcuParams",
    "VehicleParams",
    "battery_power_w",
    "concatenate",
    "cycle_path",
    "friction_brake_power_w",
    "load_cycle",
    "load_profile",
    "load_vehicle",
    "read_columns",
    "shipped_cycles",
    "wheel_power_w",
]
