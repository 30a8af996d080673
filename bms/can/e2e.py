"""End-to-end protection: alive counter + CRC-8 SAE J1850, TX fault injection, RX checks.

CRC-8 SAE J1850 (poly 0x1D, init 0xFF, xorout 0xFF) over the 16-bit CAN ID as two bytes
little-endian, then payload bytes 0..6; the CRC sits in byte 7, the 4-bit counter in bits 48..51
(positions are taken from the DBC through the codec). Receivers report every violation as a typed
:class:`E2EViolation` the BMS can count, debounce and act on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from bms.can.codec import MessageCodec
from bms.errors import InputError

CRC8_POLY = 0x1D
CRC8_INIT = 0xFF
CRC8_XOROUT = 0xFF
COUNTER_MODULO = 16


def _crc8_table(poly: int) -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ poly) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return tuple(table)


_TABLE = _crc8_table(CRC8_POLY)


def crc8_j1850(data: bytes | bytearray | memoryview, crc: int = CRC8_INIT) -> int:
    """CRC-8 SAE J1850 of ``data`` (table driven; equals ``crccheck.crc.Crc8SaeJ1850``)."""
    table = _TABLE
    for byte in data:
        crc = table[crc ^ byte]
    return crc ^ CRC8_XOROUT


def e2e_crc(frame_id: int, payload: bytes | bytearray | memoryview, length: int = 8) -> int:
    """The frame's CRC: over the ID (2 bytes LE) and payload bytes 0..length-2."""
    table = _TABLE
    crc = table[CRC8_INIT ^ (frame_id & 0xFF)]
    crc = table[crc ^ ((frame_id >> 8) & 0xFF)]
    for byte in payload[: length - 1]:
        crc = table[crc ^ byte]
    return crc ^ CRC8_XOROUT


class TxFault(enum.Enum):
    """Sender-side faults a scenario can switch on and off at any time."""

    DROP = "drop"  # frames are not sent (every one, or with a probability)
    DELAY = "delay"  # frames leave delay_s after their slot
    FREEZE_COUNTER = "freeze_counter"  # alive counter stops incrementing
    SKIP_COUNTER = "skip_counter"  # counter jumps by skip_by + 1
    CORRUPT_CRC = "corrupt_crc"  # CRC byte inverted
    WRONG_DLC = "wrong_dlc"  # frame sent with wrong_dlc bytes
    STOP = "stop"  # node stops sending this message (no counter advance)


@dataclass
class TxFaults:
    """Active faults of one message and their parameters (mutable: scenarios toggle them)."""

    active: set[TxFault] = field(default_factory=set)
    drop_probability: float = 1.0
    delay_s: float = 0.0
    skip_by: int = 1
    wrong_dlc: int = 7


class TxFrame(NamedTuple):
    """A frame ready for the bus: payload (its length is the DLC) and the time it is to leave."""

    name: str
    frame_id: int
    is_extended_id: bool
    data: bytes
    time_s: float


