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
confidences can still be read. Rules come from the config, or, when they are
many (a list made from data), from ``initialize`` like the entity_ruler's
patterns; those are saved with the pipe (``rules.json``).

``spacy-ner-plus.person_not_names.v1`` (``@misc``) gives the rules of the PII
pipeline: PERSON entities that are address terms, chat words or pieces of a
contraction ("Bro", "mate", "ok", "y'all", the "na" of "gonna"), which a model
trained on formal text tags in chat:

    [components.entity_filter.rules]
    @misc = "spacy-ner-plus.person_not_names.v1"

None of the words matched in any case is a name in Faker's name lists of ten
locales (the test checks); those that are names somewhere ("mate", "pal") and
the contraction pieces match in lower case only (so "Mate" and the surname
"Na" are kept), and a word that is also a name ("Will", "Grace", "Mark") is not
among them.
"""
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import srsly
from spacy.errors import MatchPatternError
from spacy.language import Language
from spacy.util import registry
from spacy.matcher import Matcher
from spacy.tokens import Doc, Span
from spacy.util import ensure_path


class EntityFilter:
    """Removes the entities of ``doc.ents`` that a rule matches exactly."""

    def __init__(self, nlp: Language, name: str, *, rules: Sequence[Dict[str, Any]]):
        self.name = name
        self.vocab = nlp.vocab
        self.matcher = Matcher(nlp.vocab, validate=True)
        self.rule_labels: Dict[int, str] = {}  # matcher key -> label ("labels" would land in meta.json as a dict)
        self.rules: List[Dict[str, Any]] = []  # every rule: the config's, then those added by initialize
        self.added: List[Dict[str, Any]] = []  # initialize's, saved with the pipe (the config keeps its own)
        self._add(rules, f"[components.{name}] rules")

    def _add(self, rules: Sequence[Dict[str, Any]], source: str) -> None:
        for i, rule in enumerate(rules):
            where = f"{source}[{i}]"
            if not isinstance(rule, dict) or set(rule) != {"label", "pattern"}:
                raise ValueError(f"{where}: a rule is {{\"label\": TYPE, \"pattern\": [token patterns]}}, not {rule!r}")
            if not isinstance(rule["label"], str) or not rule["label"]:
                raise ValueError(f"{where}: label must be an entity type, not {rule['label']!r}")
            key = f"{self.name}-{len(self.rules)}"
            try:
                self.matcher.add(key, [rule["pattern"]])
            except (MatchPatternError, ValueError, TypeError) as err:
                raise ValueError(f"{where}: not a spaCy Matcher token pattern: {rule['pattern']!r} ({err})") from None
            self.rule_labels[self.vocab.strings[key]] = rule["label"]
            self.rules.append(dict(rule))

    def initialize(self, get_examples: Optional[Callable] = None, *, nlp: Optional[Language] = None, rules: Sequence[Dict[str, Any]] = ()) -> None:
        """Add rules too many for the config (``[initialize.components.NAME.rules]``,
        e.g. ``@readers = "srsly.read_json.v1"``), as spaCy's entity_ruler takes patterns;
        they replace those of an earlier initialize or load."""
        self._replace_added(rules, f"[initialize.components.{self.name}] rules")

    def __call__(self, doc: Doc) -> Doc:
        removed = {(ent.start, ent.end, ent.label_) for ent in self.removed(doc)}
        if removed:
            doc.set_ents([ent for ent in doc.ents if (ent.start, ent.end, ent.label_) not in removed], default="outside")
        return doc

    def removed(self, doc: Doc) -> List[Span]:
        """The entities of ``doc`` that the rules match (what ``__call__`` removes)."""
        if not doc.ents:
            return []
        matched = {(start, end, self.rule_labels[key]) for key, start, end in self.matcher(doc)}
        return [ent for ent in doc.ents if (ent.start, ent.end, ent.label_) in matched]

    def _replace_added(self, rules: Sequence[Dict[str, Any]], source: str) -> "EntityFilter":
        config_rules = self.rules[: len(self.rules) - len(self.added)]
        self.matcher, self.rule_labels, self.rules, self.added = Matcher(self.vocab, validate=True), {}, [], []
        self._add(config_rules, f"[components.{self.name}] rules")
        self._add(rules, source)
        self.added = [dict(rule) for rule in rules]
        return self

    def to_bytes(self, *, exclude: Iterable[str] = ()) -> bytes:
        return srsly.json_dumps(self.added).encode("utf8")

    def from_bytes(self, data: bytes, *, exclude: Iterable[str] = ()) -> "EntityFilter":
        return self._replace_added(srsly.json_loads(data), f"{self.name} bytes")

    def to_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> None:
        path = ensure_path(path)
        path.mkdir(parents=True, exist_ok=True)
        srsly.write_json(path / "rules.json", self.added)

    def from_disk(self, path: Union[str, Path], *, exclude: Iterable[str] = ()) -> "EntityFilter":
        path = ensure_path(path) / "rules.json"
        return self._replace_added(srsly.read_json(path), str(path))


def rules_from_dropped_types(docs: Iterable[Doc], keep: Sequence[str], from_types: Sequence[str] = ()) -> Tuple[List[Dict[str, Any]], int, int]:
    """Rules removing kept-type predictions of texts annotated only with other types.

    docs: the training sentences with every type annotated (before ``convert
        --labels`` dropped some). A mention text is a rule's text when none
        of its annotations is a kept type and, with ``from_types``, all of
        them are among those.
    RETURNS: (one rule per such text and kept type, number of such texts,
        number of distinct mention texts).
    RAISES (ValueError): a kept type the docs never annotate, or a kept type
        in ``from_types``.
    """
    labels: Dict[Tuple[str, ...], set] = defaultdict(set)
    for doc in docs:
        for ent in doc.ents:
            labels[tuple(t.text for t in ent)].add(ent.label_)
    missing = sorted(set(keep) - {label for ls in labels.values() for label in ls})
    if missing:
        raise ValueError(f"no mention of type {', '.join(missing)}")
    if set(from_types) & set(keep):
        raise ValueError(f"from_types {', '.join(from_types)} names a kept type")
    texts = sorted(words for words, ls in labels.items() if not ls & set(keep) and (not from_types or ls <= set(from_types)))
    rules = [{"label": label, "pattern": [{"ORTH": w} for w in words]} for words in texts for label in keep]
    return rules, len(texts), len(labels)


@Language.factory("ner_plus_entity_filter", assigns=["doc.ents"], default_config={"rules": []})
def make_entity_filter(nlp: Language, name: str, rules: List[Dict[str, Any]]) -> EntityFilter:
    """Create the ``ner_plus_entity_filter`` pipe.

    rules (List[Dict[str, Any]]): {"label": TYPE, "pattern": [token patterns]}
        each; an entity of TYPE whose tokens the pattern matches exactly is removed.
    """
    return EntityFilter(nlp, name, rules=rules)


# address terms, chat words and contracted forms that are never a person's name in chat
PERSON_NOT_NAMES = (
    "bro", "bruh", "bruv", "dude", "fam", "sis", "bae", "babe", "hun", "guys", "yall", "ya",
    "ok", "okay", "k", "kk", "lol", "lmao", "rofl", "omg", "thx", "thanks", "pls", "plz", "btw", "idk", "tbh",
    "imo", "nvm", "brb", "ty", "np", "gonna", "wanna", "gotta", "kinda", "sorta", "lemme", "gimme", "dunno",
    "innit", "cheers", "hey", "hiya", "yo", "sup", "yeah", "yep", "nope", "haha", "hehe",
)
# also given names somewhere ("Mate", "Pal"): removed in lower case only
PERSON_NOT_NAMES_LOWER_ONLY = ("mate", "pal", "buddy")
# spaCy's tokenizer splits "gonna", "gotta", "y'all" and "ain't" into these pieces
CONTRACTION_PIECES = ((("gon", "wan"), ("na",)), (("got",), ("ta",)), (("y'",), ("all",)), (("ai",), ("n't",)))


@registry.misc("spacy-ner-plus.person_not_names.v1")
def person_not_names(label: str = "PERSON") -> List[Dict[str, Any]]:
    """Rules for ``ner_plus_entity_filter`` that remove ``label`` entities made of
    an address term, a chat word or a contraction piece (module docstring).

    label (str): the person type of the pipeline (PERSON, or PER for CoNLL types).
    RETURNS (List[Dict[str, Any]]): the rules.
    """
    rules: List[Dict[str, Any]] = [
        {"label": label, "pattern": [{"LOWER": {"IN": list(PERSON_NOT_NAMES)}}]},
        {"label": label, "pattern": [{"ORTH": {"IN": list(PERSON_NOT_NAMES_LOWER_ONLY)}}]},
    ]
    for first, second in CONTRACTION_PIECES:
        # the whole contraction, or one of its pieces alone, in lower case only
        rules.append({"label": label, "pattern": [{"ORTH": {"IN": list(first)}}, {"ORTH": {"IN": list(second)}}]})
        rules.append({"label": label, "pattern": [{"ORTH": {"IN": list(first + second)}}]})
    return rules
