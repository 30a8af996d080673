"""Scenario runs on the simulated clock: each expectation kind passes and fails for the right
reason, segments end on their conditions, runs are reproducible frame for frame, and the
recorder is closed on every path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bms.scenario.result import RunResult
from bms.scenario.runner import run_scenario
from bms.scenario.schema import load_scenario

# Scenarios meant to fail live here, not as files under tests/: the scenario pytest plugin would
# collect such files as (failing) scenario tests.
REACTIONS = """
# Every expectation kind once passing, once failing; the BMS node is stopped at 6 s so the
# pack-side coil drivers drop the contactors after their 100 ms command timeout.
name: reactions
pack: {file: pack_a_96s, soc: 60 %, seed: 2}
duration: 9 s
stimulus:
  - request: drive
  - wait_for: {signal: BmsState.BmsState, equals: DRIVE}
    timeout: 5 s
  - current: {value_a: 50, duration: 20 s}
faults:
  - at: 6 s
    node: bms
    action: stop
expect:
  - name: always-pass
    always: {signal: BmsLimits.MaxDischargeCurrent_A, at_most: 2000}
  - name: always-fail
    always: {truth: current_a, below: 20}  # precharge inrush stays well below
  - name: never-pass
    never: {signal: BmsState.BmsState, equals: ERROR}
  - name: never-fail
    never: {signal: BmsState.BmsState, equals: DRIVE}
    during: [0 s, end]
  - name: eventually-pass
    eventually: {signal: BmsState.BmsState, equals: DRIVE}
    before: 5 s
  - name: eventually-fail
    eventually: {signal: BmsState.BmsState, equals: CHARGE}
    before: 8 s
  - name: within-pass
    within: 1000 ms
    after: faults[0]
    condition: {truth: contactors_open, equals: true}
  - name: within-fail
    within: 50 ms
    after: faults[0]
    condition: {truth: contactors_open, equals: true}
  - name: soc-pass
    soc_error: {at_most: 3 %, rms_at_most: 2 %}
    after: 1 s
  - name: soc-fail
    soc_error: {at_most: 0.001 %}
  - name: faults-pass
    faults: {none_except: []}
  - name: faults-fail
    faults: {includes: [CELL_OVERVOLTAGE]}
"""

E2E = """
# A corrupted CRC on every VehicleRequest: the BMS must report an E2E failure (DBC contract).
name: e2e-failure
pack: {file: pack_a_96s, soc: 60 %}
duration: 7 s
stimulus:
  - request: drive
faults:
  - at: 4 s
    can: corrupt_crc
    message: VehicleRequest
expect:
  - name: includes-pass
    faults: {includes: [E2E_FAILURE], tier: FATAL}
  - name: none-except-fail
    faults: {none_except: [CELL_VOLTAGE_SPREAD]}
  - name: reaction
    eventually: {signal: BmsState.BmsState, equals: ERROR}
    within: 2 s
    after: faults[0]
"""


class ListRecorder:
    """Keeps every frame and trace row in memory."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, int, bytes, str]] = []
        self.rows: list[tuple[float, np.ndarray]] = []
        self.names: tuple[str, ...] = ()
        self.closed = 0

    def on_frame(self, msg, bus: str) -> None:
        self.frames.append((msg.timestamp, msg.arbitration_id, bytes(msg.data), bus))

    def on_sample(self, time_s, names, values) -> None:
        self.names = tuple(names)
        self.rows.append((time_s, np.array(values)))

    def close(self) -> None:
        self.closed += 1

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        k = self.names.index(name)
        return np.array([t for t, _ in self.rows]), np.array([r[k] for _, r in self.rows])


def _run(path: Path | str, recorder=None, **kw) -> RunResult:
    return run_scenario(load_scenario(path), recorder, **kw)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def reactions(tmp_path_factory) -> tuple[RunResult, ListRecorder]:
    rec = ListRecorder()
    return _run(_write(tmp_path_factory.mktemp("reactions"), REACTIONS), rec), rec


def _by_name(result: RunResult) -> dict:
    return {e.name: e for e in result.expectations}


def test_each_expectation_kind_passes_when_it_should(reactions):
    result, _ = reactions
    assert result.error is None
    exp = _by_name(result)
    for name in ("always", "never", "eventually", "within", "soc", "faults"):
        assert exp[f"{name}-pass"].passed, exp[f"{name}-pass"]
        assert not exp[f"{name}-fail"].passed, exp[f"{name}-fail"]
    assert not result.passed  # a failed expectation fails the run


