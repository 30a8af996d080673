"""python-can-remote server in front of a python-can bus, bound to 127.0.0.1 unless told otherwise.

Two processes on one machine (CI, a laptop bench) cannot share python-can's in-process virtual
bus; a python-can-remote server can: every client connection gets its own endpoint on the
server's bus, and clients open ``can.Bus(interface="remote", channel="ws://127.0.0.1:PORT/")``.
The server binds all interfaces by default in python-can-remote; here the host is always given.

Run in a thread (:func:`serve_remote`) or as its own process (:func:`spawn_remote_server`, or
``python -m bms.bench.remote --port 0``, which prints the URL on its first stdout line).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bms.errors import InputError

LOCALHOST = "127.0.0.1"
#: How long a spawned server may take to print its URL (s): Python start-up plus imports.
SPAWN_TIMEOUT_S = 20.0
#: How long a server process gets to exit on SIGTERM before it is killed (s).
STOP_TIMEOUT_S = 5.0


def require_can_remote() -> Any:
    """The ``can_remote`` module, or a one-line InputError saying how to install it."""
    try:
        import can_remote
    except ImportError:
        raise InputError(
            "python-can-remote is not installed: pip install 'python-can-remote>=0.3'"
        ) from None
    return can_remote


def remote_url(host: str, port: int) -> str:
    """The channel string clients pass with ``interface="remote"``."""
    return f"ws://{host}:{port}/"


class RemoteServerThread:
    """A python-can-remote server serving from a daemon thread; :meth:`close` stops it."""

    def __init__(
        self, host: str = LOCALHOST, port: int = 0, interface: str = "virtual", **bus_config: Any
    ) -> None:
        can_remote = require_can_remote()
        try:
            self.server = can_remote.RemoteServer(
                host=host, port=port, interface=interface, **bus_config
            )
        except OSError as exc:
            raise InputError(f"remote server {host}:{port}: cannot bind: {exc}") from None
        self.host = host
        self.port = int(self.server.server_port)
        self.url = remote_url(host, self.port)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Stop serving, close the listening socket and the client connections' buses."""
        self.server.shutdown()
        self.server.server_close()
        for client in list(self.server.clients):
            client.running = False  # each client's reader thread shuts its bus down
            with contextlib.suppress(Exception):
                client.close()
        self._thread.join(timeout_s)

    def __enter__(self) -> RemoteServerThread:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def serve_remote(
    host: str = LOCALHOST, port: int = 0, interface: str = "virtual", **bus_config: Any
) -> RemoteServerThread:
    """Start a server thread in front of ``interface`` (default: a virtual bus); port 0 = free."""
    return RemoteServerThread(host, port, interface, **bus_config)


@dataclass
class RemoteServerProcess:
    """A server in a child process: its URL and the process (ended by :meth:`close`)."""

    process: subprocess.Popen[str]
    url: str

    def close(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait, then SIGKILL if it is still there."""
        stop_process(self.process, timeout_s)

    def __enter__(self) -> RemoteServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stop_process(process: subprocess.Popen[Any], timeout_s: float = STOP_TIMEOUT_S) -> int | None:
    """End a child process: SIGTERM, wait up to ``timeout_s``, then SIGKILL; its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout_s)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
    return process.poll()


def read_line(process: subprocess.Popen[str], timeout_s: float) -> str | None:
    """First stdout line of ``process`` within ``timeout_s`` (None on timeout or exit)."""
    assert process.stdout is not None
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            return line.strip() or None
        if process.poll() is not None:
            return None
    return None


def spawn_remote_server(
    channel: str = "bench",
    host: str = LOCALHOST,
    port: int = 0,
    timeout_s: float = SPAWN_TIMEOUT_S,
) -> RemoteServerProcess:
    """Start ``python -m bms.bench.remote`` in front of a virtual bus; wait for its URL."""
    require_can_remote()
    cmd = [sys.executable, "-m", "bms.bench.remote", "--host", host, "--port", str(port)]
    cmd += ["--channel", channel]
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    url = read_line(process, timeout_s)
    if url is None or not url.startswith("ws://"):
        stop_process(process)
        err = process.stderr.read() if process.stderr and not process.stderr.closed else ""
        raise RuntimeError(f"remote server did not start within {timeout_s} s: {url!r} {err}")
    return RemoteServerProcess(process, url)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bms.bench.remote``: serve until SIGTERM/Ctrl-C; prints the URL first."""
    parser = argparse.ArgumentParser(
        prog="python -m bms.bench.remote",
        description="python-can-remote server in front of a python-can bus (default: virtual).",
    )
    parser.add_argument("--host", default=LOCALHOST, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    parser.add_argument("--interface", default="virtual", help="python-can interface served")
    parser.add_argument("--channel", default="bench", help="channel of that interface")
    args = parser.parse_args(argv)
    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    try:
        server = serve_remote(args.host, args.port, args.interface, channel=args.channel)
    except InputError as exc:
        print(f"bms: error: {exc}", file=sys.stderr)
        return 2
    print(server.url, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
