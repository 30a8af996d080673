"""The scenario file: validated loading of everything a run needs, before anything runs.

:func:`load_scenario` reads one YAML file safely and checks every field, every referenced file
(pack, BMS configuration, vehicle, drive cycles, CSV profiles), every fault's parameters against
the pack, and every signal and enum name against the DBCs. A problem is one
:class:`~bms.errors.InputError` reading ``FILE:LINE: dotted.path: problem``. The format is
documented for users in ``docs/scenarios.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from bms.bench.realtime import JitterBudget
from bms.config import Section, load_yaml
from bms.errors import InputError
from bms.firmware.config import load_bms_config
from bms.pack import InitialState, Pack, load_pack
from bms.pack.params import PackParams
from bms.scenario.conditions import Condition, SignalCatalog
from bms.scenario.expect import Expectation, parse_expectations
from bms.scenario.timeline import (
    FaultSpec,
    LoadContext,
    Schedule,
    Segment,
    _located,
    parse_environment,
    parse_faults,
    parse_stimulus,
)
from bms.scenario.units import check_duration, duration, fraction
from bms.vehicle import VehicleParams, load_vehicle

SUFFIXES = (".yaml", ".yml")
#: Base tick limits (s): the nodes' fastest messages are 10 ms, the physics is stable to 100 ms.
DT_MIN_S, DT_MAX_S = 0.001, 0.1
DEFAULT_CHARGER_CURRENT_A = 200.0
TOP_LEVEL = (
    "name", "description", "pack", "vehicle", "charger", "duration", "dt", "stop_when",
    "environment", "stimulus", "faults", "expect", "realtime",
)  # fmt: skip
#: Microseconds for the ``realtime:`` budget (``500 us``); other durations as everywhere else.
_MICROSECONDS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs)\s*$")
REALTIME_HINT = "expected a duration like '0.5 ms' or '500 us'"


@dataclass(frozen=True)
class PackSetup:
    """Which pack and BMS configuration, the seed and the initial state."""

    file: Path
    bms: Path
    seed: int
    initial: InitialState
    stored_soc: float | None = None


@dataclass(frozen=True)
class Scenario:
    """A loaded, fully validated scenario; :func:`bms.scenario.runner.run_scenario` runs it."""

    name: str
    description: str
    source: str
    pack: PackSetup
    vehicle: VehicleParams
    charger_rated_current_a: float
    duration_s: float
    dt_s: float
    stop_when: Condition | None
    environment: dict[str, Schedule]
    stimulus: list[Segment]
    faults: list[FaultSpec]
    expect: list[Expectation]
    #: Every condition in the file (segments, faults, expectations), for the trace's columns.
    conditions: list[Condition] = field(default_factory=list)
    #: Jitter budget of real-time (bench) runs; simulated runs ignore it.
    realtime: JitterBudget = field(default_factory=JitterBudget)


def load_scenario(path: str | Path) -> Scenario:
    """Load and validate a scenario file; every problem is one located :class:`InputError`."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise InputError(f"{path}: a scenario is a .yaml or .yml file")
    doc = load_yaml(path)
    if doc.data is None:
        raise InputError(f"{path}: empty scenario file (expected at least 'pack:' and 'duration:')")
    root = Section(doc)
    base_dir = path.parent
    name = root.string("name", path.stem)
    description = root.string("description", "")
    duration_s = duration(root, "duration", above_s=0.0)
    dt_s = duration(root, "dt", 0.01, min_s=DT_MIN_S, max_s=DT_MAX_S)

    pack_sec = root.section("pack")
    setup, pack_params = _pack_setup(pack_sec, base_dir)
    vehicle = _vehicle(root, base_dir)
    charger = root.section("charger", {})
    rated_a = charger.number("rated_current_a", DEFAULT_CHARGER_CURRENT_A, above=0.0, max=2000.0)
    charger.done()
    environment = parse_environment(root)
    if "ambient_c" in environment or "coolant_c" in environment:
        initial = setup.initial
        setup = PackSetup(
            setup.file,
            setup.bms,
            setup.seed,
            InitialState(
                soc=initial.soc,
                temp_c=initial.temp_c,
                ambient_c=environment["ambient_c"].at(0.0)
                if "ambient_c" in environment
                else initial.ambient_c,
                coolant_c=environment["coolant_c"].at(0.0)
                if "coolant_c" in environment
                else initial.coolant_c,
                pressure_mpa=initial.pressure_mpa,
            ),
            setup.stored_soc,
        )
    try:
        probe = Pack(pack_params, seed=setup.seed, initial=setup.initial)
    except ValueError as exc:
        raise pack_sec.error_here(f"initial state does not fit the pack: {exc}") from None
    ctx = LoadContext(
        catalog=SignalCatalog(),
        base_dir=base_dir,
        dt_s=dt_s,
        vehicle=vehicle,
        pack=probe,
        charger_rated_current_a=rated_a,
    )
    stop_when = ctx.condition(root.section("stop_when")) if root.has("stop_when") else None
    stimulus = parse_stimulus(root, ctx)
    faults = parse_faults(root, ctx)
    expect = parse_expectations(root, ctx, len(faults))
    realtime = _realtime(root)
    root.done()
    return Scenario(
        name=name,
        description=description,
        source=str(path),
        pack=setup,
        vehicle=vehicle,
        charger_rated_current_a=rated_a,
        duration_s=duration_s,
        dt_s=dt_s,
        stop_when=stop_when,
        environment=environment,
        stimulus=stimulus,
        faults=faults,
        expect=expect,
        conditions=ctx.conditions,
        realtime=realtime,
    )


