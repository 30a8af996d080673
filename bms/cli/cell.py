"""``bms cell fit CHAR.csv -o CELL.yaml``: fit the cell model to a characterisation test."""

from __future__ import annotations

import argparse
from pathlib import Path

from bms.cellmodel.fit import fit_cell
from bms.cellmodel.params import dump_cell, load_cell
from bms.cellmodel.trace import check_writable, read_trace
from bms.errors import InputError


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``bms cell`` and its ``fit`` action."""
    parser = subparsers.add_parser(
        "cell",
        help="cell model tools (fit to a characterisation test)",
        description="Cell model tools.",
    )
    actions = parser.add_subparsers(dest="cell_action", metavar="ACTION")
    fit = actions.add_parser(
        "fit",
        help="fit capacity, OCV table, R0 and two RC pairs to a characterisation test",
        description=(
            "Fit the cell model to a characterisation test (CSV time_s,current_a,voltage_v,"
            "temperature_c; positive current discharges): start full and rested, rests of at "
            "least 30 min at several SOCs, HPPC pulses, final C/10 discharge to the lower "
            "voltage limit. Writes a cell file in the schema of the shipped cells."
        ),
    )
    fit.add_argument("trace", metavar="CHAR.csv", help="characterisation test trace")
    fit.add_argument(
        "-o", "--output", required=True, metavar="CELL.yaml", help="cell file to write"
    )
    fit.add_argument(
        "--template",
        default="sslm90",
        metavar="CELL",
        help="shipped cell name or cell file whose unidentifiable parameters are carried over "
        "(default: %(default)s)",
    )
    fit.add_argument(
        "--name", default=None, help="name of the fitted cell (default: the output file's stem)"
    )
    fit.set_defaults(func=_do_fit)


def _do_fit(args: argparse.Namespace) -> int:
    check_writable(args.output)
    template = load_cell(args.template)
    trace = read_trace(args.trace)
    out = Path(args.output)
    result = fit_cell(trace, template, name=args.name or out.stem)
    try:
        dump_cell(result.cell, out)
    except OSError as exc:
        raise InputError(f"{out}: cannot write: {exc.strerror or exc}") from None
    print(result.summary())
    print(f"wrote {out}")
    return 0
