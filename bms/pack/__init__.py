"""The virtual pack (plant): cells as numpy arrays, thermal, pressure, sensors, HV path, faults."""

from bms.pack.pack import InitialState, Measurements, Pack
from bms.pack.params import PackParams, load_pack

__all__ = ["InitialState", "Measurements", "Pack", "PackParams", "load_pack"]
