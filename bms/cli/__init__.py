"""The ``bms`` command: one module per verb, each with ``add_subparser`` and ``_do_<verb>``."""
