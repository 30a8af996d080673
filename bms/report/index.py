"""``index.html`` of a multi-scenario run: one row per scenario with verdict, durations and links.

Needs no plotting library: it is plain HTML built from the run results (passed in, or read back
from each ``<out_dir>/<scenario>/results.json``).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from bms.report.data import load_results
from bms.report.html import REPORT_NAME, fmt_duration, page, verdict
from bms.scenario.result import RunResult

INDEX_NAME = "index.html"


def _first_failure(result: RunResult) -> str:
    """The run error or the first failed expectation, on one line."""
    if result.error:
        return result.error.strip().splitlines()[0] if result.error.strip() else "error"
    for exp in result.failures:
        when = f" at {exp.time_s:.2f} s" if exp.time_s is not None else ""
        return f"{exp.name}{when}: {' '.join(exp.detail.split())}"
    return ""


def collect_results(out_dir: Path) -> list[RunResult]:
    """Results of every run folder directly below ``out_dir`` (sorted by folder name)."""
    results = []
    for path in sorted(out_dir.glob("*/results.json")):
        result, _ = load_results(path)
        result.out_dir = path.parent
        results.append(result)
    return results


def _link(out_dir: Path, result: RunResult) -> str:
    """Relative link to the run's report (or its results.json when no report was built)."""
    run_dir = result.out_dir
    if run_dir is None:
        return "-"
    run_dir = Path(run_dir)  # relative paths are relative to where `bms run` ran, like the CLI's
    for name, text in ((REPORT_NAME, "report"), ("results.json", "results.json")):
        target = run_dir / name
        if target.is_file():
            try:
                href = target.resolve().relative_to(out_dir.resolve()).as_posix()
            except ValueError:
                href = target.resolve().as_uri()
            return f"<a href='{escape(href)}'>{text}</a>"
    return "-"


def render_index(out_dir: Path, results: list[RunResult]) -> str:
    """The index page: totals, then one row per scenario (failed and errored first)."""
    n_pass = sum(1 for r in results if r.passed and not r.error)
    n_err = sum(1 for r in results if r.error)
    n_fail = len(results) - n_pass - n_err
    sim_total = sum(r.sim_s for r in results)
    wall_total = sum(r.wall_s for r in results)
    overall = "pass" if results and n_pass == len(results) else "fail"
    summary = (
        f"<h1>Scenario run <span class='verdict {overall}'>"
        f"{'PASS' if overall == 'pass' else 'FAIL'}</span></h1>"
        f"<p class='meta' id='totals'>{len(results)} scenarios: {n_pass} passed, {n_fail} failed, "
        f"{n_err} errors; {fmt_duration(sim_total)} simulated in {fmt_duration(wall_total)}.</p>"
    )
    head = (
        "<tr><th>Verdict</th><th>Scenario</th><th>Expectations met</th><th>Simulated</th>"
        "<th>Wall</th><th>First failure</th><th>Report</th></tr>"
    )
    rows = []
    order = sorted(
        range(len(results)), key=lambda i: (verdict(results[i])[1] == "PASS", results[i].name)
    )
    for i in order:
        r = results[i]
        css, text = verdict(r)
        met = len(r.expectations) - len(r.failures)
        rows.append(
            f"<tr class='{css}'><td class='v'>{text}</td><td title='{escape(r.source)}'>"
            f"{escape(r.name)}</td><td class='num'>{met} / {len(r.expectations)}</td>"
            f"<td class='num'>{fmt_duration(r.sim_s)}</td>"
            f"<td class='num'>{fmt_duration(r.wall_s)}</td>"
            f"<td>{escape(_first_failure(r))}</td><td>{_link(out_dir, r)}</td></tr>"
        )
    table = f"<table id='results'>{head}{''.join(rows)}</table>"
    if not results:
        table = "<p class='note'>No scenario results found in this folder.</p>"
    return page(f"Scenario run: {n_pass}/{len(results)} passed", summary + table)


def build_index(out_dir: str | Path, results: list[RunResult] | None = None) -> Path:
    """Write ``out_dir/index.html`` for ``results`` (default: every ``*/results.json`` found)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if results is None:
        results = collect_results(out_dir)
    path = out_dir / INDEX_NAME
    path.write_text(render_index(out_dir, list(results)), encoding="utf-8")
    return path
