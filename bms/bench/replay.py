"""Replay a recorded CAN log into the BMS model and diff its output frames with the log's.

Regression tests of BMS changes against recorded bench or field logs: every frame the BMS
receives (pack sensor frames, VehicleRequest, ChargerStatus) is fed, in log order and with its
logged timestamp, into a fresh :class:`~bms.firmware.node.BmsNode` stepped on its 10 ms grid;
the frames it sends are compared per message ID, in order, with the BMS-sent frames of the log.

Tick alignment follows the simulated system's timing contract: the BMS steps at
``origin + k * tick``; a frame logged before the BMS's own frames of a tick was seen in that
tick, one logged after them (the VCU and charger step after the BMS) in the next. So the BMS is
stepped at ``t`` when the log reaches a BMS frame stamped at ``t`` or any frame stamped after
``t``. On a log without BMS frames in a tick, frames stamped exactly at ``t`` count for ``t``.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from bms.can.bus import open_virtual_bus
from bms.can.codec import DbcCodecs
from bms.can.dbc import load_dbc
from bms.errors import InputError
from bms.firmware.bms import Bms
from bms.firmware.config import BmsConfig, load_bms_config
from bms.firmware.node import PACK_RX, VEHICLE_RX, BmsNode

BMS_SENDER = "BMS"
LOG_SUFFIXES = (".blf", ".asc", ".log", ".mf4", ".trc", ".csv")
#: Timestamps within this of a tick count as on it (float noise of the log formats; < 1 us).
TICK_EPS_S = 1e-6

_instance = itertools.count()

Key = tuple[int, bool]


@dataclass(frozen=True)
class Divergence:
    """One mismatch: the ``index``-th frame of message ``name``.

    ``kind``: ``data`` (payloads differ), ``time`` (same payload, stamped apart by more than the
    tolerance), ``missing`` (in the log, not produced) or ``extra`` (produced, not in the log).
    ``expected``/``got`` hold the decoded signals that differ (all of them for missing/extra).
    """

    time_s: float
    name: str
    frame_id: int
    index: int
    kind: str
    expected: dict[str, float] | None
    got: dict[str, float] | None
    got_time_s: float | None = None

    def describe(self) -> str:
        """One line for the console."""
        head = f"t={self.time_s:.3f} s {self.name} (0x{self.frame_id:X}) #{self.index}: {self.kind}"
        if self.kind == "time":
            return f"{head}: got at {self.got_time_s:.6f} s"
        if self.kind == "missing":
            return f"{head}: expected {_fmt(self.expected)}"
        if self.kind == "extra":
            return f"{head}: got {_fmt(self.got)}"
        return f"{head}: expected {_fmt(self.expected)} got {_fmt(self.got)}"


def _fmt(values: dict[str, float] | None) -> str:
    if not values:
        return "{}"
    return "{" + ", ".join(f"{k}={v:g}" for k, v in values.items()) + "}"


@dataclass
class ReplayResult:
    """What was fed and compared, and the first divergences in time order."""

    input_frames: int = 0
    expected_frames: int = 0
    produced_frames: int = 0
    compared: int = 0
    steps: int = 0
    total_divergences: int = 0
    divergences: list[Divergence] = field(default_factory=list)

    @property
    def first(self) -> Divergence | None:
        """The earliest divergence (None: the model reproduced the log)."""
        return self.divergences[0] if self.divergences else None

    def summary(self) -> str:
        """One line: counts and the verdict."""
        return (
            f"fed {self.input_frames} frames, {self.steps} BMS steps; compared {self.compared} "
            f"of {self.expected_frames} logged BMS frames ({self.produced_frames} produced): "
            f"{self.total_divergences} divergences"
        )


def read_log(path: str | Path) -> list[can.Message]:
    """All frames of a BLF, ASC, candump ``.log`` (or other python-can) log, in file order."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such log file")
    if path.suffix.lower() not in LOG_SUFFIXES:
        raise InputError(f"{path}: unknown log format (expected one of {', '.join(LOG_SUFFIXES)})")
    try:
        with can.LogReader(path) as reader:
            return [m for m in reader if not m.is_error_frame]
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise InputError(f"{path}: cannot read log: {exc}") from None


