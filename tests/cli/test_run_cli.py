"""``bms run``: exit statuses 0/1/2/130, the verdict table, the folder layout, complete logs.

Most tests swap the scenario loader and runner for small fakes (``fake_*`` below) so the CLI's own
contract is checked in milliseconds; the tests at the end run real scenarios end to end.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import can
import numpy as np
import pytest

import bms.cli.run as run_cli
from bms.cli.main import main
from bms.errors import InputError
from bms.scenario.result import ExpectationResult, RunResult

DT_S = 0.01
FRAMES_PER_TICK = 2


@dataclass(frozen=True)
class FakeScenario:
    name: str
    source: str
    seed: int
    ticks: int
    verdict: str  # pass | fail | error


def fake_load(path: Path) -> FakeScenario:
    """``name ticks verdict`` on one line; ``bad`` anywhere is a located input error."""
    text = path.read_text()
    if "bad" in text:
        raise InputError(f"{path}:3: faults[0].at: expected a duration like '120 s'")
    name, ticks, verdict = text.split()[1:4]  # after the "stimulus:" marker word
    return FakeScenario(name, str(path), 0, int(ticks), verdict)


def fake_run(scenario: FakeScenario, recorder, *, stop_check) -> RunResult:
    """Frames on both buses every tick; polls stop_check like the real runner."""
    names = ["truth.time_s"]
    tick = 0
    try:
        for tick in range(1, scenario.ticks + 1):  # noqa: B007 - tick is the stop time
            time_s = tick * DT_S
            for k, bus in enumerate(("pack", "vehicle")):
                msg = can.Message(
                    timestamp=time_s,
                    arbitration_id=0x100 + k,
                    is_extended_id=False,
                    data=(tick + scenario.seed).to_bytes(4, "little"),
                )
                recorder.on_frame(msg, bus)
            recorder.on_sample(time_s, names, np.array([time_s]))
            if stop_check():
                break
    finally:
        recorder.close()
    sim_s = tick * DT_S
    result = RunResult(scenario.name, scenario.source, scenario.seed, sim_s=sim_s, wall_s=0.01)
    result.frames = FRAMES_PER_TICK * tick
    if scenario.verdict == "error":
        result.error = "RuntimeError: BMS did not reach DRIVE within 10 s"
        return result
    ok = scenario.verdict == "pass"
    detail = "held" if ok else "truth.cell_voltage_max_v = 4.36 > 4.35"
    result.expectations = [ExpectationResult("never overvoltage", ok, detail, None if ok else 0.5)]
    result.passed = ok
    return result


@pytest.fixture
def fakes(monkeypatch):
    monkeypatch.setattr(run_cli, "load_scenario", fake_load)
    monkeypatch.setattr(run_cli, "run_scenario", fake_run)


def scenario(folder: Path, name: str, ticks: int = 100, verdict: str = "pass") -> Path:
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"stimulus: {name} {ticks} {verdict}\n")
    return path


def test_all_passing_exits_0_with_every_artifact_per_scenario(tmp_path, fakes, capsys):
    lib = tmp_path / "lib"
    scenario(lib, "b-drive")
    scenario(lib, "a-charge", ticks=50)
    out = tmp_path / "out"
    assert main(["run", str(lib), "--out", str(out), "--log-format", "blf,log"]) == 0
    text = capsys.readouterr().out
    table = text[text.index("scenario") :].splitlines()
    assert [line.split()[:2] for line in table[1:3]] == [["a-charge", "PASS"], ["b-drive", "PASS"]]
    assert "0.5 s" in table[1] and "2 passed" in table[-1]
    for name, ticks in (("a-charge", 50), ("b-drive", 100)):
        folder = out / name
        names = {"can.blf", "can.log", "trace.csv", "results.json", "junit.xml"}
        assert names <= {p.name for p in folder.iterdir()}
        assert len(list(can.LogReader(folder / "can.blf"))) == FRAMES_PER_TICK * ticks
        assert json.loads((folder / "results.json").read_text())["passed"] is True
    suites = ET.parse(out / "junit.xml").getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["a-charge", "b-drive"]


def test_a_failed_expectation_exits_1_and_names_it(tmp_path, fakes, capsys):
    scenario(tmp_path, "ok")
    scenario(tmp_path, "overvolt", verdict="fail")
    scenario(tmp_path, "crash", verdict="error")
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "FAIL" in lines["overvolt"]
    assert (
        "never overvoltage at 0.500 s: truth.cell_voltage_max_v = 4.36 > 4.35" in lines["overvolt"]
    )
    assert "ERROR" in lines["crash"] and "did not reach DRIVE" in lines["crash"]
    root = ET.parse(tmp_path / "out" / "junit.xml").getroot()
    assert (root.get("failures"), root.get("errors")) == ("1", "1")


def test_any_invalid_file_exits_2_with_one_line_each_and_runs_nothing(tmp_path, fakes, capsys):
    scenario(tmp_path, "good")
    scenario(tmp_path, "bad-one", verdict="bad")
    scenario(tmp_path, "bad-two", verdict="bad")
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2
    assert all(
        line.startswith("bms: error: ") and ":3: faults[0].at: expected" in line for line in err
    )
    assert "bad-one.yaml" in err[0] and "bad-two.yaml" in err[1]
    assert not (tmp_path / "out").exists() and "running" not in captured.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nowhere.yaml"], "nowhere.yaml: no such file or folder"),
        (["{lib}", "--log-format", "blf,trc"], "--log-format: unknown format 'trc'"),
        (["{lib}", "--trace-format", "xlsx"], "--trace-format: unknown format 'xlsx'"),
        (["{lib}", "--trace-format", "csv,parquet"], "--trace-format: expected one of csv|"),
        (["{empty}"], "no scenario files found"),
        (["{lib}", "--out", "{file}"], "exists and is not a folder"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, monkeypatch, fakes, capsys, argv, message):
    scenario(tmp_path / "lib", "good")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    where = {k: str(tmp_path / k) for k in ("lib", "empty", "file")}
    argv = [a.format(**where) for a in argv]
    monkeypatch.chdir(tmp_path)
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_seed_override_reaches_the_run(tmp_path, monkeypatch, capsys):
    seen = []

    def load(path):
        return fake_load(path)

    def run(scen, recorder, *, stop_check):
        seen.append(scen.seed)
        return fake_run(scen, recorder, stop_check=stop_check)

    monkeypatch.setattr(run_cli, "load_scenario", load)
    monkeypatch.setattr(run_cli, "run_scenario", run)
    assert (
        main(["run", str(scenario(tmp_path, "s")), "--seed", "7", "--out", str(tmp_path / "o")])
        == 0
    )
    assert seen == [7]


def test_quiet_prints_only_failures_and_the_summary(tmp_path, fakes, capsys):
    scenario(tmp_path, "ok")
    scenario(tmp_path, "overvolt", verdict="fail")
    assert main(["run", str(tmp_path), "-q", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].startswith("overvolt") and "1 passed, 1 failed" in out[2]


def test_default_output_folder_is_time_stamped_under_runs(tmp_path, monkeypatch, fakes, capsys):
    path = scenario(tmp_path / "lib", "s")
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(path)]) == 0
    (stamp,) = (tmp_path / "runs").iterdir()
    assert len(stamp.name) == len("20250101-120000") and (stamp / "s" / "can.blf").is_file()


SIGTERM_DRIVER = """
import sys, time
import bms.cli.run as run_cli
from bms.cli.main import main
sys.path.insert(0, {tests!r})
import test_run_cli as t

