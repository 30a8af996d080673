"""Signal store: timestamps, per-element sample counts, staleness and safe writes."""

import numpy as np
import pytest

from bms.errors import InputError
from bms.firmware.store import SignalStore, SourceSpec, standard_store


def _store() -> SignalStore:
    return SignalStore(
        [
            SourceSpec("cell_voltage_v", 8, 0.1, 0.3),
            SourceSpec("vehicle_request", 1, 0.1, 0.105, "vehicle"),
        ]
    )


def test_multiplexed_writes_count_fresh_samples_per_element():
    store = _store()
    cells = store["cell_voltage_v"]
    cells.write(0.0, [3.8, 3.8, 3.8, 3.8], start=0)  # mux group 0
    cells.write(0.05, [3.7, 3.7, 3.7, 3.7], start=4)  # mux group 1
    cells.write(0.1, [3.81, 3.81, 3.81, 3.81], start=0)
    assert cells.elem_seq.tolist() == [2, 2, 2, 2, 1, 1, 1, 1]
    assert cells.seq == 3
    assert cells.value[0] == pytest.approx(3.81) and cells.value[4] == pytest.approx(3.7)
    # the oldest element decides the age: group 1 was last seen at 0.05 s
    assert cells.age_s(0.2) == pytest.approx(0.15)
    assert cells.newest_age_s(0.2) == pytest.approx(0.1)


def test_never_received_source_is_stale_and_becomes_stale_after_timeout():
    store = _store()
    cells = store["cell_voltage_v"]
    assert cells.is_stale(0.0)
    cells.write(1.0, np.full(8, 3.8))
    assert not cells.is_stale(1.3)  # exactly the 0.3 s timeout: not yet
    assert cells.is_stale(1.31)
    mask = np.zeros(8, dtype=bool)
    cells.write(1.2, [3.9, 3.9], start=2)
    cells.stale_mask(1.45, out=mask)
    assert mask.tolist() == [True, True, False, False, True, True, True, True]
    assert store.stale_sources(1.45) == ["cell_voltage_v", "vehicle_request"]
    assert store.stale_sources(1.45, bus="vehicle") == ["vehicle_request"]


def test_nan_marks_invalid_without_raising_and_bad_slices_are_input_errors():
    store = _store()
    cells = store["cell_voltage_v"]
    cells.write(0.0, [3.8, np.nan, np.inf, 3.8, 3.8, 3.8, 3.8, 3.8])
    assert cells.valid.tolist() == [True, False, False, True, True, True, True, True]
    cells.invalidate(0.1, start=3, count=1)
    assert not cells.valid[3] and cells.elem_seq[3] == 2
    with pytest.raises(InputError, match="exceeds size 8"):
        cells.write(0.2, [3.8, 3.8], start=7)
    with pytest.raises(InputError, match="unknown signal source"):
        store["nope"]


def test_gap_between_frames_and_e2e_failure_tracking():
    req = _store()["vehicle_request"]
    req.write(0.0, 1)
    req.write(0.1, 1)
    assert req.last_gap_s == pytest.approx(0.1)
    req.note_e2e_failure(0.2)
    assert req.e2e_failed_last()
    req.write(0.3, 1)  # a good frame clears the "last frame failed" condition
    assert not req.e2e_failed_last() and req.e2e_failures == 1


def test_standard_store_sizes_follow_the_pack_layout():
    timing = {
        "cell_voltage_v": (0.1, 0.3, "pack"),
        "pressure_mpa": (0.1, 0.3, "pack"),
        "current_a": (0.01, 0.25, "pack"),
    }
    store = standard_store(96, 48, 8, timing)
    assert store["cell_voltage_v"].size == 96
    assert store["pressure_mpa"].size == 8
    assert store["current_a"].size == 1
