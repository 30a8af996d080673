"""Parameter files: shipped sets load; a bad file gives one line naming file, line and field."""

from __future__ import annotations

import pytest

from bms.cellmodel.params import dump_cell, load_cell
from bms.data import DATA_DIR, shipped
from bms.errors import InputError
from bms.pack import load_pack


@pytest.mark.parametrize("name", shipped("packs"))
def test_every_shipped_pack_loads_and_its_modules_divide_the_string(name):
    params = load_pack(name)
    top = params.topology
    assert top.series % top.modules == 0
    assert params.cell.capacity_ah == 90.0


def test_shipped_packs_match_domain_table():
    """DOMAIN.md section 3: pack A 96s1p in 8 x 12s, pack B 192s1p in 16 x 12s, C 120s3p."""
    tops = {n: load_pack(n).topology for n in ("pack_a_96s", "pack_b_192s", "pack_c_120s3p")}
    assert (tops["pack_a_96s"].series, tops["pack_a_96s"].series_per_module) == (96, 12)
    assert (tops["pack_b_192s"].series, tops["pack_b_192s"].series_per_module) == (192, 12)
    assert (tops["pack_c_120s3p"].series, tops["pack_c_120s3p"].parallel) == (120, 3)


def _edited(tmp_path, kind: str, old: str, new: str):
    source = DATA_DIR / kind / ("pack_a_96s.yaml" if kind == "packs" else "sslm90.yaml")
    text = source.read_text()
    assert old in text
    path = tmp_path / f"edited_{kind}.yaml"
    path.write_text(text.replace(old, new, 1))
    line = text[: text.index(old)].count("\n") + 1
    return path, line


@pytest.mark.parametrize(
    ("old", "new", "field", "problem"),
    [
        ("  series: 96", "  series: -4", "topology.series", "must be >= 1"),
        (
            "  series: 96",
            "  seriess: 96",
            "topology.series",
            "missing required field (is 'seriess' a typo?)",
        ),
        ("  parallel: 1", "  paralel: 1", "topology.paralel", "unknown field"),
        ("  preload_mpa: 2.0", "  preload_mpa: high", "fixture.preload_mpa", "expected a number"),
        (
            "  balancing_resistance_ohm: 100.0",
            "  balancing_resistance_ohm: 0",
            "hv.",
            "must be > 0",
        ),
    ],
)
def test_bad_pack_fields_are_located(tmp_path, old, new, field, problem):
    path, line = _edited(tmp_path, "packs", old, new)
    with pytest.raises(InputError) as err:
        load_pack(path)
    text = str(err.value)
    if field == "topology.series" and "typo" in problem:
        line -= 1  # a missing field is reported at its section's line
    assert text.startswith(f"{path}:{line}: {field}") and problem in text
    assert "\n" not in text


def test_a_decreasing_ocv_table_is_rejected(tmp_path):
    path, _ = _edited(tmp_path, "cells", "3.0236, 3.5341", "3.6, 3.5341")
    with pytest.raises(InputError, match=r"ocv\.voltage_v: must not decrease with SOC"):
        load_cell(path)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntopology: [1, 2\nseries: 3\n")
    with pytest.raises(InputError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_pack(path)


def test_yaml_tags_that_construct_objects_are_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_pack(path)


def test_a_cell_file_round_trips_through_dump_and_load(tmp_path):
    cell = load_cell("sslm90")
    dump_cell(cell, tmp_path / "copy.yaml")
    again = load_cell(tmp_path / "copy.yaml")
    assert again.capacity_ah == cell.capacity_ah
    assert (again.ocv.voltage_v == cell.ocv.voltage_v).all()
    assert again.resistance == cell.resistance
