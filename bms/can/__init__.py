"""CAN layer: DBC loading, compiled codecs, E2E, cyclic scheduling, buses, bus load, node base.

Everything between the virtual pack, the BMS model and the vehicle travels through this package
as CAN frames defined in the DBC files; nothing else is shared.
"""

from bms.can.bus import open_bus, open_virtual_bus
from bms.can.busload import BusLoad, BusLoadMeter, frame_bits, frame_bits_worst_case
from bms.can.clock import Clock, SimClock, WallClock
from bms.can.codec import DbcCodecs, MessageCodec, MuxLayout, SignalLayout
from bms.can.dbc import cycle_time_s, is_e2e_protected, load_dbc
from bms.can.e2e import (
    E2EConfig,
    E2EKind,
    E2EReceiver,
    E2ESender,
    E2EViolation,
    TxFault,
    TxFrame,
    crc8_j1850,
    e2e_crc,
)
from bms.can.node import Node
from bms.can.schedule import CyclicScheduler, Due, LatenessStats, periods_from

__all__ = [
    "BusLoad",
    "BusLoadMeter",
    "Clock",
    "CyclicScheduler",
    "DbcCodecs",
    "Due",
    "E2EConfig",
    "E2EKind",
    "E2EReceiver",
    "E2ESender",
    "E2EViolation",
    "LatenessStats",
    "MessageCodec",
    "MuxLayout",
    "Node",
    "SignalLayout",
    "SimClock",
    "TxFault",
    "TxFrame",
    "WallClock",
    "crc8_j1850",
    "cycle_time_s",
    "e2e_crc",
    "frame_bits",
    "frame_bits_worst_case",
    "is_e2e_protected",
    "load_dbc",
    "open_bus",
    "open_virtual_bus",
    "periods_from",
]
