"""What a scenario run leaves on disk: CAN logs, the decoded signal trace, results JSON and JUnit.

Each run writes into its own folder::

    OUT/<scenario-name>/can.blf       every frame of both buses (also can.asc, can.log, can.mf4)
    OUT/<scenario-name>/trace.csv     time_s + one column per recorded signal (or .parquet, .mf4)
    OUT/<scenario-name>/results.json  everything in the RunResult
    OUT/<scenario-name>/junit.xml     one testsuite, one testcase per expectation

Frames keep their simulated timestamps (seconds from the start of the run), so the same scenario
and seed give the same frames, timestamps included, in BLF, ASC and candump logs. Buses are told
apart by the frame's channel: 0 = pack bus, 1 = vehicle bus (BLF/ASC show them as channels 1 and
2, candump as ``can0`` and ``can1``). MF4 stores times against its wall-clock start, so MF4 frames
get the run's start epoch added.

:class:`ArtifactRecorder` is the :class:`~bms.scenario.result.Recorder` the runner feeds; it
writes incrementally and :meth:`ArtifactRecorder.close` leaves valid files on every exit path.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import can
import numpy as np

from bms.errors import InputError
from bms.scenario.result import ExpectationResult, RunResult

#: Log formats ``bms run --log-format`` accepts, with the file name each one writes.
LOG_FILES = {"blf": "can.blf", "asc": "can.asc", "log": "can.log", "mf4": "can.mf4"}
#: Trace formats ``bms run --trace-format`` accepts, with their file names.
TRACE_FILES = {"csv": "trace.csv", "parquet": "trace.parquet", "mf4": "trace.mf4"}
#: CAN channel number written into the logs for each simulated bus.
BUS_CHANNELS = {"pack": 0, "vehicle": 1}
#: Optional packages a format needs: (module, what to install).
_NEEDS = {
    "mf4": ("asammdf", "pip install 'ssbms[mf4]' (asammdf)"),
    "parquet": ("pyarrow", "pip install pyarrow"),
}
#: Rows buffered before the trace is written out; bounds memory on long runs.
TRACE_CHUNK_ROWS = 4096
#: Significant digits written per trace value in CSV (10 keeps mV at 1e4 V and ms at 1e6 s).
CSV_DIGITS = 10


# ---------------------------------------------------------------------------------- formats
def parse_formats(values: Iterable[str] | None, allowed: Sequence[str], option: str) -> list[str]:
    """Split repeatable/comma-separated format options, check them, keep first-seen order."""
    formats: list[str] = []
    for value in values or ():
        for item in value.split(","):
            name = item.strip().lower().lstrip(".")
            if not name:
                continue
            if name not in allowed:
                raise InputError(
                    f"{option}: unknown format {item.strip()!r}; use {'|'.join(allowed)}"
                )
            if name not in formats:
                formats.append(name)
    return formats


def check_available(log_formats: Sequence[str], trace_format: str) -> None:
    """Raise :class:`InputError` when a requested format needs an optional package not installed."""
    for fmt, option in [
        *((f, "--log-format") for f in log_formats),
        (trace_format, "--trace-format"),
    ]:
        if fmt not in _NEEDS:
            continue
        module, how = _NEEDS[fmt]
        if importlib.util.find_spec(module) is None:
            raise InputError(f"{option} {fmt}: needs the optional package {module}: {how}")


# ---------------------------------------------------------------------------------- CAN logs
def _open_log(path: Path, fmt: str, epoch_s: float) -> tuple[can.io.MessageWriter, Callable]:
    """A python-can writer for ``fmt`` and the per-frame call that feeds it."""
    writer = can.Logger(path)
    if fmt == "blf":
        # BLF stores ns offsets from a start time that python-can otherwise takes from the first
        # frame truncated to ms, and truncates each offset: starting at -0.5 ns makes offsets
        # exact to the nearest ns from t = 0, and the header (pre-1990) reads back as 0.
        writer.start_timestamp = -0.5e-9
    elif fmt == "asc":
        # ASC times are relative to the first event: a marker at t = 0 keeps simulated time.
        writer.log_event("ssbms simulated time: frames stamped in seconds from the run start", 0.0)
    elif fmt == "mf4":
        write = writer.on_message_received

        def shifted(msg: can.Message) -> None:
            # MF4 stores time against its wall-clock creation: give it epoch-based stamps.
            sim_s = msg.timestamp
            msg.timestamp = sim_s + epoch_s
            try:
                write(msg)
            finally:
                msg.timestamp = sim_s

        return writer, shifted
    return writer, writer.on_message_received


# ---------------------------------------------------------------------------------- traces
class _TraceWriter:
    """Buffers trace rows in a preallocated array and hands full chunks to ``_write``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.names: list[str] | None = None
        self._buf: np.ndarray | None = None
        self._rows = 0

    def add(self, time_s: float, names: Sequence[str], values: np.ndarray) -> None:
        if self._buf is None:
            self.names = ["time_s", *names]
            self._buf = np.empty((TRACE_CHUNK_ROWS, len(self.names)))
            self._start()
        row = self._buf[self._rows]
        row[0] = time_s
        row[1:] = values
        self._rows += 1
        if self._rows == TRACE_CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if self._buf is not None and self._rows:
            self._write(self._buf[: self._rows])
            self._rows = 0

    def close(self) -> None:
        self.flush()
        self._finish()

    def _start(self) -> None: ...

    def _write(self, block: np.ndarray) -> None: ...

    def _finish(self) -> None: ...


