"""Cell parameter set: the schema of ``bms/data/cells/*.yaml``, loaded and validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bms.config import Section, load_yaml
from bms.data import resolve


@dataclass(frozen=True)
class OcvTable:
    """OCV(SOC) at ``temp_c`` plus the entropic coefficient dU/dT(SOC) for other temperatures."""

    soc: np.ndarray
    voltage_v: np.ndarray
    dudt_v_per_k: np.ndarray
    temp_c: float


@dataclass(frozen=True)
class Resistance:
    """R0 and two RC pairs at the reference point, with Arrhenius and pressure exponents."""

    temp_ref_c: float
    pressure_ref_mpa: float
    r0_ohm: float
    r0_ea_j_mol: float
    r0_n_p: float
    r1_ohm: float
    r1_tau_s: float
    r1_ea_j_mol: float
    r1_n_p: float
    r1_n_p_cold: float
    r1_cold_temp_c: float
    r1_low_soc_gain: float
    r1_low_soc_scale: float
    r2_ohm: float
    r2_tau_s: float
    r2_ea_j_mol: float
    r2_n_p: float

    @property
    def c1_f(self) -> float:
        return self.r1_tau_s / self.r1_ohm

    @property
    def c2_f(self) -> float:
        return self.r2_tau_s / self.r2_ohm


@dataclass(frozen=True)
class Mechanics:
    """Layer build and lithium thickness change that turn SOC into stack strain."""

    areal_capacity_mah_cm2: float
    layers: int
    footprint_cm2: float
    thickness_mm: float
    li_um_per_mah_cm2: float
    cathode_contraction_um: float
    cathode_onset_soc: float
    cte_difference_per_k: float


@dataclass(frozen=True)
class Contact:
    """Recoverable contact fraction ``a`` of the Li/electrolyte interface (DOMAIN.md section 4)."""

    loss_per_ma_cm2_s: float
    recover_per_mpa: float
    pressure_min_mpa: float
    creep_tau_s: float
    creep_temp_ref_c: float
    creep_halving_k: float


@dataclass(frozen=True)
class Ccd:
    """Critical current density J_CCD(T, P) for plating; stripping limit is ``strip_factor`` x."""

    profile: str
    j_ref_ma_cm2: float
    temp_ref_c: float
    pressure_ref_mpa: float
    ea_j_mol: float
    n_p: float
    pressure_cap_mpa: float
    strip_factor: float


@dataclass(frozen=True)
class Runaway:
    """Thermal-runaway emulation: self-heating above onset, full release above trigger."""

    onset_c: float
    trigger_c: float
    self_heating_w: float
    self_heating_doubling_k: float
    energy_factor: float
    vented_fraction: float
    duration_s: float


@dataclass(frozen=True)
class CellParams:
    """Everything the plant and the BMS model know about one cell type."""

    name: str
    chemistry: str
    capacity_ah: float
    voltage_min_v: float
    voltage_max_v: float
    coulombic_efficiency: float
    self_discharge_per_s: float
    mass_kg: float
    heat_capacity_j_per_k: float
    ocv: OcvTable
    resistance: Resistance
    mechanics: Mechanics
    contact: Contact
    ccd: Ccd
    runaway: Runaway
    source: str = ""

    @property
    def electrode_area_cm2(self) -> float:
        return self.mechanics.footprint_cm2 * self.mechanics.layers

    @property
    def energy_wh(self) -> float:
        """Electrical energy from 0 to 100 % SOC at the OCV table's temperature."""
        return float(np.trapezoid(self.ocv.voltage_v, self.ocv.soc) * self.capacity_ah)


def load_cell(name_or_path: str | Path) -> CellParams:
    """Load a shipped cell by name (``sslm90``) or a cell YAML file, validating every field."""
    doc = load_yaml(resolve("cells", name_or_path))
    root = Section(doc)
    cell = _read_cell(root)
    root.done()
    return cell


