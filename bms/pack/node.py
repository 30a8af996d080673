"""Pack node: what the pack-side electronics put on the pack bus, and the drivers they obey.

A real pack carries cell-monitoring chips (AFEs), temperature, pressure, current, voltage and gas
sensor boards, and contactor and bleed-switch drivers. :class:`PackNode` is all of them on one
bus endpoint, built on :class:`bms.can.node.Node`, so a BMS on a bench can be built against it:

- Every PACK-sent message of ``dbc/pack.dbc`` goes out at its DBC cycle, all multiplexer groups
  every cycle. Sensors are sampled once per cycle class: ``pack.measure_fast()`` once per 10 ms
  (PackCurrent, PackVoltages), ``pack.measure()`` once per 100 ms (cells, temperatures,
  pressures, gas, status), whatever the number of messages sharing the sample.
- Only groups that exist are sent: a 96s pack on the 192-cell DBC sends 24 CellVoltages groups,
  not 48. Slots of a last, partly filled group (e.g. 10 pressure sensors in 3 groups of 4) carry
  the signal minimum and, where the message has an invalid mask, their invalid bit set; the
  counts in PackStatus tell the receiver where the real channels end.
- Validity is what the chips know: a sensor bank's ``open`` flag is the AFE/board open-wire
  diagnosis; a temperature reading at the sensor's ``open_value`` is invalid (open or shorted
  NTC); a reading the DBC cannot carry (outside the signal range) is invalid. An open sense wire
  at the top of cell k corrupts cells k and k+1 of the same chip (k reads ~0 V, k+1 the sum), so
  both bits are set in OpenWireMask. AfeFault marks every group holding a cell of a module whose
  chip is set faulty in :attr:`PackNode.afe_fault` (scenario hook); its values are sent unchanged.
- Drivers: valid (E2E-checked) BmsContactorCmd frames drive ``pack.command_contactors``; when no
  valid command arrived for ``contactor_cmd_timeout_s`` the coil drivers de-energise (all open).
  BmsBalancingCmd groups drive ``pack.set_balancing``; a group with no valid frame for
  ``balancing_cmd_timeout_s`` stops bleeding its cells. Both are recorded in
  :attr:`PackNode.driver_events`; a fresh valid command is followed again (also recorded).
  Timeouts are measured on the node's own clock (the ``now_s`` of :meth:`PackNode.step`).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import can
import numpy as np

from bms.can import DbcCodecs, E2EConfig, MessageCodec, Node, load_dbc
from bms.can.busload import BusLoadMeter
from bms.can.node import FillValues
from bms.config import Section
from bms.errors import InputError
from bms.pack.pack import Pack

PACK_SENDER = "PACK"
CONTACTOR_CMD = "BmsContactorCmd"
BALANCING_CMD = "BmsBalancingCmd"

#: Messages sampled from ``measure_fast()`` (10 ms class) and from ``measure()`` (100 ms class).
FAST_MESSAGES = ("PackCurrent", "PackVoltages", "ContactorFeedback")
SLOW_MESSAGES = ("CellVoltages", "CellTemperatures", "ModulePressures", "PackGas", "PackStatus")


@dataclass(frozen=True)
class PackNodeParams:
    """Safety times of the pack-side drivers (s).

    ``contactor_cmd_timeout_s`` (default 0.1 s = 10 cycles of the 10 ms command): coils drop out
    when no valid contactor command came for this long. ``balancing_cmd_timeout_s`` (default
    0.3 s = 3 cycles of the 100 ms command, the E2E receiver's timeout): bleeding stops.
    """

    contactor_cmd_timeout_s: float = 0.1
    balancing_cmd_timeout_s: float = 0.3

    @classmethod
    def from_section(cls, section: Section) -> PackNodeParams:
        """Read the times from a YAML section (missing keys keep the defaults; typos rejected)."""
        default = cls()
        params = cls(
            contactor_cmd_timeout_s=section.number(
                "contactor_cmd_timeout_s", default.contactor_cmd_timeout_s, above=0.0, max=10.0
            ),
            balancing_cmd_timeout_s=section.number(
                "balancing_cmd_timeout_s", default.balancing_cmd_timeout_s, above=0.0, max=60.0
            ),
        )
        section.done()
        return params


class DriverEventKind(enum.Enum):
    """Reactions of the pack-side drivers to their command messages."""

    CONTACTOR_CMD_LOST = "contactor_cmd_lost"  # coils de-energised: all contactors open
    CONTACTOR_CMD_RESTORED = "contactor_cmd_restored"  # valid commands are followed again
    BALANCING_CMD_LOST = "balancing_cmd_lost"  # bleeding of one BalGroup stopped
    BALANCING_CMD_RESTORED = "balancing_cmd_restored"


@dataclass(frozen=True)
class DriverEvent:
    """One driver reaction at simulated time ``time_s``; ``group`` is the BalGroup (or -1)."""

    time_s: float
    kind: DriverEventKind
    group: int = -1


def _index(codec: MessageCodec, signal: str) -> int:
    """Position of ``signal`` in the codec's signal order, or a one-line InputError."""
    try:
        return codec.index[signal]
    except KeyError:
        raise InputError(f"message {codec.name}: PackNode needs signal {signal!r}") from None


def _bounds(codec: MessageCodec, signal: str) -> tuple[float, float]:
    """Physical range the DBC lets ``signal`` carry."""
    layout = codec.signals[_index(codec, signal)]
    return layout.minimum, layout.maximum


class _MuxOut:
    """Preallocated buffers of one multiplexed PACK message: slot values and per-group bit fields.

    ``values`` is the ``(groups, slots)`` array handed to the codec; ``raw`` holds, per group, the
    raw value of each per-group common signal (``masks`` with one bit per slot, 1-bit ``flags``),
    ORed into the payloads at bit ``shift``.
    """

    def __init__(
        self,
        codec: MessageCodec,
        count: int,
        what: str,
        masks: tuple[str, ...] = (),
        flags: tuple[str, ...] = (),
    ) -> None:
        mux = codec.mux
        if mux is None or codec.length != 8:
            raise InputError(f"message {codec.name}: PackNode needs an 8-byte multiplexed message")
        self.slots = mux.slots
        self.groups = -(-count // self.slots)
        if self.groups > len(mux.group_ids):
            raise InputError(
                f"message {codec.name}: the pack has {count} {what}, the DBC carries "
                f"{len(mux.group_ids) * self.slots}"
            )
        self.count = count
        self.values = np.zeros((self.groups, self.slots))
        self.flat = self.values.reshape(-1)  # view: fill channels in order, padding stays put
        self.lo, self.hi = _bounds(codec, mux.groups[mux.group_ids[0]][0].name)
        self.flat[count:] = self.lo
        self.zero_common = {name: 0.0 for name in (*masks, *flags)}
        self.shift: dict[str, np.uint64] = {}
        self.raw: dict[str, np.ndarray] = {}
        for name in (*masks, *flags):
            layout = codec.signals[_index(codec, name)]
            if layout.big_endian or layout.signed:
                raise InputError(f"message {codec.name}: {name} must be unsigned little-endian")
            if name in masks and layout.length < self.slots:
                raise InputError(
                    f"message {codec.name}: {name} needs {self.slots} bits, has {layout.length}"
                )
            self.shift[name] = np.uint64(layout.shift)
            self.raw[name] = np.zeros(self.groups, dtype=np.uint64)
        self.weights = (1 << np.arange(self.slots)).astype(np.uint64)
        self.padded = np.zeros(self.groups * self.slots, dtype=bool)  # per-slot flag buffer

    def bits(self, name: str, flags: np.ndarray, mark_padding: bool = True) -> bool:
        """Set the per-group mask ``name`` from per-channel ``flags``; True if any flag is set."""
        buf = self.padded
        buf[: self.count] = flags
        if mark_padding:
            buf[self.count :] = True
        any_real = bool(flags.any())
        np.dot(buf.reshape(self.groups, self.slots), self.weights, out=self.raw[name])
        return any_real


class PackNode(Node):
    """The pack's electronics on the pack bus: sensor frames out, contactor and bleed commands in.

    Call :meth:`step` once per base tick after ``pack.step(dt)``. Fault injection per message is
    the base class's :meth:`inject`/:meth:`clear`; :attr:`afe_fault` (per module) and
    :attr:`contactor_supply_ok` are pack-side electronics faults a scenario may set.
    """

    def __init__(
        self,
        bus: can.BusABC,
        pack: Pack,
        codecs: DbcCodecs | None = None,
        *,
        seed: int = 0,
        start_s: float = 0.0,
        params: PackNodeParams | None = None,
        e2e_config: E2EConfig | None = None,
        phase_step_s: float = 0.0,
        phase_offset_s: float = 0.0,
        busload: BusLoadMeter | None = None,
    ) -> None:
        codecs = codecs if codecs is not None else DbcCodecs(load_dbc("pack"))
        tx = [m.name for m in codecs.db.messages if PACK_SENDER in (m.senders or ())]
        fillers: dict[str, Callable[[float], FillValues]] = {
            "PackCurrent": self._fill_current,
            "PackVoltages": self._fill_voltages,
            "ContactorFeedback": self._fill_feedback,
            "CellVoltages": self._fill_cells,
            "CellTemperatures": self._fill_temps,
            "ModulePressures": self._fill_pressures,
            "PackGas": self._fill_gas,
            "PackStatus": self._fill_status,
        }
        for name in tx:
            if name not in fillers:
                raise InputError(f"message {name}: sent by {PACK_SENDER} but unknown to PackNode")
        for name in fillers:
            if name not in tx:
                raise InputError(f"DBC has no {PACK_SENDER}-sent message {name!r}")
            if codecs[name].cycle_time_s is None:
                raise InputError(f"message {name}: PackNode needs a cycle time (GenMsgCycleTime)")
        super().__init__(
            bus,
            codecs,
            tx=tx,
            rx=(CONTACTOR_CMD, BALANCING_CMD),
            e2e_config=e2e_config,
            phase_step_s=phase_step_s,
            phase_offset_s=phase_offset_s,
            start_s=start_s,
            busload=busload,
            seed=seed,
        )
        self.pack = pack
        self.params = params or PackNodeParams()
        self._fillers = fillers
        self._start_s = start_s
        self._now_s = start_s
        #: Driver reactions (contactor/balancing command lost or restored), in time order.
        self.driver_events: list[DriverEvent] = []
        #: Contactor coil supply present; False de-energises every coil (PackStatus reports it).
        self.contactor_supply_ok = True
        self._build_tx(codecs)
        self._build_rx(codecs)

    # -- construction ---------------------------------------------------------------------------
    def _build_tx(self, codecs: DbcCodecs) -> None:
        pack = self.pack
        sensors = pack.sensors
        self._fast_period_s = min(codecs[n].cycle_time_s for n in FAST_MESSAGES)  # type: ignore[type-var]
        self._slow_period_s = min(codecs[n].cycle_time_s for n in SLOW_MESSAGES)  # type: ignore[type-var]
        self._fast_k = -1
        self._slow_k = -1
        self._vals = {n: [0.0] * len(codecs[n].signals) for n in (*FAST_MESSAGES, "PackGas")}
        self._vals["PackStatus"] = [0.0] * len(codecs["PackStatus"].signals)

        cur, volt, gas = codecs["PackCurrent"], codecs["PackVoltages"], codecs["PackGas"]
        self._i_current = _index(cur, "PackCurrent_A")
        self._i_current_ok = _index(cur, "CurrentValid")
        self._current_range = _bounds(cur, "PackCurrent_A")
        self._i_pack_v = _index(volt, "PackVoltage_V")
        self._i_link_v = _index(volt, "DcLinkVoltage_V")
        self._i_pack_v_ok = _index(volt, "PackVoltageValid")
        self._i_link_v_ok = _index(volt, "DcLinkVoltageValid")
        self._pack_v_range = _bounds(volt, "PackVoltage_V")
        self._link_v_range = _bounds(volt, "DcLinkVoltage_V")
        fb = codecs["ContactorFeedback"]
        self._i_feedback = [
            _index(fb, s) for s in ("MainPlusClosed", "MainMinusClosed", "PrechargeClosed")
        ]
        self._i_h2s = _index(gas, "H2S_ppm")
        self._i_h2s_ok = _index(gas, "H2SValid")
        self._h2s_range = _bounds(gas, "H2S_ppm")
        st = codecs["PackStatus"]
        self._i_status = {
            s: _index(st, s)
            for s in (
                "CellCount",
                "ModuleCount",
                "TempSensorCount",
                "CellMonitorFault",
                "TempSensorFault",
                "PressureSensorFault",
                "CurrentSensorFault",
                "GasSensorFault",
                "BalancingActive",
                "ContactorSupplyOk",
            )
        }

        n_series = pack.n_series
        self.cells = _MuxOut(
            codecs["CellVoltages"],
            n_series,
            "series cells",
            masks=("OpenWireMask",),
            flags=("AfeFault",),
        )
        self.temps = _MuxOut(
            codecs["CellTemperatures"],
            sensors["cell_temperature"].n,
            "temperature sensors",
            masks=("TempInvalidMask",),
        )
        self.pressures = _MuxOut(
            codecs["ModulePressures"], pack.n_modules, "modules", masks=("PressureInvalidMask",)
        )
        self._group_fields = {
            "CellVoltages": self.cells,
            "CellTemperatures": self.temps,
            "ModulePressures": self.pressures,
        }
        # An open wire at the top of cell k also corrupts cell k+1 when both sit on one chip.
        spm = max(pack.params.topology.series_per_module, 1)
        self._same_chip_above = (np.arange(1, n_series) % spm) != 0
        self._open_wire = np.zeros(n_series, dtype=bool)
        self._cell_module = np.minimum(np.arange(n_series) // spm, pack.n_modules - 1)
        #: Cell-monitor chip fault per module (scenario hook): its groups report AfeFault.
        self.afe_fault = np.zeros(pack.n_modules, dtype=bool)
        self._group_afe = np.zeros(self.cells.groups * self.cells.slots, dtype=bool)
        self._temp_open_value = sensors["cell_temperature"].spec.open_value
        self._temp_bad = np.zeros(sensors["cell_temperature"].n, dtype=bool)
        self._pressure_bad = np.zeros(pack.n_modules, dtype=bool)
        self._fault_flags = {"cells": False, "temps": False, "pressures": False, "gas": False}
        self._current_ok = True

    def _build_rx(self, codecs: DbcCodecs) -> None:
        cmd = codecs[CONTACTOR_CMD]
        self._i_cmd = [_index(cmd, s) for s in ("MainPlusCmd", "MainMinusCmd", "PrechargeCmd")]
        bal = codecs[BALANCING_CMD]
        mux = bal.mux
        if mux is None:
            raise InputError(f"message {BALANCING_CMD}: PackNode needs a multiplexed message")
        self._bal_selector = mux.selector.index
        self._bal_slots = mux.slots
        # Group g carries cells g*slots+1 .. g*slots+slots, in start-bit order (DBC comment).
        self._bal_index = {g: np.array([s.index for s in mux.groups[g]]) for g in mux.group_ids}
        n_series = self.pack.n_series
        n_groups = -(-n_series // self._bal_slots)
        if n_groups > len(mux.group_ids):
            raise InputError(
                f"message {BALANCING_CMD}: the pack has {n_series} series cells, the DBC carries "
                f"{len(mux.group_ids) * self._bal_slots}"
            )
        self._bal_groups = n_groups  # only groups that hold real cells are supervised
        self._bal_cmd = np.zeros(n_groups * self._bal_slots, dtype=bool)
        self._bal_last_ok_s = np.full(n_groups, self._start_s)
        self._bal_lost = np.zeros(n_groups, dtype=bool)
        self._bal_deadline_s = self._start_s + self.params.balancing_cmd_timeout_s
        self._contactor_last_ok_s = self._start_s
        self._contactor_lost = False

    # -- public API -----------------------------------------------------------------------------
    def step(self, now_s: float, catch_up: bool = True) -> None:
        """Receive commands, send every due frame, then supervise the command timeouts.

        Driver reactions act on the pack from its next ``step``, like commands received now.
        """
        self._now_s = now_s
        super().step(now_s, catch_up)
        self._supervise(now_s)

    def report(self) -> dict[str, Any]:
        """The base report plus driver reactions counted by kind."""
        out = super().report()
        counts: dict[str, int] = {}
        for event in self.driver_events:
            counts[event.kind.value] = counts.get(event.kind.value, 0) + 1
        out["driver_events"] = counts
        return out

    # -- receive side ---------------------------------------------------------------------------
    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        now_s = self._now_s  # the driver's own clock, not the sender's timestamp
        if name == CONTACTOR_CMD:
            self._contactor_last_ok_s = now_s
            if self._contactor_lost:
                self._contactor_lost = False
                self.driver_events.append(
                    DriverEvent(now_s, DriverEventKind.CONTACTOR_CMD_RESTORED)
                )
            if self.contactor_supply_ok:
                plus, minus, pre = (values[i] >= 0.5 for i in self._i_cmd)
                self.pack.command_contactors(plus, minus, pre)
            return
        group = values[self._bal_selector]
        if group != group or not 0 <= group < self._bal_groups:
            return  # a group beyond the pack's cells: nothing to drive
        g = int(group)
        slots = self._bal_slots
        bits = np.asarray(values)[self._bal_index[g]] >= 0.5
        self._bal_cmd[g * slots : (g + 1) * slots] = bits
        self._bal_last_ok_s[g] = now_s
        if self._bal_lost[g]:
            self._bal_lost[g] = False
            self.driver_events.append(DriverEvent(now_s, DriverEventKind.BALANCING_CMD_RESTORED, g))
        self._update_bal_deadline()
        self._apply_balancing()

    def _update_bal_deadline(self) -> None:
        """Earliest time a supervised BalGroup can time out (a scalar check per tick)."""
        alive = self._bal_last_ok_s[~self._bal_lost]
        self._bal_deadline_s = (
            float(alive.min()) + self.params.balancing_cmd_timeout_s if alive.size else math.inf
        )

    def _apply_balancing(self) -> None:
        wanted = self._bal_cmd[: self.pack.n_series]
        if not np.array_equal(wanted, self.pack.balancing):
            self.pack.set_balancing(wanted)  # rebuilds the pack's network: only on change

    def _supervise(self, now_s: float) -> None:
        """Driver safety: de-energise coils / stop bleeding when commands stay missing."""
        p = self.params
        if not self.contactor_supply_ok:
            self.pack.command_contactors(False, False, False)
        if (
            not self._contactor_lost
            and now_s - self._contactor_last_ok_s > p.contactor_cmd_timeout_s + 1e-9
        ):
            self._contactor_lost = True
            self.pack.command_contactors(False, False, False)
            self.driver_events.append(DriverEvent(now_s, DriverEventKind.CONTACTOR_CMD_LOST))
        if now_s > self._bal_deadline_s + 1e-9:
            expired = (
                now_s - self._bal_last_ok_s > p.balancing_cmd_timeout_s + 1e-9
            ) & ~self._bal_lost
            slots = self._bal_slots
            for g in np.flatnonzero(expired):  # at most a few BalGroups, not cells
                self._bal_lost[g] = True
                self._bal_cmd[g * slots : (g + 1) * slots] = False
                self.driver_events.append(
                    DriverEvent(now_s, DriverEventKind.BALANCING_CMD_LOST, int(g))
                )
            self._update_bal_deadline()
            self._apply_balancing()

    # -- transmit side --------------------------------------------------------------------------
    def _fill(self, name: str, time_s: float) -> FillValues:
        return self._fillers[name](time_s)

    def _encode(self, name: str, values: FillValues) -> list[bytes]:
        """Multiplexed sensor messages: encode all groups, then OR in the per-group bit fields."""
        out = self._group_fields.get(name)
        if out is None or isinstance(values, Mapping):
            return super()._encode(name, values)
        payloads = self.codecs[name].encode_groups(values, out.zero_common)  # type: ignore[arg-type]
        words = np.frombuffer(b"".join(payloads), dtype="<u8").copy()
        for field_name, raw in out.raw.items():
            words |= raw << out.shift[field_name]
        buf = words.tobytes()
        return [buf[start : start + 8] for start in range(0, len(buf), 8)]

    def _sample_fast(self, time_s: float) -> None:
        """Read the 10 ms channels once per fast cycle."""
        k = math.floor((time_s - self._start_s) / self._fast_period_s + 1e-6)
        if k == self._fast_k:
            return
        self._fast_k = k
        current_a, pack_v, link_v = self.pack.measure_fast()
        s = self.pack.sensors
        lo, hi = self._current_range
        self._current_ok = not s["current"].open[0] and lo <= current_a <= hi
        vals = self._vals["PackCurrent"]
        vals[self._i_current] = current_a
        vals[self._i_current_ok] = float(self._current_ok)
        vals = self._vals["PackVoltages"]
        vals[self._i_pack_v] = pack_v
        vals[self._i_link_v] = link_v
        lo, hi = self._pack_v_range
        vals[self._i_pack_v_ok] = float(not s["pack_voltage"].open[0] and lo <= pack_v <= hi)
        lo, hi = self._link_v_range
        vals[self._i_link_v_ok] = float(not s["link_voltage"].open[0] and lo <= link_v <= hi)

    def _sample_slow(self, time_s: float) -> None:
        """Read the 100 ms channels once per slow cycle and derive every mask and flag."""
        k = math.floor((time_s - self._start_s) / self._slow_period_s + 1e-6)
        if k == self._slow_k:
            return
        self._slow_k = k
        pack = self.pack
        m = pack.measure()
        s = pack.sensors
        flags = self._fault_flags

        cells = self.cells
        cells.flat[: cells.count] = m.cell_voltage_v
        opened = s["cell_voltage"].open
        ow = self._open_wire
        np.copyto(ow, opened)
        ow[1:] |= opened[:-1] & self._same_chip_above
        any_open = cells.bits("OpenWireMask", ow, mark_padding=False)
        afe = self._group_afe
        afe[: cells.count] = self.afe_fault[self._cell_module]
        afe_groups = afe.reshape(cells.groups, cells.slots).any(axis=1)
        cells.raw["AfeFault"][:] = afe_groups
        flags["cells"] = any_open or bool(afe_groups.any())

        temps = self.temps
        t = m.cell_temp_c
        temps.flat[: temps.count] = t
        bad = self._temp_bad
        np.copyto(bad, s["cell_temperature"].open)
        bad |= t == self._temp_open_value
        bad |= (t < temps.lo) | (t > temps.hi)
        flags["temps"] = temps.bits("TempInvalidMask", bad)

        pres = self.pressures
        p = m.pressure_mpa
        pres.flat[: pres.count] = p
        bad = self._pressure_bad
        np.copyto(bad, s["pressure"].open)
        bad |= (p < pres.lo) | (p > pres.hi)
        flags["pressures"] = pres.bits("PressureInvalidMask", bad)

        h2s = m.h2s_ppm
        lo, hi = self._h2s_range
        gas_ok = not s["h2s"].open[0] and lo <= h2s <= hi
        flags["gas"] = not gas_ok
        vals = self._vals["PackGas"]
        vals[self._i_h2s] = h2s
        vals[self._i_h2s_ok] = float(gas_ok)

    def _fill_current(self, time_s: float) -> list[float]:
        self._sample_fast(time_s)
        return self._vals["PackCurrent"]

    def _fill_voltages(self, time_s: float) -> list[float]:
        self._sample_fast(time_s)
        return self._vals["PackVoltages"]

    def _fill_feedback(self, time_s: float) -> list[float]:
        vals = self._vals["ContactorFeedback"]
        for i, closed in zip(self._i_feedback, self.pack.contactors_closed, strict=True):
            vals[i] = float(closed)  # auxiliary contacts report the true position
        return vals

    def _fill_cells(self, time_s: float) -> np.ndarray:
        self._sample_slow(time_s)
        return self.cells.values

    def _fill_temps(self, time_s: float) -> np.ndarray:
        self._sample_slow(time_s)
        return self.temps.values

    def _fill_pressures(self, time_s: float) -> np.ndarray:
        self._sample_slow(time_s)
        return self.pressures.values

    def _fill_gas(self, time_s: float) -> list[float]:
        self._sample_slow(time_s)
        return self._vals["PackGas"]

    def _fill_status(self, time_s: float) -> list[float]:
        self._sample_slow(time_s)
        pack = self.pack
        flags = self._fault_flags
        vals = self._vals["PackStatus"]
        i = self._i_status
        vals[i["CellCount"]] = pack.n_series
        vals[i["ModuleCount"]] = pack.n_modules
        vals[i["TempSensorCount"]] = self.temps.count
        vals[i["CellMonitorFault"]] = float(flags["cells"])
        vals[i["TempSensorFault"]] = float(flags["temps"])
        vals[i["PressureSensorFault"]] = float(flags["pressures"])
        vals[i["CurrentSensorFault"]] = float(not self._current_ok)
        vals[i["GasSensorFault"]] = float(flags["gas"])
        vals[i["BalancingActive"]] = float(pack.balancing.any())
        vals[i["ContactorSupplyOk"]] = float(self.contactor_supply_ok)
        return vals
