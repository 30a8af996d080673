"""The report's figures: one PNG each, drawn with matplotlib's object API on the Agg canvas.

Every figure shares one time axis (seconds, minutes or hours, picked from the run length), marks
injected faults, protection trips and failed expectations at the moment they happened, and says so
in the picture when a signal was not recorded rather than leaving an empty frame. Long runs are
thinned for drawing (min and max of each bucket kept, so spikes survive); the data on disk is
untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from bms.report.data import RunData

#: Points per line after thinning: far more than the pixels of a 1100 px wide figure.
MAX_POINTS = 3000
#: Columns (time) of the cell heat map after bucket averaging.
HEATMAP_COLUMNS = 600
#: Heat-map colour range: this percentile of |deviation|, at least HEATMAP_MIN_RANGE_MV, so a
#: healthy pack shows its spread and one dead cell saturates instead of washing out the rest.
HEATMAP_CLIP_PERCENTILE = 98.0
HEATMAP_MIN_RANGE_MV = 2.0
#: Figure width and dots per inch: 1100 px wide pages read well on a laptop and in print.
WIDTH_IN = 11.0
DPI = 100
#: Runs up to this long use seconds on the time axis, up to HOURS_AFTER_S minutes, then hours.
SECONDS_UP_TO_S = 600.0
#: Current above a limit by less than this is not shaded as an excursion: it absorbs the
#: current sensor's offset and resolution (a 0.2 A offset against a 0 A limit is not a breach).
LIMIT_MARGIN_A = 1.0
HOURS_AFTER_S = 5 * 3600.0

COLOR_FAILED = "#d62728"
COLOR_PASSED = "#2ca02c"
COLOR_INJECTED = "#9467bd"
TIER_COLORS = {"INFO": "#1f77b4", "WARNING": "#ff7f0e", "FATAL": "#8b0000"}
TRUTH_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.0}


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: file name, title, caption and the function drawing it."""

    file_name: str
    title: str
    caption: str
    draw: Callable[[RunData, TimeAxis], Figure]


@dataclass(frozen=True)
class TimeAxis:
    """Shared time axis: seconds are divided by ``scale_s`` and labelled with ``unit``."""

    scale_s: float
    unit: str
    end_s: float

    @classmethod
    def for_duration(cls, end_s: float) -> TimeAxis:
        """Seconds for short runs, minutes for drives, hours for long campaigns."""
        if end_s <= SECONDS_UP_TO_S:
            return cls(1.0, "s", end_s)
        if end_s <= HOURS_AFTER_S:
            return cls(60.0, "min", end_s)
        return cls(3600.0, "h", end_s)

    @property
    def label(self) -> str:
        """Axis label with the unit."""
        return f"simulated time ({self.unit})"

    def __call__(self, time_s: np.ndarray | float) -> np.ndarray | float:
        return np.asarray(time_s) / self.scale_s if np.ndim(time_s) else time_s / self.scale_s


# ---------------------------------------------------------------------------------- helpers
def thin(time_s: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS) -> tuple:
    """Bucketed min/max of ``values`` (1-D or rows = time) so spikes survive decimation.

    Returns ``(time_s, values)`` with at most ``max_points`` rows; each bucket contributes its
    minimum and its maximum at the bucket's first time (two rows), NaN-aware.
    """
    n = len(time_s)
    if n <= max_points:
        return time_s, values
    k = int(np.ceil(2 * n / max_points))
    m = n // k
    t = time_s[: m * k].reshape(m, k)[:, 0]
    v = values[: m * k].reshape(m, k, *values.shape[1:])
    with np.errstate(all="ignore"), _quiet_nan():
        lo, hi = np.nanmin(v, axis=1), np.nanmax(v, axis=1)
    return np.repeat(t, 2), np.stack([lo, hi], axis=1).reshape(2 * m, *values.shape[1:])


def bucket_mean(time_s: np.ndarray, values: np.ndarray, columns: int) -> tuple:
    """Mean of ``values`` (rows = time) over equal buckets, at most ``columns`` rows."""
    n = len(time_s)
    if n <= columns:
        return time_s, values
    k = int(np.ceil(n / columns))
    m = n // k
    with _quiet_nan():
        v = np.nanmean(values[: m * k].reshape(m, k, *values.shape[1:]), axis=1)
    return time_s[: m * k].reshape(m, k)[:, 0], v


