"""spacy-ner-plus: transformer token-classification NER for spaCy."""
from . import architectures, augment, backbone, entity_filter, schedules  # noqa: F401  (registrations)
from .pipeline_component import NerPlus, make_ner_plus, ner_plus_pipe_names, register_scored_spans_key, stale_calibrations

__version__ = "0.2.0"
__all__ = ["NerPlus", "make_ner_plus", "ner_plus_pipe_names", "register_scored_spans_key", "stale_calibrations", "__version__"]
