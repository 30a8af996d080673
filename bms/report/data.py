"""What a report needs from a run folder, read back after the run: trace, CAN log and results.

Everything here reads files written by :mod:`bms.scenario.artifacts`; nothing touches the running
simulation, so building a report never slows a run down. Per-cell values (voltage, temperature,
pressure) and the BMS fault list come from the CAN log, decoded with the project's compiled codecs
for the few message IDs a report shows; bus and truth signals come from the decoded trace.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import numpy as np

from bms.can import DbcCodecs, load_dbc
from bms.errors import InputError
from bms.scenario.result import ExpectationResult, RunResult

#: CAN channel of each bus in the logs (the convention of ``bms.scenario.artifacts``).
PACK_CHANNEL = 0
VEHICLE_CHANNEL = 1
#: Log files tried in this order: BLF keeps everything and reads fastest.
LOG_NAMES = ("can.blf", "can.log", "can.asc")
TRACE_NAMES = ("trace.csv", "trace.parquet")
#: Pack-bus multiplexed messages decoded into (time, channel) matrices: name -> invalid mask.
PACK_MATRICES = {
    "CellVoltages": "OpenWireMask",
    "CellTemperatures": "TempInvalidMask",
    "ModulePressures": "PressureInvalidMask",
}
#: A fault code absent from the BmsFaults list for longer than this ends its active interval
#: (the list is sent every 100 ms; 2.5 cycles tolerates one lost frame).
FAULT_GAP_S = 0.25
#: Plain (not multiplexed) vehicle-bus messages decoded whole from the log: every flag of the
#: state frame is there even when the trace recorded only the state itself.
VEHICLE_MESSAGES = ("BmsState",)


@dataclass
class Matrix:
    """Per-channel values decoded from a multiplexed message: ``values_[cycle, channel]``."""

    time_s: np.ndarray
    values: np.ndarray
    unit: str

    @property
    def channels(self) -> int:
        """Number of channels (cells, sensors or modules) seen in the log."""
        return self.values.shape[1]


@dataclass
class FaultInterval:
    """One BMS fault code active on the vehicle bus from ``start_s`` to ``end_s``."""

    code: str
    tier: str
    location: int
    start_s: float
    end_s: float


@dataclass
class RunData:
    """Everything a report shows about one run, as numpy arrays and the run's result."""

    run_dir: Path
    result: RunResult
    trace_time_s: np.ndarray = field(default_factory=lambda: np.empty(0))
    trace: dict[str, np.ndarray] = field(default_factory=dict)
    matrices: dict[str, Matrix] = field(default_factory=dict)
    bms_faults: list[FaultInterval] = field(default_factory=list)
    #: Decoded plain messages from the log: name -> (time_s, {signal: values}).
    bus: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)
    #: Texts of enum values by trace column, e.g. ``{"BmsState.BmsState": {3: "DRIVE"}}``.
    value_tables: dict[str, dict[int, str]] = field(default_factory=dict)
    #: Optional expectation windows ``[(start_s, end_s) | None]`` parallel to the expectations.
    windows: list[tuple[float, float] | None] = field(default_factory=list)
    log_path: Path | None = None
    trace_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        """Last simulated time seen anywhere (trace, log or result)."""
        ends = [self.result.sim_s]
        if self.trace_time_s.size:
            ends.append(float(self.trace_time_s[-1]))
        ends.extend(float(m.time_s[-1]) for m in self.matrices.values() if m.time_s.size)
        return max(ends)

    def column(self, name: str) -> np.ndarray | None:
        """A trace column by name, or None when it was not recorded or holds no value."""
        values = self.trace.get(name)
        if values is None or not np.isfinite(values).any():
            return None
        return values


# ---------------------------------------------------------------------------------- results
def result_from_dict(data: dict[str, Any]) -> RunResult:
    """A :class:`RunResult` from the JSON written by ``write_results_json`` (extra keys ignored)."""
    expectations = [
        ExpectationResult(
            name=str(e.get("name", "")),
            passed=bool(e.get("passed", False)),
            detail=str(e.get("detail", "")),
            time_s=None if e.get("time_s") is None else float(e["time_s"]),
        )
        for e in data.get("expectations") or []
    ]
    return RunResult(
        name=str(data.get("name", "")),
        source=str(data.get("source", "")),
        seed=int(data.get("seed") or 0),
        passed=bool(data.get("passed", False)),
        error=data.get("error"),
        sim_s=float(data.get("sim_s") or 0.0),
        wall_s=float(data.get("wall_s") or 0.0),
        expectations=expectations,
        fault_events=[(float(t), str(d)) for t, d in data.get("fault_events") or []],
        frames=int(data.get("frames") or 0),
        busload={str(k): dict(v) for k, v in (data.get("busload") or {}).items()},
        out_dir=Path(data["out_dir"]) if data.get("out_dir") else None,
        artifacts={str(k): Path(v) for k, v in (data.get("artifacts") or {}).items() if v},
    )


