"""Benchmark the CAN layer: encode -> python-can virtual bus -> decode for a pack's full traffic.

Not a test. Runs the PACK and BMS nodes of ``pack.dbc`` (96s pack A by default: 24 cell-voltage
groups, 8 temperature groups, 2 pressure groups, 2 balancing groups, plus every 10/100 ms
message) on the simulated clock as fast as possible, and prints frames per second, per-frame
codec costs against cantools, and the bus load at the DBC bitrate. The last line is key=value.

    python tools/bench_can.py [--cells 96] [--seconds 20] [--step-ms 1]
"""

from __future__ import annotations

import argparse
import itertools
import time
import timeit

import numpy as np

from bms.can import (
    BusLoadMeter,
    DbcCodecs,
    E2ESender,
    Node,
    SimClock,
    load_dbc,
    open_virtual_bus,
)

CELLS_PER_MODULE = 12
TEMPS_PER_MODULE = 4


def _rows(codec, count: int) -> int:
    """Groups needed for ``count`` multiplexed values (4 cells, 4 sensors, ... per frame)."""
    return -(-count // codec.mux.slots)


class BenchPack(Node):
    """PACK side: all PACK messages with plausible values for ``cells`` cells."""

    def __init__(self, bus, codecs: DbcCodecs, cells: int, **kw) -> None:
        super().__init__(
            bus, codecs, tx=[m.name for m in codecs.db.messages if "PACK" in m.senders], **kw
        )
        rng = np.random.default_rng(1)
        modules = cells // CELLS_PER_MODULE
        self.sizes = {
            "CellVoltages": cells,
            "CellTemperatures": modules * TEMPS_PER_MODULE,
            "ModulePressures": modules,
        }
        self.values = {
            name: rng.uniform(3.6, 4.1, n)
            if name == "CellVoltages"
            else rng.uniform(20, 30, n)
            if name == "CellTemperatures"
            else rng.uniform(1.9, 2.1, n)
            for name, n in self.sizes.items()
        }
        self.received = 0

    def _fill(self, name: str, time_s: float):
        codec = self.codecs[name]
        if codec.mux is None:
            return {}
        n = self.sizes.get(name, len(codec.mux.group_ids) * codec.mux.slots)
        rows = _rows(codec, n)
        values = np.zeros(rows * codec.mux.slots)
        values[:n] = self.values.get(name, 0.0)
        return values.reshape(rows, codec.mux.slots)

    def _on_frame(self, name, values, time_s) -> None:
        self.received += 1


class BenchBms(Node):
    """BMS side: receives all PACK messages, sends contactor and balancing commands."""

    def __init__(self, bus, codecs: DbcCodecs, cells: int, **kw) -> None:
        super().__init__(
            bus,
            codecs,
            tx=[m.name for m in codecs.db.messages if "BMS" in m.senders],
            rx=[m.name for m in codecs.db.messages if "PACK" in m.senders],
            **kw,
        )
        self.cells = cells
        self.received = 0

    def _fill(self, name: str, time_s: float):
        codec = self.codecs[name]
        if codec.mux is None:
            return {}
        return np.zeros((_rows(codec, self.cells), codec.mux.slots))

    def _on_frame(self, name, values, time_s) -> None:
        self.received += 1


def _per_call_us(fn, number: int) -> float:
    return timeit.timeit(fn, number=number) / number * 1e6


def micro(codecs: DbcCodecs, cells: int) -> dict[str, float]:
    """Per-frame costs (us) of our codec against cantools on representative messages."""
    db = codecs.db
    out = {}
    current = codecs["PackCurrent"]
    values = {"PackCurrent_A": 123.45, "CurrentValid": 1, "AliveCounter": 3, "CRC8": 0}
    vector = np.asarray(current.values_from(values))
    data = current.encode(values)
    message = db.get_message_by_name("PackCurrent")
    out["enc_us"] = _per_call_us(lambda: current.encode(vector), 50_000)
    out["enc_dict_us"] = _per_call_us(lambda: current.encode(values), 50_000)
    out["cantools_enc_us"] = _per_call_us(lambda: message.encode(values, strict=False), 20_000)
    out["dec_us"] = _per_call_us(lambda: current.decode(data), 50_000)
    out["cantools_dec_us"] = _per_call_us(lambda: message.decode(data), 20_000)
    sender = E2ESender(current)
    out["e2e_tx_us"] = _per_call_us(lambda: sender.transmit(data, 0.0), 50_000)
    cv = codecs["CellVoltages"]
    voltage_v = np.random.default_rng(2).uniform(3.6, 4.1, cells).reshape(-1, cv.mux.slots)
    groups = voltage_v.shape[0]
    out["mux_enc_us_per_frame"] = _per_call_us(lambda: cv.encode_groups(voltage_v), 2000) / groups
    payloads = cv.encode_groups(voltage_v)
    out["mux_dec_us_per_frame"] = _per_call_us(lambda: cv.decode(payloads[5]), 50_000)
    out["mux_dec_batch_us_per_frame"] = (
        _per_call_us(lambda: cv.decode_groups(payloads), 2000) / groups
    )
    mux_msg = db.get_message_by_name("CellVoltages")
    one = {s.name: 0 for s in (cv.mux.selector, *cv.mux.common)}
    one.update({"CellGroup": 1, **{f"Cell{k:03d}_V": 3.7 for k in range(5, 9)}})
    out["cantools_mux_enc_us"] = _per_call_us(lambda: mux_msg.encode(one, strict=False), 20_000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=96, help="series cells (96 or 192)")
    parser.add_argument("--seconds", type=float, default=20.0, help="simulated seconds")
    parser.add_argument("--step-ms", type=float, default=1.0, help="simulation step in ms")
    args = parser.parse_args()

    codecs_pack, codecs_bms = DbcCodecs(load_dbc("pack")), DbcCodecs(load_dbc("pack"))
    meter = BusLoadMeter(codecs_pack.bitrate_bps)
    channel = f"bench_can_{next(itertools.count())}"
    clock = SimClock()
    step_s = args.step_ms / 1000.0
    with (
        BenchPack(
            open_virtual_bus(channel), codecs_pack, args.cells, busload=meter, phase_step_s=0.001
        ) as pack,
        BenchBms(
            open_virtual_bus(channel), codecs_bms, args.cells, busload=meter, phase_step_s=0.001
        ) as bms,
    ):
        t0 = time.perf_counter()
        while clock.now_s() < args.seconds - 1e-9:
            now_s = clock.now_s()
            pack.step(now_s)
            bms.step(now_s)
            clock.advance(step_s)
        pack.step(clock.now_s())
        bms.step(clock.now_s())
        wall_s = time.perf_counter() - t0
        frames = pack.frames_sent + bms.frames_sent
        delivered = pack.received + bms.received
        violations = len(pack.events) + len(bms.events)
    load = meter.report(args.seconds)
    fps = frames / wall_s
    sim_fps = frames / args.seconds
    costs = micro(codecs_pack, args.cells)

    print(f"pack {args.cells}s, {args.seconds:g} s simulated at {args.step_ms:g} ms steps")
    print(f"  frames {frames} sent, {delivered} decoded, {violations} E2E violations")
    print(f"  traffic {sim_fps:.0f} frames per simulated second")
    print(
        f"  wall {wall_s:.3f} s -> {fps:.0f} frames/s end to end "
        f"({1e6 / fps:.1f} us/frame incl. scheduler, E2E, virtual bus, bus-load accounting); "
        f"{args.seconds / wall_s:.0f}x real time"
    )
    print(
        f"  bus load {load.bits_per_s:.0f} bit/s = {load.load_pct:.1f} % of "
        f"{load.bitrate_bps} bit/s ({load.stuff_bits / max(load.frames, 1):.1f} stuff bits/frame)"
    )
    for key, value in costs.items():
        print(f"  {key:28s} {value:7.2f} us")
    pairs = {
        "cells": args.cells,
        "sim_s": f"{args.seconds:g}",
        "frames": frames,
        "fps": f"{fps:.0f}",
        "us_per_frame": f"{1e6 / fps:.2f}",
        "realtime_x": f"{args.seconds / wall_s:.0f}",
        "sim_fps": f"{sim_fps:.0f}",
        "bus_bps": f"{load.bits_per_s:.0f}",
        "bus_load_pct": f"{load.load_pct:.2f}",
        "bitrate": load.bitrate_bps,
        **{k: f"{v:.2f}" for k, v in costs.items()},
    }
    print(" ".join(f"{k}={v}" for k, v in pairs.items()))


if __name__ == "__main__":
    main()
