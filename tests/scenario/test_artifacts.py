"""Run artifacts: CAN logs read back frame for frame, the CSV trace, results JSON and JUnit XML.

The oracle is the input itself (what was fed to the recorder must come back from the files with
python-can's own readers) and the JUnit/JSON formats as other tools parse them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import can
import numpy as np
import pytest

from bms.errors import InputError
from bms.scenario import artifacts
from bms.scenario.artifacts import (
    ArtifactRecorder,
    check_available,
    describe,
    discover_scenarios,
    first_failure,
    parse_formats,
    run_to_folder,
    unique_folder,
    write_junit,
)
from bms.scenario.result import ExpectationResult, RunResult

DT_S = 0.01
#: Tolerance of read-back timestamps: BLF stores ns, ASC and candump logs print microseconds.
TIME_TOL_S = {"blf": 1e-9, "asc": 0.6e-6, "log": 0.6e-6}


def make_frames(n_ticks: int, seed: int = 3) -> list[tuple[can.Message, str]]:
    """Frames like the simulated system's: both buses, standard and extended IDs, 0-8 bytes."""
    rng = np.random.default_rng(seed)
    frames = []
    for tick in range(1, n_ticks + 1):
        time_s = tick * DT_S  # the simulated clock: first frames one tick after the start
        for k in range(3):
            extended = k == 2
            length = int(rng.integers(0, 9))
            msg = can.Message(
                timestamp=time_s,
                arbitration_id=int(rng.integers(0, 0x1FFFFFFF if extended else 0x7FF)),
                is_extended_id=extended,
                data=rng.integers(0, 256, length, dtype=np.uint8).tobytes(),
                channel=None,
            )
            frames.append((msg, "pack" if k < 2 else "vehicle"))
    return frames


def read_back(path: Path, fmt: str) -> list[can.Message]:
    kwargs = {"relative_timestamp": False} if fmt == "asc" else {}
    return list(can.LogReader(path, **kwargs))


def channel_number(msg: can.Message) -> int:
    channel = msg.channel
    return int(channel[3:]) if isinstance(channel, str) else int(channel)  # candump "can1"


@pytest.mark.parametrize("fmt", ["blf", "asc", "log"])
def test_every_frame_reads_back_with_its_simulated_timestamp_and_bus(tmp_path, fmt):
    frames = make_frames(1500)  # 4500 frames: several BLF containers
    with ArtifactRecorder(tmp_path, log_formats=[fmt]) as recorder:
        for msg, bus in frames:
            recorder.on_frame(msg, bus)
    assert recorder.frames == len(frames)
    back = read_back(tmp_path / artifacts.LOG_FILES[fmt], fmt)
    assert len(back) == len(frames)
    for (sent, bus), got in zip(frames, back, strict=True):
        assert got.timestamp == pytest.approx(sent.timestamp, abs=TIME_TOL_S[fmt])
        assert got.arbitration_id == sent.arbitration_id
        assert got.is_extended_id == sent.is_extended_id
        assert bytes(got.data) == bytes(sent.data)
        assert channel_number(got) == artifacts.BUS_CHANNELS[bus]


def test_the_senders_message_keeps_its_own_channel(tmp_path):
    msg = can.Message(
        timestamp=0.01, arbitration_id=0x100, is_extended_id=False, channel="sim-pack"
    )
    with ArtifactRecorder(tmp_path) as recorder:
        recorder.on_frame(msg, "vehicle")
    assert msg.channel == "sim-pack"