class _Codecs:
    """Both DBCs' codecs by (ID, extended), which IDs the BMS sends and which it receives."""

    def __init__(self) -> None:
        self.by_key: dict[Key, Any] = {}
        self.bms_tx: set[Key] = set()
        self.pack_rx: set[Key] = set()
        self.vehicle_rx: set[Key] = set()
        for dbc, rx, target in (
            ("pack", PACK_RX, self.pack_rx),
            ("vehicle", VEHICLE_RX, self.vehicle_rx),
        ):
            codecs = DbcCodecs(load_dbc(dbc))
            for message in codecs.db.messages:
                codec = codecs[message.name]
                key = (codec.frame_id, codec.is_extended_id)
                self.by_key[key] = codec
                if BMS_SENDER in (message.senders or ()):
                    self.bms_tx.add(key)
                if message.name in rx:
                    target.add(key)

    def decode(self, key: Key, data: bytes) -> dict[str, float]:
        codec = self.by_key[key]
        try:
            return codec.decode_dict(data)
        except Exception:  # a wrong-length payload: show the bytes instead
            return {"raw": float(int.from_bytes(data, "big"))}

    def name(self, key: Key) -> str:
        codec = self.by_key.get(key)
        return codec.name if codec is not None else f"0x{key[0]:X}"


