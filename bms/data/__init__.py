"""Reference data shipped inside the package: cells, packs, protection ladders, DBCs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bms.errors import InputError

DATA_DIR = Path(str(resources.files(__name__)))


def shipped(kind: str) -> list[str]:
    """Names of the shipped files of one kind (``cells``, ``packs``, ...), without suffix."""
    return sorted(p.stem for p in (DATA_DIR / kind).glob("*.yaml"))


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A shipped name (``sslm90``) or a path to a user file; unknown names list the choices."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    candidate = DATA_DIR / kind / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise InputError(
        f"{name_or_path}: no such {kind[:-1]} file or shipped name "
        f"(shipped: {', '.join(shipped(kind))})"
    )
