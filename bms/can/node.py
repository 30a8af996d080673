"""Node base class: one bus endpoint, its codecs, E2E senders/receivers and one cyclic scheduler.

Like python-can's ``BusABC``, public methods (:meth:`Node.step`, :meth:`Node.send_event`) wrap
protected hooks a subclass implements: :meth:`Node._fill` gives the values of a due cyclic
message, :meth:`Node._on_frame` consumes a received, checked and decoded frame, and
:meth:`Node._on_violation` is told about every E2E violation. Nodes never call each other.

Two ways out for cyclic frames. Simulated time: :meth:`Node.step` fills, encodes, protects and
sends each due frame itself. Real time: with an :class:`Outbox` set, :meth:`Node.step` only
receives and :meth:`Node.prepare` fills and encodes the slots of the next tick ahead of time; the
outbox (a transmit thread, like a CAN driver's TX interrupt) protects and sends each at its
deadline, so a frame never waits for the plant or the BMS tasks. Event frames always leave at
once from :meth:`Node.send_event`; protecting and sending hold :attr:`Node._tx_lock`, so alive
counters reach the bus in order whichever thread sends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import can
import numpy as np

from bms.can.bus import SimMessage
from bms.can.busload import BusLoadMeter
from bms.can.codec import DbcCodecs, MessageCodec
from bms.can.e2e import E2EConfig, E2EReceiver, E2ESender, E2EViolation, TxFault, TxFrame
from bms.can.schedule import CyclicScheduler, periods_from
from bms.errors import InputError

#: What :meth:`Node._fill` may return: values (signal order or by name) for a plain message; for a
#: multiplexed one a ``(groups, slots)`` array, optionally with a mapping of the common signals.
FillValues = Mapping[str, float] | Sequence[float] | np.ndarray | tuple[np.ndarray, Mapping]


class Frames(list):
    """What :meth:`Node._fill` returns for several frames of one plain message in one slot.

    E.g. one BmsFaults frame per active fault: they leave together, in order, at the slot.
    """


class Outbox(Protocol):
    """Where a real-time node hands its encoded cyclic slots (see :mod:`bms.bench.transmit`)."""

    def put(self, node: Node, name: str, payloads: list[bytes], deadline_s: float) -> None:
        """Send ``payloads`` of message ``name`` at ``deadline_s`` (at once if passed)."""
        ...


class Node:
    """Base of the pack, BMS and vehicle nodes; subclasses implement the three hooks."""

    def __init__(
        self,
        bus: can.BusABC,
        codecs: DbcCodecs,
        tx: Iterable[str] = (),
        rx: Iterable[str] = (),
        *,
        e2e_config: E2EConfig | None = None,
        phase_step_s: float = 0.0,
        phase_offset_s: float = 0.0,
        start_s: float = 0.0,
        busload: BusLoadMeter | None = None,
        seed: int = 0,
    ) -> None:
        self.bus = bus
        self.codecs = codecs
        rng = np.random.default_rng(seed)
        self.senders: dict[str, E2ESender] = {n: E2ESender(codecs[n], rng) for n in tx}
        self.receivers: dict[str, E2EReceiver] = {
            n: E2EReceiver(codecs[n], e2e_config, start_s) for n in rx
        }
        self._rx_by_id: dict[tuple[int, bool], tuple[MessageCodec, E2EReceiver]] = {
            (r.codec.frame_id, r.codec.is_extended_id): (r.codec, r)
            for r in self.receivers.values()
        }
        self._sender_list = list(self.senders.values())
        self._timed_receivers = [r for r in self.receivers.values() if r.timeout_s is not None]
        self.scheduler = CyclicScheduler.from_periods(
            periods_from(codecs[n] for n in self.senders), phase_step_s, start_s, phase_offset_s
        )
        self.busload = busload
        self.events: list[E2EViolation] = []
        self.frames_sent = 0
        self.frames_received = 0
        self.frames_ignored = 0  # IDs this node does not receive
        #: Real time: where :meth:`prepare` hands the encoded cyclic slots (None: cyclic frames
        #: are sent from :meth:`step` in the caller's thread).
        self.outbox: Outbox | None = None
        # Held while a transmit thread protects and sends, and while faults are switched.
        self._tx_lock = threading.Lock()
        # python-can's virtual bus keeps received frames in a queue.Queue: its size says how many
        # recv() calls will find a frame, so a poll with nothing pending costs one len() instead
        # of a timed-out blocking get. Other interfaces are polled until recv() returns None.
        rx_queue = getattr(bus, "queue", None)
        self._rx_pending = rx_queue.qsize if isinstance(rx_queue, queue.Queue) else None

    # -- hooks for subclasses ------------------------------------------------------------------
    def _fill(self, name: str, time_s: float) -> FillValues:
        """Values of the cyclic message ``name`` due at ``time_s`` (physical units)."""
        raise NotImplementedError

    def _on_frame(self, name: str, values: list[float], time_s: float) -> None:
        """A received frame that passed the E2E checks; ``values`` in the codec's signal order."""

    def _on_violation(self, event: E2EViolation) -> None:
        """An E2E violation (also kept in :attr:`events`)."""

    # -- public API ----------------------------------------------------------------------------
    def step(self, now_s: float, catch_up: bool = True) -> None:
        """Receive and check pending frames, report timeouts, then send due and delayed frames.

        ``catch_up`` follows the clock: True on a simulated clock, False on the wall clock.
        With an :attr:`outbox` nothing is sent here: :meth:`prepare` hands the slots over.
        """
        self.receive(now_s)
        self.send_due(now_s, catch_up)

    def send_due(self, now_s: float, catch_up: bool = True) -> None:
        """The send half of :meth:`step`: due cyclic frames (unless an outbox sends them), then
        frames a DELAY fault held back."""
        if self.outbox is not None:
            self.release_delayed(now_s)
            return
        for due in self.scheduler.due(now_s, catch_up):
            stamp = due.deadline_s if catch_up else now_s
            payloads = self._encode(due.name, self._fill(due.name, due.deadline_s))
            self._send_payloads(due.name, payloads, stamp)
        self.release_delayed(now_s)

    def receive(self, now_s: float) -> None:
        """The receive half of :meth:`step`: pending frames, then receive timeouts."""
        self._receive_pending()
        self._poll_timeouts(now_s)

    def prepare(self, now_s: float, until_s: float) -> None:
        """Real time: fill and encode every cyclic slot due before ``until_s``, for the outbox.

        Call once per tick with ``until_s`` one tick past the next deadline: each slot is filled
        from the state at hand (at most a tick old) and leaves at its own deadline. Slots already
        overtaken at ``now_s`` go once, late; older ones are counted missed (no bursts).
        """
        outbox = self.outbox
        if outbox is None:
            raise RuntimeError("Node.prepare needs an outbox (real-time mode)")
        for due in self.scheduler.upcoming(now_s, until_s):
            payloads = self._encode(due.name, self._fill(due.name, due.deadline_s))
            outbox.put(self, due.name, payloads, due.deadline_s)

    def send_event(self, name: str, values: FillValues, time_s: float) -> None:
        """Send an event (or on-change) message now, through its E2E sender and faults."""
        if name not in self.senders:
            raise InputError(f"node does not transmit message {name!r}")
        payloads = self._encode(name, values)
        with self._tx_lock:
            self._send_payloads(name, payloads, time_s)

    def send_prepared(self, name: str, payloads: list[bytes], stamp_s: float) -> int:
        """Protect and send payloads prepared earlier, stamped ``stamp_s`` (transmit thread).

        Returns the number of frames put on the bus (a DROP or STOP fault sends none).
        """
        with self._tx_lock:
            return self._send_payloads(name, payloads, stamp_s)

    def release_delayed(self, now_s: float) -> None:
        """Send the frames a DELAY fault held back whose time has come."""
        for sender in self._sender_list:
            if sender._delayed:  # the pending count without a property call per sender and tick
                with self._tx_lock:
                    for frame in sender.release(now_s):
                        self._put(frame)

    def inject(self, name: str, fault: TxFault | str, **params: float) -> None:
        """Switch a sender-side fault on for message ``name`` (see :class:`E2ESender`)."""
        sender = self._sender(name)
        with self._tx_lock:
            sender.inject(fault, **params)

    def clear(self, name: str, fault: TxFault | str | None = None) -> None:
        """Switch one fault (or all) off for message ``name``."""
        sender = self._sender(name)
        with self._tx_lock:
            sender.clear(fault)

    def close(self) -> None:
        """Shut the bus endpoint down."""
        self.bus.shutdown()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------
    def _sender(self, name: str) -> E2ESender:
        try:
            return self.senders[name]
        except KeyError:
            raise InputError(f"node does not transmit message {name!r}") from None

    def _encode(self, name: str, values: FillValues) -> list[bytes]:
        """Payloads (before E2E) of one slot of ``name``: one per frame, in sending order."""
        codec = self.codecs[name]
        if isinstance(values, Frames):
            return [codec.encode(v) for v in values]
        if codec.mux is not None and not isinstance(values, Mapping):
            common = None
            if isinstance(values, tuple):
                values, common = values
            return codec.encode_groups(np.asarray(values), common)
        return [codec.encode(values)]  # type: ignore[arg-type]

    def _send_payloads(self, name: str, payloads: list[bytes], time_s: float) -> int:
        """Protect each payload (counter, CRC, injected faults), put the frames on the bus.

        Returns how many frames went out.
        """
        sender = self.senders[name]
        put = self._put
        count = 0
        for payload in payloads:
            for frame in sender.transmit(payload, time_s):
                put(frame)
                count += 1
        return count

    def _put(self, frame: TxFrame) -> None:
        self.bus.send(
            SimMessage.data_frame(frame.frame_id, frame.is_extended_id, frame.data, frame.time_s)
        )
        self.frames_sent += 1
        if self.busload is not None:
            self.busload.add(frame.frame_id, frame.is_extended_id, frame.data)

    def _poll_timeouts(self, now_s: float) -> None:
        """Report receive timeouts; :meth:`E2EReceiver.poll` is called only once one is due."""
        for receiver in self._timed_receivers:
            # Same test as E2EReceiver.poll, done here so a healthy tick makes no calls.
            if not receiver.timed_out and now_s - receiver.last_ok_s > receiver.timeout_s + 1e-9:
                for event in receiver.poll(now_s):
                    self._report(event)

    def _receive_pending(self) -> None:
        pending = self._rx_pending
        if pending is None:
            recv = self.bus.recv
            while (msg := recv(0.0)) is not None:
                self._receive(msg)
            return
        count = pending()
        if count:
            recv = self.bus.recv
            for _ in range(count):  # one queued frame per recv(0) (None if a filter drops it)
                msg = recv(0.0)
                if msg is not None:
                    self._receive(msg)

    def _receive(self, msg: can.Message) -> None:
        """Check and decode one received frame and hand it to :meth:`_on_frame`."""
        entry = self._rx_by_id.get((msg.arbitration_id, msg.is_extended_id))
        if entry is None or msg.is_error_frame or msg.is_remote_frame:
            self.frames_ignored += 1
            return
        codec, receiver = entry
        self.frames_received += 1
        data = bytes(msg.data[: msg.dlc])
        ok, events = receiver.check(data, msg.timestamp)
        for event in events:
            self._report(event)
        if ok:
            self._on_frame(codec.name, codec.decode(data), msg.timestamp)

    def _report(self, event: E2EViolation) -> None:
        self.events.append(event)
        self._on_violation(event)

    def report(self) -> dict[str, Any]:
        """Counts for the run report: frames, violations by kind, clamps, scheduler lateness."""
        violations: dict[str, int] = {}
        for receiver in self.receivers.values():
            for kind, n in receiver.violations.items():
                if n:
                    violations[kind.value] = violations.get(kind.value, 0) + n
        late = self.scheduler.lateness()
        return {
            "frames_sent": self.frames_sent,
            "frames_received": self.frames_received,
            "frames_ignored": self.frames_ignored,
            "violations": violations,
            "clamps": self.codecs.clamp_report(),
            "lateness_p50_s": late.p50_s,
            "lateness_p99_s": late.p99_s,
            "lateness_max_s": late.max_s,
            "missed_slots": late.missed,
        }
