"""``bms run``: run scenario files on the simulated clock and print a verdict table.

Each scenario runs into its own folder ``OUT/<scenario-name>/`` with the CAN log (``can.blf``;
``--log-format asc,log,mf4`` for more), the decoded signal trace (``trace.csv``), ``results.json``
and ``junit.xml``; ``OUT/junit.xml`` holds every scenario of the invocation. ``OUT`` defaults to
``runs/<YYYYmmdd-HHMMSS>``. Frames keep simulated timestamps (seconds from the run start); in
the logs channel 0 is the pack bus and 1 the vehicle bus (candump: can0/can1, BLF/ASC: 1/2).
Every file is loaded and checked before anything runs.
Exit status: 0 all passed, 1 an expectation failed or a run errored, 2 invalid input,
130 interrupted (Ctrl-C or SIGTERM; the logs are complete up to the interrupt).
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
    parser.set_defaults(func=_do_run)


def _do_run(args: argparse.Namespace) -> int:
    log_formats = parse_formats(args.log_format or ["blf"], list(LOG_FILES), "--log-format")
    trace_formats = parse_formats([args.trace_format], list(TRACE_FILES), "--trace-format")
    if len(trace_formats) != 1:
        raise InputError(f"--trace-format: expected one of {'|'.join(TRACE_FILES)}")
    trace_format = trace_formats[0]
    return run_paths(
        args.paths,
        args.out,
        log_formats=log_formats,
        trace_format=trace_format,
        seed=args.seed,
        quiet=args.quiet,
        report=not args.no_report,
    )


# -------------------------------------------------------------------- scenario I/O (late bound)
def load_scenario(path: Path) -> Any:
    """Load and validate one scenario file (raises InputError with a located line)."""
    from bms.scenario.schema import load_scenario as load

    return load(path)


def run_scenario(scenario: Any, recorder: Any, *, stop_check: Callable[[], bool]) -> RunResult:
    """Run one loaded scenario, feeding ``recorder``."""
    from bms.scenario.runner import run_scenario as run

    return run(scenario, recorder, stop_check=stop_check)


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
) -> int:
    """Discover, load all, run each into ``out/<name>/``, print the verdict; the exit status.

    Reports (``report.html`` per run, ``index.html`` for the set) are built after each run from
    its recorded files, so plotting never slows the simulation; a failed report never changes a
    verdict.
    """
    from bms.report import ENABLE_HINT, Progress, build_index, build_report, report_available

    stream = stream or sys.stdout
    check_available(log_formats, trace_format)
    files = discover_scenarios(paths)
    if not files:
        raise InputError(f"{', '.join(map(str, paths))}: no scenario files found")
    scenarios, problems = _load_all(files)
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
                    return run_scenario(sc, bar.wrap(rec), stop_check=stop_check)

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


def _print_verdict(
    results: Sequence[RunResult], out_dir: Path, stream: TextIO, *, quiet: bool, interrupted: bool
) -> None:
    rows = [
        (
            r.name,
            verdict(r),
            f"{r.sim_s:.1f} s",
            f"{r.wall_s:.1f} s",
            f"{r.sim_s / r.wall_s:.1f}" if r.wall_s > 0 else "-",
            first_failure(r),
        )
        for r in results
        if not quiet or verdict(r) != "PASS"
    ]
    header = ("scenario", "result", "simulated", "wall", "x real", "first failure")
    if rows:
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(5)]
        align = ("<", "<", ">", ">", ">")
        for row in (header, *rows):
            cells = [f"{row[i]:{align[i]}{widths[i]}}" for i in range(5)]
            print("  ".join([*cells, row[5]]).rstrip(), file=stream)
    counts: dict[str, int] = {}
    for r in results:
        counts[verdict(r)] = counts.get(verdict(r), 0) + 1
    words = {"PASS": "passed", "FAIL": "failed", "ERROR": "errored", "INTERRUPTED": "interrupted"}
    summary = ", ".join(f"{n} {words[v]}" for v, n in counts.items()) or "nothing ran"
    tail = " (interrupted)" if interrupted else ""
    print(f"{summary}{tail}; artifacts in {out_dir}", file=stream, flush=True)
