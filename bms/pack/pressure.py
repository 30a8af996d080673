"""Stack pressure per module from lithium-anode thickness, fixture stiffness, thermal
expansion and creep relaxation (DOMAIN.md section 4).

``P = P0 + k_eff [dx(SOC) - dx(50 %)] / A + k_eff da L (T - T0) / A - P_relax`` with
``dP_relax/dt = (P - P0) / tau_creep(T)`` and ``1/k_eff = 1/k_stack + 1/k_fixture``.
"""

from __future__ import annotations

import numpy as np

from bms.cellmodel.params import Contact, Mechanics


def layer_growth_m(soc: np.ndarray, mech: Mechanics) -> np.ndarray:
    """Thickness change of one layer since 0 % SOC (m): plated Li minus cathode contraction."""
    plated_um = mech.li_um_per_mah_cm2 * mech.areal_capacity_mah_cm2 * soc
    onset = mech.cathode_onset_soc
    cathode_um = mech.cathode_contraction_um * np.clip((soc - onset) / (1.0 - onset), 0.0, None)
    return (plated_um - cathode_um) * 1e-6


def module_growth_m(soc_by_module: np.ndarray, mech: Mechanics) -> np.ndarray:
    """Stack growth per module (m): every layer of every cell of the module, rows = modules."""
    return mech.layers * layer_growth_m(soc_by_module, mech).sum(axis=1)


def effective_stiffness_n_per_m(
    fixture_n_per_m: np.ndarray, modulus_pa: float, area_m2: float, length_m: float
) -> np.ndarray:
    """Springs in series: the stack itself (E A / L) and the fixture."""
    k_stack = modulus_pa * area_m2 / length_m
    return 1.0 / (1.0 / k_stack + 1.0 / fixture_n_per_m)


def creep_tau_s(temp_c: np.ndarray, contact: Contact) -> np.ndarray:
    """Lithium creep time constant: halves every ``creep_halving_k`` above the reference."""
    return contact.creep_tau_s * 2.0 ** (
        -(temp_c - contact.creep_temp_ref_c) / contact.creep_halving_k
    )
