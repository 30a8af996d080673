"""Compiled per-message codecs: built once from a cantools message, then a few integer ops a signal.

The hot path never calls cantools. Values outside a signal's range are clamped to the range and
counted per signal (encode and decode separately), never raised mid-run. Uniform multiplexed
messages (every group has the same bit layout, e.g. 4 cell voltages per ``CellGroup``) also get a
vectorised path that encodes or decodes all groups from one numpy array.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cantools.database.can import Database, Message, Signal

from bms.can.dbc import bitrate_bps, cycle_time_s, is_e2e_protected
from bms.errors import InputError

#: Names of the E2E signals fixed by the DBC conventions (see CAN_NOTES / DBC comments).
COUNTER_SIGNAL = "AliveCounter"
CRC_SIGNAL = "CRC8"


@dataclass(frozen=True)
class SignalLayout:
    """Compiled position, scaling and raw range of one signal (what encode/decode need)."""

    name: str
    index: int  # position in MessageCodec.signal_names
    start: int  # cantools start bit (Intel: LSB; Motorola: MSB in sawtooth numbering)
    length: int
    shift: int  # LSB position in the little-endian (Intel) or big-endian (Motorola) frame word
    big_endian: bool
    signed: bool
    scale: float
    offset: float
    raw_min: int
    raw_max: int
    raw_initial: int
    unit: str
    choices: Mapping[int, str]

    @property
    def minimum(self) -> float:
        """Smallest physical value the signal can carry after clamping."""
        return min(self.raw_min * self.scale + self.offset, self.raw_max * self.scale + self.offset)

    @property
    def maximum(self) -> float:
        """Largest physical value the signal can carry after clamping."""
        return max(self.raw_min * self.scale + self.offset, self.raw_max * self.scale + self.offset)


def _compile_signal(signal: Signal, index: int, length_bytes: int, where: str) -> SignalLayout:
    if signal.is_float:
        raise InputError(f"{where}.{signal.name}: float signals are not supported by the codec")
    if signal.scale == 0:
        raise InputError(f"{where}.{signal.name}: scale must not be 0")
    bits = signal.length
    if signal.is_signed:
        rep_lo, rep_hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        rep_lo, rep_hi = 0, (1 << bits) - 1
    raw_lo, raw_hi = rep_lo, rep_hi
    scale, offset = signal.scale, signal.offset
    # DBC [min|max] in physical units -> raw range; [0|0] conventionally means "not given".
    lo_phys, hi_phys = signal.minimum, signal.maximum
    if not (lo_phys in (None, 0) and hi_phys in (None, 0)):
        bounds = []
        for phys in (lo_phys, hi_phys):
            bounds.append(None if phys is None else (phys - offset) / scale)
        if scale < 0:
            bounds.reverse()
        # A tolerance of 1e-6 LSB absorbs float noise in e.g. (-55 - -40) / 0.1.
        if bounds[0] is not None:
            raw_lo = max(raw_lo, math.ceil(bounds[0] - 1e-6))
        if bounds[1] is not None:
            raw_hi = min(raw_hi, math.floor(bounds[1] + 1e-6))
    if raw_lo > raw_hi:
        raise InputError(f"{where}.{signal.name}: range [{lo_phys}|{hi_phys}] holds no raw value")
    if signal.byte_order == "big_endian":
        msb = 8 * (signal.start // 8) + (7 - signal.start % 8)  # index from the frame's first bit
        shift = 8 * length_bytes - msb - bits
    else:
        shift = signal.start
    if shift < 0 or shift + bits > 8 * length_bytes:
        raise InputError(f"{where}.{signal.name}: signal does not fit in {length_bytes} bytes")
    raw_initial = signal.raw_initial if isinstance(signal.raw_initial, int) else 0
    raw_initial = min(max(raw_initial, raw_lo), raw_hi)
    choices = {int(k): str(v) for k, v in (signal.choices or {}).items()}
    return SignalLayout(
        signal.name,
        index,
        signal.start,
        bits,
        shift,
        signal.byte_order == "big_endian",
        bool(signal.is_signed),
        scale,
        offset,
        raw_lo,
        raw_hi,
        raw_initial,
        signal.unit or "",
        choices,
    )


class _FieldSet:
    """Signals packed together (one group or the always-present part), as tuples for fast loops."""

    def __init__(self, layouts: Sequence[SignalLayout]) -> None:
        self.layouts = tuple(layouts)
        # (index, shift, mask, scale, offset, raw_lo, raw_hi, lo_f, hi_f, initial) per signal;
        # lo_f/hi_f are half an LSB outside the range so in-range values take one comparison.
        self.le = tuple(self._entry(s) for s in layouts if not s.big_endian)
        self.be = tuple(self._entry(s) for s in layouts if s.big_endian)
        self.dec_le = tuple(self._dec_entry(s) for s in layouts if not s.big_endian)
        self.dec_be = tuple(self._dec_entry(s) for s in layouts if s.big_endian)
        # numpy views for the vectorised path (Intel signals only; checked by the caller)
        self.np_shift = np.array([s.shift for s in layouts], dtype=np.uint64)
        self.np_mask = np.array([(1 << s.length) - 1 for s in layouts], dtype=np.int64)
        self.np_scale = np.array([s.scale for s in layouts], dtype=float)
        self.np_offset = np.array([s.offset for s in layouts], dtype=float)
        self.np_lo = np.array([s.raw_min for s in layouts], dtype=float)
        self.np_hi = np.array([s.raw_max for s in layouts], dtype=float)
        self.np_init = np.array([s.raw_initial for s in layouts], dtype=float)
        self.np_signed = np.array([s.signed for s in layouts], dtype=bool)
        self.np_full = np.array([1 << s.length for s in layouts], dtype=np.int64)
        self.np_sign_bit = np.array(
            [(1 << (s.length - 1)) if s.signed else 0 for s in layouts], dtype=np.int64
        )

    @staticmethod
    def _entry(s: SignalLayout) -> tuple:
        return (
            s.index,
            s.shift,
            (1 << s.length) - 1,
            s.scale,
            s.offset,
            s.raw_min,
            s.raw_max,
            s.raw_min - 0.5,
            s.raw_max + 0.5,
            s.raw_initial,
        )

    @staticmethod
    def _dec_entry(s: SignalLayout) -> tuple:
        sign_bit = (1 << (s.length - 1)) if s.signed else 0
        return (
            s.index,
            s.shift,
            (1 << s.length) - 1,
            sign_bit,
            1 << s.length,
            s.scale,
            s.offset,
            s.raw_min,
            s.raw_max,
        )


def _pack(entries: tuple, values: Sequence[float], clamps: list[int]) -> int:
    """OR the raw values of ``entries`` into one integer word; clamp and count out-of-range."""
    word = 0
    for index, shift, mask, scale, offset, lo, hi, lo_f, hi_f, initial in entries:
        raw_f = (values[index] - offset) / scale  # same float ops as cantools: bit-exact raws
        if lo_f < raw_f < hi_f:
            raw = round(raw_f)
        else:
            clamps[index] += 1
            raw = lo if raw_f <= lo_f else hi if raw_f >= hi_f else initial  # NaN -> initial
        word |= (raw & mask) << shift
    return word


def _unpack(entries: tuple, word: int, out: list, clamps: list[int]) -> None:
    """Extract physical values of ``entries`` from ``word`` into ``out``; clamp and count."""
    for index, shift, mask, sign_bit, full, scale, offset, lo, hi in entries:
        raw = (word >> shift) & mask
        if raw & sign_bit:
            raw -= full
        if raw < lo:
            clamps[index] += 1
            raw = lo
        elif raw > hi:
            clamps[index] += 1
            raw = hi
        out[index] = raw * scale + offset


@dataclass(frozen=True)
class MuxLayout:
    """Layout of a multiplexed message: selector, always-present signals, per-group signals."""

    selector: SignalLayout
    common: tuple[SignalLayout, ...]  # present in every frame (flags, AliveCounter, CRC8)
    groups: Mapping[int, tuple[SignalLayout, ...]]  # selector value -> signals by start bit
    group_ids: tuple[int, ...]  # sorted selector values
    uniform: bool  # every group has the same bit layout: the vectorised path applies

    @property
    def slots(self) -> int:
        """Number of multiplexed signals per group (of the first group when not uniform)."""
        return len(self.groups[self.group_ids[0]]) if self.group_ids else 0


class MessageCodec:
    """Encoder/decoder of one message, compiled from cantools once; the hot path is pure ints.

    Values are physical (V, A, degC, ...) in :attr:`signal_names` order, or a mapping by name.
    Enums travel as raw ints both ways; :attr:`value_tables` has their texts for display.
    """

    def __init__(self, message: Message, db: Database | None = None) -> None:
        self.message = message
        self.name: str = message.name
        self.frame_id: int = message.frame_id
        self.is_extended_id: bool = bool(message.is_extended_frame)
        self.length: int = message.length
        self.cycle_time_s: float | None = cycle_time_s(message)
        self.send_type: str = message.send_type or ""
        self.e2e: bool = is_e2e_protected(message, db)
        where = f"message {self.name}"
        layouts = [_compile_signal(s, i, self.length, where) for i, s in enumerate(message.signals)]
        self.signals: tuple[SignalLayout, ...] = tuple(layouts)
        self.signal_names: tuple[str, ...] = tuple(s.name for s in layouts)
        self.index: dict[str, int] = {s.name: s.index for s in layouts}
        self.value_tables: dict[str, dict[int, str]] = {
            s.name: dict(s.choices) for s in layouts if s.choices
        }
        self.encode_clamps: list[int] = [0] * len(layouts)
        self.decode_clamps: list[int] = [0] * len(layouts)
        self._defaults = [s.raw_initial * s.scale + s.offset for s in layouts]
        self._has_be = any(s.big_endian for s in layouts)
        self.mux: MuxLayout | None = self._compile_mux(message, layouts, where)
        if self.mux is None:
            self._fields = _FieldSet(layouts)
        else:
            self._common = _FieldSet((self.mux.selector, *self.mux.common))
            self._groups = {g: _FieldSet(sigs) for g, sigs in self.mux.groups.items()}
            self._common_only = _FieldSet(self.mux.common) if self.mux.common else None
        self._vector_ok = self.length == 8 and not self._has_be
        if self.e2e:
            self._check_e2e_layout(where)

    # -- compilation ---------------------------------------------------------------------------
    @staticmethod
    def _compile_mux(message: Message, layouts: list[SignalLayout], where: str) -> MuxLayout | None:
        selectors = [s for s in message.signals if s.is_multiplexer]
        if not selectors:
            return None
        if len(selectors) > 1 or any(
            s.multiplexer_signal not in (None, selectors[0].name) for s in message.signals
        ):
            raise InputError(f"{where}: nested or multiple multiplexers are not supported")
        selector = layouts[message.signals.index(selectors[0])]
        common, groups = [], {}
        for sig, lay in zip(message.signals, layouts, strict=True):
            if sig.is_multiplexer:
                continue
            if sig.multiplexer_ids is None:
                common.append(lay)
            else:
                for gid in sig.multiplexer_ids:
                    groups.setdefault(int(gid), []).append(lay)
        group_ids = tuple(sorted(groups))
        # slots in bit-position order, whatever order the DBC lists the signals in
        groups = {g: sorted(groups[g], key=lambda s: s.start) for g in group_ids}
        shapes = {
            tuple(
                (s.shift, s.length, s.signed, s.big_endian, s.scale, s.offset, s.raw_min, s.raw_max)
                for s in groups[g]
            )
            for g in group_ids
        }
        return MuxLayout(
            selector,
            tuple(common),
            {g: tuple(groups[g]) for g in group_ids},
            group_ids,
            len(shapes) <= 1,
        )

    def _check_e2e_layout(self, where: str) -> None:
        counter = self.index.get(COUNTER_SIGNAL)
        crc = self.index.get(CRC_SIGNAL)
        if counter is None or crc is None:
            raise InputError(f"{where}: E2EProtected but no {COUNTER_SIGNAL}/{CRC_SIGNAL} signal")
        c, k = self.signals[counter], self.signals[crc]
        if k.big_endian or k.shift != 8 * (self.length - 1) or k.length != 8:
            raise InputError(f"{where}: {CRC_SIGNAL} must be the whole last byte")
        if c.big_endian or c.length != 4 or c.shift % 8 + 4 > 8:
            raise InputError(f"{where}: {COUNTER_SIGNAL} must be 4 bits inside one byte")
        #: byte index and bit shift inside it of the alive counter (used by E2E)
        self.counter_byte: int = c.shift // 8
        self.counter_shift: int = c.shift % 8

    # -- single frame --------------------------------------------------------------------------
    def values_from(self, values: Mapping[str, float] | Sequence[float] | np.ndarray) -> list:
        """A full-length value list in signal order; a mapping's missing signals take defaults."""
        if isinstance(values, Mapping):
            out = list(self._defaults)
            index = self.index
            for name, value in values.items():
                try:
                    out[index[name]] = value
                except KeyError:
                    raise InputError(f"message {self.name}: no signal {name!r}") from None
            return out
        if isinstance(values, np.ndarray):
            return values.tolist()  # Python floats: int/float maths is much faster than numpy's
        return values  # type: ignore[return-value]

    def encode(self, values: Mapping[str, float] | Sequence[float] | np.ndarray) -> bytes:
        """Payload bytes for physical ``values`` (signal order or by name); clamps are counted.

        For a multiplexed message the selector value picks the group; other groups' values are
        ignored.
        """
        vals = self.values_from(values)
        if self.mux is None:
            return self._encode_fields(self._fields, vals)
        sel = self.mux.selector
        raw_sel = (
            round((vals[sel.index] - sel.offset) / sel.scale)
            if vals[sel.index] == vals[sel.index]
            else sel.raw_initial
        )
        group = self._groups.get(raw_sel)
        le = self._common.le + (group.le if group else ())
        be = self._common.be + (group.be if group else ())
        if group is None:
            self.encode_clamps[sel.index] += 1  # unknown group: send the selector, no payload
        return self._encode_entries(le, be, vals)

    def _encode_fields(self, fields: _FieldSet, vals: Sequence[float]) -> bytes:
        return self._encode_entries(fields.le, fields.be, vals)

    def _encode_entries(self, le: tuple, be: tuple, vals: Sequence[float]) -> bytes:
        n = self.length
        word = _pack(le, vals, self.encode_clamps)
        if be:
            big = _pack(be, vals, self.encode_clamps).to_bytes(n, "big")
            word |= int.from_bytes(big, "little")
        return word.to_bytes(n, "little")

    def decode(self, data: bytes | bytearray | memoryview) -> list[float]:
        """Physical values in signal order (NaN for signals of other mux groups); clamps counted."""
        out = [math.nan] * len(self.signals)
        word = int.from_bytes(data, "little")
        big = int.from_bytes(data, "big") if self._has_be else 0
        if self.mux is None:
            fields = self._fields
            _unpack(fields.dec_le, word, out, self.decode_clamps)
            if big:
                _unpack(fields.dec_be, big, out, self.decode_clamps)
            return out
        _unpack(self._common.dec_le, word, out, self.decode_clamps)
        if self._common.dec_be:
            _unpack(self._common.dec_be, big, out, self.decode_clamps)
        sel = self.mux.selector
        group = self._groups.get(round((out[sel.index] - sel.offset) / sel.scale))
        if group is not None:
            _unpack(group.dec_le, word, out, self.decode_clamps)
            if group.dec_be:
                _unpack(group.dec_be, big, out, self.decode_clamps)
        return out

    def decode_dict(self, data: bytes | bytearray | memoryview) -> dict[str, float]:
        """Physical values by name, only the signals present in this frame."""
        values = self.decode(data)
        return {name: v for name, v in zip(self.signal_names, values, strict=True) if v == v}

    # -- all groups of a multiplexed message at once -------------------------------------------
    def encode_groups(
        self,
        slot_values: np.ndarray,
        common: Mapping[str, float] | None = None,
        group_ids: Sequence[int] | None = None,
    ) -> list[bytes]:
        """Payloads of all groups from one ``(groups, slots)`` array; clamps are counted.

        Row ``k`` fills the mux signals of group ``group_ids[k]`` (default: the first rows-many
        groups in selector order) in start-bit order, e.g. cell voltages ``v.reshape(-1, 4)`` for
        ``CellGroup``. ``common`` gives the always-present signals (same in every frame; E2E
        fields are the sender's job).
        """
        mux = self.mux
        if mux is None:
            raise InputError(f"message {self.name}: not multiplexed")
        slot_values = np.asarray(slot_values, dtype=float)
        if group_ids is None:  # a smaller pack (96s on a 192-cell DBC) fills the first groups
            ids = mux.group_ids[: len(slot_values)] if slot_values.ndim == 2 else mux.group_ids
        else:
            ids = tuple(group_ids)
        if slot_values.shape != (len(ids), mux.slots):
            raise InputError(
                f"message {self.name}: expected values of shape "
                f"({len(ids)}, {mux.slots}), got {slot_values.shape}"
            )
        base = self.values_from(common or {})
        if not (mux.uniform and self._vector_ok):
            out = []
            for k, gid in enumerate(ids):
                vals = list(base)
                vals[mux.selector.index] = gid * mux.selector.scale + mux.selector.offset
                for slot, layout in enumerate(mux.groups.get(gid, ())):
                    vals[layout.index] = float(slot_values[k, slot])
                out.append(self.encode(vals))
            return out
        base[mux.selector.index] = (
            mux.selector.raw_initial * mux.selector.scale + mux.selector.offset
        )
        common_word = _pack(self._common.le, base, self.encode_clamps)
        sel = mux.selector
        common_word &= ~(((1 << sel.length) - 1) << sel.shift)  # selector goes in per row
        fields = self._groups[ids[0]] if ids else None
        if fields is None:
            return []
        words = self._pack_array(fields, slot_values, ids)
        sel_raw = (np.array(ids, dtype=np.int64) & ((1 << sel.length) - 1)).astype(np.uint64)
        words |= sel_raw << np.uint64(sel.shift)
        words |= np.uint64(common_word)
        buf = words.astype("<u8").tobytes()
        return [buf[i : i + 8] for i in range(0, len(buf), 8)]

    def _pack_array(self, fields: _FieldSet, values: np.ndarray, ids: Sequence[int]) -> np.ndarray:
        """One uint64 word per row; ``fields`` is any group's layout (all groups share it)."""
        lo_f, hi_f = fields.np_lo - 0.5, fields.np_hi + 0.5
        raw_f = (values - fields.np_offset) / fields.np_scale
        ok = (raw_f > lo_f) & (raw_f < hi_f)
        if not ok.all():
            groups = self.mux.groups  # type: ignore[union-attr]
            for row, col in zip(*np.nonzero(~ok), strict=True):
                self.encode_clamps[groups[ids[row]][col].index] += 1  # e.g. Cell007_V
            raw_f = np.where(
                raw_f <= lo_f,
                fields.np_lo,
                np.where(
                    raw_f >= hi_f, fields.np_hi, np.where(np.isnan(raw_f), fields.np_init, raw_f)
                ),
            )
        raw = np.rint(raw_f).astype(np.int64) & fields.np_mask
        return np.bitwise_or.reduce(raw.astype(np.uint64) << fields.np_shift, axis=1)

    def decode_groups(
        self, payloads: Iterable[bytes] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decode many frames of a uniform multiplexed message at once.

        Returns ``(group_ids (N,), slot_values (N, slots), common_values (N, n_common))``; rows
        with an unknown selector hold NaN slot values. Clamps are counted per signal.
        """
        mux = self.mux
        if mux is None or not (mux.uniform and self._vector_ok):
            raise InputError(f"message {self.name}: not a uniform 8-byte multiplexed message")
        if isinstance(payloads, np.ndarray):
            words = payloads.reshape(-1, 8).view("<u8").ravel()
        else:
            words = np.frombuffer(b"".join(payloads), dtype="<u8")
        sel = mux.selector
        raw_sel = ((words >> np.uint64(sel.shift)) & np.uint64((1 << sel.length) - 1)).astype(
            np.int64
        )
        gids = raw_sel * sel.scale + sel.offset
        fields = self._groups[mux.group_ids[0]]
        slots, bad = self._unpack_array(fields, words)
        known = np.isin(gids, mux.group_ids)
        slots[~known] = np.nan
        if bad is not None:
            for row, col in zip(*np.nonzero(bad & known[:, None]), strict=True):
                self.decode_clamps[mux.groups[int(gids[row])][col].index] += 1
        common_fields = self._common_only
        if common_fields is None:
            common = np.empty((len(words), 0))
        else:
            common, cbad = self._unpack_array(common_fields, words)
            if cbad is not None:
                for col, n in enumerate(cbad.sum(axis=0)):
                    self.decode_clamps[mux.common[col].index] += int(n)
        return gids, slots, common

    @staticmethod
    def _unpack_array(fields: _FieldSet, words: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raw = ((words[:, None] >> fields.np_shift) & fields.np_mask.astype(np.uint64)).astype(
            np.int64
        )
        raw = np.where(raw & fields.np_sign_bit, raw - fields.np_full, raw)
        bad = (raw < fields.np_lo) | (raw > fields.np_hi)
        if bad.any():
            raw = np.clip(raw, fields.np_lo, fields.np_hi)
            return raw * fields.np_scale + fields.np_offset, bad
        return raw * fields.np_scale + fields.np_offset, None

    # -- reporting -----------------------------------------------------------------------------
    def clamp_counts(self) -> dict[str, dict[str, int]]:
        """Non-zero clamp counts: ``{"encode": {signal: n}, "decode": {signal: n}}``."""
        return {
            "encode": {
                n: c for n, c in zip(self.signal_names, self.encode_clamps, strict=True) if c
            },
            "decode": {
                n: c for n, c in zip(self.signal_names, self.decode_clamps, strict=True) if c
            },
        }


class DbcCodecs(Mapping[str, MessageCodec]):
    """All message codecs of one DBC, by name and by ``(frame_id, is_extended_id)``."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.bitrate_bps: int = bitrate_bps(db)
        self._by_name = {m.name: MessageCodec(m, db) for m in db.messages}
        self.by_id: dict[tuple[int, bool], MessageCodec] = {
            (c.frame_id, c.is_extended_id): c for c in self._by_name.values()
        }

    def __getitem__(self, name: str) -> MessageCodec:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(
                f"DBC {self.db.dbc.attributes.get('DBName', '')!s}: no message {name!r}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    def clamp_report(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per message, the non-zero encode/decode clamp counts (for the run report)."""
        report = {}
        for name, codec in self._by_name.items():
            counts = codec.clamp_counts()
            if counts["encode"] or counts["decode"]:
                report[name] = counts
        return report
