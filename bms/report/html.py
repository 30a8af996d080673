"""One self-contained ``report.html`` per run: verdict, tables and the figures embedded as base64.

The page has inline CSS only, no script and no external URL, so it opens from a file, from an
e-mail attachment or a CI artifact store with no server and no network. The PNG files are written
next to it as well, for slides and tickets.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from bms.report.data import RunData, load_run
from bms.scenario.result import RunResult

REPORT_NAME = "report.html"

#: Inline style shared by the run report and the index page.
CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #222; background: #fafafa; line-height: 1.4; }
main { max-width: 1140px; margin: 0 auto; padding: 16px 20px 40px; }
h1 { font-size: 1.5em; margin: 0.2em 0; }
h2 { font-size: 1.15em; margin: 1.6em 0 0.4em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.92em; }
.verdict { display: inline-block; padding: 2px 12px; border-radius: 4px; font-weight: bold;
           color: #fff; letter-spacing: 0.05em; }
.verdict.pass { background: #2e7d32; } .verdict.fail { background: #c62828; }
.verdict.error { background: #6a1b9a; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; background: #fff; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.fail td { background: #fdecea; } tr.fail td.v { color: #c62828; font-weight: bold; }
tr.pass td.v { color: #2e7d32; font-weight: bold; } tr.error td.v { color: #6a1b9a; }
tr.error td { background: #f6eefa; }
figure { margin: 18px 0; background: #fff; border: 1px solid #ddd; padding: 8px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.88em; margin-top: 4px; }
.note { color: #8a6d3b; background: #fcf8e3; border: 1px solid #faebcc; padding: 6px 10px; }
.err { color: #6a1b9a; font-weight: bold; }
nav a { margin-right: 12px; }
"""


def page(title: str, body: str) -> str:
    """A complete HTML5 document with the shared inline style."""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body><main>\n{body}\n</main></body>\n</html>\n"
    )


def verdict(result: RunResult) -> tuple[str, str]:
    """``(css class, text)``: ERROR when the run could not finish, else PASS/FAIL."""
    if result.error:
        return "error", "ERROR"
    return ("pass", "PASS") if result.passed else ("fail", "FAIL")


def fmt_duration(seconds: float) -> str:
    """``42.0 s``, ``12 min 30 s`` or ``2 h 05 min``: readable at a glance."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        minutes, sec = divmod(round(seconds), 60)
        return f"{minutes} min {sec:02d} s"
    hours, rest = divmod(round(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min"


def fmt_time(time_s: float | None) -> str:
    """A time stamp on the run's clock, or a dash when unknown."""
    return "-" if time_s is None else f"{time_s:.2f} s"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img src='data:image/png;base64,{data}' alt='{escape(path.stem)}'>"


def _summary(run: RunData) -> str:
    r = run.result
    css, text = verdict(r)
    rtf = f"{r.sim_s / r.wall_s:.0f}x real time" if r.wall_s > 0 else "-"
    failed = len(r.failures)
    rows = [
        ("Verdict", f"<span class='verdict {css}'>{text}</span>"),
        ("Scenario file", escape(r.source or "-")),
        ("Seed", str(r.seed)),
        ("Simulated", f"{fmt_duration(r.sim_s)} ({rtf}, {fmt_duration(r.wall_s)} wall)"),
        ("Expectations", f"{len(r.expectations) - failed} of {len(r.expectations)} met"),
        ("CAN frames", f"{r.frames:,}"),
    ]
    for bus, load in sorted(r.busload.items()):
        pct = load.get("load_pct")
        rows.append((f"Bus load {bus}", "-" if pct is None else f"{pct:.1f} %"))
    if r.error:
        rows.append(("Run error", f"<span class='err'>{escape(r.error)}</span>"))
    cells = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<table style='width:auto'>{cells}</table>"


def _expectations(run: RunData) -> str:
    exps = run.result.expectations
    if not exps:
        return "<p class='meta'>This scenario has no expectations.</p>"
    rows = []
    # Failed first: that is what the reader opened the page for.
    for exp in sorted(exps, key=lambda e: e.passed):
        css = "pass" if exp.passed else "fail"
        rows.append(
            f"<tr class='{css}'><td class='v'>{'PASS' if exp.passed else 'FAIL'}</td>"
            f"<td>{escape(exp.name)}</td><td class='num'>{fmt_time(exp.time_s)}</td>"
            f"<td>{escape(exp.detail)}</td></tr>"
        )
    head = "<tr><th>Verdict</th><th>Expectation</th><th>Time</th><th>Detail</th></tr>"
    return f"<table id='expectations'>{head}{''.join(rows)}</table>"


def _faults(run: RunData) -> str:
    parts = []
    if run.result.fault_events:
        rows = "".join(
            f"<tr><td class='num'>{fmt_time(t)}</td><td>{escape(d)}</td></tr>"
            for t, d in run.result.fault_events
        )
        parts.append(
            "<h3>Injected</h3><table><tr><th>Time</th><th>Event</th></tr>" + rows + "</table>"
        )
    if run.bms_faults:
        rows = "".join(
            f"<tr><td class='num'>{fmt_time(f.start_s)}</td><td class='num'>{fmt_time(f.end_s)}"
            f"</td><td>{escape(f.code)}</td><td>{escape(f.tier)}</td>"
            f"<td class='num'>{f.location or 'pack'}</td></tr>"
            for f in run.bms_faults
        )
        parts.append(
            "<h3>Reported by the BMS (BmsFaults)</h3><table><tr><th>First seen</th>"
            "<th>Last seen</th><th>Code</th><th>Tier</th><th>Location</th></tr>" + rows + "</table>"
        )
    return "".join(parts) or "<p class='meta'>No fault injected and none reported.</p>"


def _files(run: RunData) -> str:
    names = [
        p.name
        for p in sorted(run.run_dir.iterdir())
        if p.is_file() and p.suffix not in (".png", ".html")
    ]
    links = " ".join(f"<a href='{escape(n)}'>{escape(n)}</a>" for n in names)
    return f"<p class='meta'>Files of this run: {links}</p>"


def render_report(run: RunData, figures: list[tuple[object, Path]]) -> str:
    """The report page of ``run`` with the given ``(FigureSpec, png path)`` embedded."""
    r = run.result
    css, text = verdict(r)
    body = [
        "<nav class='meta'><a href='../index.html'>all scenarios</a></nav>"
        if (run.run_dir.parent / "index.html").exists()
        else "",
        f"<h1>{escape(r.name)} <span class='verdict {css}'>{text}</span></h1>",
        _summary(run),
    ]
    body += [f"<p class='note'>{escape(n)}</p>" for n in run.notes]
    body += ["<h2>Expectations</h2>", _expectations(run), "<h2>Faults</h2>", _faults(run)]
    body.append("<h2>Figures</h2>")
    for spec, path in figures:
        body.append(
            f"<figure id='{escape(path.stem)}'>{_img(path)}"
            f"<figcaption><b>{escape(spec.title)}.</b> {escape(spec.caption)}</figcaption></figure>"
        )
    body.append(_files(run))
    return page(f"{r.name}: {text}", "\n".join(body))


def build_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and the PNG figures into ``run_dir`` from what the run recorded.

    Needs matplotlib (``pip install 'ssbms[report]'``); raises :class:`bms.errors.InputError`
    when the folder is not a run folder. Returns the path of ``report.html``.
    """
    from bms.report.figures import render_figures  # matplotlib only when a report is built

    run = load_run(run_dir)
    figures = render_figures(run, run.run_dir)
    path = run.run_dir / REPORT_NAME
    path.write_text(render_report(run, figures), encoding="utf-8")
    return path
