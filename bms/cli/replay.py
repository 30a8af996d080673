"""``bms replay LOG``: feed a recorded log into the BMS model and diff its frames with the log's.

The log (BLF, ASC, candump ``.log``, ...) must hold the BMS's inputs (pack frames,
VehicleRequest, ChargerStatus) and the BMS's own frames. Exit 0 when the model reproduces every
logged BMS frame, 1 when it diverges (the first divergences are printed), 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bms.bench.replay import read_log, replay_bms
from bms.errors import InputError


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="replay a CAN log into the BMS model and report where its frames diverge",
        description=__doc__,
    )
    parser.add_argument("log", type=Path, help="recorded log (.blf, .asc, .log, ...)")
    parser.add_argument("--config", default="bms_pack_a_96s", help="BMS configuration or YAML")
    parser.add_argument("--stored-soc", type=float, help="SOC in the BMS's NVM at the start")
    parser.add_argument(
        "--tolerance-ms", type=float, default=0.0, help="allowed time difference (default 0)"
    )
    parser.add_argument("--max", type=int, default=10, help="divergences to print (default 10)")
    parser.add_argument("--origin", type=float, help="time of the BMS's step 0 in the log (s)")
    parser.add_argument(
        "--paced", action="store_true", help="follow the log's timing instead of full speed"
    )
    parser.set_defaults(func=_do_replay)


def _do_replay(args: argparse.Namespace) -> int:
    if args.max < 1:
        raise InputError(f"--max: expected >= 1, got {args.max}")
    if args.tolerance_ms < 0:
        raise InputError(f"--tolerance-ms: expected >= 0, got {args.tolerance_ms}")
    if args.stored_soc is not None and not 0.0 <= args.stored_soc <= 1.0:
        raise InputError(f"--stored-soc: expected a fraction 0..1, got {args.stored_soc}")
    messages = read_log(args.log)
    try:
        result = replay_bms(
            messages,
            args.config,
            stored_soc=args.stored_soc,
            origin_s=args.origin,
            time_tolerance_s=args.tolerance_ms / 1e3,
            max_divergences=args.max,
            paced=args.paced,
        )
    except KeyboardInterrupt:
        print("bms replay: interrupted")
        raise
    for divergence in result.divergences:
        print(divergence.describe())
    print(result.summary())
    return 1 if result.total_divergences else 0
