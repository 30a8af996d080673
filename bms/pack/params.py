"""Pack parameter set: the schema of ``bms/data/packs/*.yaml``, loaded and validated."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bms.cellmodel.params import CellParams, load_cell
from bms.config import Section, load_yaml
from bms.data import resolve
from bms.errors import InputError


@dataclass(frozen=True)
class Topology:
    """Series/parallel counts and modules; each module holds ``series // modules`` positions."""

    series: int
    parallel: int
    modules: int

    @property
    def n_cells(self) -> int:
        return self.series * self.parallel

    @property
    def series_per_module(self) -> int:
        return self.series // self.modules

    @property
    def cells_per_module(self) -> int:
        return self.series_per_module * self.parallel


@dataclass(frozen=True)
class Spread:
    """Cell-to-cell and module-to-module manufacturing spread (1-sigma)."""

    capacity_sigma: float
    resistance_sigma: float
    soc_sigma: float
    preload_sigma_mpa: float
    stiffness_sigma: float


@dataclass(frozen=True)
class Fixture:
    """Stack-pressure fixture per module: spring stiffness, preload and stack modulus."""

    stiffness_n_per_m: float
    preload_mpa: float
    preload_temp_c: float
    stack_modulus_pa: float


@dataclass(frozen=True)
class Thermal:
    """Conductances per cell (W/K) to coolant, ambient and face-to-face neighbours."""

    coolant_w_per_k: float
    coolant_nominal_flow_lpm: float
    coolant_min_fraction: float
    ambient_w_per_k: float
    neighbour_w_per_k: float
    reversible_heat: bool


@dataclass(frozen=True)
class HighVoltage:
    """DC link, precharge path, contactor timing and balancing bleed resistors."""

    dc_link_capacitance_f: float
    precharge_resistance_ohm: float
    dc_link_discharge_resistance_ohm: float
    contactor_close_s: float
    contactor_open_s: float
    balancing_resistance_ohm: float


@dataclass(frozen=True)
class Gas:
    """H2S in the pack enclosure: sources and ventilation."""

    ventilation_tau_s: float
    runaway_release_ppm: float
    breach_rate_ppm_per_s: float


@dataclass(frozen=True)
class SensorSpec:
    """One sensor kind: noise, seeded calibration errors, quantisation and range."""

    noise: float
    offset_sigma: float
    gain_sigma: float
    lsb: float
    min: float
    max: float
    open_value: float
    per_module: int = 0
    lag_s: float = 0.0


SENSOR_KINDS = (
    "cell_voltage",
    "cell_temperature",
    "pressure",
    "current",
    "pack_voltage",
    "link_voltage",
    "h2s",
)


@dataclass(frozen=True)
class PackParams:
    """Everything the virtual pack is built from."""

    name: str
    description: str
    cell: CellParams
    topology: Topology
    spread: Spread
    fixture: Fixture
    thermal: Thermal
    hv: HighVoltage
    gas: Gas
    sensors: dict[str, SensorSpec]
    source: str = ""