class _CsvTrace(_TraceWriter):
    """``time_s,<signal>...`` with units in the names; empty cells where nothing was received."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file: IO[str] = path.open("w", encoding="utf-8", newline="")

    def _start(self) -> None:
        assert self.names is not None
        self._file.write(",".join(self.names) + "\n")
        self._fmt = ",".join([f"%.{CSV_DIGITS}g"] * len(self.names)) + "\n"

    def _write(self, block: np.ndarray) -> None:
        text = "".join(self._fmt % tuple(row) for row in block.tolist())
        # A signal not yet seen on the bus is NaN: an empty cell reads as missing everywhere.
        self._file.write(text.replace("nan", ""))

    def _finish(self) -> None:
        self._file.close()


class _ParquetTrace(_TraceWriter):
    """One Parquet row group per chunk (pyarrow), float64 columns named like the CSV header."""

    def _start(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._pa = pa
        self._schema = pa.schema([(name, pa.float64()) for name in self.names or ()])
        self._writer = pq.ParquetWriter(self.path, self._schema)

    def _write(self, block: np.ndarray) -> None:
        arrays = [self._pa.array(block[:, i]) for i in range(block.shape[1])]
        self._writer.write_table(self._pa.Table.from_arrays(arrays, schema=self._schema))

    def _finish(self) -> None:
        if self.names is not None:
            self._writer.close()


class _Mf4Trace(_TraceWriter):
    """Decoded signals as MF4 channels (asammdf), written when the run closes."""

    def _start(self) -> None:
        self._blocks: list[np.ndarray] = []

    def _write(self, block: np.ndarray) -> None:
        self._blocks.append(block.copy())

    def _finish(self) -> None:
        if self.names is None:
            return
        from asammdf import MDF, Signal

        data = np.concatenate(self._blocks) if self._blocks else np.empty((0, len(self.names)))
        signals = [
            Signal(data[:, i], data[:, 0], name=name, unit=_unit(name))
            for i, name in enumerate(self.names)
            if i
        ]
        mdf = MDF(version="4.10")
        if signals:
            mdf.append(signals, comment="ssbms decoded signal trace (simulated time)")
        mdf.save(self.path, overwrite=True)
        mdf.close()


_TRACE_WRITERS = {"csv": _CsvTrace, "parquet": _ParquetTrace, "mf4": _Mf4Trace}
_UNIT = re.compile(r"_(v|a|c|mpa|pct|ppm|s|w|kw|ah|wh|kwh|ohm|lpm)$", re.IGNORECASE)


def _unit(name: str) -> str:
    """Unit from a name's suffix (``..._V`` -> ``V``), empty when there is none."""
    match = _UNIT.search(name)
    if not match:
        return ""
    unit = match.group(1).lower()
    return {
        "v": "V",
        "a": "A",
        "c": "degC",
        "mpa": "MPa",
        "pct": "%",
        "w": "W",
        "kw": "kW",
        "ah": "Ah",
        "wh": "Wh",
        "kwh": "kWh",
        "ohm": "Ohm",
        "lpm": "l/min",
    }.get(unit, unit)


