"""Pack electrical network: parallel groups in series, solved exactly for one time step.

Over a step of length dt with constant current, each cell's terminal voltage at the end of the
step is affine in its current: ``V = E - R_eff i`` with ``E = OCV - a1 v1 - a2 v2`` and
``R_eff = R0 + R1 (1 - a1) + R2 (1 - a2)`` (a = exp(-dt/tau), the exact RC update). Cells of a
parallel group share one voltage, and leak paths (soft shorts, bleed resistors) sit across them,
so each group is a Norton source and the pack is a Thevenin source ``V = E_pack - R_pack I``.
"""

from __future__ import annotations

import numpy as np


def group_norton(
    e_v: np.ndarray, g_s: np.ndarray, leak_s: np.ndarray, bleed_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Norton sums per parallel group: ``A = sum(E G)``, ``B = sum(G + leak) + bleed`` (S).

    ``e_v``, ``g_s`` (1/R_eff) and ``leak_s`` are (series, parallel); ``bleed_s`` is (series,).
    The group voltage for a pack current ``I`` (positive = discharge) is ``(A - I) / B``.
    """
    a = (e_v * g_s).sum(axis=1)
    b = (g_s + leak_s).sum(axis=1) + bleed_s
    return a, b


def pack_thevenin(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Open-circuit voltage and resistance of the series string of Norton groups."""
    return float((a / b).sum()), float((1.0 / b).sum())


def current_for_power(e_pack_v: float, r_pack_ohm: float, power_w: float) -> tuple[float, bool]:
    """Pack current that delivers ``power_w`` at the terminals (positive = discharge).

    Solves ``P = (E - R I) I`` on the physical (low-current) root. Returns the current and
    whether the demand exceeded the maximum deliverable power ``E^2 / 4R`` (then clamped there).
    """
    if power_w == 0.0:
        return 0.0, False
    disc = e_pack_v * e_pack_v - 4.0 * r_pack_ohm * power_w
    if disc < 0.0:
        return e_pack_v / (2.0 * r_pack_ohm), True
    # Numerically stable form of (E - sqrt(disc)) / 2R for small R.
    return 2.0 * power_w / (e_pack_v + np.sqrt(disc)), False


def cell_currents(
    e_v: np.ndarray,
    g_s: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    pack_current_a: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Group voltages (series,) and electrochemical cell currents (series, parallel).

    A cell's current is everything its electrochemistry delivers: its share of the pack current
    plus what leaks through soft shorts and bleed resistors across its group.
    """
    v_group = (a - pack_current_a) / b
    i_cell = (e_v - v_group[:, None]) * g_s
    return v_group, i_cell