def slow_run(scenario, recorder, *, stop_check):
    def check():
        time.sleep(0.0002)  # a long scenario: about 5 simulated seconds per wall second
        return stop_check()
    return t.fake_run(scenario, recorder, stop_check=check)

run_cli.load_scenario = t.fake_load
run_cli.run_scenario = slow_run
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_with_exit_130_and_a_complete_log(tmp_path, signum):
    path = scenario(tmp_path, "long", ticks=10**7)
    driver = tmp_path / "driver.py"
    driver.write_text(SIGTERM_DRIVER.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(driver),
            "run",
            str(path),
            "--out",
            str(out),
            "--log-format",
            "blf,log",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("running long")
    blf = out / "long" / "can.blf"
    _wait_for(lambda: blf.exists() and blf.stat().st_size > 1000)  # a container written
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "INTERRUPTED" in stdout and "(interrupted)" in stdout
    result = json.loads((out / "long" / "results.json").read_text())
    assert result["error"].startswith("interrupted at ")
    frames = list(can.LogReader(blf))
    # Every frame up to the interrupt, in order, none missing: ticks 1..N on both buses.
    ticks = len(frames) // FRAMES_PER_TICK
    assert ticks > 1000 and len(frames) == result["frames"] == FRAMES_PER_TICK * ticks
    stamps = np.array([f.timestamp for f in frames[::FRAMES_PER_TICK]])
    np.testing.assert_allclose(stamps, np.arange(1, ticks + 1) * DT_S, atol=1e-9)
    assert len((out / "long" / "can.log").read_text().splitlines()) == len(frames)


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_run_is_the_first_verb_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    verbs = capsys.readouterr().out
    assert verbs.index("run") < verbs.index("simulate")


# ------------------------------------------------------------------ end to end, real scenarios
REAL = """\
name: {name}
pack: {{file: pack_a_96s, seed: 1, soc: 60 %, temp_c: 25}}
duration: {duration}
stimulus:
  - rest: 500 ms
  - request: drive
  - wait_for: {{signal: BmsState.BmsState, equals: DRIVE}}
    timeout: 5 s
  - current: {{value_a: 50, duration: {load}}}
expect:
  - eventually: {{signal: BmsState.BmsState, equals: DRIVE}}
    before: 5 s
  - never: {{truth: current_a, above: {max_a}}}
"""


def real_scenario(folder: Path, name: str, max_a: float = 60, duration: str = "6 s") -> Path:
    path = folder / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    load = "2 h" if duration.endswith("h") else "3 s"
    path.write_text(REAL.format(name=name, duration=duration, load=load, max_a=max_a))
    return path


def test_real_scenarios_pass_and_fail_for_the_right_reason(tmp_path, capsys):
    real_scenario(tmp_path / "lib", "drive-ok")
    real_scenario(tmp_path / "lib", "drive-overcurrent", max_a=40)  # we draw 50 A
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "lib"), "--out", str(out)]) == 1
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "PASS" in lines["drive-ok"]
    assert (
        "FAIL" in lines["drive-overcurrent"]
        and "never truth.current_a above 40" in lines["drive-overcurrent"]
    )
    result = json.loads((out / "drive-ok" / "results.json").read_text())
    assert result["sim_s"] == pytest.approx(6.0) and result["seed"] == 1
    frames = list(can.LogReader(out / "drive-ok" / "can.blf"))
    assert len(frames) == result["frames"] > 1000
    assert {f.channel for f in frames} == {0, 1}  # pack and vehicle bus
    assert max(f.timestamp for f in frames) <= 6.0 + 1e-9


