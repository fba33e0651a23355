"""Speed benchmarks: inference and training throughput, int8, padding, profiles.

Run each with ``python -m bench NAME``; registered in ``bench.EXPERIMENTS``."""
