"""Per-cell SOC estimation: extended Kalman filter on the second-order ECM, vectorised over cells.

State per cell is ``[soc, v1, v2, offset]`` (SOC as a fraction 0..1, RC voltages in V, current-
sensor offset in A); the covariance is an ``(n, 4, 4)`` array, so one predict/update costs the same
few numpy calls for 1 or 192 cells.
The same :class:`SocFilter` runs inside the BMS node (100 ms task) and offline over a recorded
trace (:func:`estimate_trace`). Positive current discharges. Parameters:
``bms/data/firmware/estimation.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bms.cellmodel import ecm
from bms.cellmodel.params import CellParams, load_cell
from bms.config import Section, load_yaml
from bms.data import resolve
from bms.errors import InputError

SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class EstimationParams:
    """Tuning of the SOC filter, rest detection and pack report (see estimation.yaml)."""

    current_noise_a: float
    current_offset_a: float
    offset_drift_a_per_sqrt_s: float
    voltage_noise_v: float
    model_error_v: float
    resistance_rel_sigma: float
    rc_noise_v_per_sqrt_s: float
    soc_noise_per_sqrt_s: float
    max_ocv_slope_v: float  # per unit SOC
    secant_min_soc: float
    secant_max_soc: float
    soc_min: float
    soc_max: float
    init_ocv_sigma_v: float
    init_loaded_sigma: float
    init_user_sigma: float
    init_min_sigma: float
    init_rc_sigma_v: float
    rest_current_a: float
    rest_tau2_multiple: float
    rest_min_time_s: float
    rest_max_time_s: float
    rest_ocv_sigma_v: float
    missing_current_sigma_a: float
    missing_temp_c: float
    missing_pressure_mpa: float
    usable_soc_min: float
    usable_soc_max: float
    sigma_widening: float
    confident_sigma: float


def load_estimation_params(name_or_path: str | Path = "estimation") -> EstimationParams:
    """Load SOC-estimator parameters (shipped ``estimation`` or a YAML path), validated."""
    root = Section(load_yaml(resolve("firmware", name_or_path)))
    s = root.section("sensors")
    p = root.section("process")
    st = root.section("steep_end")
    lim = root.section("limits")
    ini = root.section("init")
    r = root.section("rest")
    m = root.section("missing")
    rep = root.section("report")
    params = EstimationParams(
        current_noise_a=s.number("current_noise_a", above=0, max=1e3),
        current_offset_a=s.number("current_offset_a", min=0, max=1e3),
        offset_drift_a_per_sqrt_s=s.number("offset_drift_a_per_sqrt_s", min=0, max=10),
        voltage_noise_v=s.number("voltage_noise_v", above=0, max=1.0),
        model_error_v=s.number("model_error_v", min=0, max=1.0),
        resistance_rel_sigma=s.number("resistance_rel_sigma", min=0, max=2.0),
        rc_noise_v_per_sqrt_s=p.number("rc_noise_v_per_sqrt_s", min=0, max=1.0),
        soc_noise_per_sqrt_s=p.number("soc_noise_per_sqrt_s", min=0, max=1.0),
        max_ocv_slope_v=st.number("max_ocv_slope_mv_per_pct", above=0, max=1e4) * 0.1,
        secant_min_soc=st.number("secant_min_soc", above=0, max=0.5),
        secant_max_soc=st.number("secant_max_soc", above=0, max=1.0),
        soc_min=lim.number("soc_min", min=-1.0, max=0.5),
        soc_max=lim.number("soc_max", min=0.5, max=2.0),
        init_ocv_sigma_v=ini.number("ocv_sigma_v", above=0, max=1.0),
        init_loaded_sigma=ini.number("loaded_sigma", above=0, max=1.0),
        init_user_sigma=ini.number("user_sigma", above=0, max=1.0),
        init_min_sigma=ini.number("min_sigma", above=0, max=1.0),
        init_rc_sigma_v=ini.number("rc_sigma_v", above=0, max=1.0),
        rest_current_a=r.number("current_threshold_a", above=0, max=1e3),
        rest_tau2_multiple=r.number("tau2_multiple", min=0, max=100),
        rest_min_time_s=r.number("min_time_s", min=0, max=1e6),
        rest_max_time_s=r.number("max_time_s", above=0, max=1e7),
        rest_ocv_sigma_v=r.number("ocv_sigma_v", above=0, max=1.0),
        missing_current_sigma_a=m.number("current_sigma_a", above=0, max=1e5),
        missing_temp_c=m.number("temp_c", min=-60, max=100),
        missing_pressure_mpa=m.number("pressure_mpa", above=0, max=50),
        usable_soc_min=rep.number("usable_soc_min", min=0, max=0.5),
        usable_soc_max=rep.number("usable_soc_max", min=0.5, max=1.0),
        sigma_widening=rep.number("sigma_widening", min=1.0, max=10.0),
        confident_sigma=rep.number("confident_sigma", above=0, max=1.0),
    )
    if params.rest_max_time_s < params.rest_min_time_s:
        raise r.error("max_time_s", "must not be below min_time_s")
    for sec in (s, p, st, lim, ini, r, m, rep, root):
        sec.done()
    return params


@dataclass
class SocState:
    """Filter state of n cells: mean, covariance, last time and rest bookkeeping."""

    soc: np.ndarray  # (n,) fraction 0..1
    v1_v: np.ndarray  # (n,) fast RC voltage
    v2_v: np.ndarray  # (n,) slow RC voltage
    offset_a: np.ndarray  # (n,) estimated current-sensor offset (measured = true + offset)
    cov: np.ndarray  # (n, 4, 4) covariance of [soc, v1, v2, offset]
    time_s: float | None = None  # time of the last accepted sample
    rest_time_s: float = 0.0  # time spent with |I| below the rest threshold
    rest_corrected: bool = False  # the OCV update of the current rest has been applied
    time_since_rest_s: float = float("inf")  # since the last OCV update after a valid rest
    innovation_v: np.ndarray = field(default_factory=lambda: np.zeros(0))  # last, per cell
    nis: np.ndarray = field(default_factory=lambda: np.zeros(0))  # normalised innovation²
    bias_sigma: np.ndarray = field(default_factory=lambda: np.zeros(0))  # SOC, see soc_sigma

    @property
    def soc_sigma(self) -> np.ndarray:
        """Reported 1-sigma SOC bound per cell (fraction): the filter covariance widened by the
        bias that model mismatch puts on the voltage model (DOMAIN.md section 10)."""
        return np.sqrt(np.maximum(self.cov[:, 0, 0], 0.0) + self.bias_sigma**2)


def _as_cells(value: np.ndarray | float, n: int) -> np.ndarray:
    """A fresh float array of n per-cell values from a scalar or an (n,) array."""
    arr = np.array(value, dtype=float)
    if arr.shape == (n,):
        return arr
    return np.broadcast_to(arr, (n,)).copy()


def _fill(value: np.ndarray | float | None, n: int, substitute: float) -> np.ndarray:
    """Per-cell array with missing (None/NaN) entries replaced by ``substitute``."""
    if value is None:
        return np.full(n, substitute)
    arr = _as_cells(value, n)
    arr[~np.isfinite(arr)] = substitute
    return arr


class SocFilter:
    """Extended Kalman filter for n series cells; holds parameters and a :class:`SocState`.

    Build it with :meth:`from_ocv` (BMS wake-up after rest) or :meth:`from_stored` (value kept in
    non-volatile memory), then call :meth:`step` with each new set of measurements.
    """

    def __init__(self, cell: CellParams, params: EstimationParams, state: SocState) -> None:
        self.cell = cell
        self.params = params
        self.state = state
        res = cell.resistance
        self._c1_f = res.c1_f
        self._c2_f = res.c2_f
        # Capacity per cell in As, so SOC change = eta * I * dt / capacity_as.
        self._capacity_as = cell.capacity_ah * SECONDS_PER_HOUR
        n = state.soc.size
        self._last_slope = np.ones(n)  # linearised OCV slope of the last update
        # Work buffers reused every step (the hot loop allocates as little as it can).
        self._h = np.full((n, 4), -1.0)  # measurement Jacobian [dOCV/dsoc, -1, -1, R0]
        self._f = np.broadcast_to(np.eye(4), (n, 4, 4)).copy()  # state transition
        self._b = np.zeros((n, 4))  # input vector of the current [-dsoc/dI, b1, b2, 0]

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_stored(
        cls,
        cell: CellParams,
        soc: np.ndarray | float,
        soc_sigma: np.ndarray | float | None = None,
        *,
        n_cells: int | None = None,
        params: EstimationParams | None = None,
    ) -> SocFilter:
        """Start from stored SOC values (fraction) with their stored 1-sigma (or ``user_sigma``)."""
        params = params or load_estimation_params()
        soc_arr = np.atleast_1d(np.asarray(soc, dtype=float))
        n = n_cells or soc_arr.size
        soc_arr = _as_cells(soc_arr if soc_arr.size > 1 else soc_arr[0], n)
        if not np.all(np.isfinite(soc_arr)):
            raise InputError(f"initial SOC must be finite, got {soc_arr.tolist()}")
        sigma = _as_cells(params.init_user_sigma if soc_sigma is None else soc_sigma, n)
        sigma = np.maximum(np.nan_to_num(sigma, nan=params.init_user_sigma), params.init_min_sigma)
        soc_arr = np.clip(soc_arr, params.soc_min, params.soc_max)
        return cls(cell, params, _initial_state(soc_arr, sigma, params))

    @classmethod
    def from_ocv(
        cls,
        cell: CellParams,
        voltage_v: np.ndarray | float,
        temp_c: np.ndarray | float,
        *,
        current_a: float = 0.0,
        params: EstimationParams | None = None,
    ) -> SocFilter:
        """Start from measured cell voltages: tight if |I| is below the rest threshold, else wide.

        Under load the voltage is first corrected by R0*I; the RC overpotential stays unknown,
        hence the wide ``loaded_sigma``. Missing voltages start at 50 % with a 0.5 sigma.
        """
        params = params or load_estimation_params()
        volt = np.atleast_1d(np.asarray(voltage_v, dtype=float)).copy()
        n = volt.size
        temp = _fill(temp_c, n, params.missing_temp_c)
        current = float(current_a) if np.isfinite(current_a) else 0.0
        at_rest = abs(current) < params.rest_current_a
        pressure = np.full(n, params.missing_pressure_mpa)
        guess = ecm.soc_from_ocv(volt, temp, cell.ocv)
        r0, _, _ = ecm.resistances_ohm(temp, pressure, guess, cell.resistance)
        soc = ecm.soc_from_ocv(volt + r0 * current, temp, cell.ocv)
        if at_rest:
            # Capped slope: the steep end must not make the start look exact.
            slope = np.minimum(ecm.ocv_slope_v(soc, cell.ocv), params.max_ocv_slope_v)
            sigma = params.init_ocv_sigma_v / np.maximum(slope, 1e-6)
            # A flat OCV region cannot pin SOC: never claim more than the loaded-start sigma.
            sigma = np.minimum(sigma, params.init_loaded_sigma)
        else:
            sigma = np.full(n, params.init_loaded_sigma)
        bad = ~np.isfinite(volt)
        soc[bad] = 0.5
        sigma[bad] = 0.5
        sigma = np.maximum(sigma, params.init_min_sigma)
        return cls(cell, params, _initial_state(soc, sigma, params))

    # -- results ----------------------------------------------------------------------------
    @property
    def soc(self) -> np.ndarray:
        """SOC estimate per cell (fraction 0..1)."""
        return self.state.soc

    @property
    def soc_sigma(self) -> np.ndarray:
        """1-sigma SOC bound per cell (fraction)."""
        return self.state.soc_sigma

    def stored(self) -> tuple[np.ndarray, np.ndarray]:
        """(soc, sigma) to keep in non-volatile memory for :meth:`from_stored`."""
        return self.state.soc.copy(), self.state.soc_sigma.copy()

    # -- the periodic step ------------------------------------------------------------------
    def step(
        self,
        time_s: float,
        current_a: float | np.ndarray,
        cell_voltage_v: np.ndarray | float,
        temp_c: np.ndarray | float | None = None,
        pressure_mpa: np.ndarray | float | None = None,
    ) -> None:
        """Advance to ``time_s`` with the current held over the interval, then fuse the voltages.

        The current sample is the one measured with the voltages (held since the last step);
        ``current_a`` is the raw sensor value (the filter estimates and removes its offset).
        NaN voltages skip that cell's update, a NaN current skips all voltage updates and widens
        the SOC sigma, NaN temperature/pressure use the substitutes of estimation.yaml. A time
        that does not advance is ignored (duplicate or out-of-order sample).
        """
        st = self.state
        p = self.params
        if not np.isfinite(time_s):
            return
        if st.time_s is None:
            st.time_s = float(time_s)
            dt_s = 0.0
        else:
            dt_s = float(time_s) - st.time_s
            if dt_s <= 0.0:
                return
            st.time_s = float(time_s)
        n = st.soc.size
        current = _as_cells(current_a, n)
        current_ok = np.isfinite(current)
        current[~current_ok] = 0.0
        temp = _fill(temp_c, n, p.missing_temp_c)
        pressure = _fill(pressure_mpa, n, p.missing_pressure_mpa)
        volt = _as_cells(cell_voltage_v, n)
        # A reading outside any plausible cell voltage is a sensor fault, not information.
        volt_ok = np.isfinite(volt) & (volt > 0.5) & (volt < 6.0) & current_ok

        soc_lin = np.minimum(np.maximum(st.soc, 0.0), 1.0)
        r0, r1, r2 = ecm.resistances_ohm(temp, pressure, soc_lin, self.cell.resistance)
        if dt_s > 0.0:
            self._predict(dt_s, current, current_ok, r1, r2)
        self._update(volt, volt_ok, current, temp, r0, p.voltage_noise_v**2 + p.model_error_v**2)
        # Model error is treated as white noise but acts as a bias of the voltage model: it
        # reads as model error / slope in SOC, which the reported bound adds.
        st.bias_sigma = p.model_error_v / self._last_slope
        self._rest(dt_s, current - st.offset_a, current_ok, volt, volt_ok, temp, r0, r2)

    def _predict(
        self,
        dt_s: float,
        current: np.ndarray,
        current_ok: np.ndarray,
        r1: np.ndarray,
        r2: np.ndarray,
    ) -> None:
        st, p = self.state, self.params
        a1 = ecm.rc_decay(dt_s, r1, self._c1_f)
        a2 = ecm.rc_decay(dt_s, r2, self._c2_f)
        true_i = current - st.offset_a
        # Coulombic efficiency: only part of the charge put in is stored (positive I discharges).
        eta = np.where(true_i < 0.0, self.cell.coulombic_efficiency, 1.0)
        g_soc = eta * dt_s / self._capacity_as
        st.soc -= g_soc * true_i
        np.maximum(st.soc, p.soc_min, out=st.soc)
        np.minimum(st.soc, p.soc_max, out=st.soc)
        b1 = r1 * (1.0 - a1)
        b2 = r2 * (1.0 - a2)
        st.v1_v *= a1
        st.v1_v += b1 * true_i
        st.v2_v *= a2
        st.v2_v += b2 * true_i

        # Transition: soc, v1, v2 decay/hold and each responds to the offset (-input vector).
        f = self._f
        f[:, 1, 1] = a1
        f[:, 2, 2] = a2
        f[:, 0, 3] = g_soc
        f[:, 1, 3] = -b1
        f[:, 2, 3] = -b2
        st.cov[:] = f @ st.cov @ np.swapaxes(f, 1, 2)
        # Current noise enters soc, v1 and v2 through one input vector (correlated).
        b = self._b
        b[:, 0] = -g_soc
        b[:, 1] = b1
        b[:, 2] = b2
        sigma_i = np.where(current_ok, p.current_noise_a, p.missing_current_sigma_a)
        st.cov += (sigma_i**2)[:, None, None] * (b[:, :, None] * b[:, None, :])
        st.cov[:, 0, 0] += p.soc_noise_per_sqrt_s**2 * dt_s
        q_rc = p.rc_noise_v_per_sqrt_s**2 * dt_s
        st.cov[:, 1, 1] += q_rc
        st.cov[:, 2, 2] += q_rc
        st.cov[:, 3, 3] += p.offset_drift_a_per_sqrt_s**2 * dt_s

    def _update(
        self,
        volt: np.ndarray,
        valid: np.ndarray,
        current: np.ndarray,
        temp: np.ndarray,
        r0: np.ndarray,
        noise_var_v2: float,
    ) -> None:
        """Scalar-per-cell measurement update with y = OCV(soc) - v1 - v2 - R0 (I - offset)."""
        st, p = self.state, self.params
        table = self.cell.ocv
        soc_lin = np.minimum(np.maximum(st.soc, 0.0), 1.0)
        ocv_mid = ecm.ocv_v(soc_lin, temp, table)
        # Statistical linearisation: the OCV secant over +-1 sigma instead of the local slope,
        # so a wide prior on a kinked, piecewise-linear curve neither over-jumps nor collapses;
        # what the secant misses at either end counts as measurement noise.
        spread = np.minimum(
            np.maximum(np.sqrt(st.cov[:, 0, 0]), p.secant_min_soc), p.secant_max_soc
        )
        soc_hi = np.minimum(soc_lin + spread, 1.0)
        soc_lo = np.maximum(soc_lin - spread, 0.0)
        ocv_hi = ecm.ocv_v(soc_hi, temp, table)
        ocv_lo = ecm.ocv_v(soc_lo, temp, table)
        slope_true = (ocv_hi - ocv_lo) / (soc_hi - soc_lo)
        miss_v = np.maximum(
            np.abs(ocv_hi - ocv_mid - slope_true * (soc_hi - soc_lin)),
            np.abs(ocv_lo - ocv_mid - slope_true * (soc_lo - soc_lin)),
        )
        slope = np.minimum(slope_true, p.max_ocv_slope_v)
        self._last_slope = np.maximum(slope, 1e-6)
        true_i = current - st.offset_a
        predicted_v = ocv_mid - st.v1_v - st.v2_v - r0 * true_i
        h = self._h
        h[:, 0] = slope
        h[:, 3] = r0
        ph = np.einsum("nij,nj->ni", st.cov, h)
        # Noise: sensor + model, current noise through R0, linearisation miss, capped slope, and
        # the resistance uncertainty times the modelled polarisation: under heavy current the
        # voltage says little about SOC and the filter leans on coulomb counting.
        polarisation_v = np.abs(r0 * true_i) + np.abs(st.v1_v) + np.abs(st.v2_v)
        r_var = (
            noise_var_v2
            + (p.resistance_rel_sigma * polarisation_v) ** 2
            + (r0 * p.current_noise_a) ** 2
            + miss_v**2
            + (slope_true - slope) ** 2 * st.cov[:, 0, 0]
        )
        s = np.einsum("ni,ni->n", h, ph) + r_var
        innovation = np.where(valid, volt - predicted_v, 0.0)
        gain = np.where(valid[:, None], ph / s[:, None], 0.0)
        st.soc += gain[:, 0] * innovation
        st.v1_v += gain[:, 1] * innovation
        st.v2_v += gain[:, 2] * innovation
        st.offset_a += gain[:, 3] * innovation
        np.maximum(st.soc, p.soc_min, out=st.soc)
        np.minimum(st.soc, p.soc_max, out=st.soc)
        st.cov -= (gain[:, :, None] * gain[:, None, :]) * s[:, None, None]
        # Keep the covariance symmetric and its diagonal positive despite rounding.
        st.cov += np.swapaxes(st.cov, 1, 2)
        st.cov *= 0.5
        diag = np.einsum("nii->ni", st.cov)
        np.maximum(diag, 1e-12, out=diag)
        st.innovation_v = innovation
        st.nis = np.where(valid, innovation**2 / s, np.nan)

    def _rest(
        self,
        dt_s: float,
        current: np.ndarray,
        current_ok: np.ndarray,
        volt: np.ndarray,
        volt_ok: np.ndarray,
        temp: np.ndarray,
        r0: np.ndarray,
        r2: np.ndarray,
    ) -> None:
        """Rest bookkeeping and the one low-noise OCV update per sufficiently long rest."""
        st, p = self.state, self.params
        st.time_since_rest_s += dt_s
        resting = bool(np.all(current_ok) and np.all(np.abs(current) < p.rest_current_a))
        if not resting:
            st.rest_time_s = 0.0
            st.rest_corrected = False
            return
        st.rest_time_s += dt_s
        # Diffusion relaxes with tau2(T) = R2(T) C2: the cold needs a much longer rest.
        tau2_s = float(np.max(r2)) * self._c2_f
        needed_s = min(max(p.rest_min_time_s, p.rest_tau2_multiple * tau2_s), p.rest_max_time_s)
        if st.rest_corrected or st.rest_time_s < needed_s or not np.any(volt_ok):
            return
        self._update(volt, volt_ok, current, temp, r0, p.rest_ocv_sigma_v**2)
        st.rest_corrected = True
        st.time_since_rest_s = 0.0


def _initial_state(soc: np.ndarray, sigma: np.ndarray, params: EstimationParams) -> SocState:
    n = soc.size
    cov = np.zeros((n, 4, 4))
    cov[:, 0, 0] = sigma**2
    cov[:, 1, 1] = params.init_rc_sigma_v**2
    cov[:, 2, 2] = params.init_rc_sigma_v**2
    cov[:, 3, 3] = params.current_offset_a**2
    return SocState(
        soc=soc.astype(float).copy(),
        v1_v=np.zeros(n),
        v2_v=np.zeros(n),
        offset_a=np.zeros(n),
        cov=cov,
        innovation_v=np.zeros(n),
        nis=np.full(n, np.nan),
        bias_sigma=np.zeros(n),
    )


# -- pack report ----------------------------------------------------------------------------
@dataclass(frozen=True)
class PackSoc:
    """SOC as a BMS reports it (fractions 0..1), each with a 1-sigma bound, plus SOE."""

    min: float
    min_sigma: float
    avg: float
    avg_sigma: float
    max: float
    max_sigma: float
    usable: float  # share of the usable window left for discharge, limited by the weakest cells
    usable_sigma: float
    soe_kwh: float  # energy stored above the usable floor, summed over cells
    soe_pct: float  # soe_kwh over the energy of the full usable window, in percent
    time_since_rest_s: float
    confident: bool  # every cell's reported sigma within report.confident_sigma


#: SOC grid of the SOE energy curve (fine enough that the trapezoid error is negligible).
_ENERGY_GRID = np.linspace(0.0, 1.0, 1001)
#: id(OcvTable) -> (table, capacity_ah, energy of U(SOC), energy of dU/dT(SOC)); see below.
_ENERGY_PARTS: dict[int, tuple[object, float, np.ndarray, np.ndarray]] = {}


def _energy_parts(cell: CellParams) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative trapezoid energy (Wh) of U(SOC) and of dU/dT(SOC), built once per OCV table.

    OCV(SOC, T) = U + dU/dT (T - T_table) is linear in T, and so is its trapezoid integral, so
    the curve at any temperature is ``e_u + (T - T_table) e_dudt``: no 1001-point rebuild per call.
    """
    table, capacity_ah = cell.ocv, cell.capacity_ah
    hit = _ENERGY_PARTS.get(id(table))
    if hit is None or hit[0] is not table or hit[1] != capacity_ah:
        grid = _ENERGY_GRID
        width = np.diff(grid) * capacity_ah

        def cumulative(y: np.ndarray) -> np.ndarray:
            return np.concatenate(([0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * width)))

        u = np.interp(grid, table.soc, table.voltage_v)
        dudt = np.interp(grid, table.soc, table.dudt_v_per_k)
        hit = (table, capacity_ah, cumulative(u), cumulative(dudt))
        _ENERGY_PARTS[id(table)] = hit  # keeps the table alive, so its id is not reused
    return hit[2], hit[3]


