"""Small packs built from the shipped parameter files, with knobs for isolating one effect."""

from __future__ import annotations

import dataclasses

import pytest

from bms.pack import InitialState, Pack, PackParams, load_pack
from bms.pack.params import Spread, Topology

NO_SPREAD = Spread(0.0, 0.0, 0.0, 0.0, 0.0)


def small_params(
    series: int = 12,
    parallel: int = 1,
    modules: int = 1,
    spread: Spread | None = NO_SPREAD,
    isothermal: bool = False,
    no_self_discharge: bool = True,
    creep_tau_s: float | None = None,
) -> PackParams:
    """The reference pack's parameters on a smaller topology, optionally idealised."""
    params = load_pack("pack_a_96s")
    cell = params.cell
    if isothermal:
        cell = dataclasses.replace(cell, heat_capacity_j_per_k=1e15)
    if no_self_discharge:
        cell = dataclasses.replace(cell, self_discharge_per_s=0.0)
    if creep_tau_s is not None:
        cell = dataclasses.replace(
            cell, contact=dataclasses.replace(cell.contact, creep_tau_s=creep_tau_s)
        )
    return dataclasses.replace(
        params,
        cell=cell,
        topology=Topology(series, parallel, modules),
        spread=spread if spread is not None else params.spread,
    )


def closed_pack(params: PackParams, soc: float = 0.5, seed: int = 0, **initial: float) -> Pack:
    """A pack with the main contactors closed and a precharged DC link."""
    pack = Pack(params, seed=seed, initial=InitialState(soc=soc, **initial))
    pack.command_contactors(True, True, False)
    pack.hv.link_voltage_v = pack.open_circuit_voltage_v
    pack.run(0.05, 0.01)
    return pack


@pytest.fixture
def reference_params() -> PackParams:
    return load_pack("pack_a_96s")


@pytest.fixture
def make_params():
    """Factory for idealised small-pack parameters (see :func:`small_params`)."""
    return small_params


@pytest.fixture
def make_closed():
    """Factory for packs with closed contactors (see :func:`closed_pack`)."""
    return closed_pack
