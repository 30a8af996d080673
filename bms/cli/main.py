"""Entry point of the ``bms`` command: wires the verb modules and turns errors into exit codes.

Exit status: 0 success, 1 a run whose expectations failed, 2 invalid input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from bms import __version__
from bms.errors import InputError

# Verb modules in the order ``bms --help`` lists them; each has add_subparser(subparsers).
VERBS = ("run", "simulate", "cell", "estimate", "node", "replay")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bms",
        description="Firmware-in-the-loop BMS emulator for solid-state lithium-metal packs.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"bms.cli.{verb}").add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bms`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # SIGTERM takes the same clean-up path as Ctrl-C: logs flushed, buses shut down.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"bms: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bms: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
