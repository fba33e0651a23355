"""Rules that remove known false positives from ``doc.ents``.

Error analysis (``evaluate``'s "most frequent false positives") often finds a
mistake a model repeats that a rule can name: a word always tagged but never
an entity of that type. ``ner_plus_entity_filter`` drops the entities a rule
matches, after the model:

    [components.entity_filter]
    factory = "ner_plus_entity_filter"
    rules = [{"label": "ORG", "pattern": [{"LOWER": "reuters"}]}]

A rule holds a ``label`` (the entity type it applies to) and a ``pattern``
(spaCy ``Matcher`` token patterns: LOWER, ORTH, SHAPE, IS_UPPER, ...); an
entity of that type is removed when the pattern matches exactly its tokens.
Removed entities stay in the ner_plus span group (``doc.spans``), so their
confidences can still be read. The rules live in the config: saving and
loading the pipeline keeps them.
"""
from typing import Any, Dict, List, Sequence

from spacy.errors import MatchPatternError
from spacy.language import Language
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span


class EntityFilter:
    """Removes the entities of ``doc.ents`` that a rule matches exactly."""

    def __init__(self, nlp: Language, name: str, *, rules: Sequence[Dict[str, Any]]):
        self.name = name
        self.rules = [dict(rule) for rule in rules]
        self.matcher = Matcher(nlp.vocab, validate=True)
        self.labels: Dict[int, str] = {}
        for i, rule in enumerate(self.rules):
            where = f"[components.{name}] rules[{i}]"
            if not isinstance(rule, dict) or set(rule) - {"label", "pattern"} or not {"label", "pattern"} <= set(rule):
                raise ValueError(f"{where}: a rule is {{\"label\": TYPE, \"pattern\": [token patterns]}}, not {rule!r}")
            if not isinstance(rule["label"], str) or not rule["label"]:
                raise ValueError(f"{where}: label must be an entity type, not {rule['label']!r}")
            key = f"{name}-{i}"
            try:
                self.matcher.add(key, [rule["pattern"]])
            except (MatchPatternError, ValueError, TypeError) as err:
                raise ValueError(f"{where}: not a spaCy Matcher token pattern: {rule['pattern']!r} ({err})") from None
            self.labels[nlp.vocab.strings[key]] = rule["label"]

    def __call__(self, doc: Doc) -> Doc:
        removed = {(ent.start, ent.end, ent.label_) for ent in self.removed(doc)}
        if removed:
            doc.set_ents([ent for ent in doc.ents if (ent.start, ent.end, ent.label_) not in removed], default="outside")
        return doc

    def removed(self, doc: Doc) -> List[Span]:
        """The entities of ``doc`` that the rules match (what ``__call__`` removes)."""
        if not doc.ents:
            return []
        matched = {(start, end, self.labels[key]) for key, start, end in self.matcher(doc)}
        return [ent for ent in doc.ents if (ent.start, ent.end, ent.label_) in matched]


@Language.factory("ner_plus_entity_filter", assigns=["doc.ents"], default_config={"rules": []})
def make_entity_filter(nlp: Language, name: str, rules: List[Dict[str, Any]]) -> EntityFilter:
    """Create the ``ner_plus_entity_filter`` pipe.

    rules (List[Dict[str, Any]]): {"label": TYPE, "pattern": [token patterns]}
        each; an entity of TYPE whose tokens the pattern matches exactly is removed.
    """
    return EntityFilter(nlp, name, rules=rules)