class _quiet_nan:
    """Silence numpy's all-NaN-slice warnings: a sensor can be invalid for a whole bucket."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def intervals(time_s: np.ndarray, on: np.ndarray) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of every run where ``on`` is true; a run lasts until the next sample."""
    if not len(time_s):
        return []
    on = np.asarray(on, dtype=bool)
    edges = np.diff(np.r_[False, on, False].astype(np.int8))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    ends_t = np.r_[time_s[1:], time_s[-1]]
    return [(float(time_s[a]), float(ends_t[b - 1])) for a, b in zip(starts, stops, strict=True)]


def as_percent(soc: np.ndarray) -> np.ndarray:
    """Truth SOC in % whether the trace stores a fraction (0..1) or a percentage."""
    finite = soc[np.isfinite(soc)]
    return soc * 100.0 if finite.size and np.max(np.abs(finite)) <= 1.0 + 1e-9 else soc


def _new_figure(rows: int, height_in: float, ratios: Sequence[float] | None = None) -> tuple:
    fig = Figure(figsize=(WIDTH_IN, height_in), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, height_ratios=ratios)[:, 0]
    return fig, list(axes)


def _finish(fig: Figure, axes: Sequence[Axes], run: RunData, ta: TimeAxis, title: str) -> Figure:
    """Title, shared time axis, grids and the event markers common to every figure."""
    fig.suptitle(f"{title} - {run.result.name}", fontsize=12, fontweight="bold")
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_xlim(0.0, ta(max(ta.end_s, 1e-9)))
        _mark_events(ax, run, ta)
    axes[-1].set_xlabel(ta.label)
    handles = _event_legend(run)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncol=len(handles),
            fontsize=8,
            frameon=False,
        )
    return fig


def _mark_events(ax: Axes, run: RunData, ta: TimeAxis) -> None:
    """Vertical lines: injected faults, WARNING/FATAL protection trips, failed expectations."""
    for time_s, _ in run.result.fault_events:
        ax.axvline(ta(time_s), color=COLOR_INJECTED, linestyle=":", linewidth=1.2, alpha=0.9)
    for fault in run.bms_faults:
        if fault.tier in ("WARNING", "FATAL"):
            color = TIER_COLORS[fault.tier]
            ax.axvline(ta(fault.start_s), color=color, linestyle="-.", linewidth=1.0, alpha=0.8)
    for exp in run.result.expectations:
        if not exp.passed and exp.time_s is not None:
            ax.axvline(ta(exp.time_s), color=COLOR_FAILED, linewidth=1.6, alpha=0.9)


def _event_legend(run: RunData) -> list:
    handles = []
    if run.result.fault_events:
        handles.append(Line2D([], [], color=COLOR_INJECTED, linestyle=":", label="fault injected"))
    for tier in ("WARNING", "FATAL"):
        if any(f.tier == tier for f in run.bms_faults):
            handles.append(
                Line2D([], [], color=TIER_COLORS[tier], linestyle="-.", label=f"{tier} trip")
            )
    if any(not e.passed and e.time_s is not None for e in run.result.expectations):
        handles.append(
            Line2D([], [], color=COLOR_FAILED, linewidth=1.6, label="expectation failed")
        )
    return handles


def _not_recorded(ax: Axes, what: str) -> None:
    ax.text(
        0.5,
        0.5,
        f"{what}: not recorded in this run",
        transform=ax.transAxes,
        ha="center",
        va="center",
        color="gray",
        fontsize=11,
    )
    ax.set_yticks([])


def _lines(ax: Axes, run: RunData, ta: TimeAxis, series: Sequence[tuple[str, str, dict]]) -> bool:
    """Plot each ``(column, label, style)`` that was recorded; True when anything was drawn."""
    drawn = False
    for column, label, style in series:
        values = run.column(column)
        if values is None:
            continue
        t, v = thin(run.trace_time_s, values)
        ax.plot(ta(t), v, label=label, linewidth=style.pop("linewidth", 1.2), **style)
        drawn = True
    if drawn:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    return drawn