def load_pack(name_or_path: str | Path) -> PackParams:
    """Load a shipped pack (``pack_a_96s``) or a pack YAML file, validating every field.

    The ``cell`` field names a shipped cell or a path relative to the pack file.
    """
    path = resolve("packs", name_or_path)
    root = Section(load_yaml(path))

    cell_ref = root.string("cell")
    cell_path = path.parent / cell_ref
    try:
        cell = load_cell(cell_path if cell_path.suffix in (".yaml", ".yml") else cell_ref)
    except InputError as exc:
        raise root.error("cell", str(exc)) from None

    t = root.section("topology")
    topology = Topology(
        series=t.integer("series", min=1, max=1000),
        parallel=t.integer("parallel", 1, min=1, max=50),
        modules=t.integer("modules", min=1, max=200),
    )
    if topology.series % topology.modules:
        raise t.error("modules", f"must divide series ({topology.series}) evenly")
    t.done()

    s = root.section("spread", {})
    spread = Spread(
        capacity_sigma=s.number("capacity_sigma_pct", 0.0, min=0, max=20) / 100,
        resistance_sigma=s.number("resistance_sigma_pct", 0.0, min=0, max=50) / 100,
        soc_sigma=s.number("soc_sigma_pct", 0.0, min=0, max=20) / 100,
        preload_sigma_mpa=s.number("preload_sigma_mpa", 0.0, min=0, max=5),
        stiffness_sigma=s.number("stiffness_sigma_pct", 0.0, min=0, max=50) / 100,
    )
    s.done()

    f = root.section("fixture")
    fixture = Fixture(
        stiffness_n_per_m=f.number("stiffness_kn_per_mm", above=0, max=1e5) * 1e6,
        preload_mpa=f.number("preload_mpa", min=0, max=50),
        preload_temp_c=f.number("preload_temp_c", 25.0, min=-40, max=80),
        stack_modulus_pa=f.number("stack_modulus_gpa", 1.0, above=0, max=1000) * 1e9,
    )
    f.done()

    th = root.section("thermal")
    thermal = Thermal(
        coolant_w_per_k=th.number("coolant_conductance_w_per_k", min=0, max=1e4),
        coolant_nominal_flow_lpm=th.number("coolant_nominal_flow_lpm", 8.0, above=0, max=1e4),
        coolant_min_fraction=th.number("coolant_min_fraction", 0.0, min=0, max=1),
        ambient_w_per_k=th.number("ambient_conductance_w_per_k", min=0, max=1e4),
        neighbour_w_per_k=th.number("neighbour_conductance_w_per_k", min=0, max=1e5),
        reversible_heat=th.boolean("reversible_heat", True),
    )
    th.done()

    h = root.section("hv")
    hv = HighVoltage(
        dc_link_capacitance_f=h.number("dc_link_capacitance_uf", above=0, max=1e6) * 1e-6,
        precharge_resistance_ohm=h.number("precharge_resistance_ohm", above=0, max=1e6),
        dc_link_discharge_resistance_ohm=h.number(
            "dc_link_discharge_resistance_ohm", 1e4, above=0, max=1e9
        ),
        contactor_close_s=h.number("contactor_close_ms", 20.0, min=0, max=1000) / 1e3,
        contactor_open_s=h.number("contactor_open_ms", 10.0, min=0, max=1000) / 1e3,
        balancing_resistance_ohm=h.number("balancing_resistance_ohm", above=0, max=1e6),
    )
    h.done()

    g = root.section("gas", {})
    gas = Gas(
        ventilation_tau_s=g.number("ventilation_tau_s", 1800.0, above=0, max=1e7),
        runaway_release_ppm=g.number("runaway_release_ppm", 400.0, min=0, max=1e5),
        breach_rate_ppm_per_s=g.number("breach_rate_ppm_per_s", 0.02, min=0, max=1e3),
    )
    g.done()

    sens = root.section("sensors")
    sensors = {kind: _sensor(sens.section(kind), kind) for kind in SENSOR_KINDS}
    if sensors["cell_temperature"].per_module > topology.cells_per_module:
        raise sens.section("cell_temperature").error(
            "per_module", f"more sensors than the {topology.cells_per_module} cells of a module"
        )
    sens.done()

    params = PackParams(
        name=root.string("name"),
        description=root.string("description", ""),
        cell=cell,
        topology=topology,
        spread=spread,
        fixture=fixture,
        thermal=thermal,
        hv=hv,
        gas=gas,
        sensors=sensors,
        source=str(path),
    )
    root.done()
    return params


def _sensor(s: Section, kind: str) -> SensorSpec:
    lo = s.number("min")
    spec = SensorSpec(
        noise=s.number("noise", 0.0, min=0),
        offset_sigma=s.number("offset_sigma", 0.0, min=0),
        gain_sigma=s.number("gain_sigma", 0.0, min=0, max=0.5),
        lsb=s.number("lsb", above=0),
        min=lo,
        max=s.number("max", above=lo),
        open_value=s.number("open_value", lo),
        per_module=s.integer("per_module", 1, min=1, max=64) if kind == "cell_temperature" else 0,
        lag_s=s.number("lag_s", 0.0, min=0, max=100) if kind == "pressure" else 0.0,
    )
    s.done()
    return spec
