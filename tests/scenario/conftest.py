"""Scenario files under ``data/`` are inputs of these tests, not scenarios of the library."""

collect_ignore_glob = ["data/*"]