def test_invalid_real_scenarios_exit_2_one_located_line_each(tmp_path, capsys):
    good = real_scenario(tmp_path, "good")
    typo = tmp_path / "typo.yaml"
    typo.write_text(good.read_text().replace("truth: current_a", "truth: curent_a"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nstimulus: [\n")
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2
    assert "broken.yaml:" in err[0] and "invalid YAML" in err[0]
    line = typo.read_text().splitlines().index("  - never: {truth: curent_a, above: 60}") + 1
    assert f"typo.yaml:{line}: " in err[1] and "curent_a" in err[1]
    assert "running" not in captured.out and not (tmp_path / "out" / "good").exists()


def test_same_scenario_and_seed_give_identical_frames_and_another_seed_does_not(tmp_path):
    path = real_scenario(tmp_path, "det")
    for out, seed in (("a", []), ("b", []), ("c", ["--seed", "2"])):
        assert main(["run", str(path), "-q", "--out", str(tmp_path / out), *seed]) == 0
    blf = {out: (tmp_path / out / "det" / "can.blf").read_bytes() for out in "abc"}
    assert blf["a"] == blf["b"]  # timestamps included: the file is byte-identical
    assert (tmp_path / "a/det/trace.csv").read_bytes() == (
        tmp_path / "b/det/trace.csv"
    ).read_bytes()
    assert blf["c"] != blf["a"]
    assert json.loads((tmp_path / "c/det/results.json").read_text())["seed"] == 2


def test_sigterm_on_a_long_real_scenario_leaves_every_frame_up_to_the_interrupt(tmp_path):
    path = real_scenario(tmp_path, "long", duration="2 h")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bms", "run", str(path), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("running long")
    blf = out / "long" / "can.blf"
    _wait_for(lambda: blf.exists() and blf.stat().st_size > 1000)  # frames on disk: mid-run
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "INTERRUPTED" in stdout
    result = json.loads((out / "long" / "results.json").read_text())
    stopped_s = float(result["error"].split()[2])
    assert 1.0 < stopped_s < 600.0 and result["sim_s"] == pytest.approx(stopped_s)
    frames = list(can.LogReader(blf))
    assert len(frames) == result["frames"]
    # The 10 ms PackCurrent frame (0x108) is there for every tick up to the interrupt.
    stamps = np.array([f.timestamp for f in frames if f.arbitration_id == 0x108 and f.channel == 0])
    np.testing.assert_allclose(np.diff(stamps), DT_S, atol=1e-6)
    assert stamps[-1] == pytest.approx(stopped_s, abs=0.1)
