"""``bms simulate``: run the virtual pack alone under a constant load and print a summary.

A quick look at a pack file (shipped name or path) without a BMS: what a constant current or
power does to SOC, voltages, their spread, temperatures and stack pressures.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bms.data import shipped
from bms.errors import InputError
from bms.pack import InitialState, Pack, load_pack


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="run the virtual pack alone under a constant load and print a summary",
        description=__doc__,
    )
    parser.add_argument(
        "--pack",
        default="pack_a_96s",
        help=f"shipped pack ({', '.join(shipped('packs'))}) or a pack YAML file",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the cell-to-cell spread")
    parser.add_argument("--soc", type=float, default=0.9, help="initial SOC, 0..1 (default 0.9)")
    parser.add_argument(
        "--temp", type=float, default=25.0, help="initial and coolant temperature, degC"
    )
    load = parser.add_mutually_exclusive_group()
    load.add_argument("--current", type=float, help="load current in A (+ = discharge)")
    load.add_argument("--power", type=float, help="load power in kW (+ = discharge)")
    parser.add_argument(
        "--duration", type=float, default=1800.0, help="simulated seconds (default 1800)"
    )
    parser.add_argument(
        "--dt", type=float, default=0.01, help="plant step in s, 0.001..0.1 (default 0.01)"
    )
    parser.set_defaults(func=_do_simulate)


def _check(args: argparse.Namespace) -> None:
    if not 0.0 <= args.soc <= 1.0:
        raise InputError(f"--soc: expected a fraction 0..1, got {args.soc}")
    if not 0.001 <= args.dt <= 0.1:
        raise InputError(f"--dt: expected 0.001..0.1 s, got {args.dt}")
    if not 0.0 < args.duration <= 7 * 86400:
        raise InputError(f"--duration: expected 0 < s <= 604800, got {args.duration}")
    if not -60.0 <= args.temp <= 80.0:
        raise InputError(f"--temp: expected -60..80 degC, got {args.temp}")


def _do_simulate(args: argparse.Namespace) -> int:
    _check(args)
    params = load_pack(args.pack)
    pack = Pack(params, seed=args.seed, initial=InitialState(soc=args.soc, temp_c=args.temp))
    pack.command_contactors(True, True, False)
    pack.hv.link_voltage_v = pack.open_circuit_voltage_v  # a precharged link
    if args.power is not None:
        pack.set_load_power(args.power * 1e3)
        load = f"{args.power:g} kW"
    else:
        current = 90.0 * params.topology.parallel if args.current is None else args.current
        pack.set_load_current(current)
        load = f"{current:g} A"

    top = params.topology
    print(
        f"{params.name}: {top.series}s{top.parallel}p, {top.modules} modules, cell "
        f"{params.cell.name} ({params.cell.capacity_ah:g} Ah), seed {args.seed}"
    )
    print(f"load {load} for {args.duration:g} s at dt = {args.dt:g} s")
    _print_state(pack, "start")
    soc0 = pack.soc.mean()
    energy_j = charge_as = 0.0
    steps = int(round(args.duration / args.dt))
    wall = time.perf_counter()
    for _ in range(steps):
        pack.step(args.dt)
        energy_j += pack.pack_voltage_v * pack.current_a * args.dt
        charge_as += pack.current_a * args.dt
        if pack.pack_voltage_v < top.series * params.cell.voltage_min_v and pack.current_a > 0:
            print(
                f"stopped at {pack.time_s:.1f} s: pack below {params.cell.voltage_min_v:g} V/cell"
            )
            break
        if pack.cell_voltage_v.max() > params.cell.voltage_max_v + 0.05 and pack.current_a < 0:
            limit_v = params.cell.voltage_max_v + 0.05
            print(f"stopped at {pack.time_s:.1f} s: a cell above {limit_v:g} V")
            break
    wall = time.perf_counter() - wall
    _print_state(pack, "end")
    print(
        f"delivered {energy_j / 3.6e6:.3f} kWh, {charge_as / 3600:.2f} Ah; "
        f"mean SOC {soc0 * 100:.1f} % -> {pack.soc.mean() * 100:.1f} %"
    )
    print(f"simulated {pack.time_s:.0f} s in {wall:.2f} s ({pack.time_s / wall:,.0f}x real time)")
    return 0


def _print_state(pack: Pack, label: str) -> None:
    v = pack.cell_voltage_v
    print(
        f"  {label:>5}: pack {pack.pack_voltage_v:7.2f} V {pack.current_a:8.2f} A | "
        f"cells {v.min():.3f}..{v.max():.3f} V (spread {np.ptp(v) * 1e3:5.1f} mV) | "
        f"SOC {pack.soc.min() * 100:5.1f}..{pack.soc.max() * 100:5.1f} % | "
        f"T {pack.temp_c.min():5.1f}..{pack.temp_c.max():5.1f} degC | "
        f"P {pack.pressure_mpa.min():.3f}..{pack.pressure_mpa.max():.3f} MPa"
    )
