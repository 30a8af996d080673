"""``bms estimate --cell CELL.yaml TRACE.csv -o OUT.csv``: the BMS SOC estimator over a trace."""

from __future__ import annotations

import argparse

import numpy as np

from bms.cellmodel.params import load_cell
from bms.cellmodel.trace import check_writable, read_trace, write_estimate
from bms.errors import InputError
from bms.firmware.soc import estimate_trace, load_estimation_params


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bms estimate``."""
    parser = subparsers.add_parser(
        "estimate",
        help="run the BMS model's SOC estimator over a logged single-cell trace",
        description=(
            "Run the BMS model's own SOC filter (bms.firmware.soc) over a trace CSV "
            "(time_s,current_a,voltage_v,temperature_c; positive current discharges) and write "
            "time_s,soc,soc_sigma (fractions 0..1)."
        ),
    )
    parser.add_argument("trace", metavar="TRACE.csv", help="logged trace of one cell")
    parser.add_argument(
        "--cell", required=True, metavar="CELL", help="cell file (or shipped cell name)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="OUT.csv", help="CSV to write")
    parser.add_argument(
        "--initial-soc",
        default=None,
        metavar="X",
        help="start value (fraction 0..1); default: as the BMS does, from the first voltage "
        "(tight when the trace starts at rest)",
    )
    parser.add_argument(
        "--params",
        default="estimation",
        metavar="YAML",
        help="estimator parameters (shipped name or file, default: %(default)s)",
    )
    parser.add_argument(
        "--pressure-mpa",
        type=float,
        default=None,
        help="stack pressure for the resistance model (default: the cell's reference pressure)",
    )
    parser.set_defaults(func=_do_estimate)


def _initial_soc(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"--initial-soc: expected a fraction 0..1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"--initial-soc: expected a fraction 0..1, got {text!r}")
    return value


def _do_estimate(args: argparse.Namespace) -> int:
    initial = _initial_soc(args.initial_soc)
    check_writable(args.output)
    cell = load_cell(args.cell)
    params = load_estimation_params(args.params)
    trace = read_trace(args.trace)
    pressure = cell.resistance.pressure_ref_mpa if args.pressure_mpa is None else args.pressure_mpa
    soc, sigma = estimate_trace(
        cell,
        trace.time_s,
        trace.current_a,
        trace.voltage_v,
        trace.temperature_c,
        initial_soc=initial,
        pressure_mpa=pressure,
        params=params,
    )
    # The filter keeps a little room beyond 0..1 to show over/under-charge; the file reports SOC.
    write_estimate(args.output, trace.time_s, np.clip(soc, 0.0, 1.0), sigma)
    print(
        f"estimated {len(trace)} samples over {(trace.time_s[-1] - trace.time_s[0]) / 3600:.2f} h: "
        f"final SOC {100 * soc[-1]:.1f} % +- {100 * sigma[-1]:.1f} % (1 sigma); wrote {args.output}"
    )
    return 0
