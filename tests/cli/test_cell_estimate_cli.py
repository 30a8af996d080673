"""``bms cell fit`` and ``bms estimate`` end to end: files, exit status, one-line errors.

Traces come from an exact 2RC step response written here (constant temperature, no low-SOC R1
factor: the template passed with ``--template`` has none either), independent of the fitter.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from bms.cellmodel.params import CellParams, dump_cell, load_cell
from bms.cellmodel.trace import Trace, read_trace, write_trace
from bms.cli.main import main
from bms.firmware.soc import estimate_trace

HEADER = "time_s,current_a,voltage_v,temperature_c\n"


def _cell() -> CellParams:
    ref = load_cell("sslm90")
    res = dataclasses.replace(
        ref.resistance,
        r0_ohm=0.5e-3,
        r1_ohm=0.4e-3,
        r1_tau_s=6.0,
        r2_ohm=0.6e-3,
        r2_tau_s=350.0,
        r1_low_soc_gain=0.0,
    )
    return dataclasses.replace(ref, name="cli-cell", capacity_ah=60.0, resistance=res)


def _simulate(cell: CellParams, steps, soc0: float, seed: int = 0) -> tuple[Trace, np.ndarray]:
    """Exact response of the 2RC ECM to constant-current steps (current A, duration s, dt s,
    stop V), with 0.5 mV voltage noise; returns the trace and the true SOC."""
    rng = np.random.default_rng(seed)
    r = cell.resistance
    # OCV continued linearly below 0 % (as in the virtual pack) so the cut-off is reached.
    table = cell.ocv
    slope0 = (table.voltage_v[1] - table.voltage_v[0]) / table.soc[1]
    ocv_soc = np.concatenate(([-0.1], table.soc))
    ocv_v = np.concatenate(([table.voltage_v[0] - 0.1 * slope0], table.voltage_v))
    t0, soc, v1, v2 = 0.0, soc0, 0.0, 0.0
    parts = []
    for current_a, duration_s, dt_s, stop_v in steps:
        t = np.arange(1, int(round(duration_s / dt_s)) + 1) * dt_s
        soc_k = soc - current_a * t / (3600.0 * cell.capacity_ah)
        v1_k = r.r1_ohm * current_a + (v1 - r.r1_ohm * current_a) * np.exp(-t / r.r1_tau_s)
        v2_k = r.r2_ohm * current_a + (v2 - r.r2_ohm * current_a) * np.exp(-t / r.r2_tau_s)
        v_k = np.interp(soc_k, ocv_soc, ocv_v) - v1_k - v2_k - r.r0_ohm * current_a
        v_k = v_k + rng.normal(0.0, 0.0005, t.size)
        if stop_v is not None and np.any(v_k <= stop_v):
            n = int(np.argmax(v_k <= stop_v)) + 1
            t, soc_k, v1_k, v2_k, v_k = t[:n], soc_k[:n], v1_k[:n], v2_k[:n], v_k[:n]
        parts.append((t0 + t, np.full(t.size, current_a), v_k, soc_k))
        t0, soc, v1, v2 = t0 + t[-1], soc_k[-1], v1_k[-1], v2_k[-1]
    time_s, current, volt, soc_true = (np.concatenate(x) for x in zip(*parts, strict=True))
    return Trace(time_s, current, volt, np.full(time_s.size, 25.0)), soc_true


def _characterisation(capacity_ah: float):
    rest = [(0.0, 120.0, 1.0, None), (0.0, 1680.0, 10.0, None)]
    steps = [(0.0, 1800.0, 10.0, None)]
    for _ in range(4):
        steps += [
            (0.0, 10.0, 0.2, None),
            (capacity_ah, 10.0, 0.2, None),
            (0.0, 40.0, 0.2, None),
            (-0.75 * capacity_ah, 10.0, 0.2, None),
            (0.0, 60.0, 0.5, None),
            (capacity_ah, 0.2 * 3600.0, 2.0, None),
            *rest,
        ]
    steps.append((0.1 * capacity_ah, 10 * 3600.0, 5.0, 3.0))
    return steps


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Template, characterisation test and a 2 h drive as files."""
    root = tmp_path_factory.mktemp("cli")
    cell = _cell()
    template = dataclasses.replace(load_cell("sslm90"), resistance=cell.resistance)
    dump_cell(template, root / "template.yaml")
    dump_cell(cell, root / "cell.yaml")
    char, _ = _simulate(cell, _characterisation(cell.capacity_ah), 1.0)
    write_trace(root / "char.csv", char)
    rng = np.random.default_rng(4)
    drive_steps = [(0.0, 60.0, 1.0, None)] + [
        (float(rng.normal(12.0, 30.0)), float(rng.integers(5, 60)), 1.0, None) for _ in range(120)
    ]
    drive, truth = _simulate(cell, drive_steps, 0.9, seed=1)
    write_trace(root / "drive.csv", drive)
    return root, cell, truth


