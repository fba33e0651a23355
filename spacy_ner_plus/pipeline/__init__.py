"""Registered pipes: ner_plus, pii_patterns, ner_plus_entity_filter, and the scored span groups."""
