"""Batch annotation: the local engine, the Ray Data engine and whole-or-nothing outputs."""
