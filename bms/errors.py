"""Error types that the CLI turns into one clear line and an exit status."""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (file, field or value); the CLI prints it as one line and exits with 2.

    The message already names the place, e.g. ``packs/a.yaml:14: topology.series: must be >= 1``.
    """


def located(source: str, line: int | None, field: str, problem: str) -> InputError:
    """Build an :class:`InputError` whose text reads ``source:line: field: problem``."""
    where = f"{source}:{line}" if line else source
    return InputError(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")
