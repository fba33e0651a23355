"""Imported by `spacy train --code` where spacy-ner-plus is on the path but not installed
(no entry points), as on the GPU machine."""
import spacy_ner_plus  # noqa: F401
