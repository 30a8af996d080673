"""``bms run SCENARIO --realtime [--dut external]``: scenarios paced in real time on a real
python-can interface, judged from bus traffic and plant truth as in simulated runs, with the
lateness of every cyclic frame reported and held against the scenario's ``realtime:`` budget.

The external-DUT test runs three processes on 127.0.0.1: a python-can-remote server, ``bms run``
and ``bms node bms``. Every child is ended in ``finally`` and every wait has a timeout. Budgets in
the passing scenarios are generous: CI boxes are shared and these tests check the wiring and the
figures, not the machine (tools/bench_jitter.py measures the machine).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import can
import numpy as np
import pytest

from bms.bench.realtime import JitterBudget
from bms.bench.remote import read_line, stop_process
from bms.cli.main import main
from bms.errors import InputError
from bms.scenario.schema import load_scenario

#: Longest any child may take to start or finish before the test gives up (s).
CHILD_TIMEOUT_S = 60.0
BMS_STATE_ID, CONTACTOR_CMD_ID, VEHICLE_REQUEST_ID = 0x220, 0x100, 0x210

DRIVE = """\
    name: {name}
    pack: {{file: pack_a_96s, seed: 3, soc: 60 %, temp_c: 25}}
    duration: {duration}
    realtime: {realtime}
    stimulus:
      - wait_for: {{signal: BmsState.BmsState, equals: STANDBY}}
        timeout: {standby_timeout}
      - request: drive
      - wait_for: {{signal: BmsState.BmsState, equals: DRIVE}}
        timeout: 5 s
      - power: {{value_kw: 20, duration: 1500 ms}}
    {faults}
    expect:
      - eventually: {{signal: BmsState.BmsState, equals: DRIVE}}
      - eventually: {{truth: contactors_open, equals: false}}
      - eventually: {{truth: current_a, above: 20}}
      - never: {{signal: BmsState.BmsState, equals: ERROR}}
      - faults: {{none_except: []}}
