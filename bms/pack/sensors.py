"""Sensor models: seeded calibration errors, noise, quantisation, range clamps and faults.

One :class:`SensorBank` holds all channels of one kind as arrays. Calibration (offset, gain) is
drawn once from a seeded generator; noise comes from a second stream so that reading sensors more
or less often never changes the pack's manufacturing spread.
"""

from __future__ import annotations

import numpy as np

from bms.pack.params import SensorSpec


class SensorBank:
    """``n`` channels of one sensor kind with per-channel fault switches."""

    def __init__(
        self, spec: SensorSpec, n: int, cal_rng: np.random.Generator, noise_rng: np.random.Generator
    ) -> None:
        self.spec = spec
        self.n = n
        self.offset = (
            cal_rng.normal(0.0, spec.offset_sigma, n) if spec.offset_sigma else np.zeros(n)
        )
        self.gain = 1.0 + (cal_rng.normal(0.0, spec.gain_sigma, n) if spec.gain_sigma else 0.0)
        self.gain = np.broadcast_to(self.gain, (n,)).copy()
        self._rng = noise_rng
        # Fault switches: stuck holds the last reading, open reads what a broken line reads.
        self.stuck = np.zeros(n, dtype=bool)
        self.open = np.zeros(n, dtype=bool)
        self.extra_offset = np.zeros(n)
        self.extra_noise = np.zeros(n)
        self.last = np.full(n, np.nan)
        self._noise_sigma = np.full(n, spec.noise)
        self._gain0 = float(self.gain[0])

    def set_noise(self, channel: int, extra_sigma: float) -> None:
        """Add independent noise of ``extra_sigma`` to one channel (0 removes it)."""
        self.extra_noise[channel] = extra_sigma
        self._noise_sigma = np.sqrt(self.spec.noise**2 + self.extra_noise**2)

    def set_stuck(self, channel: int, on: bool) -> None:
        """Freeze one channel at its last reading (a frozen ADC or a dead mux channel)."""
        if on and np.isnan(self.last[channel]):
            self.last[channel] = self.spec.open_value
        self.stuck[channel] = on

    def read(self, truth: np.ndarray) -> np.ndarray:
        """Convert true values to readings: gain, offset, noise, quantisation, clamp, faults."""
        spec = self.spec
        value = truth * self.gain + self.offset + self.extra_offset
        value += self._rng.standard_normal(self.n) * self._noise_sigma
        value = np.round(value / spec.lsb) * spec.lsb
        np.clip(value, spec.min, spec.max, out=value)
        value[self.open] = spec.open_value
        value[self.stuck] = self.last[self.stuck]
        self.last[:] = value
        return value

    def read_one(self, truth: float) -> float:
        """Single-channel :meth:`read` on plain floats (the 10 ms path: current, voltages)."""
        spec = self.spec
        if self.stuck[0]:
            return float(self.last[0])
        if self.open[0]:
            value = spec.open_value
        else:
            value = truth * self._gain0 + self.offset[0] + self.extra_offset[0]
            value += self._rng.standard_normal() * self._noise_sigma[0]
            value = min(max(round(value / spec.lsb) * spec.lsb, spec.min), spec.max)
        self.last[0] = value
        return value


def open_wire_view(
    cell_voltage_v: np.ndarray, open_channels: np.ndarray, channels_per_chip: int
) -> np.ndarray:
    """What a cell-monitoring chip measures with broken sense lines.

    A broken sense wire at the top of cell k leaves that input floating; it is pulled onto the
    wire below, so channel k reads about 0 V and channel k+1 of the same chip reads the sum of
    both cells (the top channel of a chip has no upper neighbour to take it).
    """
    if not open_channels.any():
        return cell_voltage_v
    seen = cell_voltage_v.copy()
    for k in np.flatnonzero(open_channels):
        if (k + 1) % channels_per_chip:
            seen[k + 1] += seen[k]
        seen[k] = 0.0
    return seen
