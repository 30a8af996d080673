"""``bms run``: run scenario files on the simulated clock and print a verdict table.

Each scenario runs into its own folder ``OUT/<scenario-name>/`` with the CAN log (``can.blf``;
``--log-format asc,log,mf4`` for more), the decoded signal trace (``trace.csv``), ``results.json``
and ``junit.xml``; ``OUT/junit.xml`` holds every scenario of the invocation. ``OUT`` defaults to
``runs/<YYYYmmdd-HHMMSS>``. Frames keep simulated timestamps (seconds from the run start); in
the logs channel 0 is the pack bus and 1 the vehicle bus (candump: can0/can1, BLF/ASC: 1/2).
Every file is loaded and checked before anything runs.

Bench mode: ``--realtime`` paces each scenario in real time on a python-can interface given by
python-can's own flags (``-i/--interface -c/--channel -b/--bitrate --fd --data-bitrate --timing
--bus-kwargs``; unset ones come from python-can's configuration: ``~/.canrc``, ``CAN_INTERFACE``
...). One interface carries both DBCs unless ``--vehicle-interface/--vehicle-channel/...`` give a
separate vehicle bus. ``--dut external``: no BMS runs here, the BMS is whatever answers on the bus
(a hardware BMS, or ``bms node bms`` in another process); expectations are judged from the bus
and the plant truth as in simulated runs. Frames are stamped in seconds since the run started.
Each run reports the lateness of its cyclic frames (p50/p99/max) and loop overruns, and fails on
a ``jitter budget`` entry when the scenario's ``realtime:`` budget is exceeded.

Exit status: 0 all passed, 1 an expectation failed or a run errored, 2 invalid input,
130 interrupted (Ctrl-C or SIGTERM; the logs are complete up to the interrupt, buses shut down).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import can.cli

from bms.errors import InputError
from bms.scenario.artifacts import (
    LOG_FILES,
    TRACE_FILES,
    check_available,
    discover_scenarios,
    first_failure,
    parse_formats,
    run_to_folder,
    unique_folder,
    with_seed,
    write_junit,
)
from bms.scenario.result import RunResult

#: Exit statuses of ``bms run``.
EXIT_PASSED, EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
#: Where runs go without ``--out`` (a time-stamped folder below it).
DEFAULT_RUNS_DIR = Path("runs")
#: Flag prefix of the optional separate vehicle bus in bench mode (as ``bms node``).
VEHICLE_PREFIX = "vehicle"
_BUS_KEYS = ("interface", "channel", "bitrate", "fd", "data_bitrate", "timing", "bus_kwargs")


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run scenario files (or folders of them) and print a verdict table",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="scenario files or folders")
    parser.add_argument("--out", type=Path, help="output folder (default runs/<YYYYmmdd-HHMMSS>)")
    parser.add_argument(
        "--log-format",
        action="append",
        metavar="FMT",
        help=f"CAN log format(s): {'|'.join(LOG_FILES)}; repeat or comma-separate (default blf)",
    )
    parser.add_argument(
        "--trace-format",
        default="csv",
        metavar="FMT",
        help=f"decoded signal trace: {'|'.join(TRACE_FILES)} (default csv)",
    )
    parser.add_argument("--seed", type=int, help="override every scenario's seed")
    parser.add_argument(
        "--no-report",
        action="store_true",
        help="skip report.html and the figures (built after each run; needs matplotlib)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print only failures and the summary line"
    )
    bench = parser.add_argument_group("bench mode (real time on a python-can interface)")
    bench.add_argument(
        "--realtime",
        action="store_true",
        help="pace the scenario in real time on the interface the bus flags give",
    )
    bench.add_argument(
        "--dut",
        choices=("internal", "external"),
        default="internal",
        help="internal: the emulated BMS runs here; external: the BMS answering on the bus",
    )
    can.cli.add_bus_arguments(parser, group_title="bus (with --realtime)")
    can.cli.add_bus_arguments(
        parser, prefix=VEHICLE_PREFIX, group_title="separate vehicle bus (with --realtime)"
    )
    parser.set_defaults(func=_do_run)


def _do_run(args: argparse.Namespace) -> int:
    log_formats = parse_formats(args.log_format or ["blf"], list(LOG_FILES), "--log-format")
    trace_formats = parse_formats([args.trace_format], list(TRACE_FILES), "--trace-format")
    if len(trace_formats) != 1:
        raise InputError(f"--trace-format: expected one of {'|'.join(TRACE_FILES)}")
    trace_format = trace_formats[0]
    bench = _bench_options(args)
    return run_paths(
        args.paths,
        args.out,
        log_formats=log_formats,
        trace_format=trace_format,
        seed=args.seed,
        quiet=args.quiet,
        report=not args.no_report,
        bench=bench,
    )


# -------------------------------------------------------------------- bench mode
class BenchOptions:
    """How ``--realtime`` runs are wired: which buses to open and where the BMS is."""

    def __init__(self, open_buses: Callable[[Any], tuple[Any, Any]], dut: str = "internal"):
        #: ``open_buses(clock) -> (pack SharedBus, vehicle SharedBus or None)``, once per run.
        self.open_buses = open_buses
        self.dut = dut

    @property
    def dut_external(self) -> bool:
        return self.dut == "external"

    def factory(self) -> Callable[[Any], Any]:
        """A ``system_factory`` building a real-time bench system per scenario run."""
        from bms.bench.realtime import bench_factory

        return bench_factory(self.open_buses, dut_external=self.dut_external)


def _bus_flags_given(args: argparse.Namespace, prefix: str | None = None) -> bool:
    keys = [f"{prefix}_{k}" if prefix else k for k in _BUS_KEYS]
    return any(getattr(args, k, None) not in (None, False, {}) for k in keys)


def _bench_options(args: argparse.Namespace) -> BenchOptions | None:
    """Bench wiring from the flags, or None for a simulated run (bus flags need --realtime)."""
    if not args.realtime:
        if args.dut == "external":
            raise InputError("--dut external: needs --realtime (a real bus for the BMS to answer)")
        if _bus_flags_given(args) or _bus_flags_given(args, VEHICLE_PREFIX):
            raise InputError("bus flags (-i/-c/-b/...): only with --realtime")
        return None
    separate = _bus_flags_given(args, VEHICLE_PREFIX)

    def open_buses(clock: Any) -> tuple[Any, Any]:
        from bms.bench.buses import SharedBus
        from bms.cli.node import open_bus_from_args

        pack = SharedBus(open_bus_from_args(args), clock, channel="pack" if separate else None)
        if not separate:
            return pack, None
        try:
            vehicle_bus = open_bus_from_args(args, VEHICLE_PREFIX)
        except BaseException:
            pack.shutdown()
            raise
        return pack, SharedBus(vehicle_bus, clock, channel="vehicle")

    return BenchOptions(open_buses, args.dut)


# -------------------------------------------------------------------- scenario I/O (late bound)
def load_scenario(path: Path) -> Any:
    """Load and validate one scenario file (raises InputError with a located line)."""
    from bms.scenario.schema import load_scenario as load

    return load(path)


def run_scenario(
    scenario: Any, recorder: Any, *, stop_check: Callable[[], bool], **options: Any
) -> RunResult:
    """Run one loaded scenario, feeding ``recorder`` (``system_factory=`` for bench runs)."""
    from bms.scenario.runner import run_scenario as run

    return run(scenario, recorder, stop_check=stop_check, **options)


def external_dut_problems(scenario: Any) -> list[str]:
    """Located lines for what ``scenario`` needs of the emulated BMS (refused: --dut external)."""
    from bms.scenario.runner import external_dut_problems as problems

    return problems(scenario)


# -------------------------------------------------------------------- the verb
def run_paths(
    paths: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    log_formats: Sequence[str] = ("blf",),
    trace_format: str = "csv",
    seed: int | None = None,
    quiet: bool = False,
    stream: TextIO | None = None,
    report: bool = True,
    bench: BenchOptions | None = None,
) -> int:
    """Discover, load all, run each into ``out/<name>/``, print the verdict; the exit status.

    Reports (``report.html`` per run, ``index.html`` for the set) are built after each run from
    its recorded files, so plotting never slows the simulation; a failed report never changes a
    verdict. ``bench``: run in real time on a real interface (see :class:`BenchOptions`); with an
    external DUT, scenarios that need the emulated BMS's internals are input errors.
    """
    from bms.report import ENABLE_HINT, Progress, build_index, build_report, report_available

    stream = stream or sys.stdout
    check_available(log_formats, trace_format)
    files = discover_scenarios(paths)
    if not files:
        raise InputError(f"{', '.join(map(str, paths))}: no scenario files found")
    scenarios, problems = _load_all(files)
    if bench is not None and bench.dut_external:
        problems += [p for s in scenarios for p in external_dut_problems(s)]
    if problems:
        for problem in problems:
            print(f"bms: error: {problem}", file=sys.stderr)
        return EXIT_INPUT
    if seed is not None:
        scenarios = [with_seed(s, seed) for s in scenarios]
    out_dir = _out_dir(out)
    make_reports = report and report_available()
    if report and not make_reports and not quiet:
        print(ENABLE_HINT, file=stream)
    options: dict[str, Any] = {} if bench is None else {"system_factory": bench.factory()}

    results: list[RunResult] = []
    taken: set[str] = set()
    interrupted = False
    with _graceful_interrupt() as stop:
        try:
            for path, scenario in zip(files, scenarios, strict=True):
                name = str(getattr(scenario, "name", path.stem))
                folder = unique_folder(out_dir, name, taken)
                if not quiet:
                    print(f"running {name} ({path}) -> {folder}", file=stream, flush=True)
                progress = Progress(float(getattr(scenario, "duration_s", 0.0)), label=name)

                def runner(
                    sc: Any, rec: Any, *, stop_check: Callable[[], bool], bar: Progress = progress
                ) -> RunResult:
                    return run_scenario(sc, bar.wrap(rec), stop_check=stop_check, **options)

                try:
                    result = run_to_folder(
                        scenario,
                        folder,
                        log_formats=log_formats,
                        trace_format=trace_format,
                        stop_check=stop.requested,
                        runner=runner,
                    )
                finally:
                    progress.close()
                results.append(result)
                if make_reports and result.out_dir is not None:
                    try:
                        build_report(result.out_dir)
                    except Exception as exc:  # a report never changes the verdict
                        print(f"bms: report for {name} skipped: {exc}", file=sys.stderr)
                if stop.requested():
                    interrupted = True
                    break
        except KeyboardInterrupt:
            # A second Ctrl-C/SIGTERM: run_to_folder already closed the files of that run.
            interrupted = True
        finally:
            if results:
                write_junit(results, out_dir / "junit.xml", suite_name="bms run")
                if make_reports:
                    build_index(out_dir, results)
    _print_verdict(results, out_dir, stream, quiet=quiet, interrupted=interrupted)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PASSED if all(r.passed and not r.error for r in results) else EXIT_FAILED


def _load_all(files: Sequence[Path]) -> tuple[list[Any], list[str]]:
    """Load every file before running any; returns the scenarios and one line per bad file."""
    scenarios, problems = [], []
    for path in files:
        try:
            scenarios.append(load_scenario(path))
        except InputError as exc:
            problems.append(str(exc))
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # a loader gap, still one line
            problems.append(f"{path}: cannot load: {exc}")
    return scenarios, problems


def _out_dir(out: str | Path | None) -> Path:
    if out is None:
        # Wall-clock name only for the folder; nothing inside a run reads the wall clock.
        out = DEFAULT_RUNS_DIR / time.strftime("%Y%m%d-%H%M%S")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"--out {out}: exists and is not a folder") from None
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder: {exc.strerror}") from None
    return out


class _StopFlag:
    """Set by the first Ctrl-C/SIGTERM; the runner polls it and ends the run cleanly."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def requested(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[_StopFlag]:
    """First SIGINT/SIGTERM asks the run to stop at the next tick (files stay consistent);
    a second one interrupts at once."""
    flag = _StopFlag()

    def handler(signum: int, frame: object) -> None:
        if flag.signal is not None:
            raise KeyboardInterrupt
        flag.signal = signum

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # not the main thread: keep the default behaviour
            previous[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -------------------------------------------------------------------- verdict table
def verdict(result: RunResult) -> str:
    """PASS, FAIL (an expectation failed), ERROR (the run could not finish) or INTERRUPTED."""
    if result.error and result.error.startswith("interrupted"):
        return "INTERRUPTED"
    if result.error:
        return "ERROR"
    return "PASS" if result.passed else "FAIL"


def lateness_cells(result: RunResult) -> tuple[str, str]:
    """Verdict-table cells of a real-time run: frame lateness p50/p99/max (ms) and overruns."""
    timing = getattr(result, "timing", None)
    if not timing:
        return "-", "-"
    late = "/".join(f"{timing[k] * 1e3:.3f}" for k in ("frame_p50_s", "frame_p99_s", "frame_max_s"))
    return f"{late} ms", str(timing["overruns"])


def _print_verdict(
    results: Sequence[RunResult], out_dir: Path, stream: TextIO, *, quiet: bool, interrupted: bool
) -> None:
    # Real-time runs add their lateness figures; simulated tables keep their columns.
    timed = any(getattr(r, "timing", None) for r in results)
    rows = [
        (
            r.name,
            verdict(r),
            f"{r.sim_s:.1f} s",
            f"{r.wall_s:.1f} s",
            f"{r.sim_s / r.wall_s:.1f}" if r.wall_s > 0 else "-",
            *(lateness_cells(r) if timed else ()),
            first_failure(r),
        )
        for r in results
        if not quiet or verdict(r) != "PASS"
    ]
    header: tuple[str, ...] = ("scenario", "result", "simulated", "wall", "x real")
    if timed:
        header += ("lateness p50/p99/max", "overruns")
    header += ("first failure",)
    n = len(header) - 1
    if rows:
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(n)]
        align = ("<", "<", *(">",) * (n - 2))
        for row in (header, *rows):
            cells = [f"{row[i]:{align[i]}{widths[i]}}" for i in range(n)]
            print("  ".join([*cells, row[n]]).rstrip(), file=stream)
    counts: dict[str, int] = {}
    for r in results:
        counts[verdict(r)] = counts.get(verdict(r), 0) + 1
    words = {"PASS": "passed", "FAIL": "failed", "ERROR": "errored", "INTERRUPTED": "interrupted"}
    summary = ", ".join(f"{n} {words[v]}" for v, n in counts.items()) or "nothing ran"
    tail = " (interrupted)" if interrupted else ""
    print(f"{summary}{tail}; artifacts in {out_dir}", file=stream, flush=True)
