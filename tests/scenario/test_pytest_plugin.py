"""The pytest plugin: scenario YAML collected as items, readable failures, artifacts folders.

Run with ``pytester``. The inner sessions swap the scenario loader and runner for fakes (a
conftest patches the plugin module and restores it), so the plugin's own contract is checked fast;
the end-to-end test at the bottom runs a real scenario.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

# pytester's in-process runs drop modules they imported; numpy cannot be imported twice in one
# process, so it is loaded here, outside them.
import numpy  # noqa: F401
import pytest

pytest_plugins = ["pytester"]

#: Load the plugin explicitly unless the installed package already registers its entry point.
PLUGIN_ARGS = (
    []
    if any(ep.name == "bms_scenarios" for ep in importlib.metadata.entry_points(group="pytest11"))
    else ["-p", "bms.scenario.pytest_plugin"]
)

FAKES = """
import numpy as np
import can
from dataclasses import dataclass
import bms.scenario.pytest_plugin as plugin
from bms.errors import InputError
from bms.scenario.result import ExpectationResult, RunResult

@dataclass(frozen=True)
class Fake:
    name: str
    source: str
    seed: int
    verdict: str

def load(path):
    text = path.read_text()
    if "bad" in text:
        raise InputError(f"{path}:4: expect[0].always.signal: unknown message 'BmsLimitz'")
    return Fake(path.stem.upper(), str(path), 0, text.split()[1])

def run(scenario, recorder, *, stop_check=None):
    try:
        for tick in range(1, 101):
            msg = can.Message(timestamp=tick * 0.01, arbitration_id=0x220,
                              is_extended_id=False, data=bytes(8))
            recorder.on_frame(msg, "vehicle")
            recorder.on_sample(tick * 0.01, ["truth.soc_mean"], np.array([0.9]))
    finally:
        recorder.close()
    ok = scenario.verdict == "pass"
    exps = [
        ExpectationResult("limits respected", True, "max 24 A <= 25 A"),
        ExpectationResult("never overvoltage", ok, "held" if ok else
                          "truth.cell_voltage_max_v = 4.36 > 4.35", None if ok else 61.25),
        ExpectationResult("reaches ERROR", ok, "held" if ok else
                          "BmsState.BmsState never equal to ERROR before 300 s"),
    ]
    return RunResult(scenario.name, scenario.source, scenario.seed, passed=ok, sim_s=1.0,
                     expectations=exps, frames=100)

saved = {}

def pytest_configure(config):
    saved.update(load_scenario=plugin.load_scenario, run_scenario=plugin.run_scenario)
    plugin.load_scenario, plugin.run_scenario = load, run

def pytest_unconfigure(config):
    for name, value in saved.items():
        setattr(plugin, name, value)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(FAKES)
    pytester.mkdir("scenarios")
    pytester.mkdir("scenarios/packs")
    files = {
        "scenarios/drive_ok.yaml": "stimulus: pass\nexpect: []\n",
        "scenarios/overvolt.yml": "stimulus: fail\n",
        "scenarios/typo.yaml": "stimulus: pass\n\nexpect:\n  - bad\n",
        "scenarios/packs/pack_x.yaml": "topology: {series: 96}\n",  # not a scenario
        "scenarios/notes.md": "stimulus: not yaml\n",
    }
    for name, text in files.items():
        Path(pytester.path, name).write_text(text)
    return pytester


def test_each_scenario_file_is_one_item_and_other_yaml_is_left_alone(suite):
    result = suite.runpytest(*PLUGIN_ARGS, "scenarios", "--collect-only", "-q")
    lines = [line for line in result.outlines if "::" in line]
    assert lines == [
        "scenarios/drive_ok.yaml::drive_ok",
        "scenarios/overvolt.yml::overvolt",
        "scenarios/typo.yaml::typo",
    ]


def test_failures_list_each_failed_expectation_with_time_and_detail(suite):
    result = suite.runpytest(*PLUGIN_ARGS, "scenarios")
    result.assert_outcomes(passed=1, failed=2)
    text = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*scenario OVERVOLT (*overvolt.yml) failed after 1.000 s simulated",
            "  - never overvoltage at 61.250 s: truth.cell_voltage_max_v = 4.36 > 4.35",
            "  - reaches ERROR: BmsState.BmsState never equal to ERROR before 300 s",
            "  artifacts: *",
        ]
    )
    assert "typo.yaml:4: expect[0].always.signal: unknown message 'BmsLimitz'" in text
    assert "limits respected" not in text  # only the failed ones
    assert "Traceback" not in text and "pytest_plugin.py" not in text and "raise " not in text


def test_bms_out_puts_each_run_in_its_own_named_folder(suite):
    out = suite.path / "runs"
    result = suite.runpytest(
        *PLUGIN_ARGS, "scenarios", f"--bms-out={out}", "--bms-log-format=blf,log"
    )
    result.assert_outcomes(passed=1, failed=2)
    assert sorted(p.name for p in out.iterdir()) == ["DRIVE_OK", "OVERVOLT"]
    for folder in out.iterdir():
        assert {"can.blf", "can.log", "trace.csv", "results.json", "junit.xml"} <= {
            p.name for p in folder.iterdir()
        }
    data = json.loads((out / "OVERVOLT" / "results.json").read_text())
    assert data["passed"] is False and data["failures"] == 2


def test_artifacts_default_to_pytest_temporary_folders(suite):
    result = suite.runpytest(
        *PLUGIN_ARGS, "scenarios/overvolt.yml", f"--basetemp={suite.path / 't'}"
    )
    result.assert_outcomes(failed=1)
    (folder,) = (suite.path / "t").glob("bms-OVERVOLT[0-9]*")
    assert (folder / "can.blf").is_file()
    assert f"artifacts: {folder}" in result.stdout.str()


REAL = """\
name: {name}
pack: {{file: pack_a_96s, seed: 1, soc: 60 %}}
duration: 5 s
stimulus:
  - request: drive
  - wait_for: {{signal: BmsState.BmsState, equals: DRIVE}}
    timeout: 4 s
  - current: {{value_a: 50, duration: 2 s}}
expect:
  - never: {{truth: current_a, above: {max_a}}}
"""


def test_real_scenarios_run_as_items(pytester: pytest.Pytester):
    pytester.mkdir("scenarios")
    for name, max_a in (("fine", 60), ("overcurrent", 40)):
        Path(pytester.path, "scenarios", f"{name}.yaml").write_text(
            REAL.format(name=name, max_a=max_a)
        )
    result = pytester.runpytest(*PLUGIN_ARGS, "scenarios", f"--bms-out={pytester.path / 'runs'}")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["  - never truth.current_a above 40 at *s: *"])
    assert (pytester.path / "runs" / "overcurrent" / "can.blf").is_file()
