"""Trace CSV reading: the format of the issue, and one located line for every kind of bad input."""

from __future__ import annotations

import numpy as np
import pytest

from bms.cellmodel.trace import Trace, read_trace, write_estimate, write_trace
from bms.errors import InputError

HEADER = "time_s,current_a,voltage_v,temperature_c\n"


def _write(tmp_path, text: str | bytes, name: str = "t.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(path) -> str:
    with pytest.raises(InputError) as info:
        read_trace(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_round_trip_keeps_every_value_exactly(tmp_path):
    rng = np.random.default_rng(1)
    time_s = np.cumsum(rng.uniform(0.05, 3.0, 500))  # irregular sampling is allowed
    trace = Trace(
        time_s,
        rng.normal(10.0, 50.0, 500),
        rng.uniform(3.0, 4.3, 500),
        rng.uniform(20.0, 30.0, 500),
    )
    path = tmp_path / "t.csv"
    write_trace(path, trace)
    back = read_trace(path)
    for name in ("time_s", "current_a", "voltage_v", "temperature_c"):
        np.testing.assert_allclose(getattr(back, name), getattr(trace, name), rtol=1e-9)
    assert back.line[0] == 2 and back.line[-1] == 501


def test_extra_columns_order_blank_lines_and_spaces_are_accepted(tmp_path):
    text = "note, temperature_c ,voltage_v,time_s,current_a\na,25,4.1,0,0\n\nb,25.5,4.0,1.5,-2.5\n"
    trace = read_trace(_write(tmp_path, text))
    np.testing.assert_array_equal(trace.time_s, [0.0, 1.5])
    np.testing.assert_array_equal(trace.current_a, [0.0, -2.5])
    np.testing.assert_array_equal(trace.voltage_v, [4.1, 4.0])
    np.testing.assert_array_equal(trace.temperature_c, [25.0, 25.5])
    np.testing.assert_array_equal(trace.line, [2, 4])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time_s,current_a,voltage_v\n0,0,4\n", ":1: temperature_c: missing column"),
        (HEADER + "0,0,4,25\n1,0,4,25\n1,0,4,25\n", ":4: time_s: not increasing (1 after 1)"),
        (HEADER + "0,0,4,25\n2,0,4,25\n1,0,4,25\n", ":4: time_s: not increasing (1 after 2)"),
        (HEADER + "0,0,4,25\n1,nan,4,25\n", ":3: current_a: not a finite number: 'nan'"),
        (HEADER + "0,0,4,25\n1,0,inf,25\n", ":3: voltage_v: not a finite number: 'inf'"),
        (HEADER + "0,0,4,25\n1,0,4,warm\n", ":3: temperature_c: not a number: 'warm'"),
        (HEADER + "0,0,4,25\n1,0,\n", ":3: expected 4 fields, got 3"),
        (HEADER + "0,0,,25\n", ":2: voltage_v: not a number: ''"),
        (HEADER, ":1: no data rows after the header"),
        ("", ":1: empty file"),
        ("\n  \n", ":1: empty file"),
    ],
)
def test_bad_text_gives_one_located_line(tmp_path, text, expected):
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(str(path))
    assert expected in message


def test_binary_file_is_rejected(tmp_path):
    path = _write(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert "not a text file" in _error(path)


def test_non_utf8_file_is_rejected(tmp_path):
    path = _write(tmp_path, HEADER.encode() + b"0,0,4,25\xff\n")
    assert "not UTF-8" in _error(path)


def test_missing_file_is_rejected(tmp_path):
    path = tmp_path / "nope.csv"
    message = _error(path)
    assert message.startswith(f"{path}: cannot read")


def test_write_estimate_has_the_issue_header(tmp_path):
    path = tmp_path / "out.csv"
    write_estimate(path, np.array([0.0, 1.0]), np.array([0.5, 0.49]), np.array([0.01, 0.01]))
    lines = path.read_text().splitlines()
    assert lines[0] == "time_s,soc,soc_sigma"
    assert [float(x) for x in lines[2].split(",")] == [1.0, 0.49, 0.01]
