"""Cell parameters and equivalent-circuit maths shared by the virtual pack and the BMS model.

Sharing the *model* is what a real BMS does (it carries a model of its cell); the plant's state
never crosses this line.
"""

from bms.cellmodel.params import CellParams, load_cell

__all__ = ["CellParams", "load_cell"]