# ---------------------------------------------------------------------------------- figures
def draw_pack(run: RunData, ta: TimeAxis) -> Figure:
    """Pack current (positive = discharge) and pack / DC-link voltage."""
    fig, (ax_i, ax_v) = _new_figure(2, 6.0)
    if not _lines(
        ax_i,
        run,
        ta,
        [
            ("BmsPackValues.PackCurrent_A", "measured by BMS", {}),
            ("truth.current_a", "plant truth", dict(TRUTH_STYLE)),
        ],
    ):
        _not_recorded(ax_i, "pack current")
    ax_i.axhline(0.0, color="gray", linewidth=0.8)
    ax_i.set_ylabel("current (A)\n+ = discharge")
    if not _lines(
        ax_v,
        run,
        ta,
        [
            ("BmsPackValues.PackVoltage_V", "pack (BMS)", {}),
            ("BmsPackValues.DcLinkVoltage_V", "DC link (BMS)", {"alpha": 0.7}),
            ("truth.pack_voltage_v", "pack truth", dict(TRUTH_STYLE)),
        ],
    ):
        _not_recorded(ax_v, "pack voltage")
    ax_v.set_ylabel("voltage (V)")
    return _finish(fig, [ax_i, ax_v], run, ta, "Pack current and voltage")


def _spread_plot(
    ax: Axes, run: RunData, ta: TimeAxis, name: str, label: str, truth: Sequence[tuple[str, str]]
) -> bool:
    """min / mean / max over channels of a decoded matrix as a band, plus truth lines."""
    matrix = run.matrices.get(name)
    drawn = False
    if matrix is not None and matrix.values.size:
        with _quiet_nan():
            stats = np.stack(
                [
                    np.nanmin(matrix.values, axis=1),
                    np.nanmean(matrix.values, axis=1),
                    np.nanmax(matrix.values, axis=1),
                ],
                axis=1,
            )
        t, s = thin(matrix.time_s, stats)
        x = ta(t)
        ax.fill_between(x, s[:, 0], s[:, 2], color="#1f77b4", alpha=0.25, label=f"{label} min-max")
        ax.plot(x, s[:, 1], color="#1f77b4", linewidth=1.2, label=f"{label} mean")
        ax.plot(x, s[:, 0], color="#1f77b4", linewidth=0.6)
        ax.plot(x, s[:, 2], color="#1f77b4", linewidth=0.6)
        drawn = True
    for column, text in truth:
        values = run.column(column)
        if values is not None:
            t, v = thin(run.trace_time_s, values)
            ax.plot(ta(t), v, label=text, **TRUTH_STYLE)
            drawn = True
    if drawn:
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    return drawn


def draw_cell_voltages(run: RunData, ta: TimeAxis) -> Figure:
    """Cell voltage min / mean / max over all cells (from CellVoltages) and the spread in mV."""
    fig, (ax_v, ax_d) = _new_figure(2, 6.0, ratios=[2, 1])
    if not _spread_plot(
        ax_v,
        run,
        ta,
        "CellVoltages",
        "cells",
        [("truth.cell_voltage_max_v", "truth max"), ("truth.cell_voltage_min_v", "truth min")],
    ):
        _not_recorded(ax_v, "cell voltages")
    ax_v.set_ylabel("cell voltage (V)")
    matrix = run.matrices.get("CellVoltages")
    if matrix is not None and matrix.values.size:
        with _quiet_nan():
            spread_mv = 1e3 * (np.nanmax(matrix.values, axis=1) - np.nanmin(matrix.values, axis=1))
        t, s = thin(matrix.time_s, spread_mv)
        ax_d.plot(ta(t), s, color="#d62728", linewidth=1.0, label="max - min (measured)")
        ax_d.legend(loc="upper right", fontsize=8)
    else:
        _not_recorded(ax_d, "cell voltage spread")
    ax_d.set_ylabel("spread (mV)")
    return _finish(fig, [ax_v, ax_d], run, ta, "Cell voltages")


