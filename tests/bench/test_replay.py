"""Replay: a recorded closed-loop run replays into a fresh BMS model with zero divergences; a BMS
whose cell over-voltage info threshold is 4.20 V instead of 4.30 V diverges first where the
ladder's up/down debounce (protection.py docstring) says, computed from the logged cell frames."""

from __future__ import annotations

import bisect
from pathlib import Path

import cantools
import pytest

from bms.bench.replay import BusRecorder, read_log, replay_bms, system_channels
from bms.cli.main import main
from bms.data import DATA_DIR
from bms.errors import InputError
from bms.pack import InitialState
from bms.sim.system import System, SystemConfig

TICK_S = 0.01
RUN_TICKS = 1500  # 15 s of charging from 90.5 % SOC: cells cross 4.20 V
OV_INFO = "info:    {threshold: 4.30, set_s: 0.5, hysteresis: 0.02}"
NEW_THRESHOLD_V = 4.20
SET_S = 0.5


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "charge.blf"
    system = System(SystemConfig(initial=InitialState(soc=0.905), seed=3))
    with system, BusRecorder(path, system_channels(system)) as recorder:
        system.request("charge")
        for _ in range(RUN_TICKS):
            system.step()
            recorder.drain()
    return path


def _bms_config_with_ov_info(tmp_path: Path, threshold_v: float) -> Path:
    ladder = (DATA_DIR / "firmware" / "protection.yaml").read_text()
    assert OV_INFO in ladder, "the shipped ladder changed: update this test's threshold line"
    changed = tmp_path / "protection_ov.yaml"
    changed.write_text(ladder.replace(OV_INFO, OV_INFO.replace("4.30", f"{threshold_v:.2f}")))
    config = (DATA_DIR / "firmware" / "bms_pack_a_96s.yaml").read_text()
    out = tmp_path / "bms_ov.yaml"
    out.write_text(config.replace("protection: protection", f"protection: {changed}"))
    return out


def _expected_set_time_s(messages: list, threshold_v: float) -> float | None:
    """First 10 ms tick where the up/down timer of 'max cell voltage > threshold' reaches set_s,
    the maximum taken over the logged CellVoltages frames as the BMS received them."""
    db = cantools.database.load_file(str(DATA_DIR / "dbc" / "pack.dbc"))
    cells: dict[str, float] = {}
    times, maxima = [], []
    for msg in messages:
        if msg.arbitration_id == 0x150 and not msg.is_extended_id:
            for name, value in db.decode_message(0x150, msg.data, decode_choices=False).items():
                if name.startswith("Cell") and name.endswith("_V"):
                    cells[name] = value
            if times and times[-1] == msg.timestamp:
                maxima[-1] = max(cells.values())
            else:
                times.append(msg.timestamp)
                maxima.append(max(cells.values()))
    up_s, prev_over = 0.0, False
    for k in range(1, RUN_TICKS + 1):
        t = k * TICK_S
        i = bisect.bisect_right(times, t + 1e-9) - 1
        if i < 0:
            continue
        over = maxima[i] > threshold_v
        if over and prev_over:
            up_s += TICK_S
        elif not over and not prev_over:
            up_s = max(0.0, up_s - TICK_S)
        prev_over = over
        if over and up_s >= SET_S - 1e-6:
            return t
    return None


def test_replaying_the_recorded_run_reproduces_every_bms_frame(recorded: Path):
    messages = read_log(recorded)
    result = replay_bms(messages)
    assert result.total_divergences == 0, [d.describe() for d in result.divergences]
    assert result.expected_frames > 3000 and result.compared == result.expected_frames
    assert result.steps == RUN_TICKS


def test_a_lower_ov_info_threshold_diverges_first_where_the_debounce_sets(
    recorded: Path, tmp_path: Path
):
    messages = read_log(recorded)
    expected_s = _expected_set_time_s(messages, NEW_THRESHOLD_V)
    assert expected_s is not None and _expected_set_time_s(messages, 4.30) is None
    result = replay_bms(messages, _bms_config_with_ov_info(tmp_path, NEW_THRESHOLD_V))
    first = result.first
    assert first is not None
    assert first.name == "BmsState" and first.kind == "data"
    assert first.expected == {"FaultInfo": 0.0, "CRC8": pytest.approx(first.expected["CRC8"])}
    assert first.got["FaultInfo"] == 1.0
    assert min(first.time_s, first.got_time_s) == pytest.approx(expected_s, abs=TICK_S + 1e-9)


def test_bms_replay_cli_exit_codes(recorded: Path, tmp_path: Path, capsys):
    assert main(["replay", str(recorded)]) == 0
    assert "0 divergences" in capsys.readouterr().out
    config = _bms_config_with_ov_info(tmp_path, NEW_THRESHOLD_V)
    assert main(["replay", str(recorded), "--config", str(config), "--max", "2"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("t=") and "BmsState" in out[0] and len(out) == 3
    assert main(["replay", str(tmp_path / "missing.blf")]) == 2
    with pytest.raises(InputError, match="unknown log format"):
        read_log(config)
