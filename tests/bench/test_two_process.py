"""Two processes on one machine: the BMS node (``bms node bms``) in a child process, the pack
node, VCU and charger in this one, frames through a python-can-remote server on 127.0.0.1.
Killing the BMS must make the pack's contactor drivers and the VCU report the timeout within
their configured times; nothing may hang (every wait has a timeout, children end in finally)."""

from __future__ import annotations

import socket
import subprocess
import sys

import can
import pytest

from bms.bench.buses import SharedBus
from bms.bench.realtime import BenchSystem, DeadlineLoop, MonotonicClock
from bms.bench.remote import read_line, spawn_remote_server, stop_process
from bms.can.e2e import E2EConfig, E2EKind
from bms.firmware.codes import BmsState, RequestMode
from bms.pack import InitialState
from bms.pack.node import DriverEventKind, PackNodeParams
from bms.sim.system import SystemConfig

pytest.importorskip("can_remote", reason="python-can-remote is not installed (bench extra)")

CONTACTOR_TIMEOUT_S = 0.1  # pack-side coil drivers (PackNodeParams default)
VCU_TIMEOUT_S = E2EConfig().timeout_cycles * 0.1  # BmsState is a 100 ms message
TICK_S = 0.01
#: Scheduling slack on a shared 2-core CI box: the kill itself, a late tick, a frame in flight.
SLACK_S = 0.1


def _bms_state(system: BenchSystem) -> BmsState | None:
    return system.bms_state()


def test_pack_side_detects_a_killed_bms_process_within_the_configured_timeouts():
    server = spawn_remote_server("two-process")
    child = None
    try:
        clock = MonotonicClock()
        bus = SharedBus(can.Bus(interface="remote", channel=server.url, ignore_config=True), clock)
        config = SystemConfig(initial=InitialState(soc=0.6, temp_c=25.0), seed=2)
        with BenchSystem(
            config,
            bus,
            dut_external=True,
            loop=DeadlineLoop(TICK_S, clock),
            pack_node_params=PackNodeParams(contactor_cmd_timeout_s=CONTACTOR_TIMEOUT_S),
        ) as system:
            cmd = [sys.executable, "-m", "bms", "node", "bms", "-i", "remote", "-c", server.url]
            child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            # the pack side runs (in real time) while the BMS process starts up
            up = system.run_until(lambda s: _bms_state(s) is not None, timeout_s=30.0)
            assert up is not None, "the BMS process never answered on the bus"
            assert read_line(child, 5.0).startswith("bms node bms: ready")

            system.request(RequestMode.DRIVE)
            drive = system.run_until(lambda s: _bms_state(s) == BmsState.DRIVE, timeout_s=10.0)
            assert drive is not None, f"no DRIVE: {system.vcu.latest.get('BmsState')}"
            assert system.pack.contactors_closed[:2] == (True, True)
            system.requested_power_w = 15e3  # drive a little: the pack delivers current
            system.run(2.0)
            assert system.pack.current_a > 10.0, (
                f"{system.pack.current_a:.1f} A in {_bms_state(system)}, contactors "
                f"{system.pack.contactors_closed}, VCU limits {system.vcu.latest.get('BmsLimits')}"
            )

            child.kill()  # SIGKILL: no goodbye frames, the sockets just go quiet
            killed_s = system.time_s
            lost = system.run_until(
                lambda s: any(
                    e.kind is DriverEventKind.CONTACTOR_CMD_LOST and e.time_s > killed_s
                    for e in s.pack_node.driver_events
                ),
                timeout_s=2.0,
            )
            assert lost is not None, "pack node never noticed the lost contactor commands"
            assert lost - killed_s <= CONTACTOR_TIMEOUT_S + SLACK_S
            system.run(VCU_TIMEOUT_S + SLACK_S)  # coils de-energised: the mains drop out
            assert not any(system.pack.contactors_closed)
            vcu_timeouts = [
                e
                for e in system.vcu.events
                if e.kind is E2EKind.TIMEOUT and e.message == "BmsState" and e.time_s > killed_s
            ]
            assert vcu_timeouts, "the VCU (runner side) did not report the BmsState timeout"
            assert vcu_timeouts[0].time_s - killed_s <= VCU_TIMEOUT_S + SLACK_S
            report = system.timing_report()
            print(f"\npack side in real time: {report.summary()}")
            assert report.frames > 0 and report.skipped_ticks <= report.ticks // 10
    finally:
        if child is not None:
            stop_process(child)
        server.close()


def test_socketcan_path_runs_where_vcan_exists():
    """`bms node pack` on vcan0; skipped where the kernel has no CAN (this CI, macOS, Windows)."""
    if not hasattr(socket, "AF_CAN"):
        pytest.skip("no socket.AF_CAN on this platform")
    try:
        with socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW) as s:
            s.bind(("vcan0",))
    except OSError as exc:
        pytest.skip(f"no usable vcan0 interface: {exc}")
    with can.Bus(interface="socketcan", channel="vcan0", ignore_config=True) as spy:
        cmd = [sys.executable, "-m", "bms", "node", "pack", "-i", "socketcan", "-c", "vcan0"]
        result = subprocess.run(
            [*cmd, "--duration", "1", "--quiet"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode in (0, 1), result.stderr
        ids = {m.arbitration_id for m in iter(lambda: spy.recv(0.0), None)}
        assert {0x108, 0x109, 0x150} <= ids
