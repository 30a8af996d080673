"""The pack and vehicle DBCs against the bus specification (issue 3) and the generated table."""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from pathlib import Path

import cantools
import pytest
from crccheck.crc import Crc8SaeJ1850

from bms.data import DATA_DIR
from bms.firmware.codes import BmsState, FaultCode, RequestMode, Tier

REPO_ROOT = Path(__file__).resolve().parents[2]
DBC_DIR = REPO_ROOT / "dbc"
BUSES = {"pack": ["PACK", "BMS"], "vehicle": ["BMS", "VCU", "CHARGER"]}
SEND_TYPES = {"Cyclic", "Event", "CyclicAndEvent"}

# Safety-relevant messages named in the issue: they must carry counter and CRC.
SAFETY_MESSAGES = {
    "pack": {"BmsContactorCmd", "BmsBalancingCmd"},
    "vehicle": {"VehicleRequest", "BmsState", "BmsLimits", "BmsVoltageLimits"},
}

# Unit expected for a signal-name suffix (house style: units in names).
UNIT_SUFFIXES = {
    "_V": "V",
    "_A": "A",
    "_C": "degC",
    "_P": "MPa",
    "_MPa": "MPa",
    "_pct": "%",
    "_kWh": "kWh",
    "_kW": "kW",
    "_ppm": "ppm",
    "_min": "min",
}

# Value table of FaultCode exactly as specified in the issue (shared with the firmware).
SPEC_FAULT_CODES = [
    "NONE",
    "CELL_OVERVOLTAGE",
    "CELL_UNDERVOLTAGE",
    "CHARGE_OVERCURRENT",
    "DISCHARGE_OVERCURRENT",
    "OVERTEMP_CHARGE",
    "OVERTEMP_DISCHARGE",
    "UNDERTEMP_CHARGE",
    "UNDERTEMP_DISCHARGE",
    "PRESSURE_LOW",
    "PRESSURE_HIGH",
    "PRESSURE_RATE",
    "H2S",
    "CELL_VOLTAGE_SPREAD",
    "VOLTAGE_PLAUSIBILITY",
    "TEMPERATURE_PLAUSIBILITY",
    "PRESSURE_PLAUSIBILITY",
    "CURRENT_PLAUSIBILITY",
    "PACK_COMM_TIMEOUT",
    "VEHICLE_COMM_TIMEOUT",
    "E2E_FAILURE",
    "THERMAL_RUNAWAY",
    "SOFT_SHORT",
    "PRECHARGE_FAILURE",
    "CONTACTOR_WELDED",
    "CONTACTOR_STUCK_OPEN",
    "OPEN_WIRE",
    "DEEP_DISCHARGE",
    "CHARGER_COMM_TIMEOUT",
]


def _load_tool():
    """Import tools/dbc_table.py (tools/ is not a package)."""
    name = "tools_dbc_table"
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "tools" / "dbc_table.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


dbc_table = _load_tool()


@pytest.fixture(scope="module")
def dbs() -> dict[str, cantools.database.can.Database]:
    return {
        name: cantools.database.load_file(str(DBC_DIR / f"{name}.dbc"), strict=True)
        for name in BUSES
    }


def _all_messages(dbs):
    return [(bus, m) for bus, db in dbs.items() for m in db.messages]


def _attr(obj, name):
    """Explicit attribute value (enum resolved to text), or None when the DBC does not set it."""
    attributes = obj.dbc.attributes
    if name not in attributes:
        return None
    attribute = attributes[name]
    choices = getattr(attribute.definition, "choices", None)
    return choices[attribute.value] if choices else attribute.value


def _raw_limits(signal) -> tuple[float, float]:
    """Physical values of the smallest and largest raw value the signal's bits can hold."""
    if signal.is_signed:
        raw_lo, raw_hi = -(2 ** (signal.length - 1)), 2 ** (signal.length - 1) - 1
    else:
        raw_lo, raw_hi = 0, 2**signal.length - 1
    ends = (raw_lo * signal.scale + signal.offset, raw_hi * signal.scale + signal.offset)
    return min(ends), max(ends)


