"""``bms node pack|bms|vehicle``: one node on any python-can interface, in real time.

Bus flags are python-can's own (as in ``can_logger`` and ``cantools monitor``): ``-i/--interface
-c/--channel -b/--bitrate --fd --data-bitrate --timing --filter --bus-kwargs``; unset ones come
from python-can's configuration (``~/.canrc``, ``CAN_INTERFACE``...). One interface carries both
DBCs by default (pack and vehicle IDs do not overlap, as on most benches); the BMS node takes a
separate vehicle bus with the same flags prefixed ``--vehicle-`` (``--vehicle-interface``,
``--vehicle-channel``, ...). Events (driver reactions, E2E violations, state changes) are printed
one per line as ``t=SECONDS node: what``; the last line is the timing report as key=value pairs.
Ctrl-C and SIGTERM end the run cleanly: log closed, buses shut down. Exit 1 when the jitter
budget was exceeded.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import can.cli

from bms.bench.buses import BusView, SharedBus
from bms.bench.realtime import (
    DEFAULT_SPIN_S,
    PACK_PHASE_OFFSET_S,
    PACK_PHASE_STEP_S,
    DeadlineLoop,
    JitterBudget,
    MonotonicClock,
    endpoints_of,
    timing_report,
)
from bms.bench.transmit import TxThread
from bms.config import load_yaml
from bms.errors import InputError
from bms.firmware.bms import Bms
from bms.firmware.codes import RequestMode
from bms.firmware.config import load_bms_config
from bms.firmware.node import BmsNode
from bms.pack import InitialState, Pack, load_pack
from bms.pack.node import PackNode, PackNodeParams
from bms.vehicle import VcuNode, load_vehicle

VEHICLE_PREFIX = "vehicle"


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run one node (pack, bms or vehicle) on a python-can interface in real time",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("role", choices=("pack", "bms", "vehicle"), help="which node to run")
    can.cli.add_bus_arguments(parser, filter_arg=True)
    can.cli.add_bus_arguments(
        parser, prefix=VEHICLE_PREFIX, group_title="separate vehicle bus (bms node; optional)"
    )
    run = parser.add_argument_group("run")
    run.add_argument("--duration", type=float, default=math.inf, help="seconds (default: until")
    run.add_argument("--tick-ms", type=float, default=10.0, help="base tick in ms (default 10)")
    run.add_argument("--log", type=Path, help="log every frame (.blf, .asc, .log, ...)")
    run.add_argument("--jitter-p99-ms", type=float, default=0.5, help="budget (default 0.5)")
    run.add_argument("--jitter-max-ms", type=float, default=5.0, help="budget (default 5)")
    run.add_argument("--quiet", action="store_true", help="do not print events")
    run.add_argument("--seed", type=int, default=0, help="noise and spread seed (default 0)")
    pack = parser.add_argument_group("pack node")
    pack.add_argument("--pack", default="pack_a_96s", help="shipped pack name or pack YAML")
    pack.add_argument("--soc", type=float, default=0.5, help="initial SOC 0..1 (default 0.5)")
    pack.add_argument("--temp", type=float, default=25.0, help="initial temperature degC")
    pack.add_argument(
        "--node-params",
        type=Path,
        help="YAML with contactor_cmd_timeout_s / balancing_cmd_timeout_s",
    )
    pack.add_argument(
        "--load-current", type=float, default=0.0, help="load in A while closed (+ = discharge)"
    )
    bms = parser.add_argument_group("bms node")
    bms.add_argument("--config", default="bms_pack_a_96s", help="BMS configuration name or YAML")
    bms.add_argument("--stored-soc", type=float, help="SOC in the BMS's NVM (default: from OCV)")
    veh = parser.add_argument_group("vehicle node")
    veh.add_argument("--vehicle", default="compact_ev", help="vehicle name or YAML")
    veh.add_argument(
        "--request", choices=("standby", "drive", "charge"), default="standby", help="mode"
    )
    parser.set_defaults(func=_do_node)


def open_bus_from_args(args: argparse.Namespace, prefix: str | None = None) -> can.BusABC:
    """Open the bus the flags (with ``prefix``) describe; failures as one-line InputError."""
    try:
        return can.cli.create_bus_from_namespace(args, prefix=prefix)
    except (argparse.ArgumentError, can.CanError, ValueError, OSError, ImportError) as exc:
        cause = exc.__cause__ or exc
        text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        where = f"{prefix} bus" if prefix else "bus"
        raise InputError(f"{where}: cannot open: {text}") from None


def _has_vehicle_bus(args: argparse.Namespace) -> bool:
    return any(
        getattr(args, f"{VEHICLE_PREFIX}_{key}", None) is not None
        for key in ("channel", "interface")
    )


def _check(args: argparse.Namespace) -> None:
    if not 0.0 <= args.soc <= 1.0:
        raise InputError(f"--soc: expected a fraction 0..1, got {args.soc}")
    if not 1.0 <= args.tick_ms <= 100.0:
        raise InputError(f"--tick-ms: expected 1..100, got {args.tick_ms}")
    if not args.duration > 0:
        raise InputError(f"--duration: expected > 0 s, got {args.duration}")
    if args.stored_soc is not None and not 0.0 <= args.stored_soc <= 1.0:
        raise InputError(f"--stored-soc: expected a fraction 0..1, got {args.stored_soc}")


class _Printer:
    """Prints new driver events, E2E violations and BMS state changes once each."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._seen: dict[int, int] = {}

    def new(self, key: Any, items: list[Any]) -> list[Any]:
        start = self._seen.get(id(key), 0)
        self._seen[id(key)] = len(items)
        return items[start:]

    def say(self, time_s: float, who: str, what: str) -> None:
        if not self.quiet:
            print(f"t={time_s:.3f} {who}: {what}", flush=True)