# ---------------------------------------------------------------------------------- recorder
class ArtifactRecorder:
    """Writes one run's CAN logs and decoded trace as frames and samples arrive.

    ``close`` flushes and closes everything (idempotent, safe from error paths); ``finish``
    closes and writes ``results.json`` and ``junit.xml`` for the run's result.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        log_formats: Sequence[str] = ("blf",),
        trace_format: str = "csv",
        epoch_s: float | None = None,
    ) -> None:
        check_available(log_formats, trace_format)
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        #: Start of the run on the wall clock; only MF4 logs use it (they need epoch stamps).
        self.epoch_s = time.time() if epoch_s is None else epoch_s
        self.paths: dict[str, Path] = {}
        self.frames = 0
        #: Simulated time of the last trace row (where an interrupted run got to).
        self.last_time_s = 0.0
        self._channels = dict(BUS_CHANNELS)
        self._writers: list[can.io.MessageWriter] = []
        self._feeds: list[Callable[[can.Message], None]] = []
        self._closed = False
        try:
            for fmt in log_formats:
                path = self.out_dir / LOG_FILES[fmt]
                writer, feed = _open_log(path, fmt, self.epoch_s)
                self._writers.append(writer)
                self._feeds.append(feed)
                self.paths[f"log_{fmt}"] = path
            self.paths["trace"] = self.out_dir / TRACE_FILES[trace_format]
            self._trace: _TraceWriter | None = _TRACE_WRITERS[trace_format](self.paths["trace"])
        except BaseException:
            self._trace = None
            self.close()
            raise

    def on_frame(self, msg: can.Message, bus: str) -> None:
        """Log one frame on every requested format, its channel telling the buses apart."""
        channel = self._channels.get(bus)
        if channel is None:
            channel = self._channels[bus] = len(self._channels)
        # The message may be the sender's own object: lend it the channel, then restore it.
        saved = msg.channel
        msg.channel = channel
        try:
            for feed in self._feeds:
                feed(msg)
        finally:
            msg.channel = saved
        self.frames += 1

    def on_sample(self, time_s: float, names: Sequence[str], values: np.ndarray) -> None:
        """Append one row of the decoded signal trace."""
        self.last_time_s = time_s
        if self._trace is not None:
            self._trace.add(time_s, names, values)

    def close(self) -> None:
        """Flush and close every file; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for writer in self._writers:
            try:
                writer.stop()
            except Exception as exc:  # keep closing the others: each file counts
                errors.append(exc)
        if self._trace is not None:
            try:
                self._trace.close()
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def finish(self, result: RunResult) -> RunResult:
        """Close the logs, then write ``results.json`` and ``junit.xml``; returns ``result``."""
        try:
            self.close()
        finally:
            result.out_dir = self.out_dir
            result.artifacts.update(self.paths)
            result.artifacts["results"] = self.out_dir / "results.json"
            result.artifacts["junit"] = self.out_dir / "junit.xml"
            write_results_json(result, result.artifacts["results"])
            write_junit([result], result.artifacts["junit"], suite_name=result.name)
        return result

    def __enter__(self) -> ArtifactRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------- results