def test_same_frames_give_byte_identical_logs(tmp_path):
    for run in ("a", "b"):
        with ArtifactRecorder(tmp_path / run, log_formats=["blf", "log", "asc"]) as recorder:
            for msg, bus in make_frames(400):
                recorder.on_frame(msg, bus)
    for name in ("can.blf", "can.log"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # ASC's first line is python-can's wall-clock "date" header; every line after it is equal.
    a, b = ((tmp_path / run / "can.asc").read_text().splitlines() for run in ("a", "b"))
    assert a[0].startswith("date ") and a[1:] == b[1:]


def test_a_run_without_frames_leaves_a_valid_empty_log(tmp_path):
    recorder = ArtifactRecorder(tmp_path)
    recorder.close()
    recorder.close()  # idempotent
    assert read_back(tmp_path / "can.blf", "blf") == []


def test_csv_trace_has_units_in_the_header_and_every_row_in_order(tmp_path):
    names = ["BmsLimits.MaxChargeCurrent_A", "truth.soc_mean", "BmsState.BmsState"]
    rng = np.random.default_rng(7)
    n_rows = artifacts.TRACE_CHUNK_ROWS * 2 + 17  # crosses the chunk boundary twice
    values = rng.normal(100.0, 50.0, (n_rows, len(names)))
    values[:5, 0] = np.nan  # not yet received on the bus
    with ArtifactRecorder(tmp_path) as recorder:
        for i in range(n_rows):
            recorder.on_sample((i + 1) * 0.1, names, values[i])
    with (tmp_path / "trace.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["time_s", *names]
    assert len(rows) == n_rows + 1
    assert rows[1][1] == ""  # NaN is an empty cell
    table = np.array([[float(x) if x else np.nan for x in row] for row in rows[1:]])
    np.testing.assert_allclose(table[:, 0], np.arange(1, n_rows + 1) * 0.1, rtol=1e-9)
    np.testing.assert_allclose(table[:, 1:], values, rtol=10.0 ** -(artifacts.CSV_DIGITS - 1))


def sample_result(tmp_path: Path) -> RunResult:
    return RunResult(
        name="udds-90-to-20",
        source=str(tmp_path / "udds.yaml"),
        seed=1,
        passed=False,
        sim_s=600.0,
        wall_s=12.5,
        expectations=[
            ExpectationResult("limits respected", True, "max 24.0 A <= 25 A"),
            ExpectationResult(
                "never: truth.cell_voltage_max_v above 4.35",
                False,
                "truth.cell_voltage_max_v = 4.36 > 4.35\nfirst of 12 samples",
                time_s=321.25,
            ),
        ],
        fault_events=[(120.0, "pack soft_short cell 20 on")],
        frames=123456,
        busload={"pack": {"bits_per_s": 1.5e5, "load_pct": 30.0}, "vehicle": {"load_pct": np.nan}},
    )


def test_results_json_holds_everything_in_the_run_result(tmp_path):
    result = sample_result(tmp_path)
    ArtifactRecorder(tmp_path / "run").finish(result)
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["name"] == "udds-90-to-20" and data["seed"] == 1 and data["passed"] is False
    assert data["sim_s"] == 600.0 and data["frames"] == 123456 and data["failures"] == 1
    assert data["expectations"][1]["time_s"] == 321.25
    assert data["fault_events"] == [[120.0, "pack soft_short cell 20 on"]]
    assert data["busload"]["vehicle"]["load_pct"] is None  # NaN is not JSON
    assert data["out_dir"] == str(tmp_path / "run")
    assert Path(data["artifacts"]["log_blf"]).is_file()
    assert Path(data["artifacts"]["trace"]).is_file()


def test_junit_has_a_suite_per_scenario_and_a_case_per_expectation(tmp_path):
    failing = sample_result(tmp_path)
    crashed = RunResult(name="crash", source="c.yaml", seed=0, error="ValueError: boom\nmore")
    passing = RunResult(name="ok", source="ok.yaml", seed=0, passed=True)
    write_junit([failing, crashed, passing], tmp_path / "junit.xml")
    root = ET.parse(tmp_path / "junit.xml").getroot()
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("4", "1", "1")
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert list(suites) == ["udds-90-to-20", "crash", "ok"]
    cases = suites["udds-90-to-20"].findall("testcase")
    assert [c.get("name") for c in cases] == [e.name for e in failing.expectations]
    assert cases[0].find("failure") is None
    failure = cases[1].find("failure")
    assert failure.get("message") == "truth.cell_voltage_max_v = 4.36 > 4.35"
    assert "at 321.250 s" in failure.text and "first of 12 samples" in failure.text
    error = suites["crash"].find("testcase/error")
    assert error.get("message") == "ValueError: boom"
    assert suites["ok"].find("testcase").get("name") == "run"  # a suite is never empty


def test_failure_text_lists_each_failed_expectation_with_its_time(tmp_path):
    result = sample_result(tmp_path)
    text = describe(result)
    assert "limits respected" not in text
    assert "- never: truth.cell_voltage_max_v above 4.35 at 321.250 s: truth.cell" in text
    assert first_failure(result).endswith("= 4.36 > 4.35")


@dataclass
class FakeScenario:
    name: str = "fake"
    source: str = "fake.yaml"
    seed: int = 0


def fake_runner(ticks: int, interrupt_at: int | None = None):
    """Feeds a recorder like the runner does: frames and a trace row per tick, then a result."""

    def run(scenario, recorder, *, stop_check=None):
        frames = make_frames(ticks)
        names = ["truth.time_s"]
        try:
            for tick in range(1, ticks + 1):
                if tick == interrupt_at:
                    raise KeyboardInterrupt
                for msg, bus in frames[3 * (tick - 1) : 3 * tick]:
                    recorder.on_frame(msg, bus)
                recorder.on_sample(tick * DT_S, names, np.array([tick * DT_S]))
                if stop_check is not None and stop_check():
                    break
        finally:
            recorder.close()
        return RunResult(
            scenario.name, scenario.source, scenario.seed, passed=True, sim_s=tick * DT_S
        )

    return run


def test_an_interrupted_run_keeps_every_frame_and_says_where_it_stopped(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run_to_folder(FakeScenario(), tmp_path, runner=fake_runner(1000, interrupt_at=701))
    back = read_back(tmp_path / "can.blf", "blf")
    assert len(back) == 3 * 700
    assert back[-1].timestamp == pytest.approx(7.0, abs=1e-9)
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["error"] == "interrupted at 7.000 s simulated" and data["frames"] == 2100
    assert ET.parse(tmp_path / "junit.xml").getroot().get("errors") == "1"


def test_stop_check_ends_the_run_cleanly(tmp_path):
    calls = iter(range(10**6))
    result = run_to_folder(
        FakeScenario(), tmp_path, runner=fake_runner(1000), stop_check=lambda: next(calls) >= 99
    )
    assert result.sim_s == pytest.approx(1.0)
    assert result.error == "interrupted at 1.000 s simulated" and not result.passed
    assert len(read_back(tmp_path / "can.blf", "blf")) == 300
    assert result.artifacts["junit"].is_file() and result.out_dir == tmp_path


def test_formats_are_repeatable_or_comma_separated_and_checked():
    allowed = list(artifacts.LOG_FILES)
    assert parse_formats(["blf,asc", "log", "BLF"], allowed, "--log-format") == [
        "blf",
        "asc",
        "log",
    ]
    with pytest.raises(InputError, match=r"--log-format: unknown format 'trc'; use blf\|asc"):
        parse_formats(["blf,trc"], allowed, "--log-format")


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow installed")
def test_parquet_without_pyarrow_is_a_clear_input_error(tmp_path):
    with pytest.raises(
        InputError, match="--trace-format parquet: needs the optional package pyarrow"
    ):
        check_available(["blf"], "parquet")


@pytest.mark.skipif(importlib.util.find_spec("asammdf") is not None, reason="asammdf installed")
def test_mf4_without_asammdf_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="--log-format mf4: needs the optional package asammdf"):
        ArtifactRecorder(tmp_path, log_formats=["blf", "mf4"])


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is None, reason="needs pyarrow")
def test_parquet_trace_round_trip(tmp_path):
    import pyarrow.parquet as pq

    names = ["truth.soc_mean"]
    with ArtifactRecorder(tmp_path, trace_format="parquet") as recorder:
        for i in range(5000):
            recorder.on_sample(i * 0.1, names, np.array([i / 5000]))
    table = pq.read_table(tmp_path / "trace.parquet")
    assert table.column_names == ["time_s", *names]
    np.testing.assert_allclose(table.column(1).to_numpy(), np.arange(5000) / 5000)


@pytest.mark.skipif(importlib.util.find_spec("asammdf") is None, reason="needs asammdf")
def test_mf4_log_reads_back_every_frame(tmp_path):
    frames = make_frames(50)
    with ArtifactRecorder(tmp_path, log_formats=["mf4"], epoch_s=1.7e9) as recorder:
        for msg, bus in frames:
            recorder.on_frame(msg, bus)
    back = list(can.LogReader(tmp_path / "can.mf4"))
    assert len(back) == len(frames)
    assert math.isclose(back[0].timestamp - 1.7e9, frames[0][0].timestamp, abs_tol=1e-5)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_discovery_takes_named_files_and_scenario_yaml_in_folders_sorted(tmp_path):
    b = write(tmp_path / "lib" / "b.yaml", "duration: 1 s\nstimulus:\n  - rest: 1 s\n")
    a = write(tmp_path / "lib" / "sub" / "a.yml", "expect: []\nduration: 1 s\n")
    write(tmp_path / "lib" / "pack.yaml", "topology: {series: 96}\n")  # not a scenario
    write(tmp_path / "lib" / "notes.txt", "stimulus:\n")
    broken = write(tmp_path / "lib" / "c.yaml", "stimulus: [\n")  # found, so its error is shown
    assert discover_scenarios([tmp_path / "lib"]) == [b, broken, a]
    assert discover_scenarios([a, tmp_path / "lib" / "sub"]) == [a]  # no duplicates
    with pytest.raises(InputError, match="nowhere.yaml: no such file or folder"):
        discover_scenarios([tmp_path / "nowhere.yaml"])
    with pytest.raises(InputError, match="notes.txt: not a scenario file"):
        discover_scenarios([tmp_path / "lib" / "notes.txt"])


def test_two_scenarios_with_one_name_get_their_own_folders(tmp_path):
    taken: set[str] = set()
    assert unique_folder(tmp_path, "drive", taken) == tmp_path / "drive"
    assert unique_folder(tmp_path, "drive", taken) == tmp_path / "drive-2"
    assert unique_folder(tmp_path, "a/../b c", taken) == tmp_path / "a_.._b_c"


@pytest.mark.skipif(importlib.util.find_spec("asammdf") is None, reason="needs asammdf")
def test_mf4_trace_has_one_channel_per_signal_with_its_unit(tmp_path):
    from asammdf import MDF

    names = ["BmsPackValues.PackVoltage_V", "truth.soc_mean"]
    with ArtifactRecorder(tmp_path, trace_format="mf4") as recorder:
        for i in range(5000):
            recorder.on_sample(i * 0.1, names, np.array([400.0 - i * 1e-3, 0.9]))
    mdf = MDF(tmp_path / "trace.mf4")
    voltage = mdf.get("BmsPackValues.PackVoltage_V")
    assert voltage.unit == "V" and len(voltage.samples) == 5000
    np.testing.assert_allclose(voltage.timestamps, np.arange(5000) * 0.1)
    np.testing.assert_allclose(voltage.samples, 400.0 - np.arange(5000) * 1e-3)
    mdf.close()