def _build_pack(
    args: argparse.Namespace, shared: SharedBus, printer: _Printer
) -> tuple[list[Any], Callable[[float, float], None]]:
    pack = Pack(load_pack(args.pack), seed=args.seed, initial=InitialState(args.soc, args.temp))
    params = None
    if args.node_params is not None:
        params = PackNodeParams.from_section(load_yaml(args.node_params))
    node = PackNode(
        shared.view("pack"),
        pack,
        seed=args.seed,
        params=params,
        start_s=0.0,
        phase_step_s=PACK_PHASE_STEP_S,
        phase_offset_s=PACK_PHASE_OFFSET_S,
    )

    def tick(now_s: float, dt_s: float) -> None:
        # dt_s: from the plant's time to the next deadline (the frames prepared next sample it)
        node.step(now_s)
        pack.set_load_current(args.load_current if any(pack.contactors_closed[:2]) else 0.0)
        pack.step(dt_s)
        for event in printer.new(node.driver_events, node.driver_events):
            printer.say(event.time_s, "pack", event.kind.value)
        for event in printer.new(node.events, node.events):
            printer.say(event.time_s, "pack", f"{event.message} {event.kind.value}")

    return [node], tick


def _build_bms(
    args: argparse.Namespace, pack_bus: SharedBus, vehicle_bus: SharedBus, printer: _Printer
) -> tuple[list[Any], Callable[[float, float], None]]:
    config = load_bms_config(args.config)
    bms = Bms(config, stored_soc=args.stored_soc)
    node = BmsNode(pack_bus.view("bms-pack"), vehicle_bus.view("bms-vehicle"), config, bms=bms)
    last_state: list[Any] = [None]

    def tick(now_s: float, dt_s: float) -> None:
        out = node.step(now_s)
        if out.state != last_state[0]:
            last_state[0] = out.state
            printer.say(now_s, "bms", f"state {out.state.name}")
        for ep in (node.pack, node.vehicle):
            for event in printer.new(ep.events, ep.events):
                printer.say(event.time_s, "bms", f"{event.message} {event.kind.value}")

    return [node], tick


