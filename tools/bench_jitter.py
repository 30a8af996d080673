"""Real-time jitter at a 10 ms tick: our absolute-deadline loop against python-can send_periodic.

Not a test. Runs the 96s pack's full traffic (pack node with the plant, BMS node, VCU, charger:
every cyclic frame of both DBCs) on one in-process virtual bus for ``--seconds`` with
:class:`bms.bench.realtime.BenchSystem`, then the same frames (last payload of every message and
multiplexer group, at its DBC cycle time) with one python-can ``send_periodic`` task each.
Lateness is measured the same way for both, from the send-time stamps a listener receives:
``stamp - (first stamp of the stream + k * period)``. Ours also reports what its transmit thread
recorded against the absolute deadlines (the stricter figure, the one the target is about): for
every cyclic frame, when it was handed to the bus minus its slot's deadline. Last line: key=value
pairs (milliseconds).

    python tools/bench_jitter.py --seconds 20
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import can
import numpy as np

from bms.bench.buses import SharedBus
from bms.bench.realtime import BenchSystem, DeadlineLoop, MonotonicClock
from bms.can import DbcCodecs, load_dbc
from bms.firmware.codes import RequestMode
from bms.pack import InitialState
from bms.sim.system import SystemConfig


def _codecs() -> dict[int, object]:
    out = {}
    for dbc in ("pack", "vehicle"):
        codecs = DbcCodecs(load_dbc(dbc))
        for name in codecs:
            out[codecs[name].frame_id] = codecs[name]
    return out


def _stream(msg: can.Message, codecs: dict[int, object]) -> tuple[int, int] | None:
    """(ID, mux group) of a cyclic frame, None for event frames."""
    codec = codecs.get(msg.arbitration_id)
    if codec is None or not codec.cycle_time_s:  # type: ignore[attr-defined]
        return None
    mux = codec.mux  # type: ignore[attr-defined]
    group = int(codec.decode(bytes(msg.data))[mux.selector.index]) if mux is not None else -1
    return msg.arbitration_id, group


def _lateness(frames: list[tuple[tuple[int, int], float]], codecs: dict) -> np.ndarray:
    """Lateness of every frame of every stream against its first frame's grid (s, >= 0)."""
    by_stream: dict[tuple[int, int], list[float]] = defaultdict(list)
    for key, stamp in frames:
        by_stream[key].append(stamp)
    out = []
    for (frame_id, _), stamps in by_stream.items():
        period = codecs[frame_id].cycle_time_s
        arr = np.asarray(stamps)
        k = np.round((arr - arr[0]) / period)
        k = k[np.concatenate(([True], np.diff(k) > 0))]  # a burst repeats a slot: count once
        arr = arr[: len(k)] if len(k) < len(arr) else arr
        out.append(np.maximum(arr - (arr[0] + k * period), 0.0))
    return np.concatenate(out) if out else np.zeros(0)


def _drain(spy: can.BusABC, codecs: dict) -> list[tuple[tuple[int, int], float]]:
    frames = []
    while (msg := spy.recv(0.0)) is not None:
        key = _stream(msg, codecs)
        if key is not None:
            frames.append((key, msg.timestamp))
    return frames


def run_ours(seconds: float, codecs: dict) -> tuple[dict, dict[tuple, can.Message]]:
    clock = MonotonicClock()
    spy = can.Bus(interface="virtual", channel="jitter-ours", ignore_config=True)
    bus = can.Bus(interface="virtual", channel="jitter-ours", ignore_config=True)
    last: dict[tuple, can.Message] = {}
    frames = []
    with BenchSystem(
        SystemConfig(initial=InitialState(soc=0.6)),
        SharedBus(bus, clock),
        loop=DeadlineLoop(0.01, clock),
    ) as system:
        system.request(RequestMode.DRIVE)
        system.requested_power_w = 20e3
        work = []
        end = system.time_s + seconds
        while system.time_s < end:
            system.step()
            work.append(clock.now_s() - system.loop.deadline_s(system.loop.k))
            for key, stamp in _drain_keep(spy, codecs, last):
                frames.append((key, stamp))
        report = system.timing_report()
    spy.shutdown()
    wire = _lateness(frames, codecs)
    return {
        "report": report,
        "wire": wire,
        "work_p99_s": float(np.percentile(work, 99)),
        "frames": len(frames),
    }, last


def _drain_keep(spy: can.BusABC, codecs: dict, last: dict) -> list:
    out = []
    while (msg := spy.recv(0.0)) is not None:
        key = _stream(msg, codecs)
        if key is not None:
            last[key] = msg
            out.append((key, msg.timestamp))
    return out


def run_send_periodic(seconds: float, payloads: dict, codecs: dict) -> dict:
    spy = can.Bus(interface="virtual", channel="jitter-sp", ignore_config=True)
    bus = can.Bus(interface="virtual", channel="jitter-sp", ignore_config=True)
    tasks = []
    try:
        for (frame_id, _), msg in sorted(payloads.items()):
            period = codecs[frame_id].cycle_time_s
            out = can.Message(arbitration_id=frame_id, is_extended_id=False, data=bytes(msg.data))
            tasks.append(bus.send_periodic(out, period))
        time.sleep(seconds)
    finally:
        for task in tasks:
            task.stop()
    frames = _drain(spy, codecs)
    spy.shutdown()
    bus.shutdown()
    return {"wire": _lateness(frames, codecs), "frames": len(frames), "tasks": len(tasks)}


def _ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) * 1e3 if values.size else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per method (default 20)")
    args = parser.parse_args()
    codecs = _codecs()
    ours, payloads = run_ours(args.seconds, codecs)
    rep = ours["report"]
    print(f"ours (transmit thread, absolute deadlines): {rep.summary()}")
    print(
        f"ours: the main loop's tick ends p99 {ours['work_p99_s'] * 1e3:.3f} ms after its deadline"
    )
    sp = run_send_periodic(args.seconds, payloads, codecs)
    ow, sw = ours["wire"], sp["wire"]
    print(
        f"ours on the wire: {ow.size} frames p50 {_ms(ow, 50):.3f} p99 {_ms(ow, 99):.3f} "
        f"max {ow.max() * 1e3:.3f} ms"
    )
    print(
        f"send_periodic ({sp['tasks']} tasks): {sw.size} frames p50 {_ms(sw, 50):.3f} "
        f"p99 {_ms(sw, 99):.3f} max {sw.max() * 1e3:.3f} ms"
    )
    pairs = {
        "seconds": args.seconds,
        "ours_frames": rep.frames,
        "ours_p50_ms": rep.frame_p50_s * 1e3,
        "ours_p99_ms": rep.frame_p99_s * 1e3,
        "ours_max_ms": rep.frame_max_s * 1e3,
        "ours_overruns": rep.overruns,
        "ours_missed": rep.missed_slots,
        "ours_wire_p50_ms": _ms(ow, 50),
        "ours_wire_p99_ms": _ms(ow, 99),
        "ours_wire_max_ms": float(ow.max() * 1e3),
        "sp_tasks": sp["tasks"],
        "sp_p50_ms": _ms(sw, 50),
        "sp_p99_ms": _ms(sw, 99),
        "sp_max_ms": float(sw.max() * 1e3),
        "target_p99_ms": 0.5,
        "ours_ok": int(rep.frame_p99_s <= 0.5e-3),
    }
    print(
        " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in pairs.items())
    )


if __name__ == "__main__":
    main()
