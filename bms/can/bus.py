"""Bus endpoints through python-can: any interface it supports, or an in-process virtual bus.

Outside tests python-can's own configuration (``~/.canrc``, ``CAN_INTERFACE``/``CAN_CHANNEL``/
``CAN_BITRATE``, arguments) is honoured; tests use :func:`open_virtual_bus`, which ignores it.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

import can

from bms.errors import InputError

DEFAULT_BITRATE_BPS = 500_000


class SimMessage(can.Message):
    """A :class:`can.Message` whose deep copy is a cheap field copy.

    python-can's virtual bus deep-copies every sent message once per receiver; the generic
    ``copy.deepcopy`` machinery costs ~4x a plain field copy. The copy made here is just as
    independent (own ``bytearray``; the channel is an immutable name), so receivers see exactly
    what they would with a plain :class:`can.Message`.
    """

    __slots__ = ()

    @classmethod
    def data_frame(
        cls, arbitration_id: int, is_extended_id: bool, data: bytes, timestamp: float
    ) -> SimMessage:
        """A classic data frame, built without the general constructor's argument handling."""
        new = _new_message(cls)
        new.timestamp = timestamp
        new.arbitration_id = arbitration_id
        new.is_extended_id = is_extended_id
        new.is_remote_frame = False
        new.is_error_frame = False
        new.channel = None
        new.dlc = len(data)
        new.data = bytearray(data)
        new.is_fd = False
        new.is_rx = True  # can.Message's default; the virtual bus sets it on each copy
        new.bitrate_switch = False
        new.error_state_indicator = False
        return new

    def __deepcopy__(self, memo: dict[int, Any] | None) -> SimMessage:
        new = _new_message(SimMessage)
        new.timestamp = self.timestamp
        new.arbitration_id = self.arbitration_id
        new.is_extended_id = self.is_extended_id
        new.is_remote_frame = self.is_remote_frame
        new.is_error_frame = self.is_error_frame
        channel = self.channel
        # Channels are names (str/int) in practice; anything else takes the generic path.
        new.channel = channel if isinstance(channel, (str, int, type(None))) else deepcopy(channel)
        new.dlc = self.dlc
        new.data = bytearray(self.data)
        new.is_fd = self.is_fd
        new.is_rx = self.is_rx
        new.bitrate_switch = self.bitrate_switch
        new.error_state_indicator = self.error_state_indicator
        return new


_new_message = object.__new__


def open_bus(
    interface: str | None = None,
    channel: str | int | None = None,
    bitrate: int | None = DEFAULT_BITRATE_BPS,
    *,
    receive_own_messages: bool = False,
    ignore_config: bool = False,
    **kwargs: Any,
) -> can.BusABC:
    """Open a python-can bus; unset arguments come from python-can's configuration.

    The result is a context manager: use ``with open_bus(...) as bus:`` so it is always shut down.
    Failures (unknown interface, missing hardware) become one-line :class:`InputError`.
    """
    args: dict[str, Any] = dict(kwargs)
    if interface is not None:
        args["interface"] = interface
    if channel is not None:
        args["channel"] = channel
    if bitrate is not None:
        args["bitrate"] = bitrate
    try:
        return can.Bus(
            receive_own_messages=receive_own_messages, ignore_config=ignore_config, **args
        )
    except (can.CanError, ValueError, OSError, ImportError, NotImplementedError) as exc:
        where = f"{interface or 'configured interface'}:{channel if channel is not None else ''}"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"CAN bus {where}: cannot open: {first}") from None


def open_virtual_bus(
    channel: str, *, receive_own_messages: bool = False, rx_queue_size: int = 0
) -> can.BusABC:
    """In-process virtual bus for tests and single-process runs.

    Ignores user configuration, keeps the sender's (simulated) timestamps, and by default has an
    unbounded receive queue so a slow reader never blocks the sender.
    """
    return can.Bus(
        interface="virtual",
        channel=channel,
        ignore_config=True,
        preserve_timestamps=True,
        receive_own_messages=receive_own_messages,
        rx_queue_size=rx_queue_size,
    )