def _file_ref(text: str, base_dir: Path) -> str | Path:
    """A shipped name stays a name; anything that looks like a path is relative to the scenario."""
    if "/" in text or text.endswith(SUFFIXES):
        path = Path(text).expanduser()
        return path if path.is_absolute() else base_dir / path
    return text


def _pack_setup(sec: Section, base_dir: Path) -> tuple[PackSetup, PackParams]:
    pack_ref = _file_ref(sec.string("file"), base_dir)
    params = _located(sec, "file", lambda: load_pack(pack_ref))
    default_bms = f"bms_{Path(str(pack_ref)).stem}"
    bms_ref = _file_ref(sec.string("bms", default_bms), base_dir)
    bms = _located(sec, "bms", lambda: load_bms_config(bms_ref))
    if bms.series != params.topology.series or bms.modules != params.topology.modules:
        raise sec.error(
            "bms",
            f"BMS configuration {bms.name} ({bms.series}s, {bms.modules} modules) does not match "
            f"pack {params.name} ({params.topology.series}s, {params.topology.modules} modules)",
        )
    seed = sec.integer("seed", 0, min=0, max=2**31 - 1)
    soc = fraction(sec, "soc", 0.5, min=0.0, max=1.0)
    temp_c = sec.number("temp_c", 25.0, min=-40.0, max=80.0)
    pressure = (
        sec.number("pressure_mpa", None, above=0.0, max=12.0) if sec.has("pressure_mpa") else None
    )
    stored = fraction(sec, "stored_soc", None, min=0.0, max=1.0) if sec.has("stored_soc") else None
    sec.done()
    bms_path = bms.source or bms_ref
    initial = InitialState(soc=soc, temp_c=temp_c, pressure_mpa=pressure)
    return PackSetup(Path(str(pack_ref)), Path(str(bms_path)), seed, initial, stored), params


def _vehicle(root: Section, base_dir: Path) -> VehicleParams:
    if not root.has("vehicle"):
        return load_vehicle("compact_ev")
    value = root.raw("vehicle")
    if isinstance(value, dict):
        return VehicleParams.from_section(root.section("vehicle"), "inline", root.doc.source)
    if not isinstance(value, str):
        raise root.error("vehicle", "expected a vehicle name, a path or a mapping")
    ref = _file_ref(value, base_dir)
    return _located(root, "vehicle", lambda: load_vehicle(ref))


def _realtime(root: Section) -> JitterBudget:
    """The optional ``realtime: {p99: 0.5 ms, max: 5 ms, max_overruns: 10}`` jitter budget."""
    default = JitterBudget()
    if not root.has("realtime"):
        return default
    sec = root.section("realtime")
    p99_s = _budget_s(sec, "p99", default.p99_s)
    max_s = _budget_s(sec, "max", default.max_s)
    overruns = sec.integer("max_overruns", None, min=0) if sec.has("max_overruns") else None
    sec.done()
    if p99_s > max_s:
        raise sec.error("p99", f"must not exceed max ({max_s * 1e3:g} ms)")
    return JitterBudget(p99_s=p99_s, max_s=max_s, max_overruns=overruns)


def _budget_s(sec: Section, key: str, default_s: float) -> float:
    """A lateness bound in seconds: any scenario duration, or microseconds (``500 us``)."""
    value = sec.raw(key, None)
    if value is None:
        return default_s
    match = _MICROSECONDS_RE.match(value) if isinstance(value, str) else None
    if match:
        seconds = float(match.group(1)) * 1e-6
    else:
        seconds = check_duration(value, lambda p: sec.error(key, REALTIME_HINT))
    if not seconds > 0:
        raise sec.error(key, f"must be longer than 0 s, got {value!r}")
    return seconds
