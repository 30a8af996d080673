"""Run report: decoding the recorded run back, the figures, the page and the index.

The synthetic run of conftest.py has analytic cell voltages, temperatures and pressures, an open
sense wire, a BmsFaults list with one FATAL fault from 80 s to 100 s and one failed expectation:
the report must give those back, not merely produce files.
"""

from __future__ import annotations

import base64
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from bms.errors import InputError
from bms.report import ENABLE_HINT, build_index, build_report, report_available
from bms.report.data import load_results, load_run, load_trace_csv
from bms.report.figures import FIGURES, TimeAxis, intervals, thin

pytest.importorskip("matplotlib", reason="reports need the optional matplotlib extra")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG after checking signature, IHDR and every chunk's CRC."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name}: not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path.name}: bad CRC in {kind!r}"
        chunks.append(kind)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# ---------------------------------------------------------------------------------- decoding
def test_cell_matrix_round_trips_through_the_blf_log(synth, make_run):
    run = load_run(make_run())
    cells = run.matrices["CellVoltages"]
    expect_t = np.arange(0.0, 120.0, synth.CYCLE_S)
    np.testing.assert_allclose(cells.time_s, expect_t, atol=1e-9)
    assert cells.values.shape == (len(expect_t), synth.N_CELLS)
    expected = synth.cell_voltage_v(expect_t)
    # The open-wire slot is flagged in OpenWireMask from 30 s to 35 s: invalid, not plotted.
    bad = (expect_t >= 30.0) & (expect_t < 35.0)
    assert np.isnan(cells.values[bad, synth.OPEN_WIRE_CELL - 1]).all()
    assert np.isfinite(np.delete(cells.values, synth.OPEN_WIRE_CELL - 1, axis=1)).all()
    ok = np.isfinite(cells.values)
    # 1 mV resolution on the bus: within half an LSB of the analytic voltage.
    assert np.max(np.abs(cells.values[ok] - expected[ok])) <= 0.5e-3 + 1e-12


def test_temperatures_and_pressures_decode_to_the_sent_values(synth, make_run):
    run = load_run(make_run())
    t = np.arange(0.0, 120.0, synth.CYCLE_S)
    temps, press = run.matrices["CellTemperatures"], run.matrices["ModulePressures"]
    assert temps.channels == synth.N_SENSORS and press.channels == synth.N_MODULES
    assert np.max(np.abs(temps.values - synth.temp_c(t))) <= 0.05 + 1e-9  # 0.1 degC LSB
    assert np.max(np.abs(press.values - synth.pressure_mpa(t))) <= 0.0005 + 1e-9  # 1 kPa LSB


def test_bms_fault_list_becomes_one_interval_with_code_tier_and_location(synth, make_run):
    run = load_run(make_run())
    assert len(run.bms_faults) == 1
    fault = run.bms_faults[0]
    assert (fault.code, fault.tier, fault.location) == ("PRESSURE_LOW", "FATAL", synth.LOW_MODULE)
    # Frames at k*0.1 + 0.05 s: first at 80.05 s, last at 99.95 s.
    assert fault.start_s == pytest.approx(synth.FAULT_START_S + 0.05)
    assert fault.end_s == pytest.approx(synth.FAULT_END_S - 0.05)


def test_bms_state_flags_come_from_every_logged_frame_when_present(make_run):
    run = load_run(make_run())
    assert "BmsState" not in run.bus  # the synthetic log carries no BmsState frames
    assert run.value_tables["BmsState.BmsState"][3] == "DRIVE"


def test_trace_empty_cells_read_as_nan_and_values_exactly(make_run, tmp_path):
    path = make_run() / "trace.csv"
    names, data = load_trace_csv(path)
    assert names[0] == "time_s"
    col = names.index("BmsSoc.SocAvg_pct")
    t = data[:, 0]
    assert np.isnan(data[t < 0.5, col]).all() and np.isfinite(data[t >= 0.5, col]).all()
    np.testing.assert_allclose(data[t >= 0.5, col], 100 * (0.80 - 0.01 * t[t >= 0.5] / 60) + 0.5)
    first = tmp_path / "empty_first.csv"
    first.write_text("time_s,a,b\n0,,1\n0.1,2,\n", encoding="utf-8")
    _, small = load_trace_csv(first)
    np.testing.assert_array_equal(np.isnan(small), [[False, True, False], [False, False, True]])


# ---------------------------------------------------------------------------------- helpers
def test_time_axis_unit_follows_the_run_length():
    assert TimeAxis.for_duration(90.0).unit == "s"
    assert TimeAxis.for_duration(3600.0).unit == "min"
    assert TimeAxis.for_duration(10 * 3600.0).unit == "h"
    assert TimeAxis.for_duration(3600.0)(1800.0) == pytest.approx(30.0)


def test_thinning_keeps_a_single_sample_spike_and_bounds_the_points():
    rng = np.random.default_rng(4)
    t = np.arange(200_000) * 0.01
    y = rng.normal(0.0, 0.01, t.size)
    y[123_457] = 5.0
    tt, yy = thin(t, y, max_points=2000)
    assert len(tt) <= 2000 and yy.max() == 5.0 and yy.min() == y.min()
    assert np.all(np.diff(tt) >= 0)


def test_intervals_of_a_boolean_series():
    t = np.arange(10.0)
    on = np.array([0, 1, 1, 0, 0, 1, 0, 0, 1, 1], dtype=bool)
    assert intervals(t, on) == [(1.0, 3.0), (5.0, 6.0), (8.0, 9.0)]


