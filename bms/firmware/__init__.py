"""The BMS model: the firmware under test.

It sees only decoded CAN signals and acts only by sending frames; it imports nothing from
``bms.pack`` (a real BMS never sees the plant's truth), only the shared cell model and its own
parameter files under ``bms/data/firmware/``.
"""
