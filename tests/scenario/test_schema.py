"""Scenario loading: every kind of malformed file is one located line, and good files load as
written (durations, percentages, defaults, relative paths)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bms.errors import InputError
from bms.scenario.schema import load_scenario
from bms.scenario.units import parse_duration_s, parse_fraction

DATA = Path(__file__).parent / "data"
BASE = "pack: {file: pack_a_96s}\nduration: 10 s\n"


def _write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250 ms", 0.25), ("120 s", 120.0), ("90s", 90.0), ("5 min", 300.0), ("2 h", 7200.0),
     ("1.5 h", 5400.0), (30, 30.0), (0.5, 0.5)],
)  # fmt: skip
def test_durations_follow_their_units(text, seconds):
    assert parse_duration_s(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["12 parsecs", "-1 s", "s", True, "1,5 h", None])
def test_bad_durations_are_rejected(text):
    with pytest.raises(ValueError, match="expected a duration like '120 s'"):
        parse_duration_s(text)


def test_percentages_and_fractions_mean_the_same_soc():
    assert parse_fraction("90 %") == pytest.approx(0.9) == parse_fraction(0.9)


def test_bad_duration_names_file_line_and_field(tmp_path):
    text = BASE + "faults:\n  - at: 1 s\n    node: bms\n    action: stop\n  - at: 12 parsecs\n"
    text += "    node: vcu\n    action: stop\n"
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}:{_line_of(text, 'parsecs')}: faults[1].at: " + (
        "expected a duration like '120 s'"
    )


UNTILL = "stimulus:\n  - rest: 1 s\n    untill: {truth: time_s, above: 1}\n"


@pytest.mark.parametrize(
    ("extra", "field"), [("duraton: 5 s\n", "duraton"), (UNTILL, "stimulus[0].untill")]
)
def test_unknown_keys_are_errors(tmp_path, extra, field):
    path = _write(tmp_path, BASE + extra)
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+: {re.escape(field)}: unknown.*", _error(path))


def test_unknown_key_inside_pack(tmp_path):
    path = _write(tmp_path, "pack:\n  file: pack_a_96s\n  sead: 3\nduration: 10 s\n")
    assert _error(path) == f"{path}:3: pack.sead: unknown field"


def test_missing_required_field(tmp_path):
    path = _write(tmp_path, "pack: {file: pack_a_96s}\n")
    assert _error(path).startswith(f"{path}:1: duration: missing required field")


def test_unknown_pack_fault_kind_lists_the_known_ones(tmp_path):
    path = _write(tmp_path, BASE + "faults:\n  - at: 1 s\n    pack: meteor_strike\n")
    message = _error(path)
    assert message.startswith(f"{path}:5: faults[0].pack: unknown pack fault 'meteor_strike'")
    assert "soft_short" in message


def test_fault_parameter_out_of_the_packs_range(tmp_path):
    text = (
        BASE + "faults:\n  - at: 1 s\n    pack: soft_short\n    cell: 200\n    resistance_ohm: 10\n"
    )
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}:6: faults[0].cell: cell 200 out of range 0..95"


def test_unknown_fault_parameter(tmp_path):
    text = (
        BASE + "faults:\n  - at: 1 s\n    pack: soft_short\n    cell: 2\n    resistanse_ohm: 10\n"
    )
    path = _write(tmp_path, text)
    assert re.match(rf"{re.escape(str(path))}:7: faults\[0\]\.resistanse_ohm: ", _error(path))


def test_bad_can_fault_parameter(tmp_path):
    text = (
        BASE
        + "faults:\n  - at: 1 s\n    can: skip_counter\n    message: BmsState\n    skip_by: 20\n"
    )
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}:7: faults[0].skip_by: must be <= 14, got 20"


def test_can_fault_on_an_unknown_message_suggests_close_names(tmp_path):
    text = BASE + "faults:\n  - at: 1 s\n    can: drop\n    message: BmsStat\n"
    path = _write(tmp_path, text)
    assert _error(path).startswith(f"{path}:6: faults[0].message: unknown message 'BmsStat'")
    assert "BmsState" in _error(path)


def test_unknown_signal_lists_close_names(tmp_path):
    text = BASE + "expect:\n  - always: {signal: BmsState.BmsStat, equals: DRIVE}\n"
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(f"{path}:4: expect[0].always.signal: message BmsState has no signal")
    assert "did you mean BmsState" in message


def test_unknown_enum_name_lists_the_value_table(tmp_path):
    text = BASE + "stop_when: {signal: BmsState.BmsState, equals: DRIVING}\n"
    path = _write(tmp_path, text)
    message = _error(path)
    assert message.startswith(
        f"{path}:3: stop_when.equals: BmsState.BmsState has no value 'DRIVING'"
    )
    assert "DRIVE" in message and "ERROR" in message


def test_unknown_truth_quantity(tmp_path):
    path = _write(tmp_path, BASE + "stop_when: {truth: soc_avg, below: 20 %}\n")
    assert "stop_when.truth: unknown truth quantity 'soc_avg'" in _error(path)


def test_bad_csv_profile_names_the_csv_line(tmp_path):
    text = BASE + "stimulus:\n  - current: {csv: profiles/bad_profile.csv}\n"
    path = _write(tmp_path, text)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "bad_profile.csv").write_text(
        (DATA / "profiles/bad_profile.csv").read_text()
    )
    message = _error(path)
    assert message.startswith(f"{path}:4: stimulus[0].current.csv: ")
    assert "bad_profile.csv:3: column current_a: expected a number, got 'abc'" in message


def test_missing_cycle_file(tmp_path):
    path = _write(tmp_path, BASE + "stimulus:\n  - drive: {cycle: cycles/nothere.csv}\n")
    message = _error(path)
    assert message.startswith(f"{path}:4: stimulus[0].drive.cycle: ")
    assert "nothere.csv: cannot read" in message


def test_unknown_shipped_cycle_lists_the_shipped_ones(tmp_path):
    path = _write(tmp_path, BASE + "stimulus:\n  - drive: {cycle: wltp}\n")
    assert "shipped: hwfet, udds" in _error(path)


def test_yaml_syntax_error(tmp_path):
    path = _write(tmp_path, BASE + "stimulus: [rest: 1 s\n")
    assert re.fullmatch(rf"{re.escape(str(path))}:\d+: invalid YAML: .*", _error(path))


def test_object_constructing_tag_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    text = BASE + f"name: !!python/object/apply:os.system ['touch {marker}']\n"
    path = _write(tmp_path, text)
    assert "invalid YAML" in _error(path)
    assert not marker.exists()


def test_empty_file(tmp_path):
    path = _write(tmp_path, "# nothing here\n")
    assert _error(path).startswith(f"{path}: empty scenario file")


def test_binary_file(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert _error(path) == f"{path}: not a text file"


def test_wrong_suffix(tmp_path):
    path = _write(tmp_path, BASE, name="x.json")
    assert "a scenario is a .yaml or .yml file" in _error(path)


def test_open_ended_segment_needs_an_end(tmp_path):
    path = _write(tmp_path, BASE + "stimulus:\n  - charge: {current_a: 45, voltage_v: 400}\n")
    assert "stimulus[0].charge: open-ended segment" in _error(path)


def test_within_must_refer_to_an_existing_fault(tmp_path):
    text = BASE + "expect:\n  - within: 1 s\n    after: faults[3]\n"
    text += "    condition: {truth: contactors_open, equals: true}\n"
    path = _write(tmp_path, text)
    assert _error(path) == f"{path}:5: expect[0].after: faults[3]: the scenario has 0 fault(s)"


def test_bms_configuration_must_match_the_pack(tmp_path):
    path = _write(tmp_path, "pack: {file: pack_b_192s, bms: bms_pack_a_96s}\nduration: 1 s\n")
    assert "pack.bms: BMS configuration" in _error(path)


def test_a_good_file_loads_as_written():
    sc = load_scenario(DATA / "short_drive.yaml")
    assert sc.name == "short-drive"
    assert sc.duration_s == 40.0 and sc.dt_s == 0.01
    assert sc.pack.seed == 3 and sc.pack.initial.soc == pytest.approx(0.6)
    assert sc.pack.initial.ambient_c == 25.0  # environment's first point
    kinds = [s.kind for s in sc.stimulus]
    assert kinds == ["rest", "request", "wait_for", "current", "current", "rest"]
    profile = sc.stimulus[4].series
    assert profile.length_s == 4.0
    assert [profile.at(t) for t in (0.0, 1.9, 2.0, 3.99)] == [20.0, 20.0, -10.0, -10.0]
    assert sc.faults[0].node == "bms" and sc.faults[0].bus == "vehicle"  # BmsSoc: sent by the BMS
    assert sc.expect[0].name == "limits stay within the rating"
    assert sc.expect[1].name == "never truth.cell_voltage_max_v above 4.35"


def test_relative_csv_paths_are_relative_to_the_scenario(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "pulse.csv").write_text((DATA / "profiles/pulse.csv").read_text())
    path = _write(tmp_path, BASE + "stimulus:\n  - current: {csv: p/pulse.csv, repeat: 2}\n")
    series = load_scenario(path).stimulus[0].series
    assert series.length_s == 8.0
    assert series.at(5.0) == 20.0  # second pass, first step