# --- files and bus-level conventions -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUSES))
def test_dbc_loads_strict_with_bus_attributes(name):
    db = cantools.database.load_file(str(DBC_DIR / f"{name}.dbc"), strict=True)
    assert _attr(db, "BusType") == "CAN"
    assert _attr(db, "Baudrate") == 500000
    assert _attr(db, "DBName")
    assert [node.name for node in db.nodes] == BUSES[name]


@pytest.mark.parametrize("name", sorted(BUSES))
def test_no_message_or_signal_line_is_silently_dropped(dbs, name):
    # cantools skips a malformed SG_ line without error even in strict mode: count the lines.
    text = (DBC_DIR / f"{name}.dbc").read_text(encoding="ascii")
    bo_lines = re.findall(r"^BO_ ", text, flags=re.MULTILINE)
    sg_lines = re.findall(r"^ SG_ ", text, flags=re.MULTILINE)
    assert len(bo_lines) == len(dbs[name].messages)
    assert len(sg_lines) == sum(len(m.signals) for m in dbs[name].messages)


def test_installed_package_finds_the_same_dbcs():
    for name in BUSES:
        shipped = DATA_DIR / "dbc" / f"{name}.dbc"
        assert shipped.read_bytes() == (DBC_DIR / f"{name}.dbc").read_bytes()


def test_dbc_files_are_plain_ascii():
    # cantools reads DBCs as cp1252 and other tools as latin-1/utf-8: ASCII reads the same in all.
    for name in BUSES:
        (DBC_DIR / f"{name}.dbc").read_bytes().decode("ascii")


def test_classic_frames_standard_ids_dlc8_intel(dbs):
    for _bus, message in _all_messages(dbs):
        assert not message.is_extended_frame, message.name
        assert not message.is_fd, message.name
        assert 0 <= message.frame_id <= 0x7FF, message.name
        assert message.length == 8, message.name
        assert _attr(message, "VFrameFormat") == "StandardCAN", message.name
        for signal in message.signals:
            assert signal.byte_order == "little_endian", (message.name, signal.name)


def test_ids_and_names_unique_across_both_buses(dbs):
    # Unique across buses too, so a log holding both buses still decodes unambiguously.
    messages = [m for _bus, m in _all_messages(dbs)]
    assert len({m.frame_id for m in messages}) == len(messages)
    assert len({m.name for m in messages}) == len(messages)


def test_every_message_has_sender_node_and_receivers(dbs):
    for bus, message in _all_messages(dbs):
        nodes = set(BUSES[bus])
        assert len(message.senders) == 1 and message.senders[0] in nodes, message.name
        for signal in message.signals:
            assert signal.receivers, (message.name, signal.name)
            assert set(signal.receivers) <= nodes - set(message.senders), (
                message.name,
                signal.name,
            )


def test_every_message_has_cycle_time_or_event_send_type(dbs):
    for _bus, message in _all_messages(dbs):
        send_type = _attr(message, "GenMsgSendType")
        assert send_type in SEND_TYPES, message.name
        assert message.send_type == send_type
        if send_type == "Event":
            assert message.cycle_time is None, message.name
        else:
            assert _attr(message, "GenMsgCycleTime") in (10, 20, 50, 100, 200, 500, 1000)
            assert message.cycle_time == _attr(message, "GenMsgCycleTime")


def test_every_message_and_node_has_a_comment(dbs):
    for _bus, message in _all_messages(dbs):
        assert message.comment and len(message.comment) > 20, message.name
    for db in dbs.values():
        for node in db.nodes:
            assert node.comment, node.name


# --- signals -------------------------------------------------------------------------------


def test_ranges_fit_bit_length_and_scale(dbs):
    for _bus, message in _all_messages(dbs):
        for signal in message.signals:
            where = (message.name, signal.name)
            assert signal.minimum is not None and signal.maximum is not None, where
            assert signal.minimum < signal.maximum, where
            lo, hi = _raw_limits(signal)
            tol = signal.scale / 2
            assert lo - tol <= signal.minimum and signal.maximum <= hi + tol, where
            # Range ends sit on the raw grid, so a sender can hit them exactly.
            for end in (signal.minimum, signal.maximum):
                steps = (end - signal.offset) / signal.scale
                assert abs(steps - round(steps)) < 1e-6, where