# ---------------------------------------------------------------------------------- report
def test_report_writes_every_figure_as_a_valid_png_and_embeds_them(make_run):
    run_dir = make_run("fault-campaign", passed=False)
    report = build_report(run_dir)
    assert report == run_dir / "report.html"
    html = report.read_text(encoding="utf-8")
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(embedded) == len(FIGURES)
    for spec in FIGURES:
        width, height = png_size(run_dir / spec.file_name)
        assert width >= 800 and height >= 200, spec.file_name
        assert (run_dir / spec.file_name).read_bytes() in {base64.b64decode(e) for e in embedded}
    # Self-contained: no script, no external resource, nothing fetched over a network.
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r"src='([^']*)'", html)
    )
    assert all(
        href in {p.name for p in run_dir.iterdir()} for href in re.findall(r"href='([^']*)'", html)
    )
    assert "class='verdict fail'>FAIL<" in html
    failed_row = re.search(r"<tr class='fail'>.*?</tr>", html, re.S)
    assert failed_row and "never pressure below 0.8 MPa" in failed_row.group(0)
    assert "PRESSURE_LOW" in html and "on: pack pressure_loss module 3" in html


def test_report_of_a_run_without_can_log_still_has_every_figure_and_says_why(make_run):
    run_dir = make_run("no-log", passed=True)
    (run_dir / "can.blf").unlink()
    build_report(run_dir)
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "no CAN log" in html
    for spec in FIGURES:
        png_size(run_dir / spec.file_name)


def test_bad_run_folders_are_one_line_input_errors(tmp_path, make_run):
    with pytest.raises(InputError, match="no results.json"):
        build_report(tmp_path)
    run_dir = make_run("broken")
    (run_dir / "results.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"results.json: cannot read run results"):
        build_report(run_dir)
    run_dir = make_run("bad-trace")
    (run_dir / "trace.csv").write_text("time_s,a\n0,1\n0.1,x\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"trace.csv: malformed trace"):
        build_report(run_dir)


# ---------------------------------------------------------------------------------- index
def test_index_table_has_the_right_verdict_duration_and_link_per_scenario(tmp_path, make_run):
    passing = make_run("a-pass", passed=True)
    failing = make_run("b-fail", passed=False)
    make_run("c-error", passed=False, error="InputError: cell 200 out of range")
    build_report(passing)
    index = build_index(tmp_path)
    html = index.read_text(encoding="utf-8")
    rows = re.findall(r"<tr class='(\w+)'><td class='v'>(\w+)</td><td[^>]*>([^<]+)</td>", html)
    assert sorted((name, verdict) for _, verdict, name in rows) == [
        ("a-pass", "PASS"),
        ("b-fail", "FAIL"),
        ("c-error", "ERROR"),
    ]
    assert rows[-1][2] == "a-pass"  # failures first
    assert "href='a-pass/report.html'" in html
    assert "href='b-fail/results.json'" in html  # no report built for it: the JSON
    assert "2 min 00 s" in html  # 120 s simulated
    assert "never pressure below 0.8 MPa at 80.00 s" in html
    assert "1 passed, 1 failed, 1 errors" in html
    # Results handed over by `bms run` give the same verdicts without reading the folders.
    results = [load_results(d / "results.json")[0] for d in (passing, failing)]
    other = build_index(tmp_path / "elsewhere", results).read_text(encoding="utf-8")
    assert re.findall(r"<td class='v'>(\w+)</td>", other) == ["FAIL", "PASS"]


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, bms.report; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"
    assert report_available()
    assert "pip install 'ssbms[report]'" in ENABLE_HINT


# ---------------------------------------------------------------------------------- real run
SHORT_DRIVE = Path(__file__).resolve().parents[1] / "scenario" / "data" / "short_drive.yaml"


@pytest.mark.skipif(not SHORT_DRIVE.is_file(), reason="needs tests/scenario/data/short_drive.yaml")
def test_report_of_a_real_short_run_decodes_what_the_closed_loop_sent(tmp_path):
    from bms.scenario.artifacts import run_to_folder
    from bms.scenario.schema import load_scenario

    result = run_to_folder(load_scenario(SHORT_DRIVE), tmp_path / "short-drive")
    report = build_report(result.out_dir)
    for spec in FIGURES:
        assert png_size(result.out_dir / spec.file_name)[0] >= 800
    html = report.read_text(encoding="utf-8")
    assert "not recorded" not in html and "note" not in re.sub(
        r"<style>.*?</style>", "", html, flags=re.S
    )
    run = load_run(result.out_dir)
    cells = run.matrices["CellVoltages"]
    assert cells.channels == 96 and run.matrices["ModulePressures"].channels == 8
    # The AFE's measured maximum (1 mV steps, sensor error) tracks the plant's true maximum.
    truth_max = np.interp(cells.time_s, run.trace_time_s, run.trace["truth.cell_voltage_max_v"])
    assert np.nanmax(np.abs(np.nanmax(cells.values, axis=1) - truth_max)) < 0.010
    # Every BmsState frame was decoded from the log: the scenario reaches DRIVE with both mains.
    time_s, state = run.bus["BmsState"]
    drive = state["BmsState"] == 3
    assert drive.any() and (state["MainPlusClosed"][drive][-10:] == 1).all()
    assert len(time_s) >= result.sim_s / 0.1 - 1  # 100 ms cycle plus events
