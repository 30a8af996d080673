"""Fault hooks of the virtual pack: each can be switched on and off at any time.

Fault types are a registry: a new type is a subclass with a ``kind`` and ``apply``/``remove``,
registered with :func:`register`, and is then usable from scenario files without touching the
pack. Parameters are plain keyword arguments with units in their names.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from bms.pack.hv import CONTACTORS
from bms.pack.pack import SENSOR_ORDER, Pack

FAULT_TYPES: dict[str, type[PackFault]] = {}


def register(cls: type[PackFault]) -> type[PackFault]:
    """Class decorator adding a fault type to :data:`FAULT_TYPES` under its ``kind``."""
    FAULT_TYPES[cls.kind] = cls
    return cls


class PackFault(ABC):
    """A fault hook: ``apply`` switches it on, ``remove`` switches it off."""

    kind: ClassVar[str]

    def validate(self, pack: Pack) -> None:  # noqa: B027 - optional hook, most faults fit any pack
        """Raise ValueError with a readable message when parameters do not fit the pack."""

    @abstractmethod
    def apply(self, pack: Pack) -> None: ...

    @abstractmethod
    def remove(self, pack: Pack) -> None: ...


def _check_index(name: str, index: int, count: int) -> None:
    if not 0 <= index < count:
        raise ValueError(f"{name} {index} out of range 0..{count - 1}")


def _check_sensor(pack: Pack, sensor: str, channel: int) -> None:
    if sensor not in SENSOR_ORDER:
        raise ValueError(f"unknown sensor {sensor!r} (one of {', '.join(SENSOR_ORDER)})")
    _check_index(f"{sensor} channel", channel, pack.sensors[sensor].n)


@register
@dataclass
class SoftShort(PackFault):
    """A dendrite bridge: a resistance across one cell's electrodes, inside the cell."""

    cell: int
    resistance_ohm: float
    kind: ClassVar[str] = "soft_short"

    def validate(self, pack: Pack) -> None:
        _check_index("cell", self.cell, pack.n_cells)
        if self.resistance_ohm <= 0:
            raise ValueError("resistance_ohm must be > 0")

    def apply(self, pack: Pack) -> None:
        pack.short_s.flat[self.cell] += 1.0 / self.resistance_ohm
        pack._refresh_network()

    def remove(self, pack: Pack) -> None:
        pack.short_s.flat[self.cell] = max(
            pack.short_s.flat[self.cell] - 1.0 / self.resistance_ohm, 0.0
        )
        pack._refresh_network()


@register
@dataclass
class SensorStuck(PackFault):
    """A sensor channel frozen at its last reading."""

    sensor: str
    channel: int
    kind: ClassVar[str] = "sensor_stuck"

    def validate(self, pack: Pack) -> None:
        _check_sensor(pack, self.sensor, self.channel)

    def apply(self, pack: Pack) -> None:
        pack.sensors[self.sensor].set_stuck(self.channel, True)

    def remove(self, pack: Pack) -> None:
        pack.sensors[self.sensor].set_stuck(self.channel, False)


@register
@dataclass
class SensorOffset(PackFault):
    """An additional offset on one sensor channel, in the sensor's unit (V, degC, MPa, A, ppm)."""

    sensor: str
    channel: int
    offset: float
    kind: ClassVar[str] = "sensor_offset"

    def validate(self, pack: Pack) -> None:
        _check_sensor(pack, self.sensor, self.channel)

    def apply(self, pack: Pack) -> None:
        pack.sensors[self.sensor].extra_offset[self.channel] += self.offset

    def remove(self, pack: Pack) -> None:
        pack.sensors[self.sensor].extra_offset[self.channel] -= self.offset


@register
@dataclass
class SensorNoise(PackFault):
    """Extra random noise (1-sigma, sensor unit) on one channel: a loose connector, EMI."""

    sensor: str
    channel: int
    sigma: float
    kind: ClassVar[str] = "sensor_noise"

    def validate(self, pack: Pack) -> None:
        _check_sensor(pack, self.sensor, self.channel)

    def apply(self, pack: Pack) -> None:
        pack.sensors[self.sensor].set_noise(self.channel, self.sigma)

    def remove(self, pack: Pack) -> None:
        pack.sensors[self.sensor].set_noise(self.channel, 0.0)


@register
@dataclass
class SensorOpen(PackFault):
    """A broken sense line. For cell voltages: the channel reads ~0 V and the channel above reads
    both cells (the AFE open-wire signature); other sensors read their ``open_value``."""

    sensor: str
    channel: int
    kind: ClassVar[str] = "sensor_open"

    def validate(self, pack: Pack) -> None:
        _check_sensor(pack, self.sensor, self.channel)

    def apply(self, pack: Pack) -> None:
        pack.sensors[self.sensor].open[self.channel] = True

    def remove(self, pack: Pack) -> None:
        pack.sensors[self.sensor].open[self.channel] = False