"""
#: Wide enough for a loaded 2-core CI box; the impossible budget below is what must fail.
GENEROUS = "{p99: 50 ms, max: 500 ms}"


def write_scenario(folder: Path, name: str, **fields: str) -> Path:
    values = {
        "name": name,
        "duration": "5 s",
        "realtime": GENEROUS,
        "standby_timeout": "3 s",
        "faults": "",
        **fields,
    }
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(DRIVE).format(**values))
    return path


def results(out: Path, name: str) -> dict:
    return json.loads((out / name / "results.json").read_text())


def frames(out: Path, name: str) -> list[can.Message]:
    return list(can.LogReader(out / name / "can.blf"))


def times_of(log: list[can.Message], frame_id: int) -> np.ndarray:
    return np.array([m.timestamp for m in log if m.arbitration_id == frame_id])


def check_timing(result: dict) -> None:
    """A real-time result carries the timing report: lateness figures of real frames."""
    timing = result["timing"]
    assert timing["frames"] > 0 and timing["ticks"] > 0
    assert 0.0 <= timing["frame_p50_s"] <= timing["frame_p99_s"] <= timing["frame_max_s"]
    assert timing["overruns"] >= 0
    # Paced in real time, not simulated as fast as possible.
    assert result["wall_s"] >= 0.95 * result["sim_s"]


# ----------------------------------------------------------------------------- internal BMS
def test_internal_bms_on_the_virtual_interface_reaches_drive_and_reports_lateness(tmp_path, capsys):
    # The VCU is silenced for 500 ms once driving: less than the BMS's 1 s request timer.
    fault = "faults: [{at: 4 s, duration: 500 ms, node: vcu, action: stop}]"
    path = write_scenario(tmp_path, "rt-internal", duration="5500 ms", faults=fault)
    out = tmp_path / "out"
    argv = ["run", str(path), "--realtime", "-i", "virtual", "-c", "h16-internal"]
    status = main([*argv, "--bus-kwargs", "ignore_config=True", "--out", str(out), "--no-report"])
    table = capsys.readouterr().out
    result = results(out, "rt-internal")
    assert status == 0, table
    assert result["passed"] and result["dut"] == "internal"
    budget = [e for e in result["expectations"] if e["name"] == "jitter budget"]
    assert len(budget) == 1 and budget[0]["passed"]
    check_timing(result)
    assert "lateness p50/p99/max" in table and " ms " in table.splitlines()[-2]

    log = frames(out, "rt-internal")
    assert len(log) == result["frames"]  # the recorder saw every frame the tap counted
    cmd = times_of(log, CONTACTOR_CMD_ID)
    # Stamped in seconds since the run started, on the 10 ms grid of the BMS's command.
    assert 0.0 <= cmd[0] < 0.05 and cmd[-1] <= result["sim_s"] + 0.05
    assert np.all(np.diff(cmd) >= 0.0)
    assert np.median(np.diff(cmd)) == pytest.approx(0.01, abs=0.002)
    # The stopped VCU sends nothing for 500 ms from 4 s, and its 100 ms request otherwise.
    req = times_of(log, VEHICLE_REQUEST_ID)
    gaps = np.diff(req)
    k = int(np.argmax(gaps))
    assert gaps[k] == pytest.approx(0.5, abs=0.12) and req[k] == pytest.approx(4.0, abs=0.12)
    assert np.median(gaps) == pytest.approx(0.1, abs=0.01)
    events = [text.split(":")[0] for _, text in result["fault_events"]]
    assert events == ["on faults[0]", "off faults[0]"]


def test_an_impossible_jitter_budget_fails_the_run_on_the_budget_alone(tmp_path, capsys):
    path = write_scenario(tmp_path, "rt-tight", realtime="{p99: 1 us}", duration="3 s")
    out = tmp_path / "out"
    argv = ["run", str(path), "--realtime", "-i", "virtual", "-c", "h16-tight"]
    status = main([*argv, "--bus-kwargs", "ignore_config=True", "--out", str(out), "--no-report"])
    table = capsys.readouterr().out
    assert status == 1, table
    result = results(out, "rt-tight")
    failed = [e for e in result["expectations"] if not e["passed"]]
    assert [e["name"] for e in failed] == ["jitter budget"]  # the scenario itself passed
    assert "frame lateness p99" in failed[0]["detail"] and "> 0.001 ms" in failed[0]["detail"]
    assert result["budget"]["p99_s"] == pytest.approx(1e-6)
    check_timing(result)
    row = next(line for line in table.splitlines() if line.startswith("rt-tight"))
    assert "FAIL" in row and "jitter budget" in row


def test_sigterm_ends_a_realtime_run_with_complete_logs_and_exit_130(tmp_path):
    path = write_scenario(tmp_path, "rt-long", duration="60 s")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bms", "run", str(path), "--realtime", "-i", "virtual"]
    cmd += ["-c", "h16-term", "--bus-kwargs", "ignore_config=True", "--out", str(out)]
    run = subprocess.Popen([*cmd, "--no-report"], stdout=subprocess.PIPE, text=True)
    try:
        assert (read_line(run, CHILD_TIMEOUT_S) or "").startswith("running rt-long")
        time.sleep(2.5)
        run.send_signal(signal.SIGTERM)
        assert run.wait(CHILD_TIMEOUT_S) == 130
    finally:
        stop_process(run)
    result = results(out, "rt-long")
    assert result["error"].startswith("interrupted") and 1.5 < result["sim_s"] < 10.0
    cmd_times = times_of(frames(out, "rt-long"), CONTACTOR_CMD_ID)
    # Every 10 ms command up to the interrupt is in the closed log (no truncated tail); only
    # slots the loop itself reported missed (a stalled machine) may be absent.
    assert cmd_times[-1] == pytest.approx(result["sim_s"], abs=0.05)
    expected = int(round(cmd_times[-1] / 0.01))
    assert len(cmd_times) >= expected - result["timing"]["missed_slots"] - 2


# ----------------------------------------------------------------------------- external BMS
def test_external_bms_process_is_judged_from_its_frames_on_a_remote_bus(tmp_path):
    pytest.importorskip("can_remote", reason="python-can-remote is not installed (bench extra)")
    from bms.bench.remote import spawn_remote_server

    # The BMS process starts after the run: the scenario waits for it to answer in STANDBY.
    path = write_scenario(tmp_path, "rt-external", duration="9 s", standby_timeout="6 s")
    out = tmp_path / "out"
    server = spawn_remote_server("h16-external")
    run = bms = None
    try:
        bus = ["-i", "remote", "-c", server.url]
        run = subprocess.Popen(
            [sys.executable, "-m", "bms", "run", str(path), "--realtime", "--dut", "external"]
            + [*bus, "--out", str(out), "--no-report"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert (read_line(run, CHILD_TIMEOUT_S) or "").startswith("running rt-external")
        bms = subprocess.Popen(
            [sys.executable, "-m", "bms", "node", "bms", *bus, "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        table, err = run.communicate(timeout=CHILD_TIMEOUT_S)
        assert run.returncode == 0, f"{table}\n{err}"
    finally:
        for child in (bms, run):
            if child is not None:
                stop_process(child)
        server.close()
    result = results(out, "rt-external")
    assert result["passed"] and result["dut"] == "external"
    check_timing(result)
    assert "lateness p50/p99/max" in table
    log = frames(out, "rt-external")
    # No BMS ran in the runner: its commands and states are the other process's frames, logged
    # with the runner's time base (seconds since the run started), in order.
    cmd, state = times_of(log, CONTACTOR_CMD_ID), times_of(log, BMS_STATE_ID)
    assert len(cmd) > 100 and len(state) > 10
    assert 0.0 < cmd[0] < 6.0 and cmd[-1] <= result["sim_s"] + 0.05
    assert np.all(np.diff(cmd) >= 0.0)
    assert np.median(np.diff(cmd)) == pytest.approx(0.01, abs=0.003)


def test_external_dut_refuses_scenarios_that_need_the_emulated_bms(tmp_path, capsys):
    path = tmp_path / "internals.yaml"
    path.write_text(
        textwrap.dedent("""\
            pack: {file: pack_a_96s, soc: 60 %, stored_soc: 70 %}
            duration: 2 s
            faults:
              - {at: 1 s, node: vcu, action: stop}
              - {at: 1 s, node: bms, action: stop}
              - {at: 1 s, can: drop, message: BmsState}
            expect:
              - soc_error: {at_most: 2 %}
        """)
    )
    out = tmp_path / "out"
    argv = ["run", str(path), "--realtime", "--dut", "external", "-i", "virtual", "-c", "h16-x"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    where = [line.split(": ")[2:4] for line in err]
    assert [w[0].rsplit(":", 1)[1] for w in where] == ["1", "5", "6", "8"]  # located lines
    assert [w[1] for w in where] == [
        "pack.stored_soc",
        "faults[1].node",
        "faults[2].can",
        "expect[0].soc_error",
    ]
    assert all("--dut external" in line for line in err) and not out.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dut", "external"], "--dut external: needs --realtime"),
        (["-i", "virtual", "-c", "h16-flags"], "bus flags (-i/-c/-b/...): only with --realtime"),
    ],
)
def test_bench_flags_without_realtime_are_one_line_input_errors(tmp_path, capsys, argv, message):
    path = write_scenario(tmp_path, "flags")
    assert main(["run", str(path), *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not (tmp_path / "o").exists()


def test_an_interface_that_cannot_be_opened_is_a_one_line_run_error(tmp_path, capsys):
    pytest.importorskip("can_remote", reason="python-can-remote is not installed (bench extra)")
    path = write_scenario(tmp_path, "nobus")
    out = tmp_path / "out"
    # Port 9 on 127.0.0.1: nothing listens, the connection is refused at once.
    argv = ["run", str(path), "--realtime", "-i", "remote", "-c", "ws://127.0.0.1:9/"]
    status = main([*argv, "--out", str(out), "--no-report"])
    table = capsys.readouterr().out
    assert status == 1
    row = next(line for line in table.splitlines() if line.startswith("nobus"))
    assert "ERROR" in row and "bus: cannot open" in row


# ----------------------------------------------------------------------------- schema
def test_realtime_budget_reads_durations_and_microseconds_with_documented_defaults(tmp_path):
    plain = load_scenario(write_scenario(tmp_path, "a", realtime="{}"))
    assert plain.realtime == JitterBudget(p99_s=0.5e-3, max_s=5e-3, max_overruns=None)
    custom = load_scenario(
        write_scenario(tmp_path, "b", realtime="{p99: 500 us, max: 2 ms, max_overruns: 10}")
    )
    assert custom.realtime == JitterBudget(p99_s=5e-4, max_s=2e-3, max_overruns=10)
    for bad, problem in [
        ("{p99: fast}", "realtime.p99: expected a duration like '0.5 ms' or '500 us'"),
        ("{p99: 0 ms}", "realtime.p99: must be longer than 0 s"),
        ("{p99: 6 ms}", "realtime.p99: must not exceed max (5 ms)"),
        ("{max_overruns: -1}", "realtime.max_overruns: "),
        ("{jitter: 1 ms}", "realtime.jitter: unknown field"),
    ]:
        with pytest.raises(
            InputError, match=":4: " + problem.replace("(", r"\(").replace(")", r"\)")
        ):
            load_scenario(write_scenario(tmp_path, "c", realtime=bad))