def _energy_curve(cell: CellParams, temp_c: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative energy from SOC 0 (Wh per cell) on a fine SOC grid, at ``temp_c``."""
    e_u, e_dudt = _energy_parts(cell)
    return _ENERGY_GRID, e_u + (float(temp_c) - cell.ocv.temp_c) * e_dudt


def pack_soc(
    state: SocState,
    cell: CellParams,
    params: EstimationParams,
    temp_c: float = 25.0,
) -> PackSoc:
    """Pack SOC report from per-cell estimates: min/avg/max/usable with sigma, and SOE.

    Cell errors share the current sensor, so sigmas are combined as fully correlated
    (conservative): the average's sigma is the mean sigma. SOE integrates OCV(SOC) from the usable
    floor to each cell's SOC.
    """
    soc = state.soc
    sigma = state.soc_sigma * params.sigma_widening
    i_min, i_max = int(np.argmin(soc)), int(np.argmax(soc))
    lo, hi = params.usable_soc_min, params.usable_soc_max
    # Series string: discharge stops at the lowest cell, charge at the highest.
    left = max(soc[i_min] - lo, 0.0)
    room = max(hi - soc[i_max], 0.0)
    total = left + room
    usable = left / total if total > 0 else 0.0
    if total > 0:
        d_min, d_max = room / total**2, left / total**2  # partial derivatives of usable
        usable_sigma = float(np.hypot(d_min * sigma[i_min], d_max * sigma[i_max]))
    else:
        usable_sigma = float(sigma[i_min])
    grid, energy_wh = _energy_curve(cell, temp_c)
    floor_wh = np.interp(lo, grid, energy_wh)
    window_wh = np.interp(hi, grid, energy_wh) - floor_wh
    cell_wh = np.maximum(np.interp(np.clip(soc, 0.0, 1.0), grid, energy_wh) - floor_wh, 0.0)
    soe_wh = float(np.sum(cell_wh))
    return PackSoc(
        min=float(soc[i_min]),
        min_sigma=float(sigma[i_min]),
        avg=float(np.mean(soc)),
        avg_sigma=float(np.mean(sigma)),
        max=float(soc[i_max]),
        max_sigma=float(sigma[i_max]),
        usable=float(np.clip(usable, 0.0, 1.0)),
        usable_sigma=usable_sigma,
        soe_kwh=soe_wh / 1000.0,
        soe_pct=100.0 * soe_wh / (window_wh * soc.size),
        time_since_rest_s=state.time_since_rest_s,
        confident=bool(np.all(sigma <= params.confident_sigma)),
    )


# -- offline use ----------------------------------------------------------------------------
def estimate_trace(
    cell: CellParams | str | Path,
    time_s: np.ndarray,
    current_a: np.ndarray,
    voltage_v: np.ndarray,
    temp_c: np.ndarray | float,
    *,
    initial_soc: float | None = None,
    initial_sigma: float | None = None,
    pressure_mpa: np.ndarray | float = 2.0,
    params: EstimationParams | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the BMS's own :class:`SocFilter` over a recorded single-cell trace.

    ``time_s`` must increase (irregular steps allowed); ``voltage_v`` may contain NaN. Without
    ``initial_soc`` the filter starts as the BMS does: from the first voltage (tight if the first
    current is below the rest threshold). Returns ``(soc, soc_sigma)`` per sample, fractions.
    """
    cell = cell if isinstance(cell, CellParams) else load_cell(cell)
    params = params or load_estimation_params()
    t = np.asarray(time_s, dtype=float)
    n = t.size
    arrays = {
        "current_a": np.asarray(current_a, dtype=float),
        "voltage_v": np.asarray(voltage_v, dtype=float),
        "temp_c": np.broadcast_to(np.asarray(temp_c, dtype=float), (n,)),
        "pressure_mpa": np.broadcast_to(np.asarray(pressure_mpa, dtype=float), (n,)),
    }
    for name, arr in arrays.items():
        if arr.shape != (n,):
            raise InputError(f"trace: {name} has {arr.size} values, time_s has {n}")
    if n == 0:
        raise InputError("trace: no samples")
    if not np.all(np.isfinite(t)):
        raise InputError(f"trace: time_s row {int(np.argmax(~np.isfinite(t)))}: not a number")
    if np.any(np.diff(t) <= 0):
        raise InputError(f"trace: time_s row {int(np.argmax(np.diff(t) <= 0)) + 1}: not increasing")
    cur, volt = arrays["current_a"], arrays["voltage_v"]
    temp, pres = arrays["temp_c"], arrays["pressure_mpa"]
    if initial_soc is None:
        first = int(np.argmax(np.isfinite(volt))) if np.any(np.isfinite(volt)) else 0
        filt = SocFilter.from_ocv(
            cell, volt[first], temp[first], current_a=cur[first], params=params
        )
    else:
        if not 0.0 <= initial_soc <= 1.0:
            raise InputError(f"initial SOC must be a fraction 0..1, got {initial_soc}")
        filt = SocFilter.from_stored(cell, initial_soc, initial_sigma, params=params)
    soc_out = np.empty(n)
    sigma_out = np.empty(n)
    st = filt.state
    # Python floats: indexing numpy arrays per sample would cost more than the filter maths.
    rows = zip(t.tolist(), cur.tolist(), volt.tolist(), temp.tolist(), pres.tolist(), strict=True)
    for k, (t_k, i_k, v_k, temp_k, p_k) in enumerate(rows):
        filt.step(t_k, i_k, v_k, temp_k, p_k)
        soc_out[k] = st.soc[0]
        sigma_out[k] = np.sqrt(st.cov[0, 0, 0] + st.bias_sigma[0] ** 2)
    return soc_out, sigma_out


def with_ocv(cell: CellParams, soc: np.ndarray, voltage_v: np.ndarray) -> CellParams:
    """A copy of ``cell`` with another OCV table (zero dU/dT), e.g. a flat LFP-like curve."""
    table = replace(
        cell.ocv,
        soc=np.asarray(soc, dtype=float),
        voltage_v=np.asarray(voltage_v, dtype=float),
        dudt_v_per_k=np.zeros(len(soc)),
    )
    return replace(cell, ocv=table)
