"""Scoring a pipeline (strict entity-level seqeval metrics), calibrating one, reports, plots and displaCy pages."""
