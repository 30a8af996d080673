"""Lumped cell thermal network: one node per cell, face-to-face conduction within a module,
cold plate to coolant and a path to ambient.

The update is exact for each node with its neighbours held over the step (an exponential
integrator), so it is stable for any dt and its fixed point is the network's true steady state.
"""

from __future__ import annotations

import numpy as np

from bms.cellmodel.ecm import KELVIN


def neighbour_sum(temp_c: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Sum of each cell's stack neighbours' temperatures; arrays are (modules, cells_per_module)."""
    out[:, 0] = 0.0
    out[:, 1:] = temp_c[:, :-1]
    out[:, :-1] += temp_c[:, 1:]
    return out


def neighbour_count(modules: int, cells_per_module: int) -> np.ndarray:
    """Number of stack neighbours per cell: 1 at the module ends, 2 inside (0 for a lone cell)."""
    count = np.full((modules, cells_per_module), 2.0)
    count[:, 0] -= 1.0
    count[:, -1] -= 1.0
    if cells_per_module == 1:
        count[:] = 0.0
    return count


def joule_heat_w(
    current_a: np.ndarray,
    r0_ohm: np.ndarray,
    v1_v: np.ndarray,
    r1_ohm: np.ndarray,
    v2_v: np.ndarray,
    r2_ohm: np.ndarray,
) -> np.ndarray:
    """Irreversible heat ``I^2 R0 + v1^2/R1 + v2^2/R2`` (W) per cell."""
    return current_a * current_a * r0_ohm + v1_v * v1_v / r1_ohm + v2_v * v2_v / r2_ohm


def reversible_heat_w(
    current_a: np.ndarray, temp_c: np.ndarray, dudt_v_per_k: np.ndarray
) -> np.ndarray:
    """Entropic heat ``-I T dU/dT`` (W), positive current discharging (Bernardi)."""
    return -current_a * (temp_c + KELVIN) * dudt_v_per_k


def step_factors(
    dt_s: float, g_total_w_per_k: np.ndarray, heat_capacity_j_per_k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact one-step factors for ``C dT/dt = P - G T``: ``T' = decay T + gain P``.

    ``decay = exp(-dt G / C)`` and ``gain = (1 - decay) / G``, which tends to ``dt / C`` for an
    adiabatic node (G = 0).
    """
    decay = np.exp(-dt_s * g_total_w_per_k / heat_capacity_j_per_k)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(
            g_total_w_per_k > 0.0, (1.0 - decay) / g_total_w_per_k, dt_s / heat_capacity_j_per_k
        )
    return decay, gain


def thermal_step(
    temp_c: np.ndarray,
    heat_w: np.ndarray,
    neighbour_sum_c: np.ndarray,
    g_neighbour_w_per_k: float,
    fixed_drive_w: np.ndarray,
    decay: np.ndarray,
    gain: np.ndarray,
) -> np.ndarray:
    """Advance cell temperatures by one step, in place.

    ``fixed_drive`` is ``G_coolant T_coolant + G_ambient T_ambient``; ``decay`` and ``gain`` come
    from :func:`step_factors` with ``G = G_coolant + G_ambient + G_n * n_neighbours``. Each node
    relaxes exactly towards its equilibrium with its neighbours held over the step.
    """
    temp_c *= decay
    temp_c += (heat_w + fixed_drive_w + g_neighbour_w_per_k * neighbour_sum_c) * gain
    return temp_c


def coolant_conductance_w_per_k(
    nominal_w_per_k: float, flow_lpm: float, nominal_flow_lpm: float, min_fraction: float
) -> float:
    """Cold-plate conductance at a coolant flow: turbulent h ~ flow^0.8, floored at no flow."""
    ratio = max(flow_lpm, 0.0) / nominal_flow_lpm
    return nominal_w_per_k * max(ratio**0.8, min_fraction)
