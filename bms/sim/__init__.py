"""Simulation harness: the closed loop of pack, BMS and vehicle nodes on a simulated clock."""
