"""Transmit thread of a real-time run: every prepared cyclic frame leaves at its own deadline.

The main loop fills and encodes each cyclic slot a tick ahead (:meth:`bms.can.node.Node.prepare`)
and puts it here. This thread sleeps to the earliest deadline, then protects each payload (alive
counter, CRC, injected faults, under the node's transmit lock, so counters never go backwards on
the wire even with event frames sent from the main loop) and sends it. Like a CAN driver's
transmit interrupt it pre-empts the application: the plant and the BMS tasks run in the main
thread, and a frame does not wait for them.

It also paces the main loop (:meth:`TxThread.sleep_until`): the loop wakes when the frames due at
its deadline have left, so the two threads do not fight for the GIL at the busiest instant.

Measured here (CPython 3.11, 2 cores), and used below: a thread woken from
``threading.Event.wait``, sleeping in short slices, or waking at the same instant as a busy
thread stayed without the GIL for milliseconds; one ``time.sleep`` to the deadline with the main
loop paced by this thread does not. A busy thread is asked to let go of the GIL after
``sys.getswitchinterval()``: 0.1 ms while a :class:`TxThread` runs instead of 5 ms took the 96s
pack's p99 lateness from 0.29-0.34 to 0.23-0.31 ms (tools/bench_jitter.py). Linux's 50 us
default timer slack is most of the wake-up lateness (set to 1 us for this thread).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import heapq
import itertools
import sys
import threading
import time
from typing import Any

from bms.can.clock import Clock
from bms.can.node import Node

#: GIL switch interval while a transmit thread runs (s): about the longest a due frame waits for
#: the main thread's Python code to let go of the GIL.
SWITCH_INTERVAL_S = 1e-4
#: Sleep when nothing is queued (s): how soon the first prepared frames are seen.
IDLE_SLEEP_S = 2e-3
#: The main loop waits this long past its deadline for the thread before it goes on anyway (s).
GATE_GRACE_S = 0.05
#: Timer slack of the transmit thread on Linux (ns): how late the kernel may wake it.
TIMER_SLACK_NS = 1000
PR_SET_TIMERSLACK = 29  # linux/prctl.h

_switch_lock = threading.Lock()
_switch_users = 0
_switch_saved = 0.005


def _fast_switching(on: bool) -> None:
    """Lower the GIL switch interval while at least one transmit thread runs."""
    global _switch_users, _switch_saved
    with _switch_lock:
        if on:
            if _switch_users == 0:
                _switch_saved = sys.getswitchinterval()
                sys.setswitchinterval(min(_switch_saved, SWITCH_INTERVAL_S))
            _switch_users += 1
        else:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_saved)


def _tight_timer_slack() -> None:
    """Ask Linux to wake this thread within ``TIMER_SLACK_NS`` of its sleep's end (else no-op)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0)


#: A queued slot: (deadline_s, sequence, node, message name, payloads). node None: a gate.
_Item = tuple[float, int, Node | None, str, list[bytes]]


class TxThread:
    """One thread sending the prepared cyclic frames of every local node at their deadlines.

    Implements :class:`bms.can.node.Outbox`. ``lateness_s`` holds, for every cyclic frame, the
    time it was handed to the interface minus its slot's deadline, on ``clock`` (the groups of a
    multiplexed message share a slot and leave one after the other). :meth:`check` re-raises, in
    the caller's thread, an error that ended the thread.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lateness_s: list[float] = []
        self.error: BaseException | None = None
        # appended by the main thread, emptied by this one (both atomic under the GIL)
        self._inbox: collections.deque[_Item] = collections.deque()
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._muted: set[int] = set()
        self._gate = threading.Lock()
        self._gate.acquire()  # released by the thread when a gate's deadline has been served
        self._running = False
        self._thread: threading.Thread | None = None

    # -- Outbox ---------------------------------------------------------------------------------
    def put(self, node: Node, name: str, payloads: list[bytes], deadline_s: float) -> None:
        """Send ``payloads`` of ``name`` at ``deadline_s`` (at once if it has passed)."""
        self._inbox.append((deadline_s, next(self._seq), node, name, payloads))

    # -- control --------------------------------------------------------------------------------
    def attach(self, nodes: list[Node]) -> None:
        """Make this thread the outbox of ``nodes`` (bus endpoints)."""
        for node in nodes:
            node.outbox = self

    def mute(self, node: Node) -> None:
        """Drop ``node``'s queued and future frames (a stopped ECU) until :meth:`unmute`."""
        self._muted.add(id(node))

    def unmute(self, node: Node) -> None:
        """Send ``node``'s frames again."""
        self._muted.discard(id(node))

    def start(self) -> None:
        """Start sending (idempotent)."""
        if self._thread is not None:
            return
        self._running = True
        _fast_switching(True)
        self._thread = threading.Thread(target=self._run, name="bms-tx", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop the thread (idempotent); frames not yet sent are dropped."""
        thread = self._thread
        if thread is None:
            return
        self._running = False
        thread.join(timeout_s)
        self._thread = None
        _fast_switching(False)

    def check(self) -> None:
        """Raise, here, the error that ended the thread (nothing while it is healthy)."""
        if self.error is not None:
            raise RuntimeError(f"transmit thread failed: {self.error!r}") from self.error

    def sleep_until(self, deadline_s: float) -> None:
        """Main loop: return at ``deadline_s``, once the frames due then have left.

        Waits on a lock, without the GIL; falls back to the clock when the thread is not running
        or has not answered ``GATE_GRACE_S`` after the deadline.
        """
        clock = self.clock
        if self._thread is None:
            clock.sleep_until(deadline_s)  # type: ignore[attr-defined]
            return
        self._inbox.append((deadline_s, next(self._seq), None, "", []))
        while True:
            timeout = max(deadline_s - clock.now_s(), 0.0) + GATE_GRACE_S
            if not self._gate.acquire(timeout=timeout):
                self.check()
                clock.sleep_until(deadline_s)  # type: ignore[attr-defined]
                return
            if clock.now_s() >= deadline_s:
                return
            # released for an earlier gate the loop had stopped waiting for: wait for this one

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        _tight_timer_slack()
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread by check()
            self.error = exc
        finally:
            if self._gate.locked():
                self._gate.release()  # never leave the main loop waiting

    def _loop(self) -> None:
        inbox, heap, muted, gate = self._inbox, self._heap, self._muted, self._gate
        now_s = self.clock.now_s
        lateness = self.lateness_s
        push, pop, sleep = heapq.heappush, heapq.heappop, time.sleep
        while self._running:
            while inbox:
                push(heap, inbox.popleft())
            now = now_s()
            if not heap:
                sleep(IDLE_SLEEP_S)
            elif heap[0][0] > now:
                sleep(heap[0][0] - now)  # one sleep to the deadline: see the module docstring
            else:
                deadline, _, node, name, payloads = pop(heap)
                if node is None:
                    if gate.locked():
                        gate.release()
                elif id(node) not in muted:
                    for payload in payloads:
                        stamp = now_s()
                        if node.send_prepared(name, [payload], stamp):  # 0: a fault dropped it
                            lateness.append(stamp - deadline)

    def __enter__(self) -> TxThread:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