def test_failures_name_the_moment_and_the_reason(reactions):
    result, rec = reactions
    exp = _by_name(result)
    drive_s = exp["eventually-pass"].time_s
    assert 0.5 < drive_s < 5.0  # precharge takes a few RC time constants
    # 50 A (above the precharge inrush) only flows once the BMS is in DRIVE, mains closed.
    assert exp["always-fail"].time_s >= drive_s
    assert "truth.current_a" in exp["always-fail"].detail
    assert exp["never-fail"].time_s == pytest.approx(drive_s)
    assert "never held" in exp["eventually-fail"].detail
    assert "missing: CELL_OVERVOLTAGE (never)" in exp["faults-fail"].detail
    # Coils drop 100 ms after the last contactor command (PackNodeParams), then open mechanically.
    reaction_s = exp["within-pass"].time_s - 6.0
    assert 0.1 <= reaction_s <= 1.0
    assert "not within 50 ms" in exp["within-fail"].detail
    assert "max |error|" in exp["soc-fail"].detail
    # The recorded trace agrees: current flows at ~50 A in DRIVE, none after the contactors open.
    t, current = rec.column("truth.current_a")
    assert np.all(np.abs(current[(t > drive_s + 1.0) & (t < 6.0)] - 50.0) < 1.0)
    assert np.all(np.abs(current[t > exp["within-pass"].time_s + 0.1]) < 1e-6)


def test_fault_events_are_reported(reactions):
    result, _ = reactions
    assert result.fault_events == [(pytest.approx(6.0), "on faults[0]: node bms stop")]


def test_a_corrupted_crc_surfaces_as_an_e2e_failure(tmp_path):
    result = _run(_write(tmp_path, E2E))
    exp = _by_name(result)
    assert exp["includes-pass"].passed, exp["includes-pass"]
    assert exp["reaction"].passed, exp["reaction"]
    assert not exp["none-except-fail"].passed
    assert "E2E_FAILURE (FATAL" in exp["none-except-fail"].detail


def test_same_seed_gives_identical_frames_and_another_seed_does_not(tmp_path):
    text = "pack: {file: pack_a_96s, soc: 55 %, seed: SEED}\nduration: 4 s\n"
    text += (
        "stimulus:\n  - request: drive\n  - rest: 1 s\n  - current: {value_a: 30, duration: 5 s}\n"
    )
    runs = []
    for seed in (7, 7, 8):
        rec = ListRecorder()
        _run(_write(tmp_path, text.replace("SEED", str(seed))), rec)
        runs.append(rec.frames)
    assert len(runs[0]) > 1000
    assert runs[0] == runs[1]  # timestamps, IDs, payloads and buses
    assert runs[0] != runs[2]  # sensor noise and spread follow the seed


def test_until_ends_a_segment_and_stop_when_ends_the_run(tmp_path):
    text = """
pack: {file: pack_a_96s, soc: 60 %}
duration: 60 s
stop_when: {truth: time_s, above: 15 s}
stimulus:
  - request: drive
  - wait_for: {signal: BmsState.BmsState, equals: DRIVE}
  - rest: 1 s
  - current: {value_a: 90, duration: 40 s, until: {signal: BmsPackValues.PackCurrent_A, above: 80}}
  - rest: 30 s
"""
    rec = ListRecorder()
    result = _run(_write(tmp_path, text), rec)
    assert result.error is None
    assert result.sim_s == pytest.approx(15.01, abs=0.011)  # first tick past 15 s
    t, bus_current = rec.column("BmsPackValues.PackCurrent_A")
    _, current = rec.column("truth.current_a")
    crossed = t[np.argmax(bus_current > 80.0)]
    assert crossed < 10.0
    # The segment ended when the bus showed > 80 A: the load is off within a second, not 40 s.
    assert np.all(np.abs(current[t > crossed + 1.0]) < 0.01)


def test_a_wait_for_timeout_fails_the_run_and_closes_the_recorder(tmp_path):
    text = "pack: {file: pack_a_96s}\nduration: 10 s\nstimulus:\n"
    text += "  - wait_for: {signal: BmsState.BmsState, equals: CHARGE}\n    timeout: 1 s\n"
    rec = ListRecorder()
    result = _run(_write(tmp_path, text), rec)
    assert not result.passed
    assert result.error.startswith("stimulus[0].wait_for: BmsState.BmsState equals CHARGE not met")
    assert result.sim_s == pytest.approx(1.0, abs=0.011)
    assert rec.closed == 1 and rec.frames


def test_interrupts_propagate_after_the_recorder_is_closed(tmp_path):
    rec = ListRecorder()
    path = _write(tmp_path, "pack: {file: pack_a_96s}\nduration: 10 s\n")

    def stop() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(path, rec, stop_check=stop)
    assert rec.closed == 1


def test_stop_check_ends_the_run_as_failed(tmp_path):
    rec = ListRecorder()
    path = _write(tmp_path, "pack: {file: pack_a_96s}\nduration: 10 s\n")
    result = _run(path, rec, stop_check=lambda: True)
    assert result.error.startswith("stopped at 0.1") and not result.passed
    assert rec.closed == 1


def test_charge_segment_charges_through_the_charger_messages(tmp_path):
    text = """
pack: {file: pack_a_96s, soc: 50 %}
duration: 20 s
stimulus:
  - charge: {current_a: 15, voltage_v: 400, duration: 15 s}
expect:
  - name: charging at the requested current
    eventually: {truth: current_a, between: [-15.5, -14.5]}
    before: 15 s
  - name: never more than asked
    never: {truth: current_a, below: -15.5}
"""
    rec = ListRecorder()
    result = _run(_write(tmp_path, text), rec)
    assert result.passed, result.expectations
    t, current = rec.column("truth.current_a")
    assert np.all(np.abs(current[t > 16.0]) < 0.01)  # plug pulled when the segment ended
