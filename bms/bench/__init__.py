"""Bench mode: nodes on real python-can interfaces, in real time, in separate processes; replay.

- :mod:`bms.bench.buses`: one interface shared by the local nodes, frames stamped on the clock.
- :mod:`bms.bench.realtime`: absolute-deadline loop, lateness statistics, jitter budget, and
  :class:`~bms.bench.realtime.BenchSystem` (the real-time counterpart of the simulated system).
- :mod:`bms.bench.remote`: python-can-remote server bound to 127.0.0.1 (two processes, one bus).
- :mod:`bms.bench.replay`: feed a recorded log into the BMS model and diff its output frames.
"""
