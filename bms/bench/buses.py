"""Bench bus plumbing: one real interface shared by several local nodes, on the node's clock.

On a bench one python-can interface often carries both DBCs (pack and vehicle IDs do not overlap)
and several nodes of one process (pack node, VCU, charger, an observer) sit on it. A real bus
object can be opened once, and a frame a node sends is seen by every *other* node on a real bus,
so :class:`SharedBus` owns the interface and hands out :class:`BusView` endpoints: each view
receives every frame from the interface plus the frames the other local views sent, like a
python-can virtual bus. Frames from the interface are restamped on the local clock: hardware,
remote and virtual backends stamp in their own time bases, while the E2E receivers, the BMS's
request-timing supervision and driver timeouts compare frame times with the ``now_s`` of the
loop. The interface's own stamp is kept and shifted by the smallest delay seen so far (receipt
time minus stamp), so the spacing of frames keeps the interface's precision instead of the
loop's 10 ms polling grid; a frame without a stamp gets its receipt time.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

import can

from bms.can.clock import Clock

#: How fast the time-base offset may grow again (s per s): follows a slower interface clock
#: (drift well under 100 ppm) while the smallest-delay frames keep pulling it back down.
OFFSET_RELAX = 1e-4

#: Largest number of frames a view keeps unread; older ones are dropped (and counted) so a view
#: nobody reads (an idle observer) cannot grow without bound on a long bench run.
DEFAULT_VIEW_QUEUE = 100_000


class BusView:
    """One node's endpoint on a :class:`SharedBus`: ``send``/``recv``/``shutdown`` like a bus.

    ``recv`` never blocks longer than ``timeout`` and returns frames in arrival order.
    """

    def __init__(self, owner: SharedBus, name: str, max_queue: int) -> None:
        self._owner = owner
        self.name = name
        self.channel_info = f"{owner.channel_info} view {name}"
        self._queue: collections.deque[can.Message] = collections.deque(maxlen=max_queue)
        self.dropped = 0
        self._closed = False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        """Put ``msg`` on the interface and hand a copy to the other local views."""
        self._owner._send(self, msg, timeout)

    def recv(self, timeout: float | None = 0.0) -> can.Message | None:
        """Next frame for this view, or None when none arrives within ``timeout`` seconds."""
        if not self._queue:
            self._owner.poll(timeout or 0.0)
        return self._queue.popleft() if self._queue else None

    def drain(self) -> list[can.Message]:
        """Every frame waiting for this view (after one poll of the interface), oldest first."""
        self._owner.poll(0.0)
        queue = self._queue
        # popleft, not list() + clear(): a transmit thread may deliver a frame in between
        return [queue.popleft() for _ in range(len(queue))]

    def _deliver(self, msg: can.Message) -> None:
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(msg)

    def shutdown(self) -> None:
        """Detach this view; the interface closes with its :class:`SharedBus`."""
        self._closed = True
        self._owner._detach(self)

    def __enter__(self) -> BusView:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


class SharedBus:
    """A python-can bus shared by the local nodes of one process, stamped on ``clock``.

    ``bus`` is any opened python-can bus (it is shut down by :meth:`shutdown`). ``channel`` is
    written into every frame (``"pack"``/``"vehicle"``) so logs can tell the buses apart.
    """

    def __init__(
        self,
        bus: can.BusABC,
        clock: Clock,
        *,
        channel: str | None = None,
        max_queue: int = DEFAULT_VIEW_QUEUE,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.channel = channel
        self.channel_info = str(getattr(bus, "channel_info", channel or "bus"))
        self._max_queue = max_queue
        self._views: list[BusView] = []
        self.frames_in = 0
        self.frames_out = 0
        self.send_errors = 0
        self._is_shutdown = False
        self._offset_s: float | None = None  # local clock minus interface stamp, smallest delay
        self._offset_at_s = 0.0
        # Frames go out from a transmit thread and, rarely, the main loop: one sender at a time
        # (python-can lets send and recv run in parallel, not two sends on every interface).
        self._send_lock = threading.Lock()

    def view(self, name: str = "") -> BusView:
        """A new endpoint for one local node (or an observer)."""
        view = BusView(self, name or f"view{len(self._views)}", self._max_queue)
        self._views.append(view)
        return view

    def poll(self, timeout_s: float = 0.0) -> int:
        """Move every frame waiting on the interface into the views; returns how many.

        Waits at most ``timeout_s`` for the first frame, then drains without waiting.
        """
        if self._is_shutdown:
            return 0
        count = 0
        msg = self.bus.recv(timeout_s)
        while msg is not None:
            msg.timestamp = self._local_stamp(msg.timestamp, self.clock.now_s())
            if self.channel is not None:
                msg.channel = self.channel
            for view in self._views:
                view._deliver(msg)
            count += 1
            msg = self.bus.recv(0.0)
        self.frames_in += count
        return count

    def _local_stamp(self, stamp_s: float, now_s: float) -> float:
        """``stamp_s`` (the interface's time base) on the local clock, never later than now."""
        if not stamp_s:
            return now_s
        offset = self._offset_s
        if offset is not None:
            offset += OFFSET_RELAX * (now_s - self._offset_at_s)
        if offset is None or now_s - stamp_s < offset:
            offset = now_s - stamp_s
        self._offset_s, self._offset_at_s = offset, now_s
        return min(now_s, stamp_s + offset)

    def _send(self, origin: BusView, msg: can.Message, timeout: float | None) -> None:
        if self.channel is not None:
            msg.channel = self.channel
        with self._send_lock:
            if self._is_shutdown:
                return
            try:
                self.bus.send(msg, timeout)
            except can.CanError:
                # A full TX queue or bus-off on real hardware: count it; the receivers' E2E
                # timeouts are what a real network would see, so the loop must not die on it.
                self.send_errors += 1
                return
            self.frames_out += 1
            for view in self._views:
                if view is not origin:
                    view._deliver(msg)

    def _detach(self, view: BusView) -> None:
        if view in self._views:
            self._views.remove(view)

    def shutdown(self) -> None:
        """Shut the interface down (idempotent)."""
        with self._send_lock:
            if self._is_shutdown:
                return
            self._is_shutdown = True
            self._views.clear()
        self.bus.shutdown()

    def __enter__(self) -> SharedBus:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
