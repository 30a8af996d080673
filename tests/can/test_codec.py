"""Compiled codecs: bit-exact against cantools for every message, clamps counted, mux vectorised."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bms.can.codec import DbcCodecs, MessageCodec
from bms.can.dbc import load_dbc
from bms.errors import InputError

DATA = Path(__file__).parent / "data"
DBCS = ["pack", "vehicle", str(DATA / "mini.dbc")]


def _random_frame_values(codec: MessageCodec, rng: np.random.Generator, jitter: bool):
    """A dict of in-range physical values for one frame (one random group if multiplexed)."""
    if codec.mux is None:
        layouts = codec.signals
        group = None
    else:
        group = int(rng.choice(codec.mux.group_ids))
        layouts = (codec.mux.selector, *codec.mux.common, *codec.mux.groups[group])
    values = {}
    for s in layouts:
        raw = int(rng.integers(s.raw_min, s.raw_max + 1))
        # up to 0.4 LSB of noise must quantise back onto the same raw value
        noise = rng.uniform(-0.4, 0.4) * abs(s.scale) if jitter else 0.0
        values[s.name] = raw * s.scale + s.offset + noise
    if group is not None:
        values[codec.mux.selector.name] = group
    return values


@pytest.mark.parametrize("dbc", DBCS)
def test_every_message_round_trips_bit_exact_with_cantools(dbc: str) -> None:
    db = load_dbc(dbc)
    codecs = DbcCodecs(db)
    rng = np.random.default_rng(7)
    for name, codec in codecs.items():
        message = db.get_message_by_name(name)
        assert codec.is_extended_id == message.is_extended_frame
        for trial in range(60):
            jitter = trial % 2 == 1
            values = _random_frame_values(codec, rng, jitter)
            ours = codec.encode(values)
            # strict cantools rejects the +-0.4 LSB noise at the range ends; non-strict rounds
            theirs = message.encode(values, strict=not jitter, scaling=True)
            assert ours == theirs, (name, values)
            assert codec.decode_dict(ours) == message.decode(theirs, decode_choices=False)
        assert codecs.clamp_report() == {}, name


@pytest.mark.parametrize("dbc", DBCS)
def test_array_input_in_signal_order_equals_dict_input(dbc: str) -> None:
    codecs = DbcCodecs(load_dbc(dbc))
    rng = np.random.default_rng(3)
    for codec in codecs.values():
        values = _random_frame_values(codec, rng, jitter=False)
        full = codec.values_from(values)
        assert codec.encode(np.asarray(full, dtype=float)) == codec.encode(values)


def test_out_of_range_values_are_clamped_to_the_range_and_counted() -> None:
    db = load_dbc(DATA / "mini.dbc")
    codecs = DbcCodecs(db)
    codec = codecs["MiniStatus"]
    message = db.get_message_by_name("MiniStatus")
    # Temp_C range is [-55, 150] degC, Pressure_MPa [0, 12] MPa
    data = codec.encode({"Mode": 1, "Flag": 0, "Temp_C": 400.0, "Pressure_MPa": -3.0})
    expected = message.encode({"Mode": 1, "Flag": 0, "Temp_C": 150.0, "Pressure_MPa": 0.0})
    assert data == expected
    data = codec.encode({"Mode": 1, "Flag": 0, "Temp_C": -math.inf, "Pressure_MPa": 12.0004})
    expected = message.encode({"Mode": 1, "Flag": 0, "Temp_C": -55.0, "Pressure_MPa": 12.0})
    assert data == expected
    # 12.0004 MPa is within half an LSB of the range: quantised, not a clamp
    assert codecs.clamp_report() == {
        "MiniStatus": {"encode": {"Temp_C": 2, "Pressure_MPa": 1}, "decode": {}}
    }


def test_nan_encodes_the_start_value_and_is_counted() -> None:
    codec = DbcCodecs(load_dbc(DATA / "mini.dbc"))["MiniStatus"]
    data = codec.encode({"Mode": math.nan, "Flag": 1, "Temp_C": 20.0, "Pressure_MPa": 2.0})
    assert codec.decode_dict(data)["Mode"] == 2  # GenSigStartValue of Mode (DRIVE)
    assert codec.clamp_counts()["encode"] == {"Mode": 1}


def test_raw_values_outside_the_range_are_clamped_on_decode_and_counted() -> None:
    codec = DbcCodecs(load_dbc(DATA / "mini.dbc"))["MiniStatus"]
    # Mode is 3 bits (raw 0..7) but its DBC range is 0..4: raw 7 must read back as 4
    values = codec.decode_dict(bytes([0x07, 0, 0, 0, 0, 0, 0, 0]))
    assert values["Mode"] == 4
    assert codec.clamp_counts()["decode"] == {"Mode": 1}


def test_enums_are_raw_ints_both_ways_with_value_tables_for_display() -> None:
    codecs = DbcCodecs(load_dbc("vehicle"))
    codec = codecs["VehicleRequest"]
    table = codec.value_tables["RequestMode"]
    assert {table[k] for k in (0, 1, 2, 3)} == {"STANDBY", "DRIVE", "CHARGE", "NO_REQUEST"}
    drive = next(k for k, v in table.items() if v == "DRIVE")
    assert codec.decode_dict(codec.encode({"RequestMode": drive}))["RequestMode"] == drive


@pytest.mark.parametrize("cells", [96, 192])
def test_cell_voltage_groups_encode_from_one_array_and_decode_with_cantools(cells: int) -> None:
    db = load_dbc("pack")
    codec = DbcCodecs(db)["CellVoltages"]
    rng = np.random.default_rng(cells)
    voltage_v = rng.uniform(3.0, 4.3, cells)
    groups = cells // codec.mux.slots
    payloads = codec.encode_groups(voltage_v.reshape(groups, -1), group_ids=range(groups))
    assert len(payloads) == groups
    seen = np.full(cells, np.nan)
    for data in payloads:
        decoded = db.decode_message(codec.frame_id, data, decode_choices=False)
        group = decoded["CellGroup"]
        for k in range(4):
            seen[4 * group + k] = decoded[f"Cell{4 * group + k + 1:03d}_V"]
    # every cell present exactly once, to the DBC resolution (<= 1 mV)
    assert not np.isnan(seen).any()
    assert np.max(np.abs(seen - voltage_v)) <= 0.0005 + 1e-12
    # the vectorised decode agrees with the scalar one, group by group
    gids, slots, _ = codec.decode_groups(payloads)
    assert list(gids) == list(range(groups))
    for data, row in zip(payloads, slots, strict=True):
        scalar = codec.decode(data)
        group = int(scalar[codec.index["CellGroup"]])
        names = [s.name for s in codec.mux.groups[group]]
        assert [scalar[codec.index[n]] for n in names] == pytest.approx(row, abs=0)


def test_vectorised_group_encode_counts_clamps_per_signal() -> None:
    codec = DbcCodecs(load_dbc(DATA / "mini.dbc"))["MiniCells"]
    voltage_v = np.full((3, 4), 3.7)
    voltage_v[1, 2] = 9.0  # Cell007_V above its 5 V range
    voltage_v[2, 0] = np.nan  # Cell009_V invalid
    payloads = codec.encode_groups(voltage_v, {"Valid": 3})
    assert codec.clamp_counts()["encode"] == {"Cell007_V": 1, "Cell009_V": 1}
    assert codec.decode_dict(payloads[1])["Cell007_V"] == 5.0
    assert codec.decode_dict(payloads[2])["Cell009_V"] == 0.0
    assert codec.decode_dict(payloads[0])["Valid"] == 3


def test_shape_mismatch_is_an_input_error() -> None:
    codec = DbcCodecs(load_dbc(DATA / "mini.dbc"))["MiniCells"]
    with pytest.raises(InputError, match="shape"):
        codec.encode_groups(np.zeros((3, 3)))  # 4 cells per group
    with pytest.raises(InputError, match="shape"):
        codec.encode_groups(np.zeros((4, 4)))  # only 3 groups exist
    assert len(codec.encode_groups(np.full((2, 4), 3.7))) == 2  # a smaller pack: first groups


def test_unknown_signal_name_is_an_input_error() -> None:
    codec = DbcCodecs(load_dbc(DATA / "mini.dbc"))["MiniStatus"]
    with pytest.raises(InputError, match="no signal 'Nope'"):
        codec.encode({"Nope": 1.0})


def test_broken_or_missing_dbc_is_a_one_line_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dbc"
    bad.write_text('VERSION ""\nBO_ 1 X: 8 A\n SG_ S : 60|16@1+ (1,0) [0|1] "" B\n')
    with pytest.raises(InputError, match=r"bad\.dbc: DBC does not load: ") as info:
        load_dbc(bad)
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="missing.dbc: DBC does not load"):
        load_dbc(tmp_path / "missing.dbc")