def draw_cell_heatmap(run: RunData, ta: TimeAxis) -> Figure:
    """Each cell's deviation from the pack median over time: weak or shorted cells stand out."""
    fig, (ax,) = _new_figure(1, 5.5)
    matrix = run.matrices.get("CellVoltages")
    if matrix is None or not matrix.values.size:
        _not_recorded(ax, "cell voltages")
        return _finish(fig, [ax], run, ta, "Cell voltage deviation by cell and time")
    t, v = bucket_mean(matrix.time_s, matrix.values, HEATMAP_COLUMNS)
    with _quiet_nan():
        dev_mv = 1e3 * (v - np.nanmedian(v, axis=1, keepdims=True))
        # Symmetric colour scale around 0 mV, clipped so one dead cell does not wash out the rest.
        limit = (
            float(np.nanpercentile(np.abs(dev_mv), HEATMAP_CLIP_PERCENTILE))
            if np.isfinite(dev_mv).any()
            else 1.0
        )
    limit = max(limit, HEATMAP_MIN_RANGE_MV)
    step = float(np.median(np.diff(t))) if len(t) > 1 else 0.1
    cmap = _colormap("RdBu_r").with_extremes(bad="#9e9e9e")
    image = ax.imshow(
        np.ma.masked_invalid(dev_mv.T),
        aspect="auto",
        interpolation="nearest",
        extent=(ta(t[0]), ta(t[-1] + step), matrix.channels + 0.5, 0.5),
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
    )
    bar = fig.colorbar(image, ax=ax, pad=0.01, extend="both")
    bar.set_label("deviation from pack median (mV)")
    ax.set_ylabel("cell (series position)")
    fig = _finish(fig, [ax], run, ta, "Cell voltage deviation by cell and time")
    ax.grid(False)
    return fig


def draw_soc(run: RunData, ta: TimeAxis) -> Figure:
    """BMS SOC estimate with its 1-sigma band against plant truth, and the estimation error."""
    fig, (ax_s, ax_e) = _new_figure(2, 6.5, ratios=[2, 1])
    t = run.trace_time_s
    est = run.column("BmsSoc.SocAvg_pct")
    sigma = run.column("BmsSoc.SocSigma_pct")
    truth = run.column("truth.soc_mean")
    drawn = False
    if est is not None:
        tt, e = thin(t, est)
        ax_s.plot(ta(tt), e, color="#1f77b4", linewidth=1.3, label="BMS estimate (mean)")
        if sigma is not None:
            band = np.stack([est - sigma, est + sigma], axis=1)
            tb, b = thin(t, band)
            ax_s.fill_between(
                ta(tb), b[:, 0], b[:, 1], color="#1f77b4", alpha=0.2, label="estimate +- 1 sigma"
            )
        drawn = True
    for column, label, style in (
        ("BmsSoc.SocMin_pct", "BMS min cell", {"color": "#1f77b4", "linestyle": ":"}),
        ("BmsSoc.SocMax_pct", "BMS max cell", {"color": "#1f77b4", "linestyle": "-."}),
    ):
        values = run.column(column)
        if values is not None:
            tt, v = thin(t, values)
            ax_s.plot(ta(tt), v, alpha=0.8, linewidth=0.9, label=label, **style)
    if truth is not None:
        tt, v = thin(t, as_percent(truth))
        ax_s.plot(ta(tt), v, label="truth (mean)", **TRUTH_STYLE)
        drawn = True
    if drawn:
        ax_s.legend(loc="upper right", fontsize=8, framealpha=0.85)
    else:
        _not_recorded(ax_s, "SOC")
    ax_s.set_ylabel("SOC (%)")
    if est is not None and truth is not None:
        error = est - as_percent(truth)
        tt, err = thin(t, error)
        ax_e.plot(ta(tt), err, color="#d62728", linewidth=1.0, label="estimate - truth")
        if sigma is not None:
            tb, s = thin(t, sigma)
            ax_e.fill_between(ta(tb), -s, s, color="#1f77b4", alpha=0.2, label="+- 1 sigma (BMS)")
        ax_e.axhline(0.0, color="gray", linewidth=0.8)
        ax_e.legend(loc="upper right", fontsize=8, framealpha=0.85)
    else:
        _not_recorded(ax_e, "SOC error (needs estimate and truth)")
    ax_e.set_ylabel("error (% SOC)")
    return _finish(fig, [ax_s, ax_e], run, ta, "State of charge: estimate against truth")


