"""Safe YAML loading with line numbers, and typed access that reports errors as one located line.

Every parameter file (cells, packs, protection ladders, scenarios) is read through :class:`Section`,
so a bad value always surfaces as ``file:line: dotted.field: what was expected``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bms.errors import InputError, located

Path_ = tuple[str | int, ...]
_MISSING: Any = object()


@dataclass
class Document:
    """A parsed YAML file: plain Python data plus the line of every key and list item."""

    source: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """Line of ``path`` or of its nearest recorded parent (1-based)."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())


def parse_yaml(text: str, source: str) -> Document:
    """Parse YAML text safely (no object-constructing tags) and record line numbers."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise located(source, line, "", f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    doc = Document(source, data)
    if node is not None:
        doc.lines[()] = node.start_mark.line + 1
        _record_lines(node, (), doc)
    return doc


def _record_lines(node: yaml.Node, path: Path_, doc: Document) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise located(
                    doc.source,
                    key_node.start_mark.line + 1,
                    _dotted(path + (key,)),
                    "duplicate key",
                )
            seen.add(key)
            doc.lines[path + (key,)] = key_node.start_mark.line + 1
            _record_lines(value_node, path + (key,), doc)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            doc.lines[path + (index,)] = item.start_mark.line + 1
            _record_lines(item, path + (index,), doc)


def read_text(path: str | Path) -> str:
    """A user's text file (UTF-8, BOM allowed); missing, unreadable or binary files raise
    :class:`InputError` naming the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if b"\x00" in raw:
        raise InputError(f"{path}: not a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def load_yaml(path: str | Path) -> Document:
    """Read and parse a YAML file; missing, unreadable or binary files raise :class:`InputError`."""
    return parse_yaml(read_text(path), str(path))


def _dotted(path: Path_) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class Section:
    """Typed, located read access to one mapping of a :class:`Document`.

    Reads record which keys were used; :meth:`done` rejects any key nobody asked for, so a typo
    in a parameter name is an error rather than a silently ignored default.
    """

    def __init__(self, doc: Document, path: Path_ = (), value: Any = _MISSING) -> None:
        self.doc = doc
        self.path = path
        self.value = doc.data if value is _MISSING else value
        if self.value is None:
            self.value = {}
        if not isinstance(self.value, dict):
            raise self.error_here(f"expected a mapping, got {_kind(self.value)}")
        self._used: set[str] = set()

    # -- errors -------------------------------------------------------------------------------
    def error(self, key: str | int, problem: str) -> InputError:
        """An :class:`InputError` located at ``key`` of this section."""
        path = self.path + (key,)
        return located(self.doc.source, self.doc.line(path), _dotted(path), problem)

    def error_here(self, problem: str) -> InputError:
        return located(self.doc.source, self.doc.line(self.path), _dotted(self.path), problem)

    # -- access -------------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        return key in self.value

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        self._used.add(key)
        if key not in self.value or self.value[key] is None:
            if default is _MISSING:
                near = difflib.get_close_matches(key, [str(k) for k in self.value], n=1)
                hint = f" (is {near[0]!r} a typo?)" if near else ""
                raise self.error(key, f"missing required field{hint}")
            return default
        return self.value[key]

    def number(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        min: float | None = None,
        max: float | None = None,
        above: float | None = None,
    ) -> float:
        """A real number within [min, max] (and strictly above ``above``)."""
        value = self.raw(key, default)
        return _check_number(value, lambda p: self.error(key, p), min, max, above)

    def integer(
        self, key: str, default: Any = _MISSING, *, min: int | None = None, max: int | None = None
    ) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {value!r}")
        _check_number(value, lambda p: self.error(key, p), min, max, None)
        return value

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            raise self.error(key, f"expected text, got {_kind(value)}")
        if choices and value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def section(self, key: str, default: Any = _MISSING) -> Section:
        value = self.raw(key, {} if default is _MISSING else default)
        if default is _MISSING and key not in self.value:
            raise self.error(key, "missing required section")
        return Section(self.doc, self.path + (key,), value)

    def items(self, key: str, default: Any = _MISSING) -> list[Any]:
        value = self.raw(key, default)
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_kind(value)}")
        return value

    def sections(self, key: str, default: Any = _MISSING) -> Iterator[Section]:
        """Each item of a list of mappings, as a located :class:`Section`."""
        for index, item in enumerate(self.items(key, default)):
            yield Section(self.doc, self.path + (key, index), item)

    def array(
        self,
        key: str,
        default: Any = _MISSING,
        *,
        min_len: int = 1,
        min: float | None = None,
        max: float | None = None,
        increasing: bool = False,
    ) -> np.ndarray:
        """A list of numbers as a float array, optionally strictly increasing."""
        values = self.items(key, default)
        if len(values) < min_len:
            raise self.error(key, f"expected at least {min_len} values, got {len(values)}")
        for index, value in enumerate(values):
            _check_number(
                value, lambda p, i=index: self.error(key, f"item {i}: {p}"), min, max, None
            )
        out = np.asarray(values, dtype=float)
        if increasing and np.any(np.diff(out) <= 0):
            bad = int(np.argmax(np.diff(out) <= 0)) + 1
            raise self.error(key, f"must be strictly increasing (item {bad})")
        return out

    def done(self) -> None:
        """Reject keys that were never read: they are typos or unsupported options."""
        unknown = [k for k in self.value if k not in self._used]
        if unknown:
            raise self.error(unknown[0], "unknown field")


def _check_number(
    value: Any, err: Any, lo: float | None, hi: float | None, above: float | None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise err(f"expected a number, got {value!r}")
    if not np.isfinite(value):
        raise err(f"expected a finite number, got {value!r}")
    if lo is not None and value < lo:
        raise err(f"must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise err(f"must be <= {hi}, got {value}")
    if above is not None and value <= above:
        raise err(f"must be > {above}, got {value}")
    return float(value)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text"}.get(type(value), repr(value))