def _fit(root, capsys) -> tuple[int, str, str]:
    code = main(
        ["cell", "fit", str(root / "char.csv"), "-o", str(root / "fitted.yaml"),
         "--template", str(root / "template.yaml"), "--name", "my-cell"]
    )  # fmt: skip
    out, err = capsys.readouterr()
    return code, out, err


def test_cell_fit_writes_a_loadable_cell_and_prints_the_summary(files, capsys):
    root, cell, _ = files
    code, out, err = _fit(root, capsys)
    assert code == 0, err
    fitted = load_cell(root / "fitted.yaml")
    assert fitted.name == "my-cell"
    assert fitted.capacity_ah == pytest.approx(cell.capacity_ah, rel=0.005)
    assert fitted.resistance.r0_ohm == pytest.approx(cell.resistance.r0_ohm, rel=0.05)
    assert "capacity" in out and "60." in out
    assert "replay error" in out and "RMS" in out
    assert "carried over" in out and "ccd" in out


def test_estimate_writes_the_bms_filter_output(files, capsys):
    root, cell, truth = files
    out_csv = root / "soc.csv"
    code = main(
        ["estimate", "--cell", str(root / "cell.yaml"), str(root / "drive.csv"),
         "-o", str(out_csv)]
    )  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    lines = out_csv.read_text().splitlines()
    assert lines[0] == "time_s,soc,soc_sigma"
    data = np.loadtxt(out_csv, delimiter=",", skiprows=1)
    drive = read_trace(root / "drive.csv")
    np.testing.assert_allclose(data[:, 0], drive.time_s, rtol=1e-9)
    assert np.all((data[:, 1] >= 0.0) & (data[:, 1] <= 1.0))
    # The very code of the BMS: identical to calling the firmware's estimator directly.
    soc, sigma = estimate_trace(
        load_cell(root / "cell.yaml"),
        drive.time_s,
        drive.current_a,
        drive.voltage_v,
        drive.temperature_c,
    )
    np.testing.assert_allclose(data[:, 1], np.clip(soc, 0, 1), atol=1e-9)
    np.testing.assert_allclose(data[:, 2], sigma, rtol=1e-8)
    # Started at rest, as the BMS does: from OCV, and it tracks the truth.
    assert abs(data[0, 1] - truth[0]) < 0.02
    assert np.max(np.abs(data[:, 1] - truth)) < 0.02


def test_estimate_honours_the_initial_soc(files, capsys):
    root, _, truth = files
    drive = read_trace(root / "drive.csv")
    runs = {}
    for name, extra in (("given", ["--initial-soc", "0.4"]), ("ocv", [])):
        out_csv = root / f"soc_{name}.csv"
        argv = ["estimate", "--cell", str(root / "cell.yaml"), str(root / "drive.csv"),
                "-o", str(out_csv), *extra]  # fmt: skip
        assert main(argv) == 0, capsys.readouterr().err
        runs[name] = np.loadtxt(out_csv, delimiter=",", skiprows=1)
    soc, _ = estimate_trace(
        load_cell(root / "cell.yaml"),
        drive.time_s,
        drive.current_a,
        drive.voltage_v,
        drive.temperature_c,
        initial_soc=0.4,
    )
    np.testing.assert_allclose(runs["given"][:, 1], np.clip(soc, 0, 1), atol=1e-9)
    assert np.any(np.abs(runs["given"][:, 1] - runs["ocv"][:, 1]) > 0.01)
    # Whatever the start, the voltage pulls the estimate to the truth within 10 min.
    late = runs["given"][:, 0] - runs["given"][0, 0] >= 600.0
    assert np.max(np.abs(runs["given"][late, 1] - truth[late])) < 0.02


BAD_TRACES = {
    "missing_column": ("time_s,current_a,voltage_v\n0,0,4\n", ":1: temperature_c: missing column"),
    "time_not_increasing": (HEADER + "0,0,4,25\n5,0,4,25\n5,0,4,25\n", ":4: time_s: not incr"),
    "nan": (HEADER + "0,0,4,25\n1,0,NaN,25\n", ":3: voltage_v: not a finite number"),
    "text": (HEADER + "0,0,4,25\n1,ten,4,25\n", ":3: current_a: not a number: 'ten'"),
    "empty": ("", ":1: empty file"),
    "binary": (b"\x00\x01\x02PK\x03\x04", ": not a text file"),
}


