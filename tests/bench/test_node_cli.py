"""``bms node ROLE --log``: one node in real time on python-can's virtual interface; the log it
writes holds every frame it sent, on its DBC cycle, each passing the receiver's E2E checks."""

from __future__ import annotations

from pathlib import Path

import can
import numpy as np
import pytest

from bms.can import DbcCodecs, load_dbc
from bms.can.e2e import E2EReceiver
from bms.cli.main import main

LOOSE_BUDGET = ["--jitter-p99-ms", "1000", "--jitter-max-ms", "1000"]  # timing: test_realtime


def run_node(role: str, channel: str, log: Path, duration_s: float, capsys) -> dict[str, str]:
    argv = ["node", role, "-i", "virtual", "-c", channel, "--bus-kwargs", "ignore_config=True"]
    status = main(
        [*argv, "--duration", str(duration_s), "--log", str(log), "--quiet"] + LOOSE_BUDGET
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert status == 0, out
    assert out[0].startswith(f"bms node {role}: ready")
    return dict(pair.split("=", 1) for pair in out[-1].split())


def logged(path: Path, frame_id: int) -> list[can.Message]:
    with can.LogReader(path) as reader:
        return [m for m in reader if m.arbitration_id == frame_id and not m.is_error_frame]


def test_vehicle_node_logs_its_requests_every_100ms_with_valid_counters_and_crc(tmp_path, capsys):
    log = tmp_path / "vehicle.asc"
    report = run_node("vehicle", "node-cli-vcu", log, 0.55, capsys)
    codec = DbcCodecs(load_dbc("vehicle"))["VehicleRequest"]
    frames = logged(log, codec.frame_id)
    assert len(frames) == int(report["frames"]) and 5 <= len(frames) <= 6  # slots 0 .. 0.5 s
    receiver = E2EReceiver(codec)
    for msg in frames:
        ok, violations = receiver.check(bytes(msg.data), msg.timestamp)
        assert ok and violations == []
    assert np.diff([m.timestamp for m in frames]) == pytest.approx(0.1, abs=0.02)


def test_pack_node_logs_its_measurements_on_their_cycles(tmp_path, capsys):
    log = tmp_path / "pack.asc"
    report = run_node("pack", "node-cli-pack", log, 0.5, capsys)
    codecs = DbcCodecs(load_dbc("pack"))
    current = logged(log, codecs["PackCurrent"].frame_id)
    assert 48 <= len(current) <= 51 and int(report["missed_slots"]) == 0
    assert np.median(np.diff([m.timestamp for m in current])) == pytest.approx(0.01, abs=0.002)
    cells = codecs["CellVoltages"]
    groups = {
        cells.decode(bytes(m.data))[cells.mux.selector.index] for m in logged(log, cells.frame_id)
    }
    assert groups == set(cells.mux.group_ids[: -(-96 // cells.mux.slots)])  # groups of 96 cells
    status = codecs["PackStatus"]
    last = logged(log, status.frame_id)[-1]
    assert status.decode(bytes(last.data))[status.index["CellCount"]] == 96