def result_to_dict(result: RunResult) -> dict[str, Any]:
    """Everything in a :class:`RunResult` as JSON-ready data (paths as strings, NaN as null)."""
    data = dataclasses.asdict(result)
    data["failures"] = len(result.failures)
    return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results_json(result: RunResult, path: str | Path) -> None:
    """Write ``result`` as indented JSON (UTF-8)."""
    text = json.dumps(result_to_dict(result), indent=2, ensure_ascii=False, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def write_junit(
    results: Sequence[RunResult], path: str | Path, suite_name: str = "bms run"
) -> None:
    """JUnit XML: one testsuite per scenario, one testcase per expectation (plus one for errors)."""
    root = ET.Element("testsuites", name=suite_name)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for result in results:
        suite = ET.SubElement(root, "testsuite", name=result.name, time=f"{result.wall_s:.3f}")
        ET.SubElement(
            ET.SubElement(suite, "properties"), "property", name="source", value=str(result.source)
        )
        counts = {"tests": 0, "failures": 0, "errors": 0}
        for exp in result.expectations:
            case = ET.SubElement(suite, "testcase", classname=result.name, name=exp.name, time="0")
            counts["tests"] += 1
            if not exp.passed:
                counts["failures"] += 1
                failure = ET.SubElement(case, "failure", message=_first_line(exp.detail))
                failure.text = describe_expectation(exp)
        if result.error or not result.expectations:
            case = ET.SubElement(suite, "testcase", classname=result.name, name="run", time="0")
            counts["tests"] += 1
            if result.error:
                counts["errors"] += 1
                ET.SubElement(case, "error", message=_first_line(result.error)).text = result.error
        suite.set("sim_time_s", f"{result.sim_s:.3f}")
        for key, count in counts.items():
            suite.set(key, str(count))
            totals[key] += count
    for key, count in totals.items():
        root.set(key, str(count))
    ET.indent(root)
    Path(path).write_bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")


# ---------------------------------------------------------------------------------- text
def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def describe_expectation(exp: ExpectationResult) -> str:
    """``name [at 12.340 s]: detail`` - one failed (or met) expectation in readable form."""
    when = f" at {exp.time_s:.3f} s" if exp.time_s is not None else ""
    return f"{exp.name}{when}: {exp.detail}"


def describe(result: RunResult) -> str:
    """Readable failure text of a run: its error, then each failed expectation on its own line."""
    lines = [
        f"scenario {result.name} ({result.source}) failed after {result.sim_s:.3f} s simulated"
    ]
    if result.error:
        lines.append(f"  run error: {result.error}")
    lines.extend(f"  - {describe_expectation(exp)}" for exp in result.failures)
    if result.out_dir is not None:
        lines.append(f"  artifacts: {result.out_dir}")
    return "\n".join(lines)


def first_failure(result: RunResult) -> str:
    """One line for a verdict table: the run error or the first failed expectation."""
    if result.error:
        return _first_line(result.error)
    failures = result.failures
    return _first_line(describe_expectation(failures[0])) if failures else ""


# ---------------------------------------------------------------------------------- discovery
_SCENARIO_KEY = re.compile(r"^(stimulus|expect)\s*:", re.MULTILINE)
SCENARIO_SUFFIXES = (".yaml", ".yml")


def looks_like_scenario(path: str | Path) -> bool:
    """True for a YAML file with a top-level ``stimulus:`` or ``expect:`` key.

    A text check, not a parse: a scenario with a YAML error is still found, so it is reported
    instead of silently skipped, while packs, vehicles and other YAML are left alone.
    """
    try:
        with Path(path).open(encoding="utf-8", errors="replace") as file:
            text = file.read(1 << 20)
    except OSError:
        return False
    return _SCENARIO_KEY.search(text) is not None


def discover_scenarios(paths: Iterable[str | Path]) -> list[Path]:
    """Scenario files from files and folders: folders searched recursively, each sorted.

    An explicitly named file is always taken (so its errors are reported); in folders only
    ``*.yaml``/``*.yml`` files that look like scenarios. Raises :class:`InputError` for a path
    that does not exist or a named file that is not YAML.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix.lower() in SCENARIO_SUFFIXES)
            found.extend(p for p in files if p.is_file() and looks_like_scenario(p))
        elif path.is_file():
            if path.suffix.lower() not in SCENARIO_SUFFIXES:
                raise InputError(f"{path}: not a scenario file (expected .yaml or .yml)")
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    # The same file named twice (or inside a named folder) runs once.
    seen: set[Path] = set()
    return [p for p in found if not (p.resolve() in seen or seen.add(p.resolve()))]


def unique_folder(root: Path, name: str, taken: set[str]) -> Path:
    """``root/<name>``, with ``-2``, ``-3``... when two scenarios share a name in one run."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "scenario"
    candidate, n = safe, 1
    while candidate in taken:
        n += 1
        candidate = f"{safe}-{n}"
    taken.add(candidate)
    return root / candidate


# ---------------------------------------------------------------------------------- one run
def _seed_of(scenario: Any) -> int:
    seed = getattr(scenario, "seed", None)
    if seed is None:
        seed = getattr(getattr(scenario, "pack", None), "seed", 0)
    return int(seed)


def with_seed(scenario: Any, seed: int) -> Any:
    """A copy of ``scenario`` whose seed (cell spread, calibration, noise) is ``seed``."""
    if hasattr(scenario, "seed"):
        return dataclasses.replace(scenario, seed=seed)
    return dataclasses.replace(scenario, pack=dataclasses.replace(scenario.pack, seed=seed))


Runner = Callable[..., RunResult]


def run_to_folder(
    scenario: Any,
    out_dir: str | Path,
    *,
    log_formats: Sequence[str] = ("blf",),
    trace_format: str = "csv",
    stop_check: Callable[[], bool] | None = None,
    runner: Runner | None = None,
) -> RunResult:
    """Run ``scenario`` into ``out_dir``: logs, trace, ``results.json`` and ``junit.xml``.

    ``runner`` defaults to :func:`bms.scenario.runner.run_scenario`. On Ctrl-C/SIGTERM
    (KeyboardInterrupt) the files are closed and a partial ``results.json`` saying where the run
    was interrupted is written before the interrupt propagates.
    """
    if runner is None:
        from bms.scenario.runner import run_scenario as runner
    recorder = ArtifactRecorder(out_dir, log_formats=log_formats, trace_format=trace_format)
    wall_start = time.perf_counter()
    try:
        result = runner(scenario, recorder, stop_check=stop_check)
    except KeyboardInterrupt:
        at_s = recorder.last_time_s
        partial = RunResult(
            name=str(getattr(scenario, "name", Path(out_dir).name)),
            source=str(getattr(scenario, "source", "")),
            seed=_seed_of(scenario),
            error=f"interrupted at {at_s:.3f} s simulated",
            sim_s=at_s,
            wall_s=time.perf_counter() - wall_start,
            frames=recorder.frames,
        )
        recorder.finish(partial)
        raise
    except BaseException:
        recorder.close()
        raise
    if stop_check is not None and stop_check():
        # Ended early on request (Ctrl-C/SIGTERM polled by the runner): not a verdict.
        result.error = f"interrupted at {result.sim_s:.3f} s simulated"
        result.passed = False
    return recorder.finish(result)