def _argv(command: str, root, trace_path, cell_path=None) -> list[str]:
    out = str(root / "out.any")
    if command == "fit":
        return ["cell", "fit", str(trace_path), "-o", out]
    return ["estimate", "--cell", str(cell_path or "sslm90"), str(trace_path), "-o", out]


def _one_line_error(capsys) -> str:
    out, err = capsys.readouterr()
    assert err.startswith("bms: error: ")
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", ["fit", "estimate"])
@pytest.mark.parametrize("kind", sorted(BAD_TRACES))
def test_bad_trace_exits_2_with_one_located_line(tmp_path, capsys, command, kind):
    content, expected = BAD_TRACES[kind]
    path = tmp_path / f"{kind}.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(_argv(command, tmp_path, path)) == 2
    err = _one_line_error(capsys)
    assert f"{path}{expected}" in err


@pytest.mark.parametrize("command", ["fit", "estimate"])
def test_missing_trace_file_exits_2(tmp_path, capsys, command):
    path = tmp_path / "absent.csv"
    assert main(_argv(command, tmp_path, path)) == 2
    assert f"{path}: cannot read" in _one_line_error(capsys)


def test_estimate_rejects_a_cell_file_that_does_not_validate(files, tmp_path, capsys):
    root, _, _ = files
    bad = tmp_path / "bad_cell.yaml"
    text = (root / "template.yaml").read_text().replace("r2_tau_s: 350", "r2_tau_s: 2")
    bad.write_text(text)
    assert main(_argv("estimate", root, root / "drive.csv", bad)) == 2
    err = _one_line_error(capsys)
    assert f"{bad}:" in err and "resistance.r2_tau_s: must be longer than r1_tau_s" in err


def test_fit_rejects_a_template_that_does_not_validate(files, tmp_path, capsys):
    root, _, _ = files
    bad = tmp_path / "bad_template.yaml"
    bad.write_text((root / "template.yaml").read_text().replace("capacity_ah:", "capacity_ahh:"))
    code = main(["cell", "fit", str(root / "char.csv"), "-o", str(tmp_path / "o.yaml"),
                 "--template", str(bad)])  # fmt: skip
    assert code == 2
    assert f"{bad}:" in _one_line_error(capsys)


def test_fit_rejects_a_trace_that_is_no_characterisation_test(files, capsys):
    root, _, _ = files
    assert main(_argv("fit", root, root / "drive.csv")) == 2
    assert "the test must" in _one_line_error(capsys)


@pytest.mark.parametrize("value", ["abc", "1.5", "-0.1", "nan"])
def test_estimate_rejects_a_bad_initial_soc(files, capsys, value):
    root, _, _ = files
    argv = _argv("estimate", root, root / "drive.csv") + ["--initial-soc", value]
    assert main(argv) == 2
    assert "--initial-soc: expected a fraction 0..1" in _one_line_error(capsys)


def test_unwritable_output_exits_2(files, capsys):
    root, _, _ = files
    argv = ["estimate", "--cell", "sslm90", str(root / "drive.csv"),
            "-o", str(root / "no_such_dir" / "out.csv")]  # fmt: skip
    assert main(argv) == 2
    assert "cannot write" in _one_line_error(capsys)


def test_ten_hour_1hz_trace_is_estimated_in_seconds(tmp_path, capsys):
    cell = _cell()
    rng = np.random.default_rng(9)
    steps = [(float(rng.normal(2.0, 25.0)), 60.0, 1.0, None) for _ in range(600)]
    trace, _ = _simulate(cell, steps, 0.9)
    assert trace.time_s[-1] == pytest.approx(36000.0)
    path = tmp_path / "ten_hours.csv"
    write_trace(path, trace)
    start = time.perf_counter()
    code = main(["estimate", "--cell", "sslm90", str(path), "-o", str(tmp_path / "o.csv")])
    elapsed_s = time.perf_counter() - start
    assert code == 0, capsys.readouterr().err
    print(f"10 h at 1 Hz ({trace.time_s.size} samples): {elapsed_s:.2f} s")
    assert elapsed_s < 30.0  # "a few seconds" on a laptop; generous for a loaded CI runner


def test_fit_with_unwritable_output_exits_2(files, capsys):
    root, _, _ = files
    argv = ["cell", "fit", str(root / "char.csv"), "-o", str(root / "missing" / "c.yaml")]
    assert main(argv) == 2
    assert "cannot write" in _one_line_error(capsys)
