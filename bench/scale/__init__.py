"""Scale benchmarks: long documents, windows, batch annotation engines.

Run each with ``python -m bench NAME``; registered in ``bench.EXPERIMENTS``."""