def _windows(data: dict[str, Any]) -> list[tuple[float, float] | None]:
    """Expectation windows if results.json carries them (``window_s: [start, end]``)."""
    out: list[tuple[float, float] | None] = []
    for exp in data.get("expectations") or []:
        window = exp.get("window_s")
        if isinstance(window, list | tuple) and len(window) == 2 and None not in window:
            out.append((float(window[0]), float(window[1])))
        else:
            out.append(None)
    return out


def load_results(path: Path) -> tuple[RunResult, dict[str, Any]]:
    """Read ``results.json``; a broken file is an :class:`InputError` naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read run results: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: run results must be a JSON object")
    try:
        return result_from_dict(data), data
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: malformed run results: {exc}") from None


# ---------------------------------------------------------------------------------- trace
_EMPTY_CELL = re.compile(r"(?<=,)(?=,|\n|$)|^(?=,)", re.MULTILINE)


def load_trace_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Header and float matrix of a trace CSV; empty cells (not yet received) become NaN."""
    text = path.read_text(encoding="utf-8")
    header, _, body = text.partition("\n")
    names = [n.strip() for n in header.split(",")]
    if not names or names[0] != "time_s":
        raise InputError(f"{path}:1: trace must start with a time_s column")
    if not body.strip():
        return names, np.empty((0, len(names)))
    try:
        data = np.loadtxt(
            io.StringIO(_EMPTY_CELL.sub("nan", body)), delimiter=",", ndmin=2, dtype=float
        )
    except ValueError as exc:
        raise InputError(f"{path}: malformed trace: {exc}") from None
    if data.shape[1] != len(names):
        raise InputError(f"{path}: {data.shape[1]} values per row for {len(names)} columns")
    return names, data


def _load_trace_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = list(table.column_names)
    data = np.column_stack([table.column(n).to_numpy(zero_copy_only=False) for n in names])
    return names, data.astype(float)


# ---------------------------------------------------------------------------------- CAN log
def _channel_number(channel: Any) -> int:
    """0/1 from an int channel (BLF/ASC) or ``can0``/``vcan1`` (candump)."""
    if isinstance(channel, int):
        return channel
    match = re.search(r"(\d+)$", str(channel))
    return int(match.group(1)) if match else -1


def read_log_frames(
    path: Path, wanted: set[tuple[int, int]]
) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
    """Times and ``(N, 8)`` payloads of the frames whose ``(channel, id)`` is in ``wanted``.

    One pass through the log; other frames are skipped without decoding. 8-byte frames only
    (every report message has DLC 8; anything else is a corrupted frame and left out).
    """
    times: dict[tuple[int, int], list[float]] = {k: [] for k in wanted}
    data: dict[tuple[int, int], bytearray] = {k: bytearray() for k in wanted}
    ids = {arb for _, arb in wanted}
    channel_cache: dict[Any, int] = {}
    with can.LogReader(path) as reader:
        for msg in reader:
            arb = msg.arbitration_id
            if arb not in ids or msg.dlc != 8 or msg.is_error_frame or msg.is_remote_frame:
                continue
            raw_channel = msg.channel
            channel = channel_cache.get(raw_channel)
            if channel is None:
                channel = channel_cache[raw_channel] = _channel_number(raw_channel)
            key = (channel, arb)
            if key in times:
                times[key].append(msg.timestamp)
                data[key] += msg.data
    return {
        k: (
            np.asarray(times[k], dtype=float),
            np.frombuffer(bytes(data[k]), np.uint8).reshape(-1, 8),
        )
        for k in wanted
    }


def decode_matrix(codec: Any, time_s: np.ndarray, payloads: np.ndarray, mask_name: str) -> Matrix:
    """Rows = sending cycles, columns = channels, of a uniform multiplexed message (e.g. cells).

    A cycle starts whenever the group index does not increase (the sender sends every group each
    cycle in order); a slot flagged in the invalid mask, or all slots of a frame with ``AfeFault``
    set, become NaN so a broken sensor never plots as a real value.
    """
    mux = codec.mux
    slots = mux.slots
    if not len(time_s):
        return Matrix(np.empty(0), np.empty((0, 0)), mux.groups[mux.group_ids[0]][0].unit)
    gids, values, common = codec.decode_groups(payloads)
    common_names = [s.name for s in mux.common]
    if mask_name in common_names:
        mask = common[:, common_names.index(mask_name)].astype(np.int64)
        bits = (mask[:, None] >> np.arange(slots)) & 1
        values[bits.astype(bool)] = np.nan
    if "AfeFault" in common_names:
        values[common[:, common_names.index("AfeFault")] > 0] = np.nan
    known = np.isfinite(gids) & np.isin(gids, mux.group_ids)
    gids = gids[known].astype(np.int64)
    values, time_s = values[known], time_s[known]
    starts = np.r_[True, np.diff(gids) <= 0]
    cycle = np.cumsum(starts) - 1
    n_channels = (int(gids.max()) + 1) * slots
    matrix = np.full((int(cycle[-1]) + 1, n_channels), np.nan)
    columns = gids[:, None] * slots + np.arange(slots)
    matrix[cycle[:, None], columns] = values
    return Matrix(time_s[starts], matrix, mux.groups[mux.group_ids[0]][0].unit)


