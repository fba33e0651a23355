"""spacy-ner-plus: transformer token-classification NER for spaCy."""
# imported for their registrations (factories, architectures, misc functions, augmenters, schedules)
from .ml import architectures, backbone  # noqa: F401
from .pipeline import bounded_tokenizer, entity_filter  # noqa: F401
from .pipeline.ner_plus import NerPlus, make_ner_plus, ner_plus_pipe_names, stale_calibrations
from .pipeline.scored_spans import register_scored_spans_key
from .training import augment, schedules  # noqa: F401

__version__ = "0.2.0"
__all__ = ["NerPlus", "make_ner_plus", "ner_plus_pipe_names", "register_scored_spans_key", "stale_calibrations", "__version__"]
