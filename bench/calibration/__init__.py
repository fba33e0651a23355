"""Calibration benchmarks: maps, policies, thresholds, ECE and its floor.

Run each with ``python -m bench NAME``; registered in ``bench.EXPERIMENTS``."""
