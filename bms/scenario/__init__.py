"""Scenarios: YAML format, the runner on the simulated clock, expectations and run artifacts."""