def _read_cell(root: Section) -> CellParams:
    vmin = root.number("voltage_min_v", min=1.0, max=5.0)
    vmax = root.number("voltage_max_v", min=1.0, max=6.0)
    if vmax <= vmin:
        raise root.error("voltage_max_v", f"must be above voltage_min_v ({vmin} V)")

    o = root.section("ocv")
    soc = o.array("soc", min_len=2, min=0.0, max=1.0, increasing=True)
    volt = o.array("voltage_v", min_len=2, min=0.0, max=6.0)
    dudt = o.array("dudt_mv_per_k", np.zeros_like(soc).tolist(), min=-5.0, max=5.0)
    for key, arr in (("voltage_v", volt), ("dudt_mv_per_k", dudt)):
        if arr.shape != soc.shape:
            raise o.error(key, f"expected {soc.size} values (one per soc point), got {arr.size}")
    if soc[0] != 0.0 or soc[-1] != 1.0:
        raise o.error("soc", "must run from 0.0 to 1.0")
    if np.any(np.diff(volt) < 0):
        raise o.error("voltage_v", "must not decrease with SOC")
    if volt[0] < vmin - 0.05 or volt[-1] > vmax + 0.05:
        raise o.error(
            "voltage_v",
            f"table {volt[0]:.3f}..{volt[-1]:.3f} V lies outside the "
            f"voltage limits {vmin}..{vmax} V",
        )
    ocv = OcvTable(soc, volt, dudt * 1e-3, o.number("temp_c", 25.0, min=-40, max=80))
    o.done()

    r = root.section("resistance")
    res = Resistance(
        temp_ref_c=r.number("temp_ref_c", 25.0, min=-40, max=80),
        pressure_ref_mpa=r.number("pressure_ref_mpa", 2.0, above=0, max=50),
        r0_ohm=r.number("r0_mohm", above=0, max=1000) * 1e-3,
        r0_ea_j_mol=r.number("r0_ea_kj_mol", 0.0, min=0, max=200) * 1e3,
        r0_n_p=r.number("r0_n_p", 0.0, min=0, max=2),
        r1_ohm=r.number("r1_mohm", above=0, max=1000) * 1e-3,
        r1_tau_s=r.number("r1_tau_s", above=0, max=1e5),
        r1_ea_j_mol=r.number("r1_ea_kj_mol", 0.0, min=0, max=200) * 1e3,
        r1_n_p=r.number("r1_n_p", 0.0, min=0, max=2),
        r1_n_p_cold=r.number("r1_n_p_cold", r.number("r1_n_p", 0.0), min=0, max=2),
        r1_cold_temp_c=r.number("r1_cold_temp_c", -20.0, min=-60, max=20),
        r1_low_soc_gain=r.number("r1_low_soc_gain", 0.0, min=0, max=100),
        r1_low_soc_scale=r.number("r1_low_soc_scale", 0.03, above=0, max=1),
        r2_ohm=r.number("r2_mohm", above=0, max=1000) * 1e-3,
        r2_tau_s=r.number("r2_tau_s", above=0, max=1e6),
        r2_ea_j_mol=r.number("r2_ea_kj_mol", 0.0, min=0, max=200) * 1e3,
        r2_n_p=r.number("r2_n_p", 0.0, min=0, max=2),
    )
    if res.r2_tau_s <= res.r1_tau_s:
        raise r.error("r2_tau_s", "must be longer than r1_tau_s (fast pair first)")
    r.done()

    m = root.section("mechanics")
    mech = Mechanics(
        areal_capacity_mah_cm2=m.number("areal_capacity_mah_cm2", above=0, max=50),
        layers=m.integer("layers", min=1, max=1000),
        footprint_cm2=m.number("footprint_cm2", above=0, max=1e5),
        thickness_mm=m.number("thickness_mm", above=0, max=500),
        li_um_per_mah_cm2=m.number("li_um_per_mah_cm2", 4.85, min=0, max=50),
        cathode_contraction_um=m.number("cathode_contraction_um", 0.0, min=0, max=50),
        cathode_onset_soc=m.number("cathode_onset_soc", 0.77, min=0, max=0.99),
        cte_difference_per_k=m.number("cte_difference_per_k", 0.0, min=-1e-3, max=1e-3),
    )
    m.done()

    c = root.section("contact")
    contact = Contact(
        loss_per_ma_cm2_s=c.number("loss_per_ma_cm2_s", 0.0, min=0, max=1),
        recover_per_mpa=c.number("recover_per_mpa", 1.0, min=0, max=100),
        pressure_min_mpa=c.number("pressure_min_mpa", 0.3, min=0, max=50),
        creep_tau_s=c.number("creep_tau_s", 3600.0, above=0, max=1e7),
        creep_temp_ref_c=c.number("creep_temp_ref_c", 25.0, min=-40, max=80),
        creep_halving_k=c.number("creep_halving_k", 10.0, above=0, max=100),
    )
    c.done()

    j = root.section("ccd")
    ccd = Ccd(
        profile=j.string("profile", "custom"),
        j_ref_ma_cm2=j.number("j_ref_ma_cm2", above=0, max=100),
        temp_ref_c=j.number("temp_ref_c", 25.0, min=-40, max=100),
        pressure_ref_mpa=j.number("pressure_ref_mpa", 2.0, above=0, max=50),
        ea_j_mol=j.number("ea_kj_mol", 0.0, min=0, max=200) * 1e3,
        n_p=j.number("n_p", 0.0, min=0, max=3),
        pressure_cap_mpa=j.number("pressure_cap_mpa", 5.0, above=0, max=50),
        strip_factor=j.number("strip_factor", 2.0, above=0, max=100),
    )
    j.done()

    t = root.section("runaway")
    runaway = Runaway(
        onset_c=t.number("onset_c", 140.0, min=60, max=400),
        trigger_c=t.number("trigger_c", 170.0, min=60, max=500),
        self_heating_w=t.number("self_heating_w", 2.0, min=0, max=1e4),
        self_heating_doubling_k=t.number("self_heating_doubling_k", 10.0, above=0, max=100),
        energy_factor=t.number("energy_factor", 1.25, min=0, max=10),
        vented_fraction=t.number("vented_fraction", 0.6, min=0, max=1),
        duration_s=t.number("duration_s", 20.0, above=0, max=3600),
    )
    if runaway.trigger_c <= runaway.onset_c:
        raise t.error("trigger_c", "must be above onset_c")
    t.done()

    th = root.section("thermal")
    heat_capacity = th.number("heat_capacity_j_per_k", above=0, max=1e6)
    th.done()

    month_s = 30.0 * 86400.0
    return CellParams(
        name=root.string("name"),
        chemistry=root.string("chemistry", ""),
        capacity_ah=root.number("capacity_ah", above=0, max=10000),
        voltage_min_v=vmin,
        voltage_max_v=vmax,
        coulombic_efficiency=root.number("coulombic_efficiency", 1.0, above=0.5, max=1.0),
        self_discharge_per_s=root.number("self_discharge_pct_per_month", 0.0, min=0, max=100)
        / 100.0
        / month_s,
        mass_kg=root.number("mass_kg", 1.0, above=0, max=100),
        heat_capacity_j_per_k=heat_capacity,
        ocv=ocv,
        resistance=res,
        mechanics=mech,
        contact=contact,
        ccd=ccd,
        runaway=runaway,
        source=root.doc.source,
    )