def _build_vehicle(
    args: argparse.Namespace, shared: SharedBus, printer: _Printer
) -> tuple[list[Any], Callable[[float, float], None]]:
    vehicle = load_vehicle(args.vehicle)
    vcu = VcuNode(shared.view("vcu"), params=vehicle.vcu, seed=args.seed)
    vcu.request(RequestMode[args.request.upper()])
    last_state: list[Any] = [None]

    def tick(now_s: float, dt_s: float) -> None:
        vcu.step(now_s)
        state = vcu.latest.get("BmsState", {}).get("BmsState")
        if state != last_state[0]:
            last_state[0] = state
            printer.say(now_s, "vehicle", f"BmsState {state}")
        for event in printer.new(vcu.events, vcu.events):
            printer.say(event.time_s, "vehicle", f"{event.message} {event.kind.value}")

    return [vcu], tick


def run_node(args: argparse.Namespace) -> int:
    """Open the buses, build the node, pace it in real time; returns the exit status."""
    _check(args)
    clock = MonotonicClock(DEFAULT_SPIN_S)
    printer = _Printer(args.quiet)
    shared: list[SharedBus] = []
    logger: can.Listener | None = None
    loop = DeadlineLoop(args.tick_ms / 1e3, clock, start_s=0.0)
    tx = TxThread(clock)  # sends the cyclic frames at their deadlines, paces the loop
    loop.sleep_until = tx.sleep_until
    nodes: list[Any] = []
    try:
        main_bus = SharedBus(open_bus_from_args(args), clock)
        shared.append(main_bus)
        vehicle_bus = main_bus
        if args.role == "bms" and _has_vehicle_bus(args):
            vehicle_bus = SharedBus(open_bus_from_args(args, VEHICLE_PREFIX), clock)
            shared.append(vehicle_bus)
        observers: list[BusView] = []
        if args.log is not None:
            logger = can.Logger(args.log)
            observers = [s.view("log") for s in shared]
        if args.role == "pack":
            nodes, tick = _build_pack(args, main_bus, printer)
        elif args.role == "bms":
            nodes, tick = _build_bms(args, main_bus, vehicle_bus, printer)
        else:
            nodes, tick = _build_vehicle(args, main_bus, printer)
        tx.attach([ep for n in nodes for ep in endpoints_of(n)])
        clock.restart()  # opening buses and loading files took a while: time zero is now
        loop.restart(0.0)
        tx.start()
        for n in nodes:
            n.prepare(0.0, loop.deadline_s(2))  # every tick keeps two ticks of slots ready
        print(f"bms node {args.role}: ready on {main_bus.channel_info}", flush=True)
        plant_s = [0.0]

        def one_tick(now_s: float) -> None:
            tx.check()
            for s in shared:
                s.poll(0.0)
            ahead = loop.deadline_s(loop.k + 1)
            tick(now_s, ahead - plant_s[0])
            plant_s[0] = ahead
            until = loop.deadline_s(loop.k + 2)
            for n in nodes:
                n.prepare(clock.now_s(), until)
            if logger is not None:
                for view in observers:
                    while (msg := view.recv(0.0)) is not None:
                        logger(msg)

        try:
            loop.run(one_tick, args.duration)
        except KeyboardInterrupt:
            printer.say(clock.now_s(), args.role, "interrupted")
    finally:
        tx.stop()
        if logger is not None:
            logger.stop()
        for s in shared:
            s.shutdown()
    report = timing_report(nodes, loop, tx)
    budget = JitterBudget(args.jitter_p99_ms / 1e3, args.jitter_max_ms / 1e3)
    violations = report.violations(budget)
    for line in violations:
        print(f"bms node {args.role}: jitter budget exceeded: {line}", file=sys.stderr)
    pairs = " ".join(f"{k}={v:.6g}" for k, v in report.as_dict().items())
    print(f"role={args.role} {pairs} budget_ok={int(not violations)}", flush=True)
    return 1 if violations else 0


def _do_node(args: argparse.Namespace) -> int:
    return run_node(args)