def draw_temperatures(run: RunData, ta: TimeAxis) -> Figure:
    """Cell temperature sensors min / mean / max (CellTemperatures) and truth extremes."""
    fig, (ax,) = _new_figure(1, 4.5)
    if not _spread_plot(
        ax,
        run,
        ta,
        "CellTemperatures",
        "sensors",
        [("truth.temp_max_c", "truth max"), ("truth.temp_min_c", "truth min")],
    ):
        _not_recorded(ax, "temperatures")
    ax.set_ylabel("temperature (degC)")
    return _finish(fig, [ax], run, ta, "Cell temperatures")


def draw_pressures(run: RunData, ta: TimeAxis) -> Figure:
    """Stack pressure of every module (ModulePressures), one line each, with truth extremes."""
    fig, (ax,) = _new_figure(1, 4.5)
    matrix = run.matrices.get("ModulePressures")
    drawn = False
    if matrix is not None and matrix.values.size:
        t, v = thin(matrix.time_s, matrix.values)
        # tab10 keeps up to ten modules clearly apart; tab20's paired shades only for more.
        palette = _colormap("tab10" if matrix.channels <= 10 else "tab20")
        for module in range(matrix.channels):
            if np.isfinite(v[:, module]).any():
                ax.plot(
                    ta(t),
                    v[:, module],
                    linewidth=1.0,
                    color=palette(module % palette.N),
                    label=f"module {module + 1}",
                )
        drawn = True
    for column, text in (("truth.pressure_min_mpa", "truth min"),):
        values = run.column(column)
        if values is not None:
            tt, vv = thin(run.trace_time_s, values)
            ax.plot(ta(tt), vv, label=text, **TRUTH_STYLE)
            drawn = True
    if drawn:
        ax.legend(
            loc="center left",
            bbox_to_anchor=(1.005, 0.5),
            fontsize=7,
            ncol=2 if (matrix is not None and matrix.channels > 12) else 1,
        )
    else:
        _not_recorded(ax, "module pressures")
    ax.set_ylabel("stack pressure (MPa)")
    return _finish(fig, [ax], run, ta, "Module stack pressures")


def _colormap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def draw_limits(run: RunData, ta: TimeAxis) -> Figure:
    """Discharge limit (up) and charge limit (down, as negative current) around actual current."""
    fig, (ax,) = _new_figure(1, 5.0)
    t = run.trace_time_s
    dis = run.column("BmsLimits.MaxDischargeCurrent_A")
    chg = run.column("BmsLimits.MaxChargeCurrent_A")
    current = run.column("BmsPackValues.PackCurrent_A")
    if current is None:
        current = run.column("truth.current_a")
    drawn = False
    if dis is not None:
        tt, v = thin(t, dis)
        ax.plot(ta(tt), v, color="#2ca02c", linewidth=1.4, label="discharge limit")
        drawn = True
    if chg is not None:
        tt, v = thin(t, -chg)
        ax.plot(ta(tt), v, color="#ff7f0e", linewidth=1.4, label="charge limit (as -A)")
        drawn = True
    if current is not None:
        tt, v = thin(t, current)
        ax.plot(ta(tt), v, color="black", linewidth=0.9, label="pack current")
        over = np.zeros(len(t), dtype=bool)
        if dis is not None:
            over |= current > dis + LIMIT_MARGIN_A
        if chg is not None:
            over |= current < -chg - LIMIT_MARGIN_A
        for start, end in intervals(t, over):
            ax.axvspan(ta(start), ta(end), color=COLOR_FAILED, alpha=0.15, linewidth=0)
        if over.any():
            ax.plot(
                [], [], color=COLOR_FAILED, alpha=0.3, linewidth=6, label="current beyond limit"
            )
        drawn = True
    if drawn:
        ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.legend(loc="upper right", fontsize=8, framealpha=0.85)
    else:
        _not_recorded(ax, "current limits")
    ax.set_ylabel("current (A)\n+ = discharge")
    return _finish(fig, [ax], run, ta, "Current limits against actual current")


#: Boolean rows of the state timeline: (BmsState signal, label, colour).
STATE_ROWS = (
    ("MainPlusClosed", "main + closed", "#2ca02c"),
    ("MainMinusClosed", "main - closed", "#2ca02c"),
    ("PrechargeClosed", "precharge closed", "#17becf"),
    ("BalancingActive", "balancing", "#1f77b4"),
    ("ChargeInhibit", "charge inhibit", "#ff7f0e"),
    ("FaultInfo", "fault INFO", TIER_COLORS["INFO"]),
    ("FaultWarning", "fault WARNING", TIER_COLORS["WARNING"]),
    ("FaultFatal", "fault FATAL", TIER_COLORS["FATAL"]),
    ("EmergencyShutoff", "emergency shutoff", "#8b0000"),
    ("ThermalEventAlarm", "thermal event alarm", "#8b0000"),
)