def test_physical_signals_have_units_matching_their_names(dbs):
    for _bus, message in _all_messages(dbs):
        for signal in message.signals:
            where = (message.name, signal.name)
            suffix = next((s for s in UNIT_SUFFIXES if signal.name.endswith(s)), None)
            if suffix is not None:
                assert signal.unit == UNIT_SUFFIXES[suffix], where
            if signal.scale != 1 or signal.offset != 0:
                assert signal.unit, where
            if signal.unit:
                assert suffix is not None, f"{where}: unit {signal.unit!r} but no unit in name"


def test_flags_and_enums_have_value_tables(dbs):
    for _bus, message in _all_messages(dbs):
        for signal in message.signals:
            if signal.length == 1:
                assert signal.choices and set(signal.choices) == {0, 1}, signal.name
            for raw in signal.choices or {}:
                assert signal.minimum <= raw * signal.scale + signal.offset <= signal.maximum


def _choices(db, message_name, signal_name) -> dict[int, str]:
    signal = db.get_message_by_name(message_name).get_signal_by_name(signal_name)
    return {int(k): str(v) for k, v in signal.choices.items()}


def test_fault_code_table_matches_the_issue_and_the_firmware_enum(dbs):
    spec = dict(enumerate(SPEC_FAULT_CODES))
    for message_name in ("BmsFaults", "BmsFaultFreeze"):
        assert _choices(dbs["vehicle"], message_name, "FaultCode") == spec
        assert _choices(dbs["vehicle"], message_name, "FaultTier") == {
            0: "NONE",
            1: "INFO",
            2: "WARNING",
            3: "FATAL",
        }
    assert {c.value: c.name for c in FaultCode} == spec
    assert _choices(dbs["vehicle"], "BmsFaults", "FaultTier") == {t.value: t.name for t in Tier}


def test_state_and_request_tables_match_the_issue_and_the_firmware_enums(dbs):
    vehicle = dbs["vehicle"]
    assert _choices(vehicle, "VehicleRequest", "RequestMode") == {
        0: "STANDBY",
        1: "DRIVE",
        2: "CHARGE",
        3: "NO_REQUEST",
    }
    assert _choices(vehicle, "VehicleRequest", "RequestMode") == {
        r.value: r.name for r in RequestMode
    }
    assert _choices(vehicle, "BmsState", "BmsState") == {
        0: "INIT",
        1: "STANDBY",
        2: "PRECHARGE",
        3: "DRIVE",
        4: "CHARGE",
        5: "OPENING",
        6: "ERROR",
    }
    assert _choices(vehicle, "BmsState", "BmsState") == {s.value: s.name for s in BmsState}
    assert len(_choices(vehicle, "ChargerStatus", "ChargerState")) >= 3


def test_request_mode_starts_as_no_request(dbs):
    # A VCU that has not decided yet must not ask for DRIVE (raw 0 would mean STANDBY, also safe,
    # but NO_REQUEST keeps the BMS in its present state).
    signal = dbs["vehicle"].get_message_by_name("VehicleRequest").get_signal_by_name("RequestMode")
    assert signal.raw_initial == RequestMode.NO_REQUEST


def test_bms_state_content(dbs):
    message = dbs["vehicle"].get_message_by_name("BmsState")
    names = {s.name for s in message.signals}
    assert {
        "MainPlusClosed",
        "MainMinusClosed",
        "PrechargeClosed",
        "FaultInfo",
        "FaultWarning",
        "FaultFatal",
        "EmergencyShutoff",
        "ThermalEventAlarm",
        "ChargeInhibit",
        "BalancingActive",
        "PrechargeAttempts",
    } <= names
    assert message.send_type == "CyclicAndEvent" and message.cycle_time == 100


# --- E2E -----------------------------------------------------------------------------------


