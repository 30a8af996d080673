"""Fit the cell model (capacity, OCV table, R0 and two RC pairs) to a characterisation test.

The test (a :class:`~bms.cellmodel.trace.Trace`) starts fully charged and rested, has rests of at
least 30 min at several SOCs, HPPC-style pulses, and ends with a low-rate discharge to the lower
voltage limit (DOMAIN.md section 11). The fit:

1. current-sensor zero offset = median current during rests (the cycler commands zero there);
2. capacity = charge counted from full to the end of the final discharge (template coulombic
   efficiency on charge), so SOC(t) = 1 - q(t)/Q;
3. OCV table: loaded data of long segments plus the modelled overpotential, pulled through the
   end-of-rest voltages (themselves corrected for residual diffusion), evaluated on a SOC grid
   dense at both ends by local linear fits, made monotonic;
4. R0, R1, R2 by linear least squares on rests and pulses between 5 and 95 % SOC for each
   (tau1, tau2) of a log grid (the model is linear in the resistances once the taus are fixed),
   with one free OCV offset per rest level so that table errors cannot leak into resistances;
   the grid is refined twice around the best pair;
5. 3 and 4 iterated, then the whole test replayed with the ECM maths of :mod:`bms.cellmodel.ecm`.

Everything the test cannot identify (temperature and pressure dependence, mechanics, CCD, runaway,
thermal, dU/dT, low-SOC R1 factor) is carried over from a template cell; the fitted values refer
to the test's median temperature (self-heating corrected with the template's Arrhenius energies)
and to the template's reference stack pressure (a trace carries no pressure).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from bms.cellmodel import ecm
from bms.cellmodel.params import CellParams, OcvTable, Resistance
from bms.cellmodel.trace import Trace
from bms.errors import InputError

SECONDS_PER_HOUR = 3600.0
# Largest total log-decay handled in one block of the vectorised recurrence (e^300 is far from
# float overflow even after multiplication by the drive).
_RECURRENCE_BLOCK_LOG = 300.0

# OCV grid: fine at both steep ends (DOMAIN.md section 2: the last 1 % falls ~500 mV), 5 % between.
DEFAULT_SOC_GRID = (
    0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    *(round(0.1 + 0.05 * k, 4) for k in range(17)),
    0.925, 0.95, 0.97, 0.98, 0.99, 0.995, 1.0,
)  # fmt: skip

FITTED_FIELDS = (
    "capacity_ah",
    "voltage_min_v",
    "voltage_max_v",
    "ocv.soc",
    "ocv.voltage_v",
    "ocv.temp_c",
    "resistance.temp_ref_c",
    "resistance.r0_mohm",
    "resistance.r1_mohm",
    "resistance.r1_tau_s",
    "resistance.r2_mohm",
    "resistance.r2_tau_s",
)
CARRIED_FIELDS = (
    "chemistry",
    "coulombic_efficiency",
    "self_discharge_pct_per_month",
    "mass_kg",
    "ocv.dudt_mv_per_k",
    "resistance (Arrhenius energies, pressure exponents, low-SOC R1 factor, pressure_ref_mpa)",
    "thermal",
    "mechanics",
    "contact",
    "ccd",
    "runaway",
)


@dataclass(frozen=True)
class FitOptions:
    """How the test is segmented and searched; defaults suit HPPC tests per DOMAIN.md."""

    rest_current_frac: float = 0.02  # |I| below this share of the test's peak |I| is rest
    min_rest_s: float = 1800.0  # rests at least this long give OCV points (issue: >= 30 min)
    rest_average_s: float = 60.0  # an OCV point averages this last part of its rest
    curve_min_s: float = 120.0  # load segments at least this long feed the OCV curve ...
    curve_skip_s: float = 30.0  # ... after their first seconds (fast transients)
    max_final_c_rate: float = 0.2  # the final discharge must not be faster (C/10 asked, C/5 ok)
    tau1_range_s: tuple[float, float] = (0.3, 60.0)
    tau2_range_s: tuple[float, float] = (60.0, 6000.0)
    tau_grid_points: int = 16
    pulse_soc_range: tuple[float, float] = (0.05, 0.95)  # SOC window of the resistance fit
    iterations: int = 3
    min_curve_points: int = 5  # local linear OCV fit needs at least this many samples
    curve_window_share: float = 0.25  # OCV grid value from data within this share of spacing
    anchor_half_width_soc: float = 0.005  # curve value at a rest point from data within +-this
    soc_grid: tuple[float, ...] = DEFAULT_SOC_GRID


@dataclass(frozen=True)
class FitResult:
    """The fitted cell and the figures of the fit."""

    cell: CellParams
    current_offset_a: float  # zero offset removed from the test's current
    final_discharge_ah: float  # charge of the final low-rate discharge
    final_discharge_c_rate: float
    rest_points: int  # OCV points from rests of at least min_rest_s
    replay_rms_v: float  # measured - model over the whole test
    replay_max_v: float
    samples: int
    fitted: tuple[str, ...] = FITTED_FIELDS
    carried: tuple[str, ...] = CARRIED_FIELDS
    template: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """Human-readable fit summary (what ``bms cell fit`` prints)."""
        c, r = self.cell, self.cell.resistance
        lines = [
            f"cell fit: {c.name} from {self.samples} samples",
            f"  capacity          {c.capacity_ah:.3f} Ah (final discharge at "
            f"C/{1 / self.final_discharge_c_rate:.0f}: {self.final_discharge_ah:.3f} Ah)",
            f"  test temperature  {c.ocv.temp_c:.1f} degC",
            f"  current offset    {self.current_offset_a:+.3f} A (removed)",
            f"  OCV table         {c.ocv.soc.size} points, {c.ocv.voltage_v[0]:.4f} .. "
            f"{c.ocv.voltage_v[-1]:.4f} V, {self.rest_points} rest points",
            f"  R0                {r.r0_ohm * 1e3:.4f} mOhm",
            f"  R1, tau1          {r.r1_ohm * 1e3:.4f} mOhm, {r.r1_tau_s:.2f} s",
            f"  R2, tau2          {r.r2_ohm * 1e3:.4f} mOhm, {r.r2_tau_s:.1f} s",
            f"  replay error      RMS {self.replay_rms_v * 1e3:.2f} mV, "
            f"max {self.replay_max_v * 1e3:.2f} mV over the whole test",
            f"  fitted            {', '.join(self.fitted)}",
            f"  carried over from {self.template}: {', '.join(self.carried)}",
        ]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


# -- pure maths -----------------------------------------------------------------------------
def linear_recurrence(decay: np.ndarray, drive: np.ndarray, x0: float = 0.0) -> np.ndarray:
    """All x_k = decay_k x_(k-1) + drive_k (x_(-1) = x0), vectorised in blocks of bounded decay.

    Within a block x_k = P_k (x_start + sum_j drive_j / P_j) with P the running decay product,
    kept within e^300 so nothing overflows; this is the exact RC response to sampled current.
    """
    decay = np.asarray(decay, dtype=float)
    drive = np.asarray(drive, dtype=float)
    n = decay.size
    out = np.empty(n)
    log_a = np.log(np.maximum(decay, 1e-300))
    cum = np.cumsum(log_a)
    start, x = 0, float(x0)
    while start < n:
        base = cum[start - 1] if start > 0 else 0.0
        end = start + int(np.searchsorted(base - cum[start:], _RECURRENCE_BLOCK_LOG, side="right"))
        end = max(end, start + 1)
        log_p = cum[start:end] - base
        block = np.exp(log_p) * (x + np.cumsum(drive[start:end] * np.exp(-log_p)))
        out[start:end] = block
        x = float(block[-1])
        start = end
    return out


def rc_voltage_v(
    dt_s: np.ndarray, current_a: np.ndarray, r_ohm: np.ndarray | float, c_f: float
) -> np.ndarray:
    """RC-pair voltage after each sample, the current held over the interval ending there."""
    r = np.broadcast_to(np.asarray(r_ohm, dtype=float), dt_s.shape)
    decay = ecm.rc_decay(dt_s, r, c_f)
    return linear_recurrence(decay, r * (1.0 - decay) * current_a)


def model_voltage_v(
    cell: CellParams,
    time_s: np.ndarray,
    current_a: np.ndarray,
    temp_c: np.ndarray,
    soc: np.ndarray,
    pressure_mpa: float | None = None,
) -> np.ndarray:
    """Terminal voltage of the 2RC ECM replayed over a trace (starting rested), SOC given."""
    pressure = cell.resistance.pressure_ref_mpa if pressure_mpa is None else pressure_mpa
    dt = np.diff(time_s, prepend=time_s[0])
    r0, r1, r2 = ecm.resistances_ohm(temp_c, np.full_like(soc, pressure), soc, cell.resistance)
    v1 = rc_voltage_v(dt, current_a, r1, cell.resistance.c1_f)
    v2 = rc_voltage_v(dt, current_a, r2, cell.resistance.c2_f)
    return ecm.ocv_v(soc, temp_c, cell.ocv) - v1 - v2 - r0 * current_a


def coulomb_count_as(
    time_s: np.ndarray, current_a: np.ndarray, coulombic_efficiency: float
) -> np.ndarray:
    """Discharged charge since the first sample (As); each current holds over the interval
    ending at its sample, as in the BMS filter; charge is stored with the coulombic efficiency."""
    dt = np.diff(time_s, prepend=time_s[0])
    stored = np.where(current_a < 0.0, coulombic_efficiency * current_a, current_a)
    return np.cumsum(stored * dt)


def runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal values in a boolean mask as (start, end exclusive, value)."""
    if mask.size == 0:
        return []
    edges = np.flatnonzero(mask[1:] != mask[:-1]) + 1
    starts = np.concatenate(([0], edges))
    ends = np.concatenate((edges, [mask.size]))
    return [(int(s), int(e), bool(mask[s])) for s, e in zip(starts, ends, strict=True)]


