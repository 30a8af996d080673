"""The virtual pack: cell states as numpy arrays, stepped with a fixed dt chosen by the caller.

Fast states (SOC, RC voltages, temperatures, DC link) advance every step with exact exponential
updates. Slowly varying parameters (resistances from T, P, SOC and contact; pressure, creep,
contact fraction, gas, self-discharge, runaway ramps) are refreshed every ``slow_dt_s`` of
simulated time (default 100 ms), far below their own time constants, which keeps a step to a few
dozen vectorised numpy operations.

Cells are indexed series-major: cell ``c`` is series position ``c // parallel``; module ``m``
holds series positions ``m * series_per_module ... (m + 1) * series_per_module - 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from bms.cellmodel import ecm
from bms.cellmodel.params import OcvTable
from bms.pack import electrical, pressure, thermal
from bms.pack.hv import HvCircuit
from bms.pack.params import SENSOR_KINDS, PackParams
from bms.pack.sensors import SensorBank, open_wire_view

#: Sensor kinds in the order their banks are built (and draw calibration from the seed).
SENSOR_ORDER = SENSOR_KINDS


@dataclass(frozen=True)
class InitialState:
    """Initial conditions: SOC (fraction), temperatures (degC), module stack pressure (MPa).

    Without ``pressure_mpa`` the fixture preload holds at 50 % SOC and the start pressure follows
    from the initial SOC; with it, the preload is set so the modules start at that pressure.
    """

    soc: float = 0.5
    temp_c: float = 25.0
    ambient_c: float | None = None
    coolant_c: float | None = None
    pressure_mpa: float | None = None


@dataclass
class Measurements:
    """One set of sensor readings, in the units of the pack bus."""

    cell_voltage_v: np.ndarray
    cell_temp_c: np.ndarray
    pressure_mpa: np.ndarray
    current_a: float
    pack_voltage_v: float
    link_voltage_v: float
    h2s_ppm: float
    contactors_closed: tuple[bool, bool, bool]


def _extended_ocv(table: OcvTable) -> OcvTable:
    """OCV table extended linearly beyond 0..1 so overcharge and over-discharge stay physical."""
    lo = (table.voltage_v[1] - table.voltage_v[0]) / (table.soc[1] - table.soc[0])
    hi = (table.voltage_v[-1] - table.voltage_v[-2]) / (table.soc[-1] - table.soc[-2])
    soc = np.concatenate(([-0.2], table.soc, [1.5]))
    volt = np.concatenate(
        ([table.voltage_v[0] - 0.2 * lo], table.voltage_v, [table.voltage_v[-1] + 0.5 * hi])
    )
    volt = np.maximum(volt, 0.0)
    dudt = np.concatenate(([table.dudt_v_per_k[0]], table.dudt_v_per_k, [table.dudt_v_per_k[-1]]))
    return replace(table, soc=soc, voltage_v=volt, dudt_v_per_k=dudt)


class Pack:
    """A solid-state lithium-metal pack: electrical, thermal, pressure, sensors, HV path.

    Inputs are set through methods (``set_load_current``, ``set_load_power``,
    ``command_contactors``, ``set_balancing``) and attributes (``coolant_temp_c``,
    ``coolant_flow_lpm``, ``ambient_temp_c``); :meth:`step` advances time; :meth:`measure` reads
    the sensors. Positive current discharges the pack.
    """

    def __init__(
        self,
        params: PackParams,
        seed: int = 0,
        initial: InitialState | None = None,
        slow_dt_s: float = 0.1,
    ) -> None:
        initial = initial or InitialState()
        self.params = params
        self.cell = cell = params.cell
        top = params.topology
        self.n_series, self.n_parallel, self.n_modules = top.series, top.parallel, top.modules
        self.n_cells = top.n_cells
        self.slow_dt_s = slow_dt_s
        shape = (top.series, top.parallel)
        spread_rng, cal_rng, noise_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)
        )

        # Manufacturing spread, drawn once and in a fixed order (same seed, same pack).
        sp = params.spread
        self.capacity_ah = cell.capacity_ah * (
            1.0 + sp.capacity_sigma * spread_rng.standard_normal(shape)
        )
        self.resistance_scale = 1.0 + sp.resistance_sigma * spread_rng.standard_normal(shape)
        self.soc = np.clip(initial.soc + sp.soc_sigma * spread_rng.standard_normal(shape), 0.0, 1.0)
        self.preload_mpa = (
            params.fixture.preload_mpa
            + sp.preload_sigma_mpa * spread_rng.standard_normal(top.modules)
        )
        fixture_k = params.fixture.stiffness_n_per_m * (
            1.0 + sp.stiffness_sigma * spread_rng.standard_normal(top.modules)
        )

        # Fast states.
        self.v1 = np.zeros(shape)
        self.v2 = np.zeros(shape)
        self.temp_c = np.full(shape, float(initial.temp_c))
        self.cell_current_a = np.zeros(shape)
        self.group_voltage_v = np.zeros(top.series)
        self.current_a = 0.0
        self.pack_voltage_v = 0.0
        self.time_s = 0.0
        self.power_limited = False

        # Slow states.
        self.contact = np.ones(shape)
        self.relax_mpa = np.zeros(top.modules)
        self.pressure_mpa = self.preload_mpa.copy()
        self.h2s_ppm = 0.0
        self.runaway_progress = np.zeros(shape)
        self.runaway_active = np.zeros(shape, dtype=bool)

        # Inputs.
        self.ambient_temp_c = float(
            initial.ambient_c if initial.ambient_c is not None else initial.temp_c
        )
        self.coolant_temp_c = float(
            initial.coolant_c if initial.coolant_c is not None else initial.temp_c
        )
        self.coolant_flow_lpm = params.thermal.coolant_nominal_flow_lpm
        self.coolant_lost = False
        self._load_current_a = 0.0
        self._load_power_w: float | None = None
        self.balancing = np.zeros(top.series, dtype=bool)
        self.casing_breach = False
        self.external_short_ohm: float | None = None

        # Fault-driven per-cell leak conductance (soft shorts, runaway internal short).
        self.short_s = np.zeros(shape)
        self._runaway_short_s = np.zeros(shape)
        self.runaway_triggers: dict[int, tuple[float, float, float, float]] = {}
        self.heater_w = np.zeros(shape)
        self._runaway_any = False
        self._runaway_heat_w: np.ndarray | float = 0.0
        # Fixture relaxation (pressure-loss fault): preload decays towards a target per module.
        self.fixture_loss_tau_s = np.full(top.modules, np.inf)
        self.fixture_loss_target_mpa = np.zeros(top.modules)

        # HV path.
        hv = params.hv
        self.hv = HvCircuit(
            hv.dc_link_capacitance_f,
            hv.precharge_resistance_ohm,
            hv.dc_link_discharge_resistance_ohm,
            hv.contactor_close_s,
            hv.contactor_open_s,
        )

        # Mechanics constants per module.
        mech = cell.mechanics
        self._area_m2 = mech.footprint_cm2 * 1e-4
        length_m = top.cells_per_module * mech.thickness_mm * 1e-3
        self._k_eff = pressure.effective_stiffness_n_per_m(
            fixture_k, params.fixture.stack_modulus_pa, self._area_m2, length_m
        )
        self._thermal_mpa_per_k = (
            self._k_eff * mech.cte_difference_per_k * length_m / self._area_m2 * 1e-6
        )
        self._growth_ref_m = (
            mech.layers * top.cells_per_module * float(pressure.layer_growth_m(np.array(0.5), mech))
        )

        # Thermal constants.
        self._n_nb = thermal.neighbour_count(top.modules, top.cells_per_module).reshape(shape)
        self._nb_buf = np.zeros((top.modules, top.cells_per_module))
        self._heat_capacity = cell.heat_capacity_j_per_k
        self._ocv = _extended_ocv(cell.ocv)
        self._ah_to_soc = 1.0 / (3600.0 * self.capacity_ah)
        self._eta_minus_one = cell.coulombic_efficiency - 1.0

        # Sensors.
        spm = top.series_per_module
        # A programmatic topology may have fewer cells per module than the file's sensors.
        per_mod = min(params.sensors["cell_temperature"].per_module, top.cells_per_module)
        pos = np.round(np.linspace(0, top.cells_per_module - 1, per_mod)).astype(int)
        self.temp_sensor_cell = (
            np.arange(top.modules)[:, None] * top.cells_per_module + pos
        ).ravel()
        counts = {
            "cell_voltage": top.series,
            "cell_temperature": self.temp_sensor_cell.size,
            "pressure": top.modules,
            "current": 1,
            "pack_voltage": 1,
            "link_voltage": 1,
            "h2s": 1,
        }
        self.sensors = {
            kind: SensorBank(params.sensors[kind], counts[kind], cal_rng, noise_rng)
            for kind in SENSOR_ORDER
        }
        self._channels_per_chip = spm
        self._last_measure_s = 0.0

        if initial.pressure_mpa is not None:
            self.preload_mpa += initial.pressure_mpa - self._elastic_pressure_mpa().mean()
        self.pressure_mpa = self._elastic_pressure_mpa()
        self._pressure_seen = self.pressure_mpa.copy()

        self._g: np.ndarray | None = None
        self._slow_elapsed_s = 0.0
        self._refresh_slow(0.0)
        self._refresh_decays(0.01)
        e = ecm.ocv_v(self.soc, self.temp_c, self._ocv)
        self._e_pack_v = float(((e * self._g).sum(axis=1) / self._b).sum())
        self.group_voltage_v = (e * self._g).sum(axis=1) / self._b
        self.pack_voltage_v = self._e_pack_v

    # ------------------------------------------------------------------ inputs
    def set_load_current(self, current_a: float) -> None:
        """Current demand at the terminals (A, positive = discharge)."""
        self._load_current_a = float(current_a)
        self._load_power_w = None

    def set_load_power(self, power_w: float) -> None:
        """Power demand at the terminals (W, positive = discharge), solved against voltage."""
        self._load_power_w = float(power_w)

    def command_contactors(self, plus: bool, minus: bool, precharge: bool) -> None:
        """Coil commands from the BMS (True = close)."""
        self.hv.command(plus, minus, precharge)

    def set_balancing(self, mask: np.ndarray) -> None:
        """Close the bleed resistor of each series position where ``mask`` is true."""
        np.copyto(self.balancing, mask)
        self._refresh_network()

    # ------------------------------------------------------------------ derived truth
    @property
    def cell_voltage_v(self) -> np.ndarray:
        """True voltage of each series position (the cells of a group share it)."""
        return self.group_voltage_v

    @property
    def open_circuit_voltage_v(self) -> float:
        return self._e_pack_v

    @property
    def link_voltage_v(self) -> float:
        return self.hv.link_voltage_v

    @property
    def module_soc(self) -> np.ndarray:
        return self.soc.reshape(self.n_modules, -1).mean(axis=1)

    def bleed_current_a(self) -> np.ndarray:
        """Current through each series position's bleed resistor (A)."""
        return self.balancing * self.group_voltage_v / self.params.hv.balancing_resistance_ohm

    # ------------------------------------------------------------------ stepping
    def step(self, dt_s: float) -> None:
        """Advance the pack by ``dt_s`` seconds (1 ms to 100 ms)."""
        hv = self.hv
        hv.step_contactors(dt_s)
        if dt_s != self._dt_cached:
            self._refresh_decays(dt_s)

        soc, v1, v2, temp = self.soc, self.v1, self.v2, self.temp_c
        ocv = np.interp(soc, self._ocv.soc, self._ocv.voltage_v)
        ocv += self._ocv_temp_term
        if self._runaway_any:
            ocv *= 1.0 - self.runaway_progress
        e = ocv - self._a1 * v1 - self._a2 * v2
        a_sum = (e * self._g).sum(axis=1)
        e_pack = float((a_sum / self._b).sum())
        self._e_pack_v = e_pack
        r_pack = self._r_pack

        # Pack current from the HV path state.
        current = 0.0
        self.power_limited = False
        if hv.main_closed:
            if self._load_power_w is not None:
                current, self.power_limited = electrical.current_for_power(
                    e_pack, r_pack, self._load_power_w
                )
            else:
                current = self._load_current_a
            if self.external_short_ohm is not None:
                # Load and short share the terminal voltage V = E - R I_total.
                r_x = self.external_short_ohm
                current = (current + e_pack / r_x) / (1.0 + r_pack / r_x)
            current += hv.follow_terminal(e_pack - r_pack * current, r_pack, dt_s)
        else:
            short_s = 0.0 if self.external_short_ohm is None else 1.0 / self.external_short_ohm
            if hv.precharging:
                current = hv.precharge_current_a(e_pack, r_pack, dt_s, short_s)
            else:
                hv.discharge_link(dt_s, short_s)
        self.current_a = current

        v_group, i_cell = electrical.cell_currents(e, self._g, a_sum, self._b, current)
        self.group_voltage_v = v_group
        self.cell_current_a = i_cell
        self.pack_voltage_v = float(v_group.sum())

        # Charge: only coulombic_efficiency of charge current is stored.
        soc -= (i_cell + self._eta_minus_one * np.minimum(i_cell, 0.0)) * self._k_soc

        # RC pairs: exact zero-order-hold update.
        v1 *= self._a1
        v1 += self._b1 * i_cell
        v2 *= self._a2
        v2 += self._b2 * i_cell

        # Heat and temperature.
        heat = i_cell * i_cell * self._r0 + v1 * v1 / self._r1 + v2 * v2 / self._r2
        if self._rev_coeff is not None:
            heat -= i_cell * self._rev_coeff
        if self._leak_any:
            heat += self._leak_s * (v_group * v_group)[:, None]
        if self._runaway_any:
            heat += self._runaway_heat_w
        nb = thermal.neighbour_sum(temp.reshape(self._nb_buf.shape), self._nb_buf)
        thermal.thermal_step(
            temp,
            heat,
            nb.reshape(temp.shape),
            self._g_nb,
            self._drive_w,
            self._t_decay,
            self._t_gain,
        )

        self.time_s += dt_s
        self._slow_elapsed_s += dt_s
        if self._slow_elapsed_s >= self.slow_dt_s - 1e-12:
            self._refresh_slow(self._slow_elapsed_s)
            self._slow_elapsed_s = 0.0

    def run(self, duration_s: float, dt_s: float) -> None:
        """Step for ``duration_s`` with constant inputs."""
        for _ in range(int(round(duration_s / dt_s))):
            self.step(dt_s)

    # ------------------------------------------------------------------ slow parameters
    def _refresh_slow(self, elapsed_s: float) -> None:
        """Update slowly varying states and the parameters the fast step uses."""
        cell = self.cell
        temp = self.temp_c
        if elapsed_s > 0.0:
            self._advance_mechanics(elapsed_s)
            self._advance_runaway(elapsed_s)
            self.soc -= cell.self_discharge_per_s * elapsed_s
            self._advance_gas(elapsed_s)
        p_cell = np.repeat(self.pressure_mpa, self.soc.size // self.n_modules).reshape(
            self.soc.shape
        )
        r0, r1, r2 = ecm.resistances_ohm(temp, p_cell, self.soc, cell.resistance, self.contact)
        self._r0 = r0 * self.resistance_scale
        self._r1 = r1 * self.resistance_scale
        self._r2 = r2 * self.resistance_scale
        dudt = ecm.dudt_v_per_k(self.soc, self._ocv)
        self._ocv_temp_term = dudt * (temp - self._ocv.temp_c)
        self._rev_coeff = (
            dudt * (temp + ecm.KELVIN) if self.params.thermal.reversible_heat else None
        )
        self._refresh_boundary()
        self._refresh_network()
        self._dt_cached = -1.0

    def _refresh_boundary(self) -> None:
        th = self.params.thermal
        flow = 0.0 if self.coolant_lost else self.coolant_flow_lpm
        g_cool = thermal.coolant_conductance_w_per_k(
            th.coolant_w_per_k, flow, th.coolant_nominal_flow_lpm, th.coolant_min_fraction
        )
        self._g_nb = th.neighbour_w_per_k
        self._g_fixed = np.full(self.soc.shape, g_cool + th.ambient_w_per_k)
        self._drive_w = np.full(
            self.soc.shape, g_cool * self.coolant_temp_c + th.ambient_w_per_k * self.ambient_temp_c
        )
        self._g_total = self._g_fixed + self._g_nb * self._n_nb

    def _refresh_network(self) -> None:
        """Leak and bleed conductances changed: rebuild the Norton denominators."""
        self._leak_s = self.short_s + self._runaway_short_s
        self._leak_any = bool(self._leak_s.any())
        self._bleed_s = self.balancing / self.params.hv.balancing_resistance_ohm
        if self._g is not None:
            self._b = (self._g + self._leak_s).sum(axis=1) + self._bleed_s
            self._r_pack = float((1.0 / self._b).sum())

    def _refresh_decays(self, dt_s: float) -> None:
        res = self.cell.resistance
        self._a1 = np.exp(-dt_s / (self._r1 * res.c1_f))
        self._a2 = np.exp(-dt_s / (self._r2 * res.c2_f))
        self._b1 = self._r1 * (1.0 - self._a1)
        self._b2 = self._r2 * (1.0 - self._a2)
        self._g = 1.0 / (self._r0 + self._b1 + self._b2)
        self._b = (self._g + self._leak_s).sum(axis=1) + self._bleed_s
        self._r_pack = float((1.0 / self._b).sum())
        self._k_soc = dt_s * self._ah_to_soc
        self._t_decay, self._t_gain = thermal.step_factors(dt_s, self._g_total, self._heat_capacity)
        self._dt_cached = dt_s

    def _elastic_pressure_mpa(self) -> np.ndarray:
        """Module pressure before creep: preload + Li growth since 50 % SOC + thermal expansion."""
        soc_m = self.soc.reshape(self.n_modules, -1)
        temp_m = self.temp_c.reshape(self.n_modules, -1).mean(axis=1)
        growth = pressure.module_growth_m(soc_m, self.cell.mechanics) - self._growth_ref_m
        return (
            self.preload_mpa
            + self._k_eff * growth / self._area_m2 * 1e-6
            + self._thermal_mpa_per_k * (temp_m - self.params.fixture.preload_temp_c)
        )

    def _advance_mechanics(self, elapsed_s: float) -> None:
        """Stack pressure with creep relaxation, and the interface contact fraction."""
        cell = self.cell
        loss = np.exp(-elapsed_s / self.fixture_loss_tau_s)
        target_mpa = self.fixture_loss_target_mpa
        self.preload_mpa = target_mpa + (self.preload_mpa - target_mpa) * loss
        elastic = self._elastic_pressure_mpa()
        temp_m = self.temp_c.reshape(self.n_modules, -1).mean(axis=1)
        tau = pressure.creep_tau_s(temp_m, cell.contact)
        target = elastic - self.preload_mpa
        self.relax_mpa = target + (self.relax_mpa - target) * np.exp(-elapsed_s / tau)
        self.pressure_mpa = np.maximum(elastic - self.relax_mpa, 0.0)

        # Stripping faster than creep refills the interface loses contact (voids).
        c = cell.contact
        p_cell = np.repeat(self.pressure_mpa, self.soc.size // self.n_modules).reshape(
            self.soc.shape
        )
        j_strip = np.maximum(self.cell_current_a, 0.0) * 1e3 / cell.electrode_area_cm2
        j_crit = cell.ccd.strip_factor * ecm.ccd_ma_cm2(self.temp_c, p_cell, cell.ccd)
        tau_cell = pressure.creep_tau_s(self.temp_c, c)
        rate = (
            -c.loss_per_ma_cm2_s * np.maximum(j_strip - j_crit, 0.0)
            + c.recover_per_mpa
            * np.maximum(p_cell - c.pressure_min_mpa, 0.0)
            * (1.0 - self.contact)
            / tau_cell
        )
        self.contact = np.clip(self.contact + rate * elapsed_s, 0.05, 1.0)

    def _advance_runaway(self, elapsed_s: float) -> None:
        """Self-heating above onset, full energy release above trigger, internal-short ramps."""
        ra = self.cell.runaway
        for cell_index, (start_s, ramp_s, r_start, r_end) in self.runaway_triggers.items():
            frac = min(max((self.time_s - start_s) / ramp_s, 0.0), 1.0)
            r_short = r_start * (r_end / r_start) ** frac
            self._runaway_short_s.flat[cell_index] = 1.0 / r_short
            # A lumped cell cannot hold the short's hot spot: at the end of the ramp the local
            # separator has failed, which is what the trigger method is for (GB 38031 Annex C).
            if frac >= 1.0:
                self.runaway_active.flat[cell_index] = True
        hot = self.temp_c > ra.onset_c
        self.runaway_active |= self.temp_c > ra.trigger_c
        heating = bool(self.heater_w.any())
        self._runaway_any = bool(hot.any() or self.runaway_active.any() or heating)
        if not self._runaway_any:
            self._runaway_heat_w = 0.0
            return
        energy_j = ra.energy_factor * self.cell.energy_wh * 3600.0
        release_w = energy_j / ra.duration_s
        # Self-heating of the onset chemistry, until the cell is in full runaway.
        excess_k = np.minimum(self.temp_c - ra.onset_c, ra.trigger_c - ra.onset_c)
        self_heat = ra.self_heating_w * 2.0 ** (excess_k / ra.self_heating_doubling_k)
        heat = self.heater_w + np.where(hot & ~self.runaway_active, self_heat, 0.0)
        releasing = self.runaway_active & (self.runaway_progress < 1.0)
        rate = releasing / ra.duration_s
        heat += rate * energy_j * (1.0 - ra.vented_fraction)
        heat = np.minimum(heat, release_w + self.heater_w)
        new_progress = np.minimum(self.runaway_progress + rate * elapsed_s, 1.0)
        vented = float((new_progress - self.runaway_progress).sum())
        self.h2s_ppm += vented * self.params.gas.runaway_release_ppm
        self.runaway_progress = new_progress
        # The separator is gone: a hard internal short.
        self._runaway_short_s[self.runaway_active] = 1e3
        self._runaway_heat_w = heat

    def _advance_gas(self, elapsed_s: float) -> None:
        gas = self.params.gas
        source = gas.breach_rate_ppm_per_s if self.casing_breach else 0.0
        decay = math.exp(-elapsed_s / gas.ventilation_tau_s)
        self.h2s_ppm = self.h2s_ppm * decay + source * gas.ventilation_tau_s * (1.0 - decay)

    # ------------------------------------------------------------------ sensors
    def measure_fast(self) -> tuple[float, float, float]:
        """Read only the fast channels (10 ms class): pack current, pack and DC-link voltage."""
        s = self.sensors
        return (
            s["current"].read_one(self.current_a),
            s["pack_voltage"].read_one(self.pack_voltage_v),
            s["link_voltage"].read_one(self.hv.link_voltage_v),
        )

    @property
    def contactors_closed(self) -> tuple[bool, bool, bool]:
        """True positions (auxiliary contacts) of main plus, main minus and precharge relay."""
        c = self.hv.contactors
        return (c["plus"].closed, c["minus"].closed, c["precharge"].closed)

    def measure(self) -> Measurements:
        """Read every sensor once, as the cell-monitoring and sensor chips would report."""
        elapsed = self.time_s - self._last_measure_s
        self._last_measure_s = self.time_s
        lag = self.params.sensors["pressure"].lag_s
        if lag > 0.0:
            self._pressure_seen += (self.pressure_mpa - self._pressure_seen) * (
                1.0 - math.exp(-elapsed / lag)
            )
        else:
            self._pressure_seen[:] = self.pressure_mpa
        s = self.sensors
        v_seen = open_wire_view(
            self.group_voltage_v, s["cell_voltage"].open, self._channels_per_chip
        )
        current_a, pack_v, link_v = self.measure_fast()
        return Measurements(
            cell_voltage_v=s["cell_voltage"].read(v_seen),
            cell_temp_c=s["cell_temperature"].read(self.temp_c.ravel()[self.temp_sensor_cell]),
            pressure_mpa=s["pressure"].read(self._pressure_seen),
            current_a=current_a,
            pack_voltage_v=pack_v,
            link_voltage_v=link_v,
            h2s_ppm=s["h2s"].read_one(self.h2s_ppm),
            contactors_closed=self.contactors_closed,
        )