def test_safety_relevant_messages_are_e2e_protected(dbs):
    for bus, names in SAFETY_MESSAGES.items():
        for name in names:
            assert _attr(dbs[bus].get_message_by_name(name), "E2EProtected") == "Yes", name


def test_e2e_messages_carry_counter_and_crc_in_fixed_places(dbs):
    protected = 0
    for _bus, message in _all_messages(dbs):
        names = {s.name for s in message.signals}
        if _attr(message, "E2EProtected") != "Yes":
            assert not names & {"AliveCounter", "CRC8"}, message.name
            continue
        protected += 1
        counter = message.get_signal_by_name("AliveCounter")
        crc = message.get_signal_by_name("CRC8")
        assert (counter.start, counter.length, counter.is_signed) == (48, 4, False)
        assert (counter.minimum, counter.maximum, counter.scale, counter.offset) == (0, 15, 1, 0)
        assert (crc.start, crc.length, crc.is_signed) == (56, 8, False)
        assert (crc.scale, crc.offset) == (1, 0)
        assert counter.multiplexer_ids is None and crc.multiplexer_ids is None
        # Every other signal stays clear of bits 48..51 and byte 7.
        for signal in message.signals:
            if signal.name in ("AliveCounter", "CRC8"):
                continue
            bits = set(range(signal.start, signal.start + signal.length))
            assert not bits & (set(range(48, 52)) | set(range(56, 64))), signal.name
        assert "CRC-8 SAE J1850" in message.comment and "little-endian" in message.comment
    assert protected >= sum(len(v) for v in SAFETY_MESSAGES.values())


