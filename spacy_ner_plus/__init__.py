"""spacy-ner-plus: transformer token-classification NER for spaCy."""
from . import architectures, backbone, schedules, windowing  # noqa: F401  (registrations)
from .pipeline_component import NerPlus, make_ner_plus

__version__ = "0.1.0"
__all__ = ["NerPlus", "make_ner_plus", "__version__"]
