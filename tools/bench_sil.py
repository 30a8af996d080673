"""Benchmark the closed loop: real-time factor of a UDDS/HWFET drive on the 96s pack.

Not a test. Builds the whole system (virtual pack, pack node, BMS node, VCU, charger; every frame
through python-can's virtual bus on two channels), closes the contactors into DRIVE, then drives
repeated UDDS+HWFET for ``--minutes`` of simulated time (60 by default) as fast as possible. The
driver's battery power comes from the road-load model at the system time of every tick. Prints
where the time goes (cProfile, with ``--profile``) and, as the last line, ``key=value`` pairs:

    python tools/bench_sil.py [--minutes 60] [--profile] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import pstats
import time

import numpy as np

from bms.pack import InitialState
from bms.sim.system import System, SystemConfig
from bms.vehicle import battery_power_w, concatenate, load_cycle

#: Initial SOC of the drive: high enough that one hour of mixed driving stays clear of the limits.
INITIAL_SOC = 0.9


def drive_power_w(system: System, duration_s: float) -> np.ndarray:
    """Battery power (W, + = discharge) at every tick of the drive, from repeated UDDS+HWFET.

    Evaluated once on the tick grid (the cycle time is the system time minus the drive start), so
    the per-tick cost is one array lookup and the benchmark measures the loop, not numpy.
    """
    pair = [load_cycle("udds"), load_cycle("hwfet")]
    pair_s = pair[0].duration_s + pair[1].duration_s
    cycle = concatenate(pair * max(1, math.ceil(duration_s / pair_s)))
    dt_s = system.config.dt_s
    # Power for the tick ending at t uses the cycle at t (the time the VCU applies it from).
    ticks_s = cycle.start_s + dt_s * np.arange(1, int(round(duration_s / dt_s)) + 1)
    return battery_power_w(cycle.speed_at(ticks_s), cycle.accel_at(ticks_s), system.vehicle)


def endpoints(system: System) -> list:
    """Every bus endpoint of the system (the BMS node has one per bus)."""
    bms = system.bms_node
    return [system.pack_node, bms.pack, bms.vehicle, system.vcu, system.charger]


def frames_sent(system: System) -> int:
    """Frames every endpoint has put on the buses so far."""
    return sum(node.frames_sent for node in endpoints(system))


def drive(system: System, power_w: np.ndarray) -> None:
    """Step once per entry of ``power_w``, setting the driver's power request before each tick."""
    for p_w in power_w.tolist():
        system.requested_power_w = p_w
        system.step()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="simulated drive (min)")
    parser.add_argument("--profile", action="store_true", help="cProfile the drive (slower)")
    parser.add_argument("--top", type=int, default=25, help="rows of the profile summary")
    parser.add_argument("--soc", type=float, default=INITIAL_SOC, help="initial SOC (0..1)")
    args = parser.parse_args(argv)
    if not args.minutes > 0 or not 0.0 < args.soc <= 1.0:
        parser.error("--minutes must be > 0 and --soc in (0, 1]")

    with System(SystemConfig(initial=InitialState(soc=args.soc))) as system:
        start_s = system.start("drive")
        duration_s = args.minutes * 60.0
        power_w = drive_power_w(system, duration_s)
        frames0 = frames_sent(system)
        profiler = cProfile.Profile() if args.profile else None
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.runcall(drive, system, power_w)
        else:
            drive(system, power_w)
        wall_s = time.perf_counter() - wall0
        cpu_s = time.process_time() - cpu0  # robust against other load on a shared machine
        sim_s = system.time_s - start_s
        frames = frames_sent(system) - frames0
        state = system.bms.out.state.name
        soc = float(np.mean(system.pack.soc))
        violations = sum(len(node.events) for node in endpoints(system))

    if profiler is not None:
        for key in ("cumulative", "tottime"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(args.top)
            print(f"--- profile by {key} ---")
            print("\n".join(line for line in out.getvalue().splitlines() if line.strip()))
    print(
        f"rtf={sim_s / wall_s:.1f} rtf_cpu={sim_s / cpu_s:.1f} sim_s={sim_s:.1f} "
        f"wall_s={wall_s:.2f} cpu_s={cpu_s:.2f} frames={frames} "
        f"frames_per_s={frames / wall_s:.0f} state={state} soc_end={soc:.4f} "
        f"e2e_events={violations} profiled={int(profiler is not None)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
