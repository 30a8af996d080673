"""Bus endpoints through python-can: any interface it supports, or an in-process virtual bus.

Outside tests python-can's own configuration (``~/.canrc``, ``CAN_INTERFACE``/``CAN_CHANNEL``/
``CAN_BITRATE``, arguments) is honoured; tests use :func:`open_virtual_bus`, which ignores it.
"""

from __future__ import annotations

from typing import Any

import can

from bms.errors import InputError

DEFAULT_BITRATE_BPS = 500_000


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