def _crc8_bitwise(data: bytes, poly: int = 0x1D, init: int = 0xFF, xorout: int = 0xFF) -> int:
    """CRC-8 straight from its definition (MSB first, no reflection)."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ xorout


def test_documented_crc_parameters_match_the_named_library_class():
    # 0x4B is the catalogued check value of CRC-8/SAE-J1850 over ASCII "123456789".
    assert _crc8_bitwise(b"123456789") == 0x4B
    assert Crc8SaeJ1850.calc(b"123456789") == 0x4B
    rng = random.Random(1850)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(9))
        assert Crc8SaeJ1850.calc(data) == _crc8_bitwise(data)


def test_crc_example_in_table_header_is_right():
    header = dbc_table.render_table([])
    match = re.search(r"CRC input `([0-9A-F ]+)`, CRC8 = 0x([0-9A-F]{2})", header)
    assert match, "worked CRC example missing from the table header"
    data = bytes.fromhex(match[1])
    assert data[:2] == (0x210).to_bytes(2, "little") and len(data) == 9
    assert _crc8_bitwise(data) == int(match[2], 16)


# --- pack-bus content ----------------------------------------------------------------------


def _groups(message, selector):
    """Mapping mux value -> names of the signals in that group."""
    groups: dict[int, set[str]] = {}
    for signal in message.signals:
        if signal.multiplexer_signal == selector:
            for group in signal.multiplexer_ids:
                groups.setdefault(group, set()).add(signal.name)
    return groups


@pytest.mark.parametrize(
    ("message_name", "selector", "pattern", "count", "per_group"),
    [
        ("CellVoltages", "CellGroup", "Cell{:03d}_V", 192, 4),
        ("CellTemperatures", "TempGroup", "Temp{:03d}_C", 96, 4),
        ("ModulePressures", "PressureGroup", "Module{:02d}_P", 24, 4),
        ("BmsBalancingCmd", "BalGroup", "Cell{:03d}_Bal", 192, 48),
    ],
)
def test_multiplexed_groups_cover_every_channel_once(
    dbs, message_name, selector, pattern, count, per_group
):
    message = dbs["pack"].get_message_by_name(message_name)
    assert message.get_signal_by_name(selector).is_multiplexer
    groups = _groups(message, selector)
    assert sorted(groups) == list(range(count // per_group))
    for group, names in groups.items():
        first = group * per_group + 1
        assert names == {pattern.format(i) for i in range(first, first + per_group)}
    selector_signal = message.get_signal_by_name(selector)
    assert selector_signal.maximum == count // per_group - 1
    assert message.cycle_time == 100
    assert "ALL groups every cycle" in message.comment


def test_cell_voltages_resolution_and_range(dbs):
    message = dbs["pack"].get_message_by_name("CellVoltages")
    for signal in message.signals:
        if re.fullmatch(r"Cell\d{3}_V", signal.name):
            assert signal.scale <= 0.001 and signal.unit == "V"
            # The whole cell window plus the 4.35 V MSL, down to a collapsed cell.
            assert signal.minimum <= 0.0 and signal.maximum >= 4.35


def test_cell_voltage_group_round_trip_at_1_mv(dbs):
    message = dbs["pack"].get_message_by_name("CellVoltages")
    rng = random.Random(7)
    for group in (0, 23, 47):
        values = {
            f"Cell{4 * group + k + 1:03d}_V": round(rng.uniform(3.0, 4.3), 3) for k in range(4)
        }
        frame = message.encode({"CellGroup": group, "AfeFault": 0, "OpenWireMask": 0, **values})
        decoded = message.decode(frame)
        assert decoded["CellGroup"] == group
        for name, value in values.items():
            assert decoded[name] == pytest.approx(value, abs=0.0005)


def test_temperatures_cover_thermal_runaway_at_0_1_degc(dbs):
    message = dbs["pack"].get_message_by_name("CellTemperatures")
    temps = [s for s in message.signals if re.fullmatch(r"Temp\d{3}_C", s.name)]
    assert len(temps) == 96
    for signal in temps:
        assert signal.scale <= 0.1 and signal.minimum <= -55 and signal.maximum >= 300


def test_module_pressure_resolution_1_kpa_or_finer(dbs):
    message = dbs["pack"].get_message_by_name("ModulePressures")
    pressures = [s for s in message.signals if re.fullmatch(r"Module\d{2}_P", s.name)]
    assert len(pressures) == 24
    for signal in pressures:
        assert signal.unit == "MPa" and signal.scale <= 0.001
        # Up to the 12 MPa hardware limit (the high MSL is 10 MPa).
        assert signal.minimum <= 0 and signal.maximum >= 12


def test_fast_pack_measurements_and_commands(dbs):
    pack = dbs["pack"]
    current = pack.get_message_by_name("PackCurrent").get_signal_by_name("PackCurrent_A")
    assert current.is_signed and current.scale <= 0.01
    assert current.minimum <= -2000 and current.maximum >= 2000
    voltages = pack.get_message_by_name("PackVoltages")
    for name in ("PackVoltage_V", "DcLinkVoltage_V"):
        signal = voltages.get_signal_by_name(name)
        assert signal.scale <= 0.01 and signal.maximum >= 1000
    for name in ("PackCurrent", "PackVoltages", "ContactorFeedback", "BmsContactorCmd"):
        assert pack.get_message_by_name(name).cycle_time == 10, name
    feedback = _choices(pack, "ContactorFeedback", "MainPlusClosed")
    assert feedback[1] == "Closed"
    for name in ("MainPlusCmd", "MainMinusCmd", "PrechargeCmd"):
        assert _choices(pack, "BmsContactorCmd", name)[1] == "Close"
    h2s = pack.get_message_by_name("PackGas").get_signal_by_name("H2S_ppm")
    assert h2s.scale <= 0.1 and h2s.maximum >= 50
    assert pack.get_message_by_name("PackGas").cycle_time == 100


# --- vehicle-bus content -------------------------------------------------------------------


def test_limits_soc_and_stats_resolution(dbs):
    vehicle = dbs["vehicle"]
    limits = vehicle.get_message_by_name("BmsLimits")
    for name in ("MaxChargeCurrent_A", "MaxDischargeCurrent_A"):
        signal = limits.get_signal_by_name(name)
        assert signal.scale <= 0.1 and signal.minimum == 0 and signal.maximum >= 2000
    soc = vehicle.get_message_by_name("BmsSoc")
    for name in ("SocMin_pct", "SocAvg_pct", "SocMax_pct", "SocSigma_pct"):
        signal = soc.get_signal_by_name(name)
        assert signal.scale <= 0.01 and signal.minimum <= 0 and signal.maximum >= 100
    cells = vehicle.get_message_by_name("BmsCellStats")
    assert cells.get_signal_by_name("MinCellVoltage_V").scale <= 0.001
    assert cells.get_signal_by_name("MaxCellIndex").maximum >= 192
    temps = vehicle.get_message_by_name("BmsTempStats")
    assert temps.get_signal_by_name("MaxTemp_C").scale <= 0.1
    assert temps.get_signal_by_name("MaxTempSensor").maximum >= 96
    pressures = vehicle.get_message_by_name("BmsPressureStats")
    assert pressures.get_signal_by_name("MinPressure_MPa").scale <= 0.001
    assert pressures.get_signal_by_name("MinPressureModule").maximum >= 24


def test_every_message_round_trips_through_cantools_at_its_range_ends(dbs):
    for _bus, message in _all_messages(dbs):
        selector = next((s for s in message.signals if s.is_multiplexer), None)
        groups = sorted(_groups(message, selector.name)) if selector else [None]
        for group in groups:
            for pick in ("minimum", "maximum"):
                data = {}
                for signal in message.signals:
                    if signal.multiplexer_ids is not None and group not in signal.multiplexer_ids:
                        continue
                    data[signal.name] = getattr(signal, pick)
                if selector is not None:
                    data[selector.name] = group
                decoded = message.decode(message.encode(data), decode_choices=False)
                for name, value in data.items():
                    signal = message.get_signal_by_name(name)
                    assert decoded[name] == pytest.approx(value, abs=signal.scale / 2), name


# --- generated table -----------------------------------------------------------------------


def test_generated_table_is_in_sync():
    assert dbc_table.is_in_sync(DBC_DIR, REPO_ROOT / "docs" / "can_messages.md"), (
        "docs/can_messages.md is stale: run python tools/dbc_table.py"
    )


def test_check_mode_detects_a_stale_table(tmp_path):
    output = tmp_path / "can_messages.md"
    assert dbc_table.main(["--dbc-dir", str(DBC_DIR), "--output", str(output), "--check"]) == 1
    assert dbc_table.main(["--dbc-dir", str(DBC_DIR), "--output", str(output)]) == 0
    assert dbc_table.main(["--dbc-dir", str(DBC_DIR), "--output", str(output), "--check"]) == 0
    output.write_text(output.read_text().replace("0x4B", "0x4C"))
    assert dbc_table.main(["--dbc-dir", str(DBC_DIR), "--output", str(output), "--check"]) == 1


def test_table_lists_every_message_and_collapses_numbered_signals(dbs):
    text = (REPO_ROOT / "docs" / "can_messages.md").read_text()
    for _bus, message in _all_messages(dbs):
        assert f"| 0x{message.frame_id:03X} | `{message.name}` |" in text
    assert "`Cell001_V .. Cell192_V (192)` | 0..47 (4 per group)" in text
    assert "`Cell001_Bal .. Cell192_Bal (192)` | 0..3 (48 per group)" in text
    assert "`Cell002_V`" not in text
    assert len(text.splitlines()) < 1000


def test_bad_dbc_gives_one_line_error(tmp_path, capsys):
    (tmp_path / "broken.dbc").write_text(
        'VERSION ""\n\nBU_: A B\n\nBO_ 1 X: 8 A\n'
        ' SG_ S1 : 0|8@1+ (1,0) [0|255] "" B\n SG_ S2 : 4|8@1+ (1,0) [0|255] "" B\n'
    )
    assert dbc_table.main(["--dbc-dir", str(tmp_path), "--output", str(tmp_path / "o.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_worst_case_frame_bits_for_8_bytes():
    # 8 data bytes, 11-bit ID: 111 bits without stuffing + at most 24 stuff bits = 135.
    assert dbc_table.worst_case_frame_bits(8) == 135