def _state_series(run: RunData) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """BmsState signals: every frame from the CAN log, else the trace columns recorded."""
    if "BmsState" in run.bus:
        return run.bus["BmsState"]
    prefix = "BmsState."
    return run.trace_time_s, {
        c[len(prefix) :]: v for c, v in run.trace.items() if c.startswith(prefix)
    }


def draw_state(run: RunData, ta: TimeAxis) -> Figure:
    """BMS state machine over time and the contactor / flag timeline from BmsState frames."""
    t_state, signals = _state_series(run)
    rows = [
        (t_state, signals[name] > 0.5, label, color)
        for name, label, color in STATE_ROWS
        if name in signals and np.nan_to_num(signals[name]).any()
    ]
    open_truth = run.column("truth.contactors_open")
    if open_truth is not None:
        closed = np.nan_to_num(open_truth, nan=1.0) < 0.5
        rows.insert(0, (run.trace_time_s, closed, "mains closed (truth)", "#555555"))
    fig, (ax_s, ax_b) = _new_figure(2, 3.0 + 0.28 * max(len(rows), 3), ratios=[1, 1.2])
    state = signals.get("BmsState")
    if state is not None and np.isfinite(state).any():
        table = run.value_tables.get("BmsState.BmsState", {})
        keep = np.r_[True, np.diff(state) != 0]  # steps only: exact and small
        idx = np.r_[np.nonzero(keep)[0], len(state) - 1]
        ax_s.step(ta(t_state[idx]), state[idx], where="post", color="#1f77b4", linewidth=1.6)
        codes = sorted(table) or sorted({int(v) for v in state[np.isfinite(state)]})
        ax_s.set_yticks(codes, [table.get(c, str(c)) for c in codes], fontsize=8)
        ax_s.set_ylim(min(codes) - 0.5, max(codes) + 0.5)
    else:
        _not_recorded(ax_s, "BMS state")
    ax_s.set_ylabel("BMS state")
    for row, (t, on, _, color) in enumerate(rows):
        spans = [(ta(a), ta(b) - ta(a)) for a, b in intervals(t, on)]
        ax_b.broken_barh(spans, (row - 0.35, 0.7), color=color)
    if rows:
        ax_b.set_yticks(range(len(rows)), [label for _, _, label, _ in rows], fontsize=8)
        ax_b.set_ylim(len(rows) - 0.5, -0.5)
    else:
        _not_recorded(ax_b, "contactor and flag states")
    return _finish(fig, [ax_s, ax_b], run, ta, "BMS state and contactors")


