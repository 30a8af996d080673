"""pytest plugin: ``pytest scenarios/`` runs every scenario file as one test item.

Registered through the ``pytest11`` entry point ``bms_scenarios`` (disable with
``-p no:bms_scenarios``). A ``*.yaml``/``*.yml`` file is collected when it has a top-level
``stimulus:`` or ``expect:`` key, so packs, vehicles and other YAML are left alone. A failing
item reports each failed expectation with its time and detail, an invalid file its located
line - no traceback. Artifacts (CAN log, trace, results.json, junit.xml) go under pytest's
temporary folder, or ``--bms-out DIR``; the folder is printed with each failure.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bms.errors import InputError
from bms.scenario.artifacts import (
    LOG_FILES,
    SCENARIO_SUFFIXES,
    describe,
    looks_like_scenario,
    parse_formats,
    run_to_folder,
    unique_folder,
    with_seed,
)
from bms.scenario.result import RunResult

_TAKEN = pytest.StashKey[set[str]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bms", "ssbms scenario files")
    group.addoption(
        "--bms-out",
        metavar="DIR",
        help="write each scenario's artifacts to DIR/<scenario-name>/ (default: pytest tmp)",
    )
    group.addoption(
        "--bms-log-format",
        action="append",
        metavar="FMT",
        help=f"CAN log format(s) of scenario runs: {'|'.join(LOG_FILES)} (default blf)",
    )
    group.addoption("--bms-seed", type=int, metavar="N", help="override every scenario's seed")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """A scenario YAML file becomes a :class:`ScenarioFile`; any other file is not ours."""
    if file_path.suffix.lower() in SCENARIO_SUFFIXES and looks_like_scenario(file_path):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


# Late-bound so importing the plugin stays cheap and tests can swap them.
def load_scenario(path: Path) -> Any:
    """Load and validate one scenario (InputError with a located line on bad input)."""
    from bms.scenario.schema import load_scenario as load

    return load(path)


def run_scenario(scenario: Any, recorder: Any, *, stop_check: Any = None) -> RunResult:
    """Run one loaded scenario, feeding ``recorder``."""
    from bms.scenario.runner import run_scenario as run

    return run(scenario, recorder, stop_check=stop_check)


class ScenarioFile(pytest.File):
    """One scenario file: one item named after the file."""

    def collect(self) -> Iterator[ScenarioItem]:
        yield ScenarioItem.from_parent(self, name=self.path.stem)


class ScenarioFailed(Exception):
    """A run whose expectations failed or that could not finish."""

    def __init__(self, result: RunResult) -> None:
        super().__init__(result.name)
        self.result = result


class ScenarioItem(pytest.Item):
    """Loads, runs and judges one scenario; artifacts in its own folder."""

    def runtest(self) -> None:
        scenario = load_scenario(self.path)
        seed = self.config.getoption("bms_seed")
        if seed is not None:
            scenario = with_seed(scenario, seed)
        log_formats = parse_formats(
            self.config.getoption("bms_log_format") or ["blf"], list(LOG_FILES), "--bms-log-format"
        )
        name = str(getattr(scenario, "name", self.path.stem))
        result = run_to_folder(
            scenario, self._out_dir(name), log_formats=log_formats, runner=run_scenario
        )
        self.user_properties.append(("artifacts", str(result.out_dir)))
        self.user_properties.append(("simulated_s", result.sim_s))
        if result.error or not result.passed:
            raise ScenarioFailed(result)

    def _out_dir(self, name: str) -> Path:
        out = self.config.getoption("bms_out")
        if out:
            taken = self.config.stash.setdefault(_TAKEN, set())
            return unique_folder(Path(out), name, taken)
        # pytest's own temporary-folder factory (what tmp_path uses), kept per its retention.
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is None:
            return Path(tempfile.mkdtemp(prefix=f"bms-{name}-"))
        return factory.mktemp(f"bms-{name}", numbered=True)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        """Failed expectations or the located input error as plain lines, no traceback."""
        if isinstance(excinfo.value, ScenarioFailed):
            return describe(excinfo.value.result)
        if isinstance(excinfo.value, InputError):
            return f"invalid scenario: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"scenario {self.path.name}"
