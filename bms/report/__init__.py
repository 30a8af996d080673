"""Run reports: ``report.html`` with figures per scenario, an ``index.html`` and a progress bar.

Reports are built after a run from what it recorded (CAN log, trace, results.json), so plotting
never slows the simulation. Figures need matplotlib, an optional extra: check
:func:`report_available` and print :data:`ENABLE_HINT` when it is missing. The index page and the
progress bar need nothing beyond the core dependencies. Importing this package does not import
matplotlib.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from bms.report.index import build_index
from bms.report.progress import Progress, ProgressRecorder

#: One line telling a user how to get reports when matplotlib is missing.
ENABLE_HINT = "reports skipped: plotting needs matplotlib; enable with pip install 'ssbms[report]'"


def report_available() -> bool:
    """True when matplotlib is importable, i.e. :func:`build_report` can draw figures."""
    return importlib.util.find_spec("matplotlib") is not None


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and the PNG figures into ``run_dir``; returns the report path."""
    from bms.report.html import build_report as _build

    return _build(run_dir)


__all__ = [
    "ENABLE_HINT",
    "Progress",
    "ProgressRecorder",
    "build_index",
    "build_report",
    "report_available",
]
