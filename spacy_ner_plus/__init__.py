"""spacy-ner-plus: transformer token-classification NER for spaCy.

Importing the package is cheap: the public names below are imported on first
use (PEP 562), so ``python -m spacy_ner_plus --help`` starts without spaCy,
thinc or torch. spaCy finds the registered factories, architectures, misc
functions, augmenters and schedules through the entry points in setup.cfg, so
``spacy.load`` of a saved pipeline needs nothing imported by hand; the modules
that register them (``pipeline/``, ``ml/``, ``training/``) register on import.
"""
import importlib
from typing import TYPE_CHECKING, Any, List

__version__ = "0.2.0"

# public name -> the module that defines it
_LAZY = {
    "NerPlus": ".pipeline.ner_plus",
    "make_ner_plus": ".pipeline.ner_plus",
    "ner_plus_pipe_names": ".pipeline.ner_plus",
    "stale_calibrations": ".pipeline.ner_plus",
    "register_scored_spans_key": ".pipeline.scored_spans",
}

__all__ = ["NerPlus", "make_ner_plus", "ner_plus_pipe_names", "register_scored_spans_key", "stale_calibrations", "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports them
    from .pipeline.ner_plus import NerPlus, make_ner_plus, ner_plus_pipe_names, stale_calibrations
    from .pipeline.scored_spans import register_scored_spans_key


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_LAZY))