def _diff(a: dict[str, float], b: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    keys = [
        k for k in a if a.get(k) != b.get(k) and not (a.get(k) != a.get(k) and b.get(k) != b.get(k))
    ]
    return {k: a[k] for k in keys}, {k: b.get(k, math.nan) for k in keys}


def replay_bms(
    messages: Iterable[can.Message],
    config: BmsConfig | str | Path = "bms_pack_a_96s",
    *,
    stored_soc: float | None = None,
    origin_s: float | None = None,
    time_tolerance_s: float = 0.0,
    max_divergences: int = 10,
    paced: bool = False,
) -> ReplayResult:
    """Feed the log's BMS inputs into a fresh BMS model and compare its output frames.

    ``origin_s``: time of the BMS's step 0 (default: the first frame's time rounded down to the
    tick, 0 for simulated logs). ``paced``: follow the log's timing on the wall clock instead of
    running as fast as possible. Frames the model produces after the log's end are not compared.
    """
    cfg = config if isinstance(config, BmsConfig) else load_bms_config(config)
    codecs = _Codecs()
    msgs = list(messages)
    result = ReplayResult()
    if not msgs:
        return result
    tick_ns = round(cfg.fast_task_s * 1e9)
    if origin_s is None:
        origin_ns = math.floor(msgs[0].timestamp * 1e9 / tick_ns + 1e-6) * tick_ns
    else:
        origin_ns = round(origin_s * 1e9)
    tag = f"replay{next(_instance)}"
    buses = [
        open_virtual_bus(f"{tag}-{ch}") for ch in ("pack", "pack", "pack", "veh", "veh", "veh")
    ]
    feed_pack, bms_pack, cap_pack, feed_veh, bms_veh, cap_veh = buses
    expected: dict[Key, list[tuple[float, bytes, int]]] = defaultdict(list)
    got: dict[Key, list[tuple[float, bytes]]] = defaultdict(list)
    clock = None
    if paced:
        from bms.bench.realtime import MonotonicClock

        clock = MonotonicClock()
    try:
        node = BmsNode(
            bms_pack, bms_veh, cfg, bms=Bms(cfg, stored_soc=stored_soc), start_s=origin_ns / 1e9
        )
        k = 1
        bms_tx = codecs.bms_tx

        def step_to(limit_s: float, inclusive: bool) -> None:
            nonlocal k
            while True:
                t_ns = origin_ns + k * tick_ns
                t = t_ns / 1e9
                if not (t < limit_s - TICK_EPS_S or (inclusive and t <= limit_s + TICK_EPS_S)):
                    return
                if clock is not None:
                    clock.sleep_until(t - origin_ns / 1e9)
                node.step(t)
                k += 1
                result.steps += 1
                for cap in (cap_pack, cap_veh):
                    while (m := cap.recv(0.0)) is not None:
                        key = (m.arbitration_id, m.is_extended_id)
                        if key in bms_tx:  # the taps also hear the fed input frames
                            got[key].append((m.timestamp, bytes(m.data[: m.dlc])))

        for seq, msg in enumerate(msgs):
            key = (msg.arbitration_id, msg.is_extended_id)
            ts = msg.timestamp
            if key in bms_tx:
                step_to(ts, inclusive=True)  # the BMS's own frame of tick t: step t now
                expected[key].append((ts, bytes(msg.data[: msg.dlc]), seq))
                continue
            step_to(ts, inclusive=False)  # ticks before this frame's time
            if key in codecs.pack_rx:
                feed = feed_pack
            elif key in codecs.vehicle_rx:
                feed = feed_veh
            else:
                continue
            feed.send(
                can.Message(
                    timestamp=ts,
                    arbitration_id=msg.arbitration_id,
                    is_extended_id=msg.is_extended_id,
                    dlc=msg.dlc,
                    data=bytes(msg.data[: msg.dlc]),
                )
            )
            result.input_frames += 1
    finally:
        for bus in buses:
            bus.shutdown()

    end_s = msgs[-1].timestamp
    found: list[tuple[float, int, Divergence]] = []
    for key in set(expected) | set(got):
        exp = expected.get(key, [])
        out = [g for g in got.get(key, []) if g[0] <= end_s + time_tolerance_s + TICK_EPS_S]
        result.expected_frames += len(exp)
        result.produced_frames += len(out)
        name = codecs.name(key)
        for i in range(max(len(exp), len(out))):
            if i >= len(out):
                t, data, seq = exp[i]
                div = Divergence(t, name, key[0], i, "missing", codecs.decode(key, data), None)
            elif i >= len(exp):
                t, data = out[i]
                seq = len(msgs)
                div = Divergence(t, name, key[0], i, "extra", None, codecs.decode(key, data), t)
            else:
                t, data, seq = exp[i]
                got_t, got_data = out[i]
                result.compared += 1
                if data != got_data:
                    e, g = _diff(codecs.decode(key, data), codecs.decode(key, got_data))
                    div = Divergence(t, name, key[0], i, "data", e, g, got_t)
                elif abs(got_t - t) > time_tolerance_s + TICK_EPS_S:
                    div = Divergence(t, name, key[0], i, "time", None, None, got_t)
                else:
                    continue
            shown = div.time_s if div.got_time_s is None else min(div.time_s, div.got_time_s)
            found.append((shown, seq, div))
    found.sort(key=lambda item: (item[0], item[1]))
    result.total_divergences = len(found)
    result.divergences = [d for _, _, d in found[:max_divergences]]
    return result


class BusRecorder:
    """Logs every frame of some virtual-bus channels into one python-can log, in bus order.

    Call :meth:`drain` after each system step: channels are read in the given order, so within
    a tick the pack bus (pack node, then BMS) comes before the vehicle bus (BMS, then VCU and
    charger), which is the order the nodes sent them in. ``msg.channel`` names the bus.
    """

    def __init__(self, path: str | Path, channels: Sequence[tuple[str, str]]) -> None:
        self.writer = can.Logger(path)
        self._taps = [(name, open_virtual_bus(ch)) for name, ch in channels]
        self.frames = 0

    def drain(self) -> int:
        """Write every frame seen since the last call; returns how many."""
        count = 0
        for name, tap in self._taps:
            while (msg := tap.recv(0.0)) is not None:
                msg.channel = name
                self.writer(msg)
                count += 1
        self.frames += count
        return count

    def close(self) -> None:
        """Write what is left, close the log and the taps."""
        try:
            self.drain()
        finally:
            self.writer.stop()
            for _, tap in self._taps:
                tap.shutdown()

    def __enter__(self) -> BusRecorder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def system_channels(system: Any) -> list[tuple[str, str]]:
    """``[("pack", channel), ("vehicle", channel)]`` of a simulated :class:`System`'s buses."""
    return [
        ("pack", system.pack_node.bus.channel_id),
        ("vehicle", system.vcu.bus.channel_id),
    ]
