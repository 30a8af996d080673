"""BMS configuration: what the firmware knows about its pack (layout, cell type, parameter files).

A real BMS does not see the plant: it is flashed with the pack layout and parameter sets. This
file names them (``bms/data/firmware/bms_<pack>.yaml``); :func:`load_bms_config` validates every
field with a located one-line error, and :class:`BmsConfig` loads the referenced parameter files.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bms.cellmodel.params import CellParams, load_cell
from bms.config import Section, load_yaml
from bms.data import resolve


@dataclass(frozen=True)
class BmsConfig:
    """Pack layout as the BMS is configured for it, plus the names of its parameter files.

    Cells are series positions (one voltage channel each); ``parallel`` cells share a position.
    Temperature sensors sit ``temp_sensors_per_module`` per module, evenly spaced over the
    module's cells, as on the pack's AFE boards.
    """

    name: str
    cell: str
    series: int
    parallel: int
    modules: int
    temp_sensors_per_module: int
    protection: str = "protection"
    limits: str = "limits"
    estimation: str = "estimation"
    statemachine: str = "statemachine"
    fast_task_s: float = 0.01
    slow_task_s: float = 0.1
    source: str = ""

    @property
    def series_per_module(self) -> int:
        return self.series // self.modules

    @property
    def cells_per_module(self) -> int:
        """Physical cells per module (series positions x parallel), as the sensor layout uses."""
        return self.series_per_module * self.parallel

    @property
    def n_temp_sensors(self) -> int:
        return self.modules * self.temp_sensors_per_module

    def group_cell(self) -> CellParams:
        """The cell file scaled to one series position of ``parallel`` cells.

        Capacity and electrode area add up, resistances divide (time constants stay), so the SOC
        filter, the CCD rule and the limits see the position as one large cell.
        """
        cell = load_cell(self.cell)
        p = self.parallel
        if p == 1:
            return cell
        res = cell.resistance
        return replace(
            cell,
            capacity_ah=cell.capacity_ah * p,
            mass_kg=cell.mass_kg * p,
            heat_capacity_j_per_k=cell.heat_capacity_j_per_k * p,
            resistance=replace(
                res, r0_ohm=res.r0_ohm / p, r1_ohm=res.r1_ohm / p, r2_ohm=res.r2_ohm / p
            ),
            mechanics=replace(cell.mechanics, footprint_cm2=cell.mechanics.footprint_cm2 * p),
        )

    def temp_sensor_position(self) -> np.ndarray:
        """Series position (0-based, pack-wide) of each temperature sensor, sensor order.

        Sensors sit at cells ``round(linspace(0, cells_per_module - 1, per_module))`` of each
        module (the pack's AFE layout); a cell's series position is its index // parallel.
        """
        cpm = self.cells_per_module
        per_module = min(self.temp_sensors_per_module, cpm)
        local_cell = np.round(np.linspace(0, cpm - 1, per_module)).astype(int)
        local_pos = local_cell // self.parallel
        return (np.arange(self.modules)[:, None] * self.series_per_module + local_pos).ravel()


def load_bms_config(name_or_path: str | Path = "bms_pack_a_96s") -> BmsConfig:
    """Load a shipped BMS configuration by name or a YAML path; errors are one located line."""
    doc = load_yaml(resolve("firmware", name_or_path))
    root = Section(doc)
    top = root.section("topology")
    series = top.integer("series", min=1, max=1000)
    parallel = top.integer("parallel", 1, min=1, max=100)
    modules = top.integer("modules", min=1, max=series)
    if series % modules:
        raise top.error("modules", f"{series} series cells do not split evenly into {modules}")
    per_module = top.integer("temp_sensors_per_module", min=1, max=64)
    if per_module > (series // modules) * parallel:
        raise top.error("temp_sensors_per_module", "more sensors than cells in a module")
    top.done()
    files = root.section("files", {})
    tasks = root.section("tasks", {})
    fast_s = tasks.number("fast_period_s", 0.01, above=0.0, max=1.0)
    slow_s = tasks.number("slow_period_s", 0.1, above=0.0, max=10.0)
    ratio = slow_s / fast_s
    if abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
        raise tasks.error("slow_period_s", f"must be a whole multiple of fast_period_s ({fast_s})")
    config = BmsConfig(
        name=root.string("name"),
        cell=root.string("cell"),
        series=series,
        parallel=parallel,
        modules=modules,
        temp_sensors_per_module=per_module,
        protection=files.string("protection", "protection"),
        limits=files.string("limits", "limits"),
        estimation=files.string("estimation", "estimation"),
        statemachine=files.string("statemachine", "statemachine"),
        fast_task_s=fast_s,
        slow_task_s=slow_s,
        source=str(doc.source),
    )
    root.raw("description", None)
    for sec in (files, tasks, root):
        sec.done()
    return config
