"""Real-time pacing for bench runs: absolute deadlines, frames sent ahead of the work, budget.

Two threads. The main loop ticks at ``t0 + k * tick_s`` on a monotonic clock: the plant steps to
the next deadline, every node fills and encodes its cyclic slots of that tick
(:meth:`Node.prepare`), the loop waits for the deadline, then the nodes receive and run their
tasks. The :class:`~bms.bench.transmit.TxThread` sends each slot at its own deadline, so no frame
waits for the plant or the BMS tasks, whatever its phase, and wakes the loop once the frames due
at its deadline have left. A tick whose deadline
has passed by a whole period is skipped and counted, never run twice; a slot overtaken before it
was prepared is sent once, late, and counted missed, never as a burst. :class:`TimingReport`
joins the lateness of every frame with the loop's own tick lateness and overruns and checks a
:class:`JitterBudget`.

:class:`BenchSystem` is the real-time counterpart of :class:`bms.sim.system.System` with the same
driver API (``step``, ``run``, ``run_until``, ``request``, ``start``, ``requested_power_w``,
``charger_connected``, ``time_s``), so a scenario runner can drive either; with
``dut_external=True`` no BMS runs here and whatever answers on the bus is the device under test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import can
import numpy as np
import numpy.ma  # noqa: F401 - np.nanmedian imports it on first use: 15 ms inside the first tick

from bms.bench.buses import BusView, SharedBus
from bms.bench.transmit import TxThread
from bms.can.clock import WallClock
from bms.can.node import Node
from bms.config import Section
from bms.errors import InputError
from bms.firmware.bms import Bms
from bms.firmware.codes import BmsState
from bms.firmware.config import load_bms_config
from bms.firmware.node import BmsNode
from bms.pack import Pack, load_pack
from bms.pack.node import PackNode, PackNodeParams
from bms.sim.system import DriverControls, SystemConfig
from bms.vehicle import ChargerNode, VcuNode, load_vehicle

#: Default last stretch before a deadline that :class:`MonotonicClock` spins instead of sleeping
#: (s). Zero: frames leave from the transmit thread, and a loop spinning (holding the GIL) when
#: the thread wakes for the same deadline would only delay them.
DEFAULT_SPIN_S = 0.0


#: Phases of the pack node's cyclic messages on a bench (s): one message per millisecond, half a
#: millisecond off the BMS's (phase step 1 ms from 0), so the 24 frames of CellVoltages never
#: meet another slot. In simulated time every phase is 0 and frames go out on the 10 ms tick.
PACK_PHASE_STEP_S = 1e-3
PACK_PHASE_OFFSET_S = 0.5e-3


class MonotonicClock(WallClock):
    """:class:`WallClock` with a spin-wait: sleeps to ``spin_s`` before ``time_s``, then spins."""

    def __init__(self, spin_s: float = DEFAULT_SPIN_S) -> None:
        super().__init__()
        self.spin_s = spin_s

    def restart(self) -> None:
        """Make now time zero (call right before a loop starts, after slow set-up work)."""
        self._t0 = time.monotonic()

    def sleep_until(self, time_s: float) -> None:
        """Return at ``time_s`` or just after it (at once if it has passed)."""
        delay = time_s - self.now_s() - self.spin_s
        if delay > 0:
            time.sleep(delay)
        while self.now_s() < time_s:
            pass


@dataclass(frozen=True)
class JitterBudget:
    """Allowed lateness of cyclic frames (s) and loop overruns (None: not checked).

    The defaults are the bench target: p99 <= 0.5 ms, every frame within 5 ms (half a tick).
    """

    p99_s: float = 0.5e-3
    max_s: float = 5e-3
    max_overruns: int | None = None

    @classmethod
    def from_section(cls, section: Section) -> JitterBudget:
        """Read ``{p99_s, max_s, max_overruns}`` (all optional) from a YAML section."""
        default = cls()
        overruns = section.raw("max_overruns", None)
        budget = cls(
            p99_s=section.number("p99_s", default.p99_s, above=0.0),
            max_s=section.number("max_s", default.max_s, above=0.0),
            max_overruns=None if overruns is None else section.integer("max_overruns", min=0),
        )
        section.done()
        return budget


def _stats(values: Iterable[float]) -> tuple[int, float, float, float]:
    arr = np.fromiter(values, dtype=float)
    if arr.size == 0:
        return 0, 0.0, 0.0, 0.0
    p50, p99 = np.percentile(arr, [50, 99])
    return int(arr.size), float(p50), float(p99), float(arr.max())


@dataclass(frozen=True)
class TimingReport:
    """Lateness of every cyclic frame sent here and of every loop tick (s), with counts.

    ``overruns``: ticks whose work ran past the next deadline; ``skipped_ticks``: deadlines
    dropped because a whole period had passed; ``missed_slots``: cyclic frames not sent for the
    same reason (each message is sent once, late, instead of a burst).
    """

    frames: int
    frame_p50_s: float
    frame_p99_s: float
    frame_max_s: float
    missed_slots: int
    ticks: int
    tick_p50_s: float
    tick_p99_s: float
    tick_max_s: float
    overruns: int
    skipped_ticks: int

    def violations(self, budget: JitterBudget) -> list[str]:
        """One line per exceeded budget item (empty when the run is within budget)."""
        out = []
        if self.frame_p99_s > budget.p99_s:
            out.append(
                f"frame lateness p99 {self.frame_p99_s * 1e3:.3f} ms > {budget.p99_s * 1e3:g} ms"
            )
        if self.frame_max_s > budget.max_s:
            out.append(
                f"frame lateness max {self.frame_max_s * 1e3:.3f} ms > {budget.max_s * 1e3:g} ms"
            )
        if budget.max_overruns is not None and self.overruns > budget.max_overruns:
            out.append(f"{self.overruns} loop overruns > {budget.max_overruns}")
        return out

    def as_dict(self) -> dict[str, float | int]:
        """Plain numbers for JSON artefacts."""
        return asdict(self)

    def summary(self) -> str:
        """One human-readable line (milliseconds)."""
        return (
            f"{self.frames} cyclic frames lateness p50 {self.frame_p50_s * 1e3:.3f} ms, "
            f"p99 {self.frame_p99_s * 1e3:.3f} ms, max {self.frame_max_s * 1e3:.3f} ms, "
            f"{self.missed_slots} missed slots; {self.ticks} ticks, {self.overruns} overruns, "
            f"{self.skipped_ticks} skipped"
        )


class DeadlineLoop:
    """Absolute-deadline ticker: :meth:`wait` returns at ``t0 + k * tick_s`` for k = 1, 2, ...

    Late by a whole period or more: the passed deadlines are skipped (counted), not replayed.
    ``clock`` needs ``now_s()`` and ``sleep_until(t)``; tests inject a fake one.
    """

    def __init__(self, tick_s: float = 0.01, clock: Any = None, start_s: float | None = None):
        if not tick_s > 0:
            raise InputError(f"real-time tick must be > 0 s, got {tick_s}")
        self.clock = clock if clock is not None else MonotonicClock()
        self.tick_s = tick_s
        self._tick_ns = round(tick_s * 1e9)
        self._t0_ns = round((self.clock.now_s() if start_s is None else start_s) * 1e9)
        self.k = 0
        #: How the loop waits for a deadline: the clock's, or a transmit thread's pacing.
        self.sleep_until: Callable[[float], None] = self.clock.sleep_until
        self.tick_lateness_s: list[float] = []
        self.overruns = 0
        self.skipped = 0

    def restart(self, start_s: float | None = None) -> None:
        """Put deadline 0 at ``start_s`` (default: now) and forget the ticks so far."""
        self._t0_ns = round((self.clock.now_s() if start_s is None else start_s) * 1e9)
        self.k = 0

    @property
    def start_s(self) -> float:
        """Time of deadline 0 on the clock."""
        return self._t0_ns / 1e9

    def deadline_s(self, k: int) -> float:
        """Absolute time of deadline ``k``."""
        return (self._t0_ns + k * self._tick_ns) / 1e9

    def wait(self) -> float:
        """Sleep until the next deadline; returns the clock time on waking (>= the deadline)."""
        clock = self.clock
        k = self.k + 1
        now = clock.now_s()
        if now > self.deadline_s(k):
            self.overruns += 1  # the previous tick's work ran past this deadline
            latest = (round(now * 1e9) - self._t0_ns) // self._tick_ns
            if latest > k:
                self.skipped += latest - k
                k = latest
        deadline = self.deadline_s(k)
        self.sleep_until(deadline)
        now = clock.now_s()
        self.k = k
        self.tick_lateness_s.append(now - deadline)
        return now

    def run(
        self,
        tick: Callable[[float], Any],
        duration_s: float = math.inf,
        stop: Callable[[], bool] | None = None,
    ) -> float:
        """Call ``tick(now_s)`` at every deadline for ``duration_s`` or until ``stop()``.

        Returns the time of the last tick. Ctrl-C propagates: callers close in ``finally``.
        """
        end = self.start_s + duration_s
        now = self.start_s
        while now < end - 1e-9 and not (stop is not None and stop()):
            now = self.wait()
            tick(now)
        return now


def endpoints_of(node: Any) -> list[Node]:
    """The :class:`Node` endpoints inside ``node`` (itself, or a BMS node's two buses)."""
    if isinstance(node, Node):
        return [node]
    return [ep for ep in (getattr(node, "pack", None), getattr(node, "vehicle", None)) if ep]


def timing_report(nodes: Iterable[Any], loop: DeadlineLoop, tx: TxThread) -> TimingReport:
    """Lateness of every cyclic frame ``tx`` sent, slots missed by ``nodes``, tick statistics."""
    missed = sum(
        sum(endpoint.scheduler.missed.values()) for node in nodes for endpoint in endpoints_of(node)
    )
    n, p50, p99, mx = _stats(tx.lateness_s)
    nt, t50, t99, tmx = _stats(loop.tick_lateness_s)
    return TimingReport(n, p50, p99, mx, missed, nt, t50, t99, tmx, loop.overruns, loop.skipped)


class BenchSystem(DriverControls):
    """Pack, pack node, VCU, charger and (unless the DUT is external) the BMS node in real time.

    ``pack_bus``/``vehicle_bus``: :class:`SharedBus` objects on this system's clock (pass the
    same one twice for a single-interface bench). Each node gets its own view; ``observer`` is a
    view that sees every frame (for logs and expectations). :meth:`step` blocks until the next
    absolute deadline, then steps the plant by the real elapsed time and the nodes in the order
    of the simulated system. Time is seconds since the loop started (``time_s``).
    """

    def __init__(
        self,
        config: SystemConfig,
        pack_bus: SharedBus,
        vehicle_bus: SharedBus | None = None,
        *,
        dut_external: bool = False,
        loop: DeadlineLoop | None = None,
        pack_node_params: PackNodeParams | None = None,
    ) -> None:
        vehicle_bus = vehicle_bus or pack_bus
        self.config = cfg = config
        self.loop = loop or DeadlineLoop(cfg.dt_s, pack_bus.clock)
        self.clock = self.loop.clock
        if pack_bus.clock is not self.clock or vehicle_bus.clock is not self.clock:
            raise ValueError("the shared buses must stamp frames on the loop's clock")
        self.shared = [pack_bus] if vehicle_bus is pack_bus else [pack_bus, vehicle_bus]
        start = 0.0  # nodes count from zero; the clock is restarted when everything is built
        self.pack = Pack(load_pack(cfg.pack), seed=cfg.seed, initial=cfg.initial)
        self.pack_node = PackNode(
            pack_bus.view("pack"),
            self.pack,
            seed=cfg.seed,
            start_s=start,
            params=pack_node_params,
            phase_step_s=PACK_PHASE_STEP_S,
            phase_offset_s=PACK_PHASE_OFFSET_S,
        )
        self.bms: Bms | None = None
        self.bms_node: BmsNode | None = None
        if not dut_external:
            bms_config = load_bms_config(cfg.bms)
            self.bms = Bms(bms_config, stored_soc=cfg.stored_soc)
            self.bms_node = BmsNode(
                pack_bus.view("bms-pack"),
                vehicle_bus.view("bms-vehicle"),
                bms_config,
                bms=self.bms,
                start_s=start,
            )
        vehicle = load_vehicle(cfg.vehicle)
        self.vehicle = vehicle
        self.vcu = VcuNode(
            vehicle_bus.view("vcu"), params=vehicle.vcu, seed=cfg.seed, start_s=start
        )
        max_v = self.pack.n_series * self.pack.cell.voltage_max_v * 1.05
        self.charger = ChargerNode(
            vehicle_bus.view("charger"),
            rated_current_a=cfg.charger_rated_current_a,
            rated_voltage_v=max_v,
            params=vehicle.charger,
            seed=cfg.seed,
            start_s=start,
        )
        self.observer: BusView = pack_bus.view("observer")
        self.observer_vehicle: BusView | None = (
            None if vehicle_bus is pack_bus else vehicle_bus.view("observer")
        )
        self.nodes: list[Any] = [
            n for n in (self.pack_node, self.bms_node, self.vcu, self.charger) if n is not None
        ]
        # in the order of the simulated system: the pack's electronics, the BMS, the vehicle side
        self._by_name: dict[str, Any] = {
            "pack": self.pack_node,
            "bms": self.bms_node,
            "vcu": self.vcu,
            "charger": self.charger,
        }
        #: Sends every local node's frames at their deadlines and paces the loop (started by the
        #: first step).
        self.tx = TxThread(self.clock)
        self.tx.attach([ep for n in self.nodes for ep in endpoints_of(n)])
        self.loop.sleep_until = self.tx.sleep_until
        #: Local nodes stopped by :meth:`stop_node` (they send and read nothing).
        self.stopped: set[str] = set()
        self._apply_stops()
        self.requested_power_w = 0.0
        self.charger_connected = False
        self._zero_time()  # building took a while: start the deadlines and timeouts from now

    def _zero_time(self) -> None:
        restart = getattr(self.clock, "restart", None)
        if restart is not None:
            restart()
        self.loop.restart(0.0)
        self._last_s = 0.0
        self._plant_s = 0.0

    def restart(self) -> None:
        """Make now time zero again: call once, after slow set-up work, before the first step.

        Otherwise every deadline and cyclic slot from construction to the first step would be
        late by the set-up time and count against the jitter budget.
        """
        if self.loop.k or self.loop.tick_lateness_s:
            raise RuntimeError("BenchSystem.restart() only before the first step")
        self._zero_time()

    # ------------------------------------------------------------------ node faults
    def stop_node(self, name: str) -> None:
        """Silence a local node ("pack", "bms", "vcu", "charger"): it sends and reads nothing.

        Frames sent to it meanwhile are lost, as for a crashed ECU; the plant keeps running.
        """
        if self._by_name.get(name) is None:
            raise ValueError(f"no local {name!r} node to stop (external DUT?)")
        self.stopped.add(name)
        for endpoint in endpoints_of(self._by_name[name]):
            self.tx.mute(endpoint)  # frames already prepared die with it
        self._apply_stops()

    def resume_node(self, name: str) -> None:
        """Undo :meth:`stop_node`; the node starts with an empty receive queue."""
        if name in self.stopped:
            self.stopped.discard(name)
            for endpoint in endpoints_of(self._by_name[name]):
                endpoint.bus.drain()
                self.tx.unmute(endpoint)
            self._apply_stops()

    def _apply_stops(self) -> None:
        running = [
            n for name, n in self._by_name.items() if n is not None and name not in self.stopped
        ]
        self._steps = [n.step for n in running]
        self._preparers = [n.prepare for n in running]
        self._stopped_views = [
            ep.bus for name in sorted(self.stopped) for ep in endpoints_of(self._by_name[name])
        ]

    # ------------------------------------------------------------------ stepping
    @property
    def time_s(self) -> float:
        """Seconds since the loop's start (the time every node is stepped with)."""
        return self._last_s - self.loop.start_s

    def step(self) -> None:
        """The plant to the next deadline, the slots of that tick prepared, then the nodes.

        As in the simulated system, the plant first integrates to the next deadline ``t`` under
        the load and faults set since the last tick; every node then prepares its slots of
        ``[t, t + tick)`` (the pack's sensor frames carry the plant at ``t``, the BMS's frames
        what its last tasks wrote, as firmware transmits), the loop waits for ``t`` (the
        transmit thread sends the slots meanwhile), and the nodes receive and run their tasks
        at ``t``. Skipped deadlines are integrated before the nodes run.
        """
        loop, tx = self.loop, self.tx
        tx.check()
        if not loop.k:
            tx.start()
            self._prepare(loop.deadline_s(1))  # time zero's slots: the initial plant
        ahead = loop.deadline_s(loop.k + 1)
        self.pack.step(ahead - self._plant_s)
        self._plant_s = ahead
        self._prepare(loop.deadline_s(loop.k + 2))
        now = loop.wait()
        deadline = loop.deadline_s(loop.k)
        if deadline - self._plant_s > 1e-9:
            self.pack.step(deadline - self._plant_s)  # only after skipped deadlines
            self._plant_s = deadline
        self._last_s = now
        for shared in self.shared:
            shared.poll(0.0)
        for view in self._stopped_views:
            view.drain()  # a dead node reads nothing: what reaches it is lost
        for step in self._steps:
            step(now)
        link_v = self.pack.link_voltage_v
        if self.charger_connected:
            self.pack.set_load_current(self.charger.current_demand_a(link_v, now))
        else:
            self.pack.set_load_power(self.vcu.power_demand_w(self.requested_power_w, link_v, now))

    def _prepare(self, until_s: float) -> None:
        now = self.clock.now_s()
        for prepare in self._preparers:
            prepare(now, until_s)

    def bms_state(self) -> BmsState | None:
        """The BMS state as the vehicle sees it on the bus (works for an external DUT too)."""
        latest = self.vcu.latest.get("BmsState")
        if not latest:
            return None
        return BmsState(int(latest["BmsState"]))

    # ------------------------------------------------------------------ timing
    def timing_report(self) -> TimingReport:
        """Lateness of every cyclic frame sent by the local nodes, ticks and overruns."""
        return timing_report(self.nodes, self.loop, self.tx)

    def check_budget(self, budget: JitterBudget) -> list[str]:
        """Budget violations of the run so far (empty: within budget)."""
        return self.timing_report().violations(budget)

    # ------------------------------------------------------------------ teardown
    def close(self) -> None:
        """Stop the transmit thread, then shut every interface down (idempotent)."""
        self.tx.stop()
        for shared in self.shared:
            shared.shutdown()

    def __enter__(self) -> BenchSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


BusOpener = Callable[[Any], tuple[SharedBus, SharedBus | None]]


def bench_factory(
    open_buses: BusOpener, *, dut_external: bool = False, spin_s: float = DEFAULT_SPIN_S
) -> Callable[[SystemConfig], BenchSystem]:
    """A ``system_factory`` for :func:`bms.scenario.runner.run_scenario` that runs in real time.

    ``open_buses(clock)`` opens the interface(s) for one run and returns the pack
    :class:`SharedBus` and the vehicle one (None: the same interface carries both DBCs). Each
    run gets a fresh clock, loop on the scenario's tick and buses; closing the system shuts them.
    """

    def factory(config: SystemConfig) -> BenchSystem:
        clock = MonotonicClock(spin_s)
        pack_bus, vehicle_bus = open_buses(clock)
        try:
            return BenchSystem(
                config,
                pack_bus,
                vehicle_bus,
                dut_external=dut_external,
                loop=DeadlineLoop(config.dt_s, clock),
            )
        except BaseException:
            for shared in {id(b): b for b in (pack_bus, vehicle_bus) if b is not None}.values():
                shared.shutdown()
            raise

    return factory


def open_shared(bus: can.BusABC, clock: Any, channel: str | None = None) -> SharedBus:
    """Wrap an opened python-can bus for the local nodes of a bench process."""
    return SharedBus(bus, clock, channel=channel)
