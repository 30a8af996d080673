"""Load DBC files strictly and read the interaction-layer attributes our scheduler and E2E need.

cantools keeps ``GenMsgCycleTime``, ``GenMsgSendType`` and ``E2EProtected`` but does not act on
them; this module turns them into plain Python values once, at load time.
"""

from __future__ import annotations

from pathlib import Path

import cantools
from cantools.database.can import Database, Message

from bms.data import DATA_DIR
from bms.errors import InputError

#: Shipped DBC names resolve to ``bms/data/dbc/<name>.dbc``.
DBC_DIR = DATA_DIR / "dbc"

#: Send types that mean "not cyclic" (compared case-insensitively, DBC templates differ).
EVENT_SEND_TYPES = frozenset({"event", "ifactive", "noMsgSendType".lower(), "spontaneous"})


def dbc_path(name_or_path: str | Path) -> Path:
    """Path of a shipped DBC (``"pack"``, ``"vehicle"``) or of a user file given by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".dbc"):
        return Path(name_or_path)
    return DBC_DIR / f"{text}.dbc"


def load_dbc(name_or_path: str | Path) -> Database:
    """Load a DBC with cantools in strict mode; any failure becomes one located InputError."""
    path = dbc_path(name_or_path)
    try:
        return cantools.database.load_file(str(path), strict=True)
    except OSError as exc:
        raise InputError(f"{path}: DBC does not load: {exc.strerror or exc}") from None
    except Exception as exc:  # cantools raises parser, value and unicode errors alike
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: DBC does not load: {first_line}") from None


def _attribute_text(message: Message, name: str) -> str | None:
    """Value of an enum or string message attribute as text, falling back to its DBC default."""
    dbc = message.dbc
    attribute = dbc.attributes.get(name) if dbc is not None else None
    if attribute is not None:
        definition = attribute.definition
        value = attribute.value
    else:
        return None
    choices = getattr(definition, "choices", None)
    if choices and isinstance(value, int) and 0 <= value < len(choices):
        return str(choices[value])
    return str(value)


def _default_text(db: Database, name: str) -> str | None:
    definition = db.dbc.attribute_definitions.get(name) if db.dbc is not None else None
    if definition is None or definition.default_value is None:
        return None
    return str(definition.default_value)


def cycle_time_s(message: Message) -> float | None:
    """Cycle time in seconds, or None for event-only messages (send type Event or no cycle time)."""
    send_type = (message.send_type or "").strip().lower()
    if send_type in EVENT_SEND_TYPES:
        return None
    if not message.cycle_time:
        return None
    return message.cycle_time / 1000.0


def is_e2e_protected(message: Message, db: Database | None = None) -> bool:
    """True when the message attribute ``E2EProtected`` reads "Yes" (or its DBC default does)."""
    text = _attribute_text(message, "E2EProtected")
    if text is None and db is not None:
        text = _default_text(db, "E2EProtected")
    return (text or "").strip().lower() in ("yes", "1", "true")


def bitrate_bps(db: Database, default_bps: int = 500_000) -> int:
    """Nominal bitrate from the database attribute ``Baudrate`` (bit/s), else ``default_bps``."""
    if db.dbc is None:
        return default_bps
    attribute = db.dbc.attributes.get("Baudrate")
    if attribute is None or not isinstance(attribute.value, int) or attribute.value <= 0:
        return default_bps
    return int(attribute.value)
