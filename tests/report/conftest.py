"""A synthetic run folder with known contents, written the way ``bms run`` writes one.

CAN frames are encoded with the project's DBC codecs and logged with ``can.Logger`` (BLF, channel
0 = pack bus, 1 = vehicle bus); the trace is a CSV with empty cells before a signal is first
received; results.json comes from ``write_results_json``. The values are analytic functions of
time and channel so tests can check what the report decodes against the formula.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import can
import numpy as np
import pytest

from bms.can import DbcCodecs, load_dbc
from bms.scenario.artifacts import write_results_json
from bms.scenario.result import ExpectationResult, RunResult

N_CELLS = 96
N_SENSORS = 24
N_MODULES = 8
CYCLE_S = 0.1
OPEN_WIRE_CELL = 7  # 1-based; its sense wire is open from 30 s to 35 s
SHORTED_CELL = 20  # 1-based; sags 50 mV from 60 s on
LOW_MODULE = 3  # 1-based; its pressure falls to 0.5 MPa at 80 s
FAULT_START_S = 80.0
FAULT_END_S = 100.0
PRESSURE_LOW = 9  # FaultCode value table
FATAL = 3


def cell_voltage_v(time_s: np.ndarray) -> np.ndarray:
    """(T, cells): a slow discharge, a 2 mV spread across cells, one cell sagging 50 mV."""
    t = np.asarray(time_s)[:, None]
    cells = np.arange(1, N_CELLS + 1)[None, :]
    v = 3.90 - 1e-3 * t + 2e-3 * (cells - 1) / (N_CELLS - 1)
    return v - 0.050 * ((cells == SHORTED_CELL) & (t >= 60.0))


def temp_c(time_s: np.ndarray) -> np.ndarray:
    """(T, sensors): warming 3 K per minute, sensor k 0.1 K above sensor k-1."""
    t = np.asarray(time_s)[:, None]
    return 25.0 + 0.05 * t + 0.1 * np.arange(N_SENSORS)[None, :]


def pressure_mpa(time_s: np.ndarray) -> np.ndarray:
    """(T, modules): 2.0 MPa + 10 kPa per module index; the low module at 0.5 MPa from 80 s."""
    t = np.asarray(time_s)[:, None]
    p = 2.0 + 0.01 * np.arange(N_MODULES)[None, :] + 0.0 * t
    p[:, LOW_MODULE - 1] = np.where(t[:, 0] >= FAULT_START_S, 0.5, p[:, LOW_MODULE - 1])
    return p


def _pack_frames(duration_s: float) -> list[can.Message]:
    codecs = DbcCodecs(load_dbc("pack"))
    times = np.arange(0.0, duration_s, CYCLE_S)
    cv, ct, mp = codecs["CellVoltages"], codecs["CellTemperatures"], codecs["ModulePressures"]
    volts, temps, press = cell_voltage_v(times), temp_c(times), pressure_mpa(times)
    frames = []
    for k, t in enumerate(times):
        payloads = [
            (cv.frame_id, p) for p in cv.encode_groups(volts[k].reshape(-1, 4), {"AfeFault": 0})
        ]
        if 30.0 <= t < 35.0:  # open sense wire: the AFE flags the slot, the value is garbage
            group, slot = divmod(OPEN_WIRE_CELL - 1, 4)
            word = int.from_bytes(payloads[group][1], "little") | (1 << (60 + slot))
            payloads[group] = (cv.frame_id, word.to_bytes(8, "little"))
        payloads += [(ct.frame_id, p) for p in ct.encode_groups(temps[k].reshape(-1, 4))]
        payloads += [(mp.frame_id, p) for p in mp.encode_groups(press[k].reshape(-1, 4))]
        frames += [
            can.Message(
                timestamp=float(t), arbitration_id=i, data=d, is_extended_id=False, channel=0
            )
            for i, d in payloads
        ]
    return frames


def _vehicle_frames(duration_s: float) -> list[can.Message]:
    faults = DbcCodecs(load_dbc("vehicle"))["BmsFaults"]
    frames = []
    for t in np.arange(0.0, duration_s, CYCLE_S) + 0.05:
        active = FAULT_START_S <= t < FAULT_END_S
        values = {
            "FaultSlot": 0,
            "ActiveFaultCount": int(active),
            "FaultCode": PRESSURE_LOW if active else 0,
            "FaultTier": FATAL if active else 0,
            "FaultLocation": LOW_MODULE if active else 0,
        }
        frames.append(
            can.Message(
                timestamp=float(t),
                arbitration_id=faults.frame_id,
                data=faults.encode(values),
                is_extended_id=False,
                channel=1,
            )
        )
    return frames


def trace_columns(time_s: np.ndarray) -> dict[str, np.ndarray]:
    """Trace signals: a 90 A discharge pulse, SOC falling 1 %/min, BMS signals from 0.5 s."""
    current = np.where((time_s >= 10.0) & (time_s < 90.0), 90.0, 0.0)
    soc_truth = 0.80 - 0.01 * time_s / 60.0
    late = time_s < 0.5  # nothing received from the BMS yet
    bus = {
        "BmsPackValues.PackCurrent_A": current + 0.2,
        "BmsPackValues.PackVoltage_V": 370.0 - 0.04 * current,
        "BmsSoc.SocAvg_pct": 100 * soc_truth + 0.5,
        "BmsSoc.SocMin_pct": 100 * soc_truth - 0.5,
        "BmsSoc.SocMax_pct": 100 * soc_truth + 1.5,
        "BmsSoc.SocSigma_pct": np.full_like(time_s, 1.0),
        "BmsLimits.MaxDischargeCurrent_A": np.where(time_s < FAULT_START_S, 200.0, 0.0),
        "BmsLimits.MaxChargeCurrent_A": np.full_like(time_s, 20.0),
        "BmsState.BmsState": np.select([time_s < 2, time_s < 5, time_s < 80], [1.0, 2.0, 3.0], 6.0),
        "BmsState.MainPlusClosed": ((time_s >= 5) & (time_s < 80.3)).astype(float),
        "BmsState.MainMinusClosed": ((time_s >= 2) & (time_s < 80.3)).astype(float),
        "BmsState.PrechargeClosed": ((time_s >= 2) & (time_s < 5)).astype(float),
        "BmsState.FaultFatal": (time_s >= 80).astype(float),
    }
    for values in bus.values():
        values[late] = np.nan
    truth = {
        "truth.current_a": current,
        "truth.pack_voltage_v": 370.0 - 0.04 * current,
        "truth.soc_mean": soc_truth,
        "truth.cell_voltage_max_v": cell_voltage_v(time_s).max(axis=1),
        "truth.cell_voltage_min_v": cell_voltage_v(time_s).min(axis=1),
        "truth.temp_max_c": temp_c(time_s).max(axis=1),
        "truth.pressure_min_mpa": pressure_mpa(time_s).min(axis=1),
    }
    return {**bus, **truth}


def write_trace(path: Path, time_s: np.ndarray) -> dict[str, np.ndarray]:
    """Write the trace CSV as the artifact writer does (empty cell for NaN); returns columns."""
    columns = trace_columns(time_s)
    names = ["time_s", *columns]
    data = np.column_stack([time_s, *columns.values()])
    with path.open("w", encoding="utf-8") as file:
        file.write(",".join(names) + "\n")
        for row in data:
            file.write(",".join("" if np.isnan(v) else f"{v:.10g}" for v in row) + "\n")
    return columns


def make_result(name: str, *, passed: bool, duration_s: float, error: str | None = None):
    """A RunResult with one met expectation and, unless ``passed``, one failed at 85 s."""
    expectations = [ExpectationResult("contactors close", True, "closed at 5.00 s", 5.0)]
    if not passed:
        expectations.append(
            ExpectationResult(
                "never pressure below 0.8 MPa",
                False,
                "truth.pressure_min_mpa = 0.5 < 0.8",
                FAULT_START_S,
            )
        )
    return RunResult(
        name=name,
        source=f"scenarios/{name}.yaml",
        seed=1,
        passed=passed and error is None,
        error=error,
        sim_s=duration_s,
        wall_s=duration_s / 100.0,
        expectations=expectations,
        fault_events=[(FAULT_START_S, f"on: pack pressure_loss module {LOW_MODULE}")],
        frames=0,
        busload={"pack": {"bits_per_s": 167000.0, "load_pct": 33.4}},
    )


def write_run(
    root: Path,
    name: str = "synthetic",
    *,
    passed: bool = False,
    duration_s: float = 120.0,
    error: str | None = None,
) -> Path:
    """A complete run folder ``root/name``: can.blf, trace.csv and results.json."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    frames = sorted(
        _pack_frames(duration_s) + _vehicle_frames(duration_s), key=lambda m: m.timestamp
    )
    writer = can.Logger(run_dir / "can.blf")
    writer.start_timestamp = -0.5e-9  # as bms.scenario.artifacts: exact simulated stamps
    for msg in frames:
        writer.on_message_received(msg)
    writer.stop()
    write_trace(run_dir / "trace.csv", np.round(np.arange(0.0, duration_s, CYCLE_S), 6))
    result = make_result(name, passed=passed, duration_s=duration_s, error=error)
    result.frames = len(frames)
    result.out_dir = run_dir
    write_results_json(result, run_dir / "results.json")
    return run_dir


@pytest.fixture
def make_run(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_run(name, passed=False, duration_s=120.0)`` -> a run folder in tmp_path."""

    def make(name: str = "synthetic", **kwargs: object) -> Path:
        return write_run(tmp_path, name, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def synth() -> types.ModuleType:
    """This module: the analytic signals and constants the tests compare the report against."""
    return sys.modules[__name__]
