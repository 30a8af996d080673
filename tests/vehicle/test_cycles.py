"""Drive-cycle and profile loading: EPA cycle facts, repeat/concatenate, consistency, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bms.errors import InputError
from bms.vehicle import DriveCycle, concatenate, load_cycle, load_profile
from bms.vehicle.cycles import CYCLE_DIR


@pytest.mark.parametrize(
    ("name", "duration_s", "distance_km", "vmax_mps", "mean_mps"),
    [("udds", 1369.0, 11.99, 25.35, 8.76), ("hwfet", 765.0, 16.51, 26.78, 21.6)],
)
def test_shipped_cycles_match_epa_facts(
    name: str, duration_s: float, distance_km: float, vmax_mps: float, mean_mps: float
) -> None:
    c = load_cycle(name)
    assert c.duration_s == duration_s
    assert c.distance_m / 1e3 == pytest.approx(distance_km, abs=0.01)
    assert c.speed_mps.max() == pytest.approx(vmax_mps, abs=0.01)
    assert c.distance_m / c.duration_s == pytest.approx(mean_mps, abs=0.05)
    assert np.all(np.diff(c.time_s) == 1.0)


def test_udds_standstill_and_acceleration_bound() -> None:
    c = load_cycle("UDDS")
    assert np.count_nonzero(c.speed_mps == 0.0) == pytest.approx(259, abs=3)
    t = c.segment_midpoints_s()
    assert np.abs(c.accel_at(t)).max() == pytest.approx(1.48, abs=0.01)


def test_installed_path_holds_the_cycles() -> None:
    assert (CYCLE_DIR / "udds.csv").exists() and (CYCLE_DIR / "hwfet.csv").exists()


TRI = DriveCycle("tri", np.array([0.0, 2.0, 4.0, 5.0]), np.array([0.0, 4.0, 2.0, 0.0]))


def test_speed_is_linear_and_acceleration_is_its_slope() -> None:
    assert TRI.speed_at([1.0, 3.0, 4.5]) == pytest.approx([2.0, 3.0, 1.0])
    assert TRI.accel_at([0.5, 1.999, 3.0, 4.5]) == pytest.approx([2.0, 2.0, -1.0, -2.0])
    # At a sample point: the centred difference over both neighbours.
    assert TRI.accel_at(2.0) == pytest.approx((2.0 - 0.0) / 4.0)
    assert TRI.accel_at(4.0) == pytest.approx((0.0 - 4.0) / 3.0)
    # Outside the trace: held end speed, zero acceleration.
    assert TRI.accel_at([-1.0, 0.0 - 1e-9, 5.0, 9.0]) == pytest.approx([0, 0, 0, 0])
    assert TRI.speed_at(9.0) == 0.0


def test_distance_is_the_integral_of_speed_and_acceleration_integrates_to_speed() -> None:
    assert TRI.distance_m == pytest.approx(4.0 + 6.0 + 1.0)
    c = load_cycle("hwfet")
    dt = 0.01
    t = np.arange(0.0, c.time_s[-1], dt) + dt / 2
    assert np.sum(c.speed_at(t)) * dt == pytest.approx(c.distance_m, rel=1e-6)
    speed = np.cumsum(c.accel_at(t)) * dt
    assert np.max(np.abs(speed - c.speed_at(t + dt / 2))) < 1e-9


def test_repeat_multiplies_duration_and_distance_exactly() -> None:
    one = load_cycle("udds")
    three = load_cycle("udds", repeat=3)
    assert three.duration_s == 3 * one.duration_s
    assert three.distance_m == pytest.approx(3 * one.distance_m, rel=1e-12)
    assert np.all(np.diff(three.time_s) > 0)
    assert three.speed_at(one.time_s[-1] + 100.0) == one.speed_at(100.0)


def test_concatenate_cycles_back_to_back() -> None:
    u, h = load_cycle("udds"), load_cycle("hwfet")
    both = concatenate([u, h])
    assert both.duration_s == u.duration_s + h.duration_s
    assert both.distance_m == pytest.approx(u.distance_m + h.distance_m, rel=1e-12)
    assert both.speed_at(u.duration_s + 300.0) == h.speed_at(300.0)
    assert both.name == "udds+hwfet"


def test_concatenate_with_speed_jump_ramps_over_one_sample_interval() -> None:
    a = DriveCycle("a", np.array([0.0, 1.0]), np.array([0.0, 2.0]))
    b = DriveCycle("b", np.array([10.0, 11.0]), np.array([4.0, 0.0]))
    ab = concatenate([a, b])
    assert list(ab.time_s) == [0.0, 1.0, 2.0, 3.0]
    assert ab.distance_m == pytest.approx(1.0 + 3.0 + 2.0)


@pytest.mark.parametrize("count", [0, -1, 1.5, True])
def test_bad_repeat_count(count: object) -> None:
    with pytest.raises(InputError, match="repeat count"):
        TRI.repeat(count)  # type: ignore[arg-type]


def _csv(tmp_path: Path, content: str | bytes, name: str = "c.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_user_cycle_with_comments_blank_lines_and_extra_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "# my cycle\ntime_s,speed_mps,note\n0,0,a\n\n1,1.5,b\n2,0,c\n")
    c = load_cycle(path)
    assert c.name == "c" and c.distance_m == pytest.approx(1.5)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: cannot read"):
        load_cycle(tmp_path / "nope.csv")


def test_unknown_shipped_name_lists_choices() -> None:
    with pytest.raises(InputError, match="shipped: hwfet, udds"):
        load_cycle("wltc_class9")


def test_missing_column(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,speed_kmh\n0,0\n1,1\n")
    with pytest.raises(InputError, match=r"c\.csv:1: missing column speed_mps"):
        load_cycle(path)


def test_text_in_numbers(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,speed_mps\n0,0\n1,fast\n")
    with pytest.raises(InputError, match=r"c\.csv:3: column speed_mps: expected a number"):
        load_cycle(path)


def test_nan(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,speed_mps\n0,0\n1,nan\n")
    with pytest.raises(InputError, match=r"c\.csv:3: column speed_mps: expected a finite"):
        load_cycle(path)


def test_time_not_increasing(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,speed_mps\n0,0\n1,1\n1,2\n")
    with pytest.raises(InputError, match=r"c\.csv:4: column time_s: time must increase"):
        load_cycle(path)


def test_negative_speed(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,speed_mps\n0,0\n1,-1\n")
    with pytest.raises(InputError, match=r"c\.csv:3: column speed_mps: must be >= 0"):
        load_cycle(path)


def test_wrong_field_count(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,speed_mps\n0,0\n1\n")
    with pytest.raises(InputError, match=r"c\.csv:3: expected 2 fields, got 1"):
        load_cycle(path)


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c\.csv: empty file"):
        load_cycle(_csv(tmp_path, ""))


def test_header_only(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c\.csv:1: no data rows"):
        load_cycle(_csv(tmp_path, "time_s,speed_mps\n"))


def test_binary_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c\.csv: not a text file"):
        load_cycle(_csv(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00"))


def test_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"c\.csv: not UTF-8"):
        load_cycle(_csv(tmp_path, b"time_s,speed_mps\n0,\xff\n"))


def test_current_profile_is_held_between_samples(tmp_path: Path) -> None:
    path = _csv(tmp_path, "time_s,current_a\n0,90\n10,-45\n20,0\n", "pulse.csv")
    p = load_profile(path)
    assert p.quantity == "current_a" and p.duration_s == 20.0
    assert p.value_at([0.0, 9.99, 10.0, 15.0, 25.0]) == pytest.approx([90, 90, -45, -45, 0])
    assert p.value_at(5.0, linear=True) == pytest.approx(22.5)
    assert p.integral() == pytest.approx(90 * 10 - 45 * 10)


def test_power_profile(tmp_path: Path) -> None:
    p = load_profile(_csv(tmp_path, "time_s,power_w\n0,1000\n1,2000\n"))
    assert p.quantity == "power_w"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("time_s,voltage_v\n0,1\n", r":1: missing value column: expected exactly one of"),
        ("time_s,current_a,power_w\n0,1,2\n", r":1: ambiguous value column"),
        ("time_s,current_a\n0,1\n0,2\n", r":3: column time_s: time must increase"),
        ("time_s,current_a\n0,1\n1,inf\n", r":3: column current_a: expected a finite"),
        ("time_s,current_a\n0,1\nx,2\n", r":3: column time_s: expected a number"),
    ],
)
def test_bad_profiles(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load_profile(_csv(tmp_path, text))
