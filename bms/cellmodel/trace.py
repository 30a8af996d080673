"""Single-cell trace CSV: header ``time_s,current_a,voltage_v,temperature_c``, extras ignored.

Used by ``bms cell fit`` (characterisation tests) and ``bms estimate`` (logged drives). Positive
current discharges; time must strictly increase, sampling may be irregular. Every defect in a file
becomes one :class:`~bms.errors.InputError` line ``file:line: column: problem``.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bms.config import read_text
from bms.errors import InputError, located

TRACE_COLUMNS = ("time_s", "current_a", "voltage_v", "temperature_c")


@dataclass(frozen=True)
class Trace:
    """One cell's recorded samples as float arrays of equal length (positive current discharges)."""

    time_s: np.ndarray
    current_a: np.ndarray
    voltage_v: np.ndarray
    temperature_c: np.ndarray
    source: str = "<trace>"
    line: np.ndarray | None = None  # file line of each sample, for located error messages

    def where(self, index: int) -> str:
        """``source:line`` of sample ``index`` (line unknown for traces built in memory)."""
        if self.line is None:
            return self.source
        return f"{self.source}:{int(self.line[index])}"

    def __len__(self) -> int:
        return int(self.time_s.size)


def _read_text(path: Path) -> str:
    """File content as text; missing, unreadable, binary and empty files are input errors."""
    text = read_text(path)
    if not text.strip():
        raise located(
            str(path), 1, "", f"empty file, expected the header {','.join(TRACE_COLUMNS)}"
        )
    return text


def parse_trace(text: str, source: str = "<trace>") -> Trace:
    """Parse and validate trace CSV text; ``source`` names the file in error messages."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    header_line = 1
    for row in reader:
        if any(cell.strip() for cell in row):
            header = [cell.strip() for cell in row]
            header_line = reader.line_num
            break
    if header is None:
        raise located(source, 1, "", "empty file")
    index = {}
    for name in TRACE_COLUMNS:
        if name not in header:
            raise located(source, header_line, name, f"missing column (header: {','.join(header)})")
        index[name] = header.index(name)
    width = len(header)
    columns: dict[str, list[float]] = {name: [] for name in TRACE_COLUMNS}
    lines: list[int] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank lines carry no sample
        line = reader.line_num
        if len(row) < width:
            raise located(source, line, "", f"expected {width} fields, got {len(row)}")
        for name, col in index.items():
            cell = row[col].strip()
            try:
                value = float(cell)
            except ValueError:
                raise located(source, line, name, f"not a number: {cell!r}") from None
            if not math.isfinite(value):
                raise located(source, line, name, f"not a finite number: {cell!r}")
            columns[name].append(value)
        lines.append(line)
    if not lines:
        raise located(source, header_line, "", "no data rows after the header")
    time_s = np.array(columns["time_s"])
    steps = np.diff(time_s)
    if np.any(steps <= 0.0):
        k = int(np.argmax(steps <= 0.0)) + 1
        raise located(
            source,
            lines[k],
            "time_s",
            f"not increasing ({time_s[k]:g} after {time_s[k - 1]:g})",
        )
    return Trace(
        time_s=time_s,
        current_a=np.array(columns["current_a"]),
        voltage_v=np.array(columns["voltage_v"]),
        temperature_c=np.array(columns["temperature_c"]),
        source=source,
        line=np.array(lines),
    )


def read_trace(path: str | Path) -> Trace:
    """Read and validate a trace CSV file (see the module docstring for the format)."""
    path = Path(path)
    return parse_trace(_read_text(path), str(path))


def write_trace(path: str | Path, trace: Trace) -> None:
    """Write a trace in the format :func:`read_trace` reads (full float precision)."""
    data = np.column_stack([trace.time_s, trace.current_a, trace.voltage_v, trace.temperature_c])
    _write_csv(path, TRACE_COLUMNS, data)


def write_estimate(
    path: str | Path, time_s: np.ndarray, soc: np.ndarray, soc_sigma: np.ndarray
) -> None:
    """Write an SOC estimate as ``time_s,soc,soc_sigma`` (fractions 0..1)."""
    _write_csv(path, ("time_s", "soc", "soc_sigma"), np.column_stack([time_s, soc, soc_sigma]))


def check_writable(path: str | Path) -> None:
    """Fail early, before a long run, when ``path`` cannot be created (missing directory)."""
    parent = Path(path).resolve().parent
    if not parent.is_dir():
        raise InputError(f"{path}: cannot write: no such directory {parent}")


def _write_csv(path: str | Path, header: tuple[str, ...], data: np.ndarray) -> None:
    try:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(",".join(header) + "\n")
            np.savetxt(fh, data, delimiter=",", fmt="%.10g")
    except OSError as exc:
        raise InputError(f"{path}: cannot write: {exc.strerror or exc}") from None
