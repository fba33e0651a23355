"""PII service benchmarks: latency, throughput, determinism under concurrency (load tests go here too).

Run each with ``python -m bench NAME``; registered in ``bench.EXPERIMENTS``."""
