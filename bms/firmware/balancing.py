"""Passive balancing decision of the BMS model, vectorised over cells (DOMAIN.md sections 7, 12).

A cell bleeds when it sits more than a threshold above the lowest cell (voltage at rest, or SOC)
and keeps bleeding until it falls below threshold - hysteresis. Only when the caller says balancing
is allowed (state and rest conditions), never below a voltage floor, at most N channels per module
board, and not while that board is over its temperature limit. The charge bled is integrated per
cell in Ah (``effort_ah``) for the soft-short detector. Units are in every name: volts, fractions
of SOC, ohms; values that look like millivolts or percent are rejected (the foxBMS bug, section 12).
Parameters: the ``balancing:`` section of ``bms/data/firmware/limits.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.config import Section, load_yaml
from bms.data import resolve
from bms.firmware.codes import BmsState

SECONDS_PER_HOUR = 3600.0
MAX_PLAUSIBLE_CELL_V = 10.0  # anything above is a millivolt value passed by mistake
MAX_PLAUSIBLE_SOC = 1.5  # anything above is a percentage passed by mistake


@dataclass(frozen=True)
class BalancingParams:
    """Thresholds, bleed hardware and board thermal model (limits.yaml, ``balancing:``)."""

    mode: str  # "voltage" or "soc"
    allowed_states: frozenset[BmsState]
    min_rest_s: float
    threshold_v: float
    hysteresis_v: float
    threshold_soc: float  # fraction
    hysteresis_soc: float  # fraction
    min_cell_voltage_v: float
    bleed_resistance_ohm: float
    cells_per_module: int
    max_active_per_module: int
    board_heat_capacity_j_per_k: float
    board_conductance_w_per_k: float
    board_temp_max_c: float
    board_temp_hysteresis_k: float


def load_balancing_params(name_or_path: str | Path = "limits") -> BalancingParams:
    """Load the ``balancing:`` section of a limits file (shipped ``limits`` or a YAML path)."""
    root = Section(load_yaml(resolve("firmware", name_or_path)))
    for other in ("charge", "discharge", "pressure", "ramp"):  # read by bms.firmware.limits
        root.raw(other, None)
    b = root.section("balancing")
    params = BalancingParams(
        mode=b.string("mode", choices=("voltage", "soc")),
        allowed_states=_states(b, "allowed_states"),
        min_rest_s=b.number("min_rest_s", min=0, max=1e6),
        threshold_v=b.number("threshold_mv", above=0, max=1000) / 1000.0,
        hysteresis_v=b.number("hysteresis_mv", min=0, max=1000) / 1000.0,
        threshold_soc=b.number("threshold_soc_pct", above=0, max=100) / 100.0,
        hysteresis_soc=b.number("hysteresis_soc_pct", min=0, max=100) / 100.0,
        min_cell_voltage_v=b.number("min_cell_voltage_v", min=0, max=6),
        bleed_resistance_ohm=b.number("bleed_resistance_ohm", above=0, max=1e6),
        cells_per_module=b.integer("cells_per_module", min=1, max=1000),
        max_active_per_module=b.integer("max_active_per_module", min=0, max=1000),
        board_heat_capacity_j_per_k=b.number("board_heat_capacity_j_per_k", above=0, max=1e6),
        board_conductance_w_per_k=b.number("board_conductance_w_per_k", above=0, max=1e4),
        board_temp_max_c=b.number("board_temp_max_c", min=0, max=200),
        board_temp_hysteresis_k=b.number("board_temp_hysteresis_k", min=0, max=100),
    )
    if params.hysteresis_v >= params.threshold_v:
        raise b.error("hysteresis_mv", "must be below threshold_mv")
    if params.hysteresis_soc >= params.threshold_soc:
        raise b.error("hysteresis_soc_pct", "must be below threshold_soc_pct")
    b.done()
    root.done()
    return params


def _states(sec: Section, key: str) -> frozenset[BmsState]:
    names = sec.items(key)
    known = {s.name: s for s in BmsState}
    for index, name in enumerate(names):
        if name not in known:
            raise sec.error(key, f"item {index}: expected one of {', '.join(known)}, got {name!r}")
    return frozenset(known[name] for name in names)


def balancing_allowed(bms_state: BmsState, rest_time_s: float, params: BalancingParams) -> bool:
    """Balancing permission: an allowed BMS state and, in voltage mode, a long enough rest
    (a voltage under load carries IR drop and polarisation, not SOC)."""
    if bms_state not in params.allowed_states:
        return False
    return params.mode == "soc" or rest_time_s >= params.min_rest_s


@dataclass
class BalancingState:
    """Per-cell bleed switches and bled charge, per-module board temperature and lockout."""

    active: np.ndarray  # (n,) bool, bleed switch of each cell
    effort_ah: np.ndarray  # (n,) charge bled so far
    board_temp_c: np.ndarray  # (m,) bleed-resistor board temperature per module
    board_lockout: np.ndarray  # (m,) bool, board too hot: its channels stay off

    @classmethod
    def new(
        cls, n_cells: int, params: BalancingParams, ambient_temp_c: float = 25.0
    ) -> BalancingState:
        """All switches off, no effort, boards at ambient."""
        m = -(-n_cells // params.cells_per_module)  # ceil: a short last module is allowed
        return cls(
            active=np.zeros(n_cells, dtype=bool),
            effort_ah=np.zeros(n_cells),
            board_temp_c=np.full(m, float(ambient_temp_c)),
            board_lockout=np.zeros(m, dtype=bool),
        )


def check_units(cell_voltage_v: np.ndarray, soc: np.ndarray | None = None) -> None:
    """Reject millivolts passed as volts and percent passed as fractions (ValueError)."""
    volt = np.asarray(cell_voltage_v, dtype=float)
    if np.any(np.abs(volt[np.isfinite(volt)]) > MAX_PLAUSIBLE_CELL_V):
        raise ValueError("cell_voltage_v must be in volts (got values above 10: millivolts?)")
    if soc is not None:
        s = np.asarray(soc, dtype=float)
        if np.any(np.abs(s[np.isfinite(s)]) > MAX_PLAUSIBLE_SOC):
            raise ValueError("soc must be a fraction 0..1 (got values above 1.5: percent?)")


def bleed_current_a(
    cell_voltage_v: np.ndarray, active: np.ndarray, params: BalancingParams
) -> np.ndarray:
    """Bleed current per cell (A): V / R_bleed where the switch is on, else 0."""
    volt = np.nan_to_num(np.asarray(cell_voltage_v, dtype=float), nan=0.0)
    return np.where(active, np.maximum(volt, 0.0) / params.bleed_resistance_ohm, 0.0)


def balancing_step(
    state: BalancingState,
    params: BalancingParams,
    *,
    dt_s: float,
    cell_voltage_v: np.ndarray,
    allowed: bool,
    soc: np.ndarray | None = None,
    ambient_temp_c: float = 25.0,
) -> np.ndarray:
    """Account the last ``dt_s`` of bleeding, then decide which cells bleed next (bool array).

    ``allowed`` is the caller's verdict on BMS state and rest; ``soc`` (fractions) is needed in
    ``soc`` mode. NaN voltages or SOCs exclude a cell. Updates ``state`` in place.
    """
    volt = np.asarray(cell_voltage_v, dtype=float)
    check_units(volt, soc)
    p = params
    n = state.active.size
    if volt.shape != (n,):
        raise ValueError(f"cell_voltage_v has shape {volt.shape}, expected ({n},)")
    dt = max(float(dt_s), 0.0)

    # 1. What the switches did during the interval that just ended.
    current = bleed_current_a(volt, state.active, p)
    state.effort_ah += current * dt / SECONDS_PER_HOUR
    _board_thermal(state, p, current**2 * p.bleed_resistance_ohm, dt, ambient_temp_c)

    # 2. The next decision.
    if p.mode == "soc":
        if soc is None:
            raise ValueError("balancing mode 'soc' needs soc")
        metric = np.asarray(soc, dtype=float)
        threshold, hysteresis = p.threshold_soc, p.hysteresis_soc
    else:
        metric = volt
        threshold, hysteresis = p.threshold_v, p.hysteresis_v
    finite = np.isfinite(metric) & np.isfinite(volt)
    if not allowed or not np.any(finite):
        state.active[:] = False
        return state.active.copy()
    excess = np.where(finite, metric - np.min(metric[finite]), -np.inf)
    start = excess > threshold
    keep = state.active & (excess > threshold - hysteresis)
    want = (start | keep) & finite & (volt >= p.min_cell_voltage_v)
    want &= ~np.repeat(state.board_lockout, p.cells_per_module)[:n]
    state.active[:] = _limit_per_module(want, excess, p)
    return state.active.copy()


def _board_thermal(
    state: BalancingState,
    params: BalancingParams,
    power_w: np.ndarray,
    dt_s: float,
    ambient_temp_c: float,
) -> None:
    """Exact first-order board temperature step; lockout with hysteresis."""
    m = state.board_temp_c.size
    cpm = params.cells_per_module
    padded = np.zeros(m * cpm)
    padded[: power_w.size] = power_w
    board_w = padded.reshape(m, cpm).sum(axis=1)
    steady_c = ambient_temp_c + board_w / params.board_conductance_w_per_k
    decay = np.exp(-dt_s * params.board_conductance_w_per_k / params.board_heat_capacity_j_per_k)
    state.board_temp_c[:] = steady_c + (state.board_temp_c - steady_c) * decay
    hot = state.board_temp_c >= params.board_temp_max_c
    cool = state.board_temp_c < params.board_temp_max_c - params.board_temp_hysteresis_k
    state.board_lockout[:] = hot | (state.board_lockout & ~cool)


def _limit_per_module(want: np.ndarray, excess: np.ndarray, params: BalancingParams) -> np.ndarray:
    """Keep at most ``max_active_per_module`` wanted cells per module, the highest first."""
    n = want.size
    cpm = params.cells_per_module
    m = -(-n // cpm)
    score = np.full(m * cpm, -np.inf)
    score[:n] = np.where(want, excess, -np.inf)
    score = score.reshape(m, cpm)
    # Rank within each module, 0 = highest excess.
    rank = np.argsort(np.argsort(-score, axis=1, kind="stable"), axis=1)
    chosen = (rank < params.max_active_per_module) & np.isfinite(score)
    return chosen.reshape(-1)[:n]