class E2ESender:
    """Transmit path of one message: fills counter and CRC (if protected), applies faults.

    :meth:`transmit` returns the frames to put on the bus now; delayed frames come back from
    :meth:`release` once their time has come.
    """

    def __init__(self, codec: MessageCodec, rng: np.random.Generator | None = None) -> None:
        self.codec = codec
        self.faults = TxFaults()
        self.counter = 0
        self.sent = 0
        self.dropped = 0
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self._delayed: list[TxFrame] = []
        self._byte = getattr(codec, "counter_byte", 0)
        self._shift = getattr(codec, "counter_shift", 0)

    # -- fault switches --------------------------------------------------------------------------
    def inject(self, fault: TxFault | str, **params: float) -> None:
        """Switch ``fault`` on; params: drop_probability, delay_s, skip_by, wrong_dlc."""
        kind = _fault_kind(fault)
        for key, value in params.items():
            if not hasattr(self.faults, key) or key == "active":
                raise InputError(f"message {self.codec.name}: unknown fault parameter {key!r}")
            setattr(self.faults, key, type(getattr(self.faults, key))(value))
        if kind in (TxFault.SKIP_COUNTER,) and not 1 <= self.faults.skip_by < COUNTER_MODULO - 1:
            raise InputError(f"message {self.codec.name}: skip_by must be in 1..14")
        if kind is TxFault.WRONG_DLC and not 0 <= self.faults.wrong_dlc <= 8:
            raise InputError(f"message {self.codec.name}: wrong_dlc must be in 0..8")
        self.faults.active.add(kind)

    def clear(self, fault: TxFault | str | None = None) -> None:
        """Switch one fault (or all) off."""
        if fault is None:
            self.faults.active.clear()
        else:
            self.faults.active.discard(_fault_kind(fault))

    # -- transmit --------------------------------------------------------------------------------
    def protect(self, payload: bytes) -> bytes:
        """Payload with the next alive counter and the CRC filled in (no faults applied)."""
        if not self.codec.e2e:
            return payload
        return self._protect(bytearray(payload), set())

    def _protect(self, buf: bytearray, active: set[TxFault]) -> bytes:
        if TxFault.FREEZE_COUNTER not in active:
            step = 1 + (self.faults.skip_by if TxFault.SKIP_COUNTER in active else 0)
            self.counter = (self.counter + step) % COUNTER_MODULO
        byte, shift = self._byte, self._shift
        buf[byte] = (buf[byte] & ~(0x0F << shift) & 0xFF) | (self.counter << shift)
        n = self.codec.length
        crc = e2e_crc(self.codec.frame_id, buf, n)
        buf[n - 1] = crc ^ 0xFF if TxFault.CORRUPT_CRC in active else crc
        return bytes(buf)

    def transmit(self, payload: bytes, time_s: float) -> list[TxFrame]:
        """Frames to send now for a payload produced at ``time_s`` (plus released delayed ones)."""
        active = self.faults.active
        out = self.release(time_s) if self._delayed else []
        if not active:  # fast path: nothing injected
            data = self._protect(bytearray(payload), active) if self.codec.e2e else payload
            out.append(
                TxFrame(
                    self.codec.name, self.codec.frame_id, self.codec.is_extended_id, data, time_s
                )
            )
            self.sent += 1
            return out
        if TxFault.STOP in active:
            return out
        data = self._protect(bytearray(payload), active) if self.codec.e2e else payload
        if TxFault.DROP in active and (
            self.faults.drop_probability >= 1.0 or self._rng.random() < self.faults.drop_probability
        ):
            self.dropped += 1  # the counter advanced: the receiver sees a skip, like a lost frame
            return out
        if TxFault.WRONG_DLC in active:
            dlc = self.faults.wrong_dlc
            data = data[:dlc] if dlc <= len(data) else data + bytes(dlc - len(data))
        frame = TxFrame(
            self.codec.name, self.codec.frame_id, self.codec.is_extended_id, data, time_s
        )
        if TxFault.DELAY in active and self.faults.delay_s > 0:
            self._delayed.append(
                TxFrame(
                    frame.name,
                    frame.frame_id,
                    frame.is_extended_id,
                    data,
                    time_s + self.faults.delay_s,
                )
            )
            return out
        out.append(frame)
        self.sent += 1
        return out

    def release(self, now_s: float) -> list[TxFrame]:
        """Delayed frames whose time has come (in order), removed from the queue."""
        ready = [f for f in self._delayed if f.time_s <= now_s + 1e-12]
        if ready:
            self._delayed = [f for f in self._delayed if f.time_s > now_s + 1e-12]
            self.sent += len(ready)
        return ready

    @property
    def pending(self) -> int:
        """Number of delayed frames not yet released."""
        return len(self._delayed)


def _fault_kind(fault: TxFault | str) -> TxFault:
    if isinstance(fault, TxFault):
        return fault
    try:
        return TxFault(str(fault).lower())
    except ValueError:
        names = ", ".join(f.value for f in TxFault)
        raise InputError(f"unknown CAN fault {fault!r} (expected one of {names})") from None


class E2EKind(enum.Enum):
    """Kinds of receive-side violations."""

    WRONG_DLC = "wrong_dlc"
    CRC = "crc"
    COUNTER_REPEATED = "counter_repeated"
    COUNTER_SKIPPED = "counter_skipped"
    COUNTER_FROZEN = "counter_frozen"
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class E2EViolation:
    """One detected violation: which message, when (simulated s), what kind and details."""

    message: str
    time_s: float
    kind: E2EKind
    detail: str = ""