def decode_plain(codec: Any, payloads: np.ndarray) -> dict[str, np.ndarray]:
    """Every signal of a plain message, one value per frame (a few thousand frames per hour)."""
    if not len(payloads):
        return {}
    rows = np.array([codec.decode(bytes(p)) for p in payloads], dtype=float)
    return {name: rows[:, i] for i, name in enumerate(codec.signal_names)}


def decode_fault_list(codec: Any, time_s: np.ndarray, payloads: np.ndarray) -> list[FaultInterval]:
    """Active intervals of each (fault code, tier, location) from the cyclic ``BmsFaults`` list."""
    if not len(time_s):
        return []
    rows = np.array([codec.decode(bytes(p)) for p in payloads])
    idx = codec.index
    codes = rows[:, idx["FaultCode"]].astype(np.int64)
    tiers = rows[:, idx["FaultTier"]].astype(np.int64)
    locs = rows[:, idx["FaultLocation"]].astype(np.int64)
    code_names = codec.value_tables.get("FaultCode", {})
    tier_names = codec.value_tables.get("FaultTier", {})
    intervals: list[FaultInterval] = []
    active = codes != 0
    keys = np.stack([codes, tiers, locs], axis=1)[active]
    times = time_s[active]
    for key in np.unique(keys, axis=0):
        t = times[(keys == key).all(axis=1)]
        breaks = np.nonzero(np.diff(t) > FAULT_GAP_S)[0]
        starts = np.r_[t[0], t[breaks + 1]]
        ends = np.r_[t[breaks], t[-1]]
        code, tier, loc = (int(k) for k in key)
        for start, end in zip(starts, ends, strict=True):
            intervals.append(
                FaultInterval(
                    code_names.get(code, str(code)),
                    tier_names.get(tier, str(tier)),
                    loc,
                    float(start),
                    float(end),
                )
            )
    intervals.sort(key=lambda f: (f.start_s, f.code))
    return intervals


# ---------------------------------------------------------------------------------- run folder
def _first_existing(run_dir: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def load_run(run_dir: str | Path) -> RunData:
    """Read one run folder (``results.json`` required; trace and CAN log used when present)."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise InputError(f"{run_dir}: no results.json (not a run folder of 'bms run')")
    result, raw = load_results(results_path)
    run = RunData(run_dir=run_dir, result=result, windows=_windows(raw))
    pack_codecs = DbcCodecs(load_dbc("pack"))
    vehicle_codecs = DbcCodecs(load_dbc("vehicle"))

    run.trace_path = _first_existing(run_dir, TRACE_NAMES)
    if run.trace_path is None:
        run.notes.append("no decoded trace (trace.csv) in the run folder: bus/truth plots empty")
    else:
        if run.trace_path.suffix == ".csv":
            names, data = load_trace_csv(run.trace_path)
        else:
            names, data = _load_trace_parquet(run.trace_path)
        run.trace_time_s = data[:, 0]
        run.trace = {name: data[:, i] for i, name in enumerate(names) if i}
    for codecs in (pack_codecs, vehicle_codecs):
        for codec in codecs.values():
            for sig, table in codec.value_tables.items():
                run.value_tables.setdefault(f"{codec.name}.{sig}", table)

    run.log_path = _first_existing(run_dir, LOG_NAMES)
    if run.log_path is None:
        run.notes.append("no CAN log (can.blf/.log/.asc) in the run folder: per-cell plots empty")
        return run
    wanted = {(PACK_CHANNEL, pack_codecs[name].frame_id): name for name in PACK_MATRICES}
    faults_codec = vehicle_codecs["BmsFaults"]
    wanted[(VEHICLE_CHANNEL, faults_codec.frame_id)] = "BmsFaults"
    for name in VEHICLE_MESSAGES:
        wanted[(VEHICLE_CHANNEL, vehicle_codecs[name].frame_id)] = name
    frames = read_log_frames(run.log_path, set(wanted))
    for key, name in wanted.items():
        time_s, payloads = frames[key]
        if name == "BmsFaults":
            run.bms_faults = decode_fault_list(faults_codec, time_s, payloads)
        elif name in VEHICLE_MESSAGES:
            if len(time_s):
                run.bus[name] = (time_s, decode_plain(vehicle_codecs[name], payloads))
        elif len(time_s):
            run.matrices[name] = decode_matrix(
                pack_codecs[name], time_s, payloads, PACK_MATRICES[name]
            )
    return run
