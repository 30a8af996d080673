"""Firmware-in-the-loop BMS emulator for solid-state lithium-metal packs.

Sub-packages: ``cellmodel`` (cell parameters and the equivalent-circuit maths shared by plant and
firmware), ``pack`` (the virtual pack), ``can`` (DBC codecs, E2E, scheduling, buses),
``firmware`` (the BMS model under test) and ``cli`` (the ``bms`` command).
"""

__version__ = "0.1.0"