@register
@dataclass
class PressureLoss(PackFault):
    """Fixture relaxation of one module: preload decays to ``target_mpa`` with ``tau_s``."""

    module: int
    target_mpa: float = 0.2
    tau_s: float = 60.0
    kind: ClassVar[str] = "pressure_loss"

    def validate(self, pack: Pack) -> None:
        _check_index("module", self.module, pack.n_modules)
        if self.tau_s <= 0 or self.target_mpa < 0:
            raise ValueError("tau_s must be > 0 and target_mpa >= 0")

    def apply(self, pack: Pack) -> None:
        pack.fixture_loss_tau_s[self.module] = self.tau_s
        pack.fixture_loss_target_mpa[self.module] = self.target_mpa

    def remove(self, pack: Pack) -> None:
        # The spring stays where it relaxed to; it only stops relaxing further.
        pack.fixture_loss_tau_s[self.module] = float("inf")


@register
@dataclass
class CoolantLoss(PackFault):
    """Coolant pump or loop failure: no forced flow through the cold plates."""

    kind: ClassVar[str] = "coolant_loss"

    def apply(self, pack: Pack) -> None:
        pack.coolant_lost = True
        pack._refresh_boundary()

    def remove(self, pack: Pack) -> None:
        pack.coolant_lost = False
        pack._refresh_boundary()


@register
@dataclass
class ContactorWelded(PackFault):
    """Welded contacts: once closed, the contactor cannot open."""

    contactor: str
    kind: ClassVar[str] = "contactor_welded"

    def validate(self, pack: Pack) -> None:
        if self.contactor not in CONTACTORS:
            raise ValueError(
                f"unknown contactor {self.contactor!r} (one of {', '.join(CONTACTORS)})"
            )

    def apply(self, pack: Pack) -> None:
        pack.hv.contactors[self.contactor].welded = True

    def remove(self, pack: Pack) -> None:
        pack.hv.contactors[self.contactor].welded = False


@register
@dataclass
class ContactorStuckOpen(PackFault):
    """A contactor that does not close (coil or mechanism failure)."""

    contactor: str
    kind: ClassVar[str] = "contactor_stuck_open"

    validate = ContactorWelded.validate

    def apply(self, pack: Pack) -> None:
        pack.hv.contactors[self.contactor].stuck_open = True

    def remove(self, pack: Pack) -> None:
        pack.hv.contactors[self.contactor].stuck_open = False


@register
@dataclass
class ThermalRunaway(PackFault):
    """Trigger one cell into runaway as in the GB 38031 propagation test.

    An internal short ramps from ``r_start_ohm`` to ``r_end_ohm`` over ``ramp_s`` (and an optional
    heater adds ``heater_w``); at the end of the ramp the cell goes into runaway (as it does above
    its trigger temperature, or when it self-heats past it from the onset): it releases its
    energy, its voltage collapses, its neighbours heat up and it vents gas. Removing the trigger
    stops the short and heater; a runaway already under way cannot be undone.
    """

    cell: int
    ramp_s: float = 60.0
    r_start_ohm: float = 1000.0
    r_end_ohm: float = 0.01
    heater_w: float = 0.0
    kind: ClassVar[str] = "thermal_runaway"

    def validate(self, pack: Pack) -> None:
        _check_index("cell", self.cell, pack.n_cells)
        if self.ramp_s <= 0 or self.r_start_ohm <= 0 or self.r_end_ohm <= 0:
            raise ValueError("ramp_s, r_start_ohm and r_end_ohm must be > 0")

    def apply(self, pack: Pack) -> None:
        pack.runaway_triggers[self.cell] = (
            pack.time_s,
            self.ramp_s,
            self.r_start_ohm,
            self.r_end_ohm,
        )
        pack.heater_w.flat[self.cell] += self.heater_w

    def remove(self, pack: Pack) -> None:
        pack.runaway_triggers.pop(self.cell, None)
        if not pack.runaway_active.flat[self.cell]:
            pack._runaway_short_s.flat[self.cell] = 0.0
        pack.heater_w.flat[self.cell] -= self.heater_w
        pack._refresh_network()


@register
@dataclass
class CasingBreach(PackFault):
    """Moist air reaches the sulfide electrolyte: H2S builds up in the enclosure."""

    kind: ClassVar[str] = "casing_breach"

    def apply(self, pack: Pack) -> None:
        pack.casing_breach = True

    def remove(self, pack: Pack) -> None:
        pack.casing_breach = False


@register
@dataclass
class ExternalShort(PackFault):
    """A short across the HV terminals behind the contactors (e.g. a damaged cable)."""

    resistance_ohm: float = 0.01
    kind: ClassVar[str] = "external_short"

    def validate(self, pack: Pack) -> None:
        if self.resistance_ohm <= 0:
            raise ValueError("resistance_ohm must be > 0")

    def apply(self, pack: Pack) -> None:
        pack.external_short_ohm = self.resistance_ohm

    def remove(self, pack: Pack) -> None:
        pack.external_short_ohm = None


def make_fault(kind: str, **params: object) -> PackFault:
    """Build a registered fault from its kind and keyword parameters (ValueError if unknown)."""
    try:
        cls = FAULT_TYPES[kind]
    except KeyError:
        raise ValueError(
            f"unknown fault {kind!r} (one of {', '.join(sorted(FAULT_TYPES))})"
        ) from None
    try:
        return cls(**params)  # type: ignore[call-arg]
    except TypeError as exc:
        raise ValueError(f"{kind}: {exc}") from None
