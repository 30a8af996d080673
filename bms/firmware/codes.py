"""Fault codes, tiers and BMS states as sent on the vehicle bus (value tables of vehicle.dbc)."""

from __future__ import annotations

from enum import IntEnum


class FaultCode(IntEnum):
    """One code per protected quantity or diagnosis; the tier travels separately."""

    NONE = 0
    CELL_OVERVOLTAGE = 1
    CELL_UNDERVOLTAGE = 2
    CHARGE_OVERCURRENT = 3
    DISCHARGE_OVERCURRENT = 4
    OVERTEMP_CHARGE = 5
    OVERTEMP_DISCHARGE = 6
    UNDERTEMP_CHARGE = 7
    UNDERTEMP_DISCHARGE = 8
    PRESSURE_LOW = 9
    PRESSURE_HIGH = 10
    PRESSURE_RATE = 11
    H2S = 12
    CELL_VOLTAGE_SPREAD = 13
    VOLTAGE_PLAUSIBILITY = 14
    TEMPERATURE_PLAUSIBILITY = 15
    PRESSURE_PLAUSIBILITY = 16
    CURRENT_PLAUSIBILITY = 17
    PACK_COMM_TIMEOUT = 18
    VEHICLE_COMM_TIMEOUT = 19
    E2E_FAILURE = 20
    THERMAL_RUNAWAY = 21
    SOFT_SHORT = 22
    PRECHARGE_FAILURE = 23
    CONTACTOR_WELDED = 24
    CONTACTOR_STUCK_OPEN = 25
    OPEN_WIRE = 26
    DEEP_DISCHARGE = 27
    CHARGER_COMM_TIMEOUT = 28


class Tier(IntEnum):
    """Protection tiers as in foxBMS 2: MOL info, RSL warning with derating, MSL fatal."""

    NONE = 0
    INFO = 1
    WARNING = 2
    FATAL = 3


class BmsState(IntEnum):
    """States of the contactor state machine as reported in ``BmsState``."""

    INIT = 0
    STANDBY = 1
    PRECHARGE = 2
    DRIVE = 3
    CHARGE = 4
    OPENING = 5
    ERROR = 6


class RequestMode(IntEnum):
    """Vehicle's ``VehicleRequest.RequestMode``."""

    STANDBY = 0
    DRIVE = 1
    CHARGE = 2
    NO_REQUEST = 3