def draw_events(run: RunData, ta: TimeAxis) -> Figure:
    """Timeline of injected faults, BMS fault codes by tier and expectations (failed in red)."""
    fault_keys: list[tuple[str, str, int]] = []
    for f in run.bms_faults:
        key = (f.code, f.tier, f.location)
        if key not in fault_keys:
            fault_keys.append(key)
    exps = run.result.expectations
    injected = run.result.fault_events
    n_rows = len(fault_keys) + len(exps) + (1 if injected else 0)
    fig, (ax,) = _new_figure(1, 1.8 + 0.32 * max(n_rows, 2))
    labels: list[str] = []
    label_colors: list[str] = []
    row = 0
    if injected:
        for time_s, text in injected:
            ax.plot(ta(time_s), row, marker="v", color=COLOR_INJECTED, markersize=9)
            ax.annotate(
                _short(text, 45),
                (ta(time_s), row),
                xytext=(4, 6),
                textcoords="offset points",
                fontsize=7,
                color=COLOR_INJECTED,
            )
        labels.append("faults injected")
        label_colors.append(COLOR_INJECTED)
        row += 1
    for key in fault_keys:
        code, tier, loc = key
        spans = [
            (ta(f.start_s), max(ta(f.end_s) - ta(f.start_s), ta(0.1)))
            for f in run.bms_faults
            if (f.code, f.tier, f.location) == key
        ]
        color = TIER_COLORS.get(tier, "gray")
        ax.broken_barh(spans, (row - 0.35, 0.7), color=color)
        labels.append(f"{code} {tier}" + (f" #{loc}" if loc else ""))
        label_colors.append(color)
        row += 1
    for i, exp in enumerate(exps):
        color = COLOR_PASSED if exp.passed else COLOR_FAILED
        window = run.windows[i] if i < len(run.windows) else None
        if window is not None:
            a, b = window
            ax.broken_barh([(ta(a), ta(b) - ta(a))], (row - 0.3, 0.6), color=color, alpha=0.25)
        if exp.time_s is not None:
            marker = "o" if exp.passed else "X"
            ax.plot(ta(exp.time_s), row, marker=marker, color=color, markersize=9)
        labels.append(("PASS  " if exp.passed else "FAIL  ") + _short(exp.name, 40))
        label_colors.append(color)
        row += 1
    if row:
        ax.set_yticks(range(row), labels, fontsize=8)
        for tick, color in zip(ax.get_yticklabels(), label_colors, strict=True):
            tick.set_color(color)
            if color == COLOR_FAILED:
                tick.set_fontweight("bold")
        ax.set_ylim(row - 0.5, -0.5)
    else:
        _not_recorded(ax, "fault events and expectations")
    handles = [Patch(color=TIER_COLORS[t], label=f"BMS fault {t}") for t in TIER_COLORS] + [
        Line2D([], [], marker="o", color=COLOR_PASSED, linestyle="", label="expectation met"),
        Line2D([], [], marker="X", color=COLOR_FAILED, linestyle="", label="expectation failed"),
    ]
    fig = _finish(fig, [ax], run, ta, "Faults and expectations")
    fig.legends.clear()  # one legend below the axis for this figure: markers and tiers
    fig.legend(
        handles=[h for h in _event_legend(run) if h.get_label() != "expectation failed"] + handles,
        loc="outside lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    return fig


def _short(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "..."


#: The report's figures in page order.
FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(
        "events.png",
        "Faults and expectations",
        "Injected faults (triangles), BMS fault codes as reported on BmsFaults (bars coloured by "
        "tier) and every expectation (green met, red failed; shaded where its window is known).",
        draw_events,
    ),
    FigureSpec(
        "pack.png",
        "Pack current and voltage",
        "BMS measurement (BmsPackValues) against plant truth; positive current discharges.",
        draw_pack,
    ),
    FigureSpec(
        "cell_voltages.png",
        "Cell voltages",
        "Minimum, mean and maximum over all cells from the CellVoltages frames, and the spread.",
        draw_cell_voltages,
    ),
    FigureSpec(
        "cell_heatmap.png",
        "Cell voltage heat map",
        "Each row is one cell (series position 1 at the top), coloured by its deviation from the "
        "pack median at that time (blue = low, red = high); grey = invalid (open wire, AFE fault).",
        draw_cell_heatmap,
    ),
    FigureSpec(
        "soc.png",
        "State of charge",
        "BMS estimate (BmsSoc) with its reported 1-sigma band against the plant's true mean SOC.",
        draw_soc,
    ),
    FigureSpec(
        "temperatures.png",
        "Temperatures",
        "Cell temperature sensors (CellTemperatures): minimum, mean and maximum.",
        draw_temperatures,
    ),
    FigureSpec(
        "pressures.png",
        "Stack pressures",
        "Stack pressure of every module from the ModulePressures frames.",
        draw_pressures,
    ),
    FigureSpec(
        "limits.png",
        "Current limits",
        "BmsLimits against the actual pack current; red where the current exceeded a limit.",
        draw_limits,
    ),
    FigureSpec(
        "state.png",
        "BMS state and contactors",
        "State machine (BmsState) and the contactor and fault flags it reports.",
        draw_state,
    ),
)


def render_figures(run: RunData, out_dir: Path) -> list[tuple[FigureSpec, Path]]:
    """Draw every figure of :data:`FIGURES` into ``out_dir`` as PNG; returns what was written."""
    ta = TimeAxis.for_duration(run.end_s)
    written = []
    for spec in FIGURES:
        fig = spec.draw(run, ta)
        path = out_dir / spec.file_name
        fig.savefig(path, format="png", dpi=DPI)
        written.append((spec, path))
    return written
