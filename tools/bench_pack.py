"""Benchmark the virtual pack's plant step (not a test): time per step at dt = 10 ms.

Runs a 1C discharge with contactors closed on 96, 192 and 1,152 cells and prints one line per
size, then a last line of ``key=value`` pairs (microseconds per step) for scripts to parse.
Usage: ``python tools/bench_pack.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from bms.pack import InitialState, Pack, load_pack
from bms.pack.params import Topology

SIZES = (
    ("96", "pack_a_96s", None),
    ("192", "pack_b_192s", None),
    ("1152", "pack_b_192s", Topology(series=192, parallel=6, modules=16)),
)


def time_step_us(pack: Pack, steps: int, dt_s: float = 0.01) -> float:
    """Best of three runs of ``steps`` plant steps, in microseconds per step."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            pack.step(dt_s)
        best = min(best, (time.perf_counter() - start) / steps)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20000, help="steps per timing run")
    args = parser.parse_args()
    results = {}
    for label, name, topology in SIZES:
        params = load_pack(name)
        if topology is not None:
            params = dataclasses.replace(params, topology=topology)
        pack = Pack(params, seed=1, initial=InitialState(soc=0.9))
        pack.command_contactors(True, True, False)
        pack.hv.link_voltage_v = pack.open_circuit_voltage_v
        pack.set_load_current(90.0 * params.topology.parallel)
        pack.step(0.01)
        us = time_step_us(pack, args.steps)
        results[label] = us
        print(
            f"{label:>5} cells ({params.topology.series}s{params.topology.parallel}p): "
            f"{us:7.1f} us per step at dt = 10 ms ({0.01 / (us * 1e-6):,.0f}x real time)"
        )
    print(" ".join(f"step_us_{k}={v:.1f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