@dataclass(frozen=True)
class E2EConfig:
    """Receiver thresholds (the DBC gives cycle times; these are per-project choices)."""

    timeout_cycles: float = 3.0  # timeout after this many cycle times without a valid frame
    max_counter_delta: int = 1  # a jump larger than this is a skip
    frozen_after: int = 3  # the same counter this many times in a row is "frozen"
    event_timeout_s: float | None = None  # event-only messages: no timeout unless set


class E2EReceiver:
    """Receive checks of one message: DLC, CRC, counter continuity and timeout.

    :meth:`check` returns ``(accept, violations)``; a frame is accepted (its values usable) unless
    its DLC or CRC is wrong or its counter repeated. :meth:`poll` reports a timeout once per outage.
    """

    def __init__(
        self, codec: MessageCodec, config: E2EConfig | None = None, start_s: float = 0.0
    ) -> None:
        self.codec = codec
        self.config = config or E2EConfig()
        cycle = codec.cycle_time_s
        self.timeout_s: float | None = (
            cycle * self.config.timeout_cycles if cycle else self.config.event_timeout_s
        )
        self.last_ok_s: float = start_s  # the timeout also covers "never received"
        self.last_counter: int | None = None
        self.same_count = 0
        self.timed_out = False
        self.received = 0
        self.accepted = 0
        self.violations: dict[E2EKind, int] = dict.fromkeys(E2EKind, 0)

    def _event(self, out: list[E2EViolation], time_s: float, kind: E2EKind, detail: str) -> None:
        self.violations[kind] += 1
        out.append(E2EViolation(self.codec.name, time_s, kind, detail))

    def check(self, data: bytes | bytearray, time_s: float) -> tuple[bool, list[E2EViolation]]:
        """Check one received frame at ``time_s``; returns (values usable, violations)."""
        self.received += 1
        codec = self.codec
        out: list[E2EViolation] = []
        if len(data) != codec.length:
            self._event(out, time_s, E2EKind.WRONG_DLC, f"dlc {len(data)} != {codec.length}")
            return False, out
        if codec.e2e:
            crc = e2e_crc(codec.frame_id, data, codec.length)
            if crc != data[codec.length - 1]:
                self._event(
                    out, time_s, E2EKind.CRC, f"crc 0x{data[codec.length - 1]:02X} != 0x{crc:02X}"
                )
                return False, out
            counter = (data[codec.counter_byte] >> codec.counter_shift) & 0x0F
            last = self.last_counter
            self.last_counter = counter
            if last is not None:
                delta = (counter - last) % COUNTER_MODULO
                if delta == 0:
                    self.same_count += 1
                    seen = self.same_count + 1
                    if seen == self.config.frozen_after:
                        self._event(
                            out,
                            time_s,
                            E2EKind.COUNTER_FROZEN,
                            f"counter {counter} seen {seen} times",
                        )
                    elif seen < self.config.frozen_after:
                        self._event(out, time_s, E2EKind.COUNTER_REPEATED, f"counter {counter}")
                    # beyond frozen_after: still rejected, reported once (the timeout follows)
                    return False, out
                self.same_count = 0
                if delta > self.config.max_counter_delta:
                    self._event(
                        out,
                        time_s,
                        E2EKind.COUNTER_SKIPPED,
                        f"counter {last} -> {counter} (skipped {delta - 1})",
                    )
        self.last_ok_s = time_s
        self.timed_out = False
        self.accepted += 1
        return True, out

    def poll(self, now_s: float) -> list[E2EViolation]:
        """Timeout check; reports once when no valid frame came for the timeout time."""
        if self.timeout_s is None or self.timed_out:
            return []
        if now_s - self.last_ok_s > self.timeout_s + 1e-9:
            self.timed_out = True
            out: list[E2EViolation] = []
            self._event(
                out,
                now_s,
                E2EKind.TIMEOUT,
                f"no valid frame for {now_s - self.last_ok_s:.3f} s "
                f"(timeout {self.timeout_s:.3f} s)",
            )
            return out
        return []
