"""Accuracy benchmarks: F1 against peers, variants, errors, augmentation, LoRA, PII.

Run each with ``python -m bench NAME``; registered in ``bench.EXPERIMENTS``."""
