"""High-voltage path: main contactors, precharge relay and resistor, DC-link capacitor.

Contactors follow their coil command after a close/open delay unless a fault holds them (welded
contacts cannot open, a stuck-open contactor cannot close); their auxiliary contacts report the
true position. The DC link charges through the precharge resistor with the exact RC response.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

CONTACTORS = ("plus", "minus", "precharge")


@dataclass
class Contactor:
    """One contactor: coil command, true position and fault holds."""

    close_s: float
    open_s: float
    command: bool = False
    closed: bool = False
    welded: bool = False
    stuck_open: bool = False
    _pending_s: float = 0.0

    def step(self, dt_s: float) -> None:
        """Move the contacts towards the command after the mechanical delay."""
        target = self.command
        if self.welded and self.closed:
            target = True
        if self.stuck_open:
            target = False
        if target == self.closed:
            self._pending_s = 0.0
            return
        self._pending_s += dt_s
        if self._pending_s >= (self.close_s if target else self.open_s) - 1e-12:
            self.closed = target
            self._pending_s = 0.0


@dataclass
class HvCircuit:
    """Contactor set plus the DC-link capacitor voltage."""

    capacitance_f: float
    precharge_ohm: float
    discharge_ohm: float
    close_s: float
    open_s: float
    link_voltage_v: float = 0.0
    contactors: dict[str, Contactor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.contactors = {name: Contactor(self.close_s, self.open_s) for name in CONTACTORS}

    def command(self, plus: bool, minus: bool, precharge: bool) -> None:
        """Set the coil commands (True = close)."""
        self.contactors["plus"].command = plus
        self.contactors["minus"].command = minus
        self.contactors["precharge"].command = precharge

    def step_contactors(self, dt_s: float) -> None:
        for contactor in self.contactors.values():
            contactor.step(dt_s)

    @property
    def main_closed(self) -> bool:
        """The load sees the pack: both main contactors closed."""
        return self.contactors["plus"].closed and self.contactors["minus"].closed

    @property
    def precharging(self) -> bool:
        """The DC link charges through the precharge resistor."""
        c = self.contactors
        return c["minus"].closed and c["precharge"].closed and not c["plus"].closed

    def precharge_current_a(
        self, e_pack_v: float, r_pack_ohm: float, dt_s: float, load_s: float = 0.0
    ) -> float:
        """Mean pack current over a precharge step, advancing the link voltage exactly.

        ``load_s`` is a conductance across the link (an external short): the link then settles
        at the divider voltage, so a shorted link never reaches the pack voltage.
        """
        r_series = r_pack_ohm + self.precharge_ohm
        g_total = 1.0 / r_series + load_s
        v_final = e_pack_v / r_series / g_total
        tau = self.capacitance_f / g_total
        v_old = self.link_voltage_v
        v_new = v_final - (v_final - v_old) * math.exp(-dt_s / tau)
        # Charge drawn from the pack = charge into C + charge through the load (exact integral).
        v_mean = v_final - (v_final - v_old) * tau / dt_s * (1.0 - math.exp(-dt_s / tau))
        self.link_voltage_v = v_new
        return self.capacitance_f * (v_new - v_old) / dt_s + load_s * v_mean

    def discharge_link(self, dt_s: float, load_s: float = 0.0) -> None:
        """Isolated DC link bleeds down through its discharge resistor (and any short on it)."""
        g_total = 1.0 / self.discharge_ohm + load_s
        self.link_voltage_v *= math.exp(-dt_s * g_total / self.capacitance_f)

    def follow_terminal(self, open_v: float, r_pack_ohm: float, dt_s: float) -> float:
        """Mains closed: the link follows the pack terminal; returns the capacitor's mean current.

        ``open_v`` is the terminal voltage without the capacitor's current. Solved implicitly
        (``V' = open_v - R C (V' - V) / dt``), so closing onto an empty link draws exactly the
        charge ``C dV`` and the link settles with the pack's own time constant.
        """
        k = r_pack_ohm * self.capacitance_f / dt_s
        v_new = (open_v + k * self.link_voltage_v) / (1.0 + k)
        current = self.capacitance_f * (v_new - self.link_voltage_v) / dt_s
        self.link_voltage_v = v_new
        return current