def _line_at(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """Value at ``at`` of the least-squares line through (x, y)."""
    if np.ptp(x) < 1e-12:
        return float(np.mean(y))
    slope, intercept = np.polyfit(x - at, y, 1)
    return float(intercept)


def local_linear(
    x_sorted: np.ndarray, y_sorted: np.ndarray, at: float, half_width: float, min_points: int
) -> float | None:
    """Value at ``at`` from straight lines fitted to the points within +-half_width (or None).

    With enough points on both sides, one line per side, averaged: a piecewise-linear OCV table
    kinks at its points, and one line across a kink would cut the corner.
    """
    lo = int(np.searchsorted(x_sorted, at - half_width, side="left"))
    mid = int(np.searchsorted(x_sorted, at, side="left"))
    hi = int(np.searchsorted(x_sorted, at + half_width, side="right"))
    if hi - lo < min_points:
        return None
    if mid - lo >= min_points and hi - mid >= min_points:
        left = _line_at(x_sorted[lo:mid], y_sorted[lo:mid], at)
        right = _line_at(x_sorted[mid:hi], y_sorted[mid:hi], at)
        return 0.5 * (left + right)
    return _line_at(x_sorted[lo:hi], y_sorted[lo:hi], at)


def build_ocv_table(
    grid: np.ndarray,
    curve_soc: np.ndarray,
    curve_v: np.ndarray,
    rest_soc: np.ndarray,
    rest_v: np.ndarray,
    min_points: int = 5,
    window_share: float = 0.25,
    anchor_half_width_soc: float = 0.005,
) -> np.ndarray:
    """Monotonic OCV on ``grid`` from a dense pseudo-OCV curve anchored at rest points.

    The curve (loaded data + modelled overpotential) gives the shape; its mismatch at the rest
    points (the most trustworthy OCV) is interpolated in SOC and added, so the table passes
    through the rests. Each grid value comes from local lines within ``window_share`` of the
    distance to the nearest grid point; points the curve does not cover are interpolated.
    """
    order = np.argsort(curve_soc)
    cs, cv = curve_soc[order], curve_v[order]
    spacing = np.diff(grid)
    nearest = np.minimum(np.concatenate(([np.inf], spacing)), np.concatenate((spacing, [np.inf])))
    half = window_share * nearest

    def curve_at(s: float, h: float) -> float | None:
        return local_linear(cs, cv, s, h, min_points) if cs.size else None

    r_order = np.argsort(rest_soc)
    rs, rv = rest_soc[r_order], rest_v[r_order]
    anchor_s, anchor_d = [], []
    for s, v in zip(rs, rv, strict=True):
        c = curve_at(float(s), anchor_half_width_soc)
        if c is not None:
            anchor_s.append(float(s))
            anchor_d.append(v - c)
    values = np.full(grid.size, np.nan)
    for k, g in enumerate(grid):
        c = curve_at(float(g), float(half[k]))
        if c is not None:
            shift = float(np.interp(g, anchor_s, anchor_d)) if anchor_s else 0.0
            values[k] = c + shift
    # Gaps (e.g. the first seconds of each load step) interpolate between their nearest known
    # neighbours, curve values and rests together: rests alone miss the steep ends' shape.
    known = np.isfinite(values)
    xs = np.concatenate((grid[known], rs))
    ys = np.concatenate((values[known], rv))
    order = np.argsort(xs, kind="stable")
    values[~known] = np.interp(grid[~known], xs[order], ys[order])
    # OCV of an intercalation cathode never falls with SOC; noise must not make it do so.
    return np.maximum.accumulate(values)


# -- the fit --------------------------------------------------------------------------------
@dataclass
class _Prepared:
    """Trace arrays after offset removal, segmentation and coulomb counting."""

    time_s: np.ndarray
    dt_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    temp_c: np.ndarray
    soc: np.ndarray
    capacity_ah: float
    offset_a: float
    rest_tails: list[np.ndarray]  # sample indices averaged for each rest's OCV point
    curve_mask: np.ndarray  # samples feeding the OCV curve
    fit_mask: np.ndarray  # samples feeding the resistance fit
    final: tuple[int, int]
    temp_fit_c: float


def _prepare(trace: Trace, template: CellParams, opts: FitOptions) -> _Prepared:
    t = trace.time_s
    n = t.size
    if n < 10:
        raise InputError(f"{trace.source}: only {n} samples, not a characterisation test")
    raw = trace.current_a
    peak = float(np.max(np.abs(raw)))
    if peak <= 0.0:
        raise InputError(f"{trace.source}: current_a: no current anywhere in the test")
    threshold = opts.rest_current_frac * peak
    rest0 = np.abs(raw) < threshold
    offset = float(np.median(raw[rest0])) if np.any(rest0) else 0.0
    current = raw - offset
    rest = np.abs(current) < threshold
    segments = runs(rest)
    dt = np.diff(t, prepend=t[0])

    def duration(seg: tuple[int, int, bool]) -> float:
        # Each sample closes the interval since the previous one; the very first sample is taken
        # to close an interval as long as the next.
        s, e, _ = seg
        return float(t[e - 1] - t[s - 1]) if s > 0 else float(t[e - 1] - t[0] + dt[1])

    first, last = segments[0], segments[-1]
    if not first[2] or duration(first) < opts.min_rest_s:
        raise InputError(
            f"{trace.where(0)}: current_a: the test must start with a rest of at least "
            f"{opts.min_rest_s / 60:.0f} min at full charge"
        )
    if last[2] or float(np.mean(current[last[0] : last[1]])) <= 0.0:
        raise InputError(
            f"{trace.where(n - 1)}: current_a: the test must end with a low-rate discharge "
            "to the lower voltage limit"
        )
    q = coulomb_count_as(t, current, template.coulombic_efficiency)
    capacity_as = float(q[-1])
    if capacity_as <= 0.0:
        raise InputError(f"{trace.source}: current_a: the test discharges no net charge")
    soc = 1.0 - q / capacity_as
    final_c = float(np.mean(current[last[0] : last[1]])) / (capacity_as / SECONDS_PER_HOUR)
    if final_c > opts.max_final_c_rate:
        raise InputError(
            f"{trace.where(last[0])}: current_a: the final discharge runs at "
            f"C/{1 / final_c:.1f}; C/{1 / opts.max_final_c_rate:.0f} or slower is needed"
        )

    tails = []
    curve = np.zeros(n, dtype=bool)
    fit = np.zeros(n, dtype=bool)
    for seg in segments:
        s, e, is_rest = seg
        if is_rest:
            fit[s:e] = True
            if duration(seg) >= opts.min_rest_s:
                tails.append(np.arange(s, e)[t[s:e] >= t[e - 1] - opts.rest_average_s])
        elif duration(seg) >= opts.curve_min_s:
            curve[s:e] = t[s:e] >= t[s] + opts.curve_skip_s
        else:
            fit[s:e] = True  # pulses
    fit[0] = False
    if len(tails) < 2:
        raise InputError(
            f"{trace.source}: current_a: found {len(tails)} rest(s) of at least "
            f"{opts.min_rest_s / 60:.0f} min; the test needs rests at several SOCs"
        )
    if not np.any(fit & ~rest):
        raise InputError(f"{trace.source}: current_a: no current pulses to fit resistances to")
    return _Prepared(
        time_s=t,
        dt_s=dt,
        current_a=current,
        voltage_v=trace.voltage_v,
        temp_c=trace.temperature_c,
        soc=soc,
        capacity_ah=capacity_as / SECONDS_PER_HOUR,
        offset_a=offset,
        rest_tails=tails,
        curve_mask=curve,
        fit_mask=fit,
        final=(last[0], last[1]),
        temp_fit_c=float(np.median(trace.temperature_c)),
    )


def _overpotential_v(p: _Prepared, res: Resistance, pressure_mpa: float) -> np.ndarray:
    """R0 i + v1 + v2 of the model over the whole test (zero current response at rest)."""
    r0, r1, r2 = ecm.resistances_ohm(p.temp_c, np.full(p.soc.size, pressure_mpa), p.soc, res)
    v1 = rc_voltage_v(p.dt_s, p.current_a, r1, res.c1_f)
    v2 = rc_voltage_v(p.dt_s, p.current_a, r2, res.c2_f)
    return r0 * p.current_a + v1 + v2


def _ocv_from_data(
    p: _Prepared,
    overpotential_v: np.ndarray,
    template_ocv: OcvTable,
    opts: FitOptions,
) -> np.ndarray:
    """OCV table values on the grid at the test temperature."""
    grid = np.asarray(opts.soc_grid)
    # Refer every point to the test temperature with the template's entropic coefficient.
    entropic = ecm.dudt_v_per_k(p.soc, template_ocv) * (p.temp_c - p.temp_fit_c)
    pseudo = p.voltage_v + overpotential_v - entropic
    rest_soc = np.array([p.soc[idx].mean() for idx in p.rest_tails])
    rest_v = np.array([pseudo[idx].mean() for idx in p.rest_tails])
    return build_ocv_table(
        grid,
        p.soc[p.curve_mask],
        pseudo[p.curve_mask],
        rest_soc,
        rest_v,
        opts.min_curve_points,
        opts.curve_window_share,
        opts.anchor_half_width_soc,
    )


def _fit_resistances(
    p: _Prepared,
    ocv: OcvTable,
    res: Resistance,
    pressure_mpa: float,
    opts: FitOptions,
) -> tuple[float, float, float, float, float]:
    """(R0, R1, tau1, R2, tau2) at the test temperature by least squares over a tau grid."""
    # Only where the OCV is moderately sloped and well known: on a steep end a pulse moves the
    # OCV by tens of mV, which the resistances would otherwise absorb.
    lo, hi = opts.pulse_soc_range
    mask = p.fit_mask & (p.soc >= lo) & (p.soc <= hi)
    if not np.any(mask):
        raise InputError(
            f"cell fit: no rests or pulses between {100 * lo:.0f} and {100 * hi:.0f} % SOC "
            "to fit the resistances to"
        )
    y = (p.voltage_v - ecm.ocv_v(p.soc, p.temp_c, ocv))[mask]
    # Resistance multipliers relative to the reference point (temperature, low-SOC R1 factor):
    # unit-resistance responses scaled by them keep the model linear in R0, R1, R2.
    pressure = np.full(p.soc.size, pressure_mpa)
    unit = replace(res, r0_ohm=1.0, r1_ohm=1.0, r2_ohm=1.0)
    f0, f1, f2 = ecm.resistances_ohm(p.temp_c, pressure, p.soc, unit)
    u0 = (f0 * p.current_a)[mask]
    # One free OCV offset per block of consecutive fit samples (a rest level with its pulses):
    # the resistances then come from the dynamics alone, not from OCV-table errors at that level.
    block_of = np.cumsum(np.diff(np.flatnonzero(mask), prepend=-2) > 1) - 1
    blocks = np.zeros((block_of.size, int(block_of[-1]) + 1))
    blocks[np.arange(block_of.size), block_of] = 1.0

    def responses(taus: np.ndarray, factor: np.ndarray) -> np.ndarray:
        # Capacitances are fixed in the ECM, so each tau scales with its resistance multiplier.
        drive = factor * p.current_a
        dt_rel = p.dt_s / factor
        cols = []
        for tau in taus:
            decay = np.exp(-dt_rel / tau)
            cols.append(linear_recurrence(decay, (1.0 - decay) * drive)[mask])
        return np.column_stack(cols)

    def search(taus1: np.ndarray, taus2: np.ndarray) -> tuple[float, ...] | None:
        x1, x2 = responses(taus1, f1), responses(taus2, f2)
        m = np.column_stack([u0, x1, x2, blocks])
        offsets = list(range(1 + taus1.size + taus2.size, m.shape[1]))
        gram = m.T @ m
        rhs = m.T @ (-y)
        yy = float(y @ y)
        g1 = taus1.size
        best: tuple[float, ...] | None = None
        for j, tau1 in enumerate(taus1):
            for k, tau2 in enumerate(taus2):
                if tau2 <= tau1:
                    continue
                idx = [0, 1 + j, 1 + g1 + k, *offsets]
                a = gram[np.ix_(idx, idx)]
                b = rhs[idx]
                try:
                    theta = np.linalg.solve(a, b)
                except np.linalg.LinAlgError:
                    continue
                if np.any(theta[:3] <= 0.0):
                    continue
                sse = yy - 2.0 * float(theta @ b) + float(theta @ a @ theta)
                if best is None or sse < best[0]:
                    best = (sse, theta[0], theta[1], float(tau1), theta[2], float(tau2))
        return best

    g = opts.tau_grid_points
    taus1 = np.geomspace(*opts.tau1_range_s, g)
    taus2 = np.geomspace(*opts.tau2_range_s, g)
    best = search(taus1, taus2)
    if best is None:
        raise InputError("cell fit: no positive R0/R1/R2 fits the pulses (check the test data)")
    # Refine twice, each time on a 9 x 9 grid spanning one step of the previous grid either side.
    step1 = (opts.tau1_range_s[1] / opts.tau1_range_s[0]) ** (1.0 / (g - 1))
    step2 = (opts.tau2_range_s[1] / opts.tau2_range_s[0]) ** (1.0 / (g - 1))
    for _ in range(2):
        fine = search(
            np.geomspace(best[3] / step1, best[3] * step1, 9),
            np.geomspace(best[5] / step2, best[5] * step2, 9),
        )
        if fine is not None and fine[0] < best[0]:
            best = fine
        step1, step2 = step1**0.25, step2**0.25
    _, r0, r1, tau1, r2, tau2 = best
    return float(r0), float(r1), tau1, float(r2), tau2


def fit_cell(
    trace: Trace,
    template: CellParams,
    *,
    name: str | None = None,
    options: FitOptions | None = None,
) -> FitResult:
    """Fit capacity, OCV table and R0/R1/R2 with their taus to a characterisation test.

    Parameters the test cannot identify come from ``template``; the returned cell has the same
    schema as the shipped reference and is written with :func:`bms.cellmodel.params.dump_cell`.
    """
    opts = options or FitOptions()
    p = _prepare(trace, template, opts)
    tr = template.resistance
    pressure = tr.pressure_ref_mpa
    grid = np.asarray(opts.soc_grid)
    dudt = ecm.dudt_v_per_k(grid, template.ocv)
    # Start with the template's resistances for the overpotential; iterate OCV <-> resistances.
    res = replace(tr, temp_ref_c=p.temp_fit_c)
    ocv = OcvTable(grid, np.zeros(grid.size), dudt, p.temp_fit_c)
    for _ in range(opts.iterations):
        values = _ocv_from_data(p, _overpotential_v(p, res, pressure), template.ocv, opts)
        ocv = OcvTable(grid, values, dudt, p.temp_fit_c)
        r0, r1, tau1, r2, tau2 = _fit_resistances(p, ocv, res, pressure, opts)
        res = replace(res, r0_ohm=r0, r1_ohm=r1, r1_tau_s=tau1, r2_ohm=r2, r2_tau_s=tau2)
    # Final table with the final resistances, so the replay uses a consistent pair.
    values = _ocv_from_data(p, _overpotential_v(p, res, pressure), template.ocv, opts)
    ocv = OcvTable(grid, values, dudt, p.temp_fit_c)

    warnings = []
    v_end = float(trace.voltage_v[-1])
    v_min = round(v_end, 2)
    v_max = round(max(float(values[-1]), float(trace.voltage_v[p.rest_tails[0]].mean())), 2)
    if values[0] < v_min - 0.05:
        warnings.append(f"OCV at 0 % ({values[0]:.3f} V) lies below the cut-off {v_min} V")
        v_min = round(float(values[0]), 2)
    s, e = p.final
    final_ah = float(np.sum(p.current_a[s:e] * p.dt_s[s:e])) / SECONDS_PER_HOUR
    final_c = float(np.mean(p.current_a[s:e])) / p.capacity_ah
    cell = replace(
        template,
        name=name or f"{template.name} fitted",
        capacity_ah=p.capacity_ah,
        voltage_min_v=v_min,
        voltage_max_v=v_max,
        ocv=ocv,
        resistance=res,
        source=trace.source,
    )
    model = model_voltage_v(cell, p.time_s, p.current_a, p.temp_c, p.soc)
    err = trace.voltage_v - model
    return FitResult(
        cell=cell,
        current_offset_a=p.offset_a,
        final_discharge_ah=final_ah,
        final_discharge_c_rate=final_c,
        rest_points=len(p.rest_tails),
        replay_rms_v=float(np.sqrt(np.mean(err**2))),
        replay_max_v=float(np.max(np.abs(err))),
        samples=int(p.time_s.size),
        template=template.name,
        warnings=tuple(warnings),
    )