def cell_to_dict(cell: CellParams) -> dict[str, Any]:
    """The YAML mapping of a cell (inverse of :func:`load_cell`), for writing fitted cells."""
    r, m, c, j, t = cell.resistance, cell.mechanics, cell.contact, cell.ccd, cell.runaway
    month_s = 30.0 * 86400.0

    def f(x: float) -> float:
        return float(f"{x:.6g}")

    return {
        "name": cell.name,
        "chemistry": cell.chemistry,
        "capacity_ah": f(cell.capacity_ah),
        "voltage_min_v": f(cell.voltage_min_v),
        "voltage_max_v": f(cell.voltage_max_v),
        "coulombic_efficiency": f(cell.coulombic_efficiency),
        "self_discharge_pct_per_month": f(cell.self_discharge_per_s * month_s * 100),
        "mass_kg": f(cell.mass_kg),
        "ocv": {
            "temp_c": f(cell.ocv.temp_c),
            "soc": [f(x) for x in cell.ocv.soc],
            "voltage_v": [f(x) for x in cell.ocv.voltage_v],
            "dudt_mv_per_k": [f(x * 1e3) for x in cell.ocv.dudt_v_per_k],
        },
        "resistance": {
            "temp_ref_c": f(r.temp_ref_c),
            "pressure_ref_mpa": f(r.pressure_ref_mpa),
            "r0_mohm": f(r.r0_ohm * 1e3),
            "r0_ea_kj_mol": f(r.r0_ea_j_mol / 1e3),
            "r0_n_p": f(r.r0_n_p),
            "r1_mohm": f(r.r1_ohm * 1e3),
            "r1_tau_s": f(r.r1_tau_s),
            "r1_ea_kj_mol": f(r.r1_ea_j_mol / 1e3),
            "r1_n_p": f(r.r1_n_p),
            "r1_n_p_cold": f(r.r1_n_p_cold),
            "r1_cold_temp_c": f(r.r1_cold_temp_c),
            "r1_low_soc_gain": f(r.r1_low_soc_gain),
            "r1_low_soc_scale": f(r.r1_low_soc_scale),
            "r2_mohm": f(r.r2_ohm * 1e3),
            "r2_tau_s": f(r.r2_tau_s),
            "r2_ea_kj_mol": f(r.r2_ea_j_mol / 1e3),
            "r2_n_p": f(r.r2_n_p),
        },
        "thermal": {"heat_capacity_j_per_k": f(cell.heat_capacity_j_per_k)},
        "mechanics": {
            "areal_capacity_mah_cm2": f(m.areal_capacity_mah_cm2),
            "layers": m.layers,
            "footprint_cm2": f(m.footprint_cm2),
            "thickness_mm": f(m.thickness_mm),
            "li_um_per_mah_cm2": f(m.li_um_per_mah_cm2),
            "cathode_contraction_um": f(m.cathode_contraction_um),
            "cathode_onset_soc": f(m.cathode_onset_soc),
            "cte_difference_per_k": f(m.cte_difference_per_k),
        },
        "contact": {
            "loss_per_ma_cm2_s": f(c.loss_per_ma_cm2_s),
            "recover_per_mpa": f(c.recover_per_mpa),
            "pressure_min_mpa": f(c.pressure_min_mpa),
            "creep_tau_s": f(c.creep_tau_s),
            "creep_temp_ref_c": f(c.creep_temp_ref_c),
            "creep_halving_k": f(c.creep_halving_k),
        },
        "ccd": {
            "profile": j.profile,
            "j_ref_ma_cm2": f(j.j_ref_ma_cm2),
            "temp_ref_c": f(j.temp_ref_c),
            "pressure_ref_mpa": f(j.pressure_ref_mpa),
            "ea_kj_mol": f(j.ea_j_mol / 1e3),
            "n_p": f(j.n_p),
            "pressure_cap_mpa": f(j.pressure_cap_mpa),
            "strip_factor": f(j.strip_factor),
        },
        "runaway": {
            "onset_c": f(t.onset_c),
            "trigger_c": f(t.trigger_c),
            "self_heating_w": f(t.self_heating_w),
            "self_heating_doubling_k": f(t.self_heating_doubling_k),
            "energy_factor": f(t.energy_factor),
            "vented_fraction": f(t.vented_fraction),
            "duration_s": f(t.duration_s),
        },
    }


def dump_cell(cell: CellParams, path: str | Path) -> None:
    """Write a cell parameter file that :func:`load_cell` reads back unchanged."""
    Path(path).write_text(yaml.safe_dump(cell_to_dict(cell), sort_keys=False), encoding="utf-8")
