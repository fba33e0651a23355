"""Mention replacement: a corpus augmenter for low-resource NER.

Every entity mention of an example is replaced by another mention of the
same type, drawn from a pool, so the model sees the same contexts with other
names (Dai & Adel 2020, "An Analysis of Simple Data Augmentation for Named
Entity Recognition": mention replacement). It plugs into spaCy's corpus
readers the way ``spacy.lower_case.v1`` does:

    [corpora.train.augmenter]
    @augmenters = "spacy-ner-plus.mention_replace.v1"
    mentions = ${paths.train}
    level = 0.5

The augmented example is yielded *instead* of the original, so an epoch keeps
its size and its number of optimizer steps (the learning-rate schedule is
sized from the corpus). Note that spaCy's training loop reads the training
corpus once when ``training.max_epochs >= 0`` and reshuffles that list every
epoch: an example's augmentation is then drawn once for the whole run, and
``level`` is the share of training examples seen only in their augmented form.

What the new example holds: the reference's tokens outside entities, each
mention replaced by the tokens of the drawn mention (its internal spaces kept,
the original mention's trailing space after its last token), entity labels
aligned to those tokens (missing entity annotation stays missing), the
reference's sentence starts and ``doc.cats``. The predicted Doc has the same
words and spaces, so alignment is one to one. Other annotations (tags, POS,
morphology, lemmas, dependencies, span groups, entity KB ids) are not carried
over: they would no longer describe the new tokens.
"""
import json
import random
import threading
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Example
from spacy.util import registry

# (words, spaces between the words): len(spaces) == len(words) - 1
Mention = Tuple[Tuple[str, ...], Tuple[bool, ...]]

CASINGS: Dict[str, Callable[[str], str]] = {
    "lower": str.lower,
    "upper": str.upper,
    # per token: "new york" -> "New York" (str.title would write "Mcdonald'S")
    "title": str.capitalize,
}


class MentionPool:
    """Entity mentions per label, each distinct mention text once, in the order first seen.

    Distinct texts rather than every occurrence: a draw then favours no
    frequent name, which is the point of showing the model other names.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.mentions: Dict[str, List[Mention]] = {}
        self._index: Dict[str, Dict[str, int]] = {}

    def add(self, label: str, words: List[str], spaces: List[bool]) -> None:
        """Add a mention unless its text is already in the label's pool.

        label (str): the entity label.
        words (List[str]): the mention's tokens.
        spaces (List[bool]): whether a space follows each token but the last.
        """
        text = mention_text(words, spaces)
        index = self._index.setdefault(label, {})
        if text not in index:
            index[text] = len(self.mentions.setdefault(label, []))
            self.mentions[label].append((tuple(words), tuple(spaces)))

    def draw(self, label: str, current: str, rng: random.Random) -> Optional[Mention]:
        """A random mention of ``label`` whose text differs from ``current``.

        label (str): the entity label.
        current (str): the text of the mention being replaced.
        rng (random.Random): the source of randomness.
        RETURNS (Optional[Mention]): None when the pool has no mention of the
            label other than ``current``.
        """
        candidates = self.mentions.get(label, [])
        excluded = self._index.get(label, {}).get(current)
        n = len(candidates) - (excluded is not None)
        if n <= 0:
            return None
        choice = rng.randrange(n)
        if excluded is not None and choice >= excluded:
            choice += 1
        return candidates[choice]

    def __len__(self) -> int:
        return sum(len(v) for v in self.mentions.values())

    @classmethod
    def from_docbin(cls, path: Path, nlp: Language) -> "MentionPool":
        """Every entity of a DocBin (a .spacy file or a directory of them)."""
        files = sorted(path.rglob("*.spacy")) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"{path}: no .spacy file in this directory for the mention pool")
        pool = cls(str(path))
        for file in files:
            try:
                docs = list(DocBin().from_disk(file).get_docs(nlp.vocab))
            except Exception as err:
                raise ValueError(f"{file}: cannot read it as a spaCy DocBin for the mention pool ({err})") from err
            for doc in docs:
                for ent in doc.ents:
                    pool.add(ent.label_, [t.text for t in ent], [bool(t.whitespace_) for t in ent[:-1]])
        return pool

    @classmethod
    def from_json(cls, path: Path, nlp: Language) -> "MentionPool":
        """A ``{"LABEL": ["mention text", ...]}`` file, texts tokenized by ``nlp.make_doc``.

        Whitespace around a text is stripped (it would become space tokens).
        """
        try:
            data = json.loads(path.read_text(encoding="utf8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read the mention pool as JSON ({err})") from err
        if not isinstance(data, dict):
            raise ValueError(f'{path}: the mention pool must be a JSON object {{"LABEL": ["mention text", ...]}}, not {type(data).__name__}')
        pool = cls(str(path))
        for label, texts in data.items():
            if not label.strip():
                raise ValueError(f"{path}: key {label!r}: an entity label must not be empty")
            if not isinstance(texts, list):
                raise ValueError(f"{path}: key {label!r}: expected a list of mention texts, got {type(texts).__name__}")
            for i, text in enumerate(texts):
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"{path}: key {label!r}, item {i}: expected a non-empty string, got {text!r}")
                doc = nlp.make_doc(text.strip())
                pool.add(label, [t.text for t in doc], [bool(t.whitespace_) for t in doc[:-1]])
        return pool


def mention_text(words: Tuple[str, ...], spaces: Tuple[bool, ...]) -> str:
    return "".join(w + (" " if s else "") for w, s in zip(words, spaces)) + words[-1]


def load_mention_pool(path: Union[str, Path], nlp: Language) -> MentionPool:
    """Read a mention pool: a ``.json`` file of texts per label, else a DocBin.

    path (Union[str, Path]): a .json file, a .spacy file or a directory of .spacy files.
    nlp (Language): its vocab reads the DocBin; its tokenizer splits JSON texts.
    RETURNS (MentionPool): the pool.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory for the mention pool (mentions)")
    pool = MentionPool.from_json(path, nlp) if path.suffix.lower() == ".json" else MentionPool.from_docbin(path, nlp)
    if not len(pool):
        raise ValueError(f"{path}: the mention pool holds no entity mention, so nothing could be replaced")
    return pool


class MentionReplaceAugmenter:
    """The augmenter: ``augmenter(nlp, example) -> Iterator[Example]``, as spaCy's Corpus calls it.

    It owns its random generator, so the same corpus order gives the same
    augmented examples. Counts of what it did are in ``counts``
    (``examples``, ``no_entities``, ``augmented``, ``replaced``) and, per
    label, in ``kept_without_pool``: mentions kept unchanged because the pool
    has no other mention of their label (a warning names each such label once).
    """

    def __init__(self, mentions: Union[str, Path], level: float, case_level: float, seed: int) -> None:
        for name, value in (("level", level), ("case_level", case_level)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"spacy-ner-plus.mention_replace.v1: {name} must be a probability in [0, 1], got {value}")
        if mentions is None or str(mentions) in ("", "None"):
            raise ValueError("spacy-ner-plus.mention_replace.v1: set mentions to a .spacy DocBin (such as ${paths.train}) or a .json file")
        self.mentions = Path(mentions)
        self.level = level
        self.case_level = case_level
        self.seed = seed
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()
        self.kept_without_pool: Counter = Counter()
        self._pool: Optional[MentionPool] = None
        self._lock = threading.Lock()

    def pool(self, nlp: Language) -> MentionPool:
        """The mention pool, read on the first call (it needs ``nlp``), once."""
        with self._lock:
            if self._pool is None:
                self._pool = load_mention_pool(self.mentions, nlp)
            return self._pool

    def __call__(self, nlp: Language, example: Example) -> Iterator[Example]:
        self.counts["examples"] += 1
        if not example.reference.ents:
            self.counts["no_entities"] += 1
            yield example
        elif self.level > 0.0 and self.rng.random() < self.level:
            yield self.replace_mentions(nlp, example)
        else:
            yield example

    def replace_mentions(self, nlp: Language, example: Example) -> Example:
        """The example with every entity mention of its reference replaced.

        nlp (Language): the pipeline (its vocab makes the new Docs).
        example (Example): the example.
        RETURNS (Example): the new example, or ``example`` itself when no
            mention could be replaced.
        """
        pool = self.pool(nlp)
        ref = example.reference
        has_sents = ref.has_annotation("SENT_START")
        words: List[str] = []
        spaces: List[bool] = []
        ents: List[Optional[str]] = []
        sent_starts: List[Optional[bool]] = []
        replaced = 0
        i = 0
        for ent in ref.ents:
            for token in ref[i : ent.start]:
                self._keep(token, words, spaces, ents, sent_starts)
            i = ent.end
            drawn = pool.draw(ent.label_, ent.text, self.rng)
            if drawn is None:
                self._note_kept(ent.label_)
                for token in ent:
                    self._keep(token, words, spaces, ents, sent_starts)
                continue
            new_words, inner_spaces = drawn
            if self.case_level > 0.0 and self.rng.random() < self.case_level:
                change = CASINGS[self.rng.choice(sorted(CASINGS))]
                new_words = tuple(change(w) for w in new_words)
            words.extend(new_words)
            spaces.extend(inner_spaces)
            spaces.append(bool(ent[-1].whitespace_))
            ents.extend([f"B-{ent.label_}"] + [f"I-{ent.label_}"] * (len(new_words) - 1))
            sent_starts.append(ent[0].is_sent_start)
            sent_starts.extend([False if has_sents else None] * (len(new_words) - 1))
            replaced += 1
        for token in ref[i:]:
            self._keep(token, words, spaces, ents, sent_starts)
        if not replaced:
            return example
        self.counts["augmented"] += 1
        self.counts["replaced"] += replaced
        reference = Doc(nlp.vocab, words=words, spaces=spaces, ents=ents, sent_starts=sent_starts if has_sents else None)
        reference.cats = dict(ref.cats)
        predicted = Doc(nlp.vocab, words=words, spaces=spaces)
        return Example(predicted, reference)

    @staticmethod
    def _keep(token, words, spaces, ents, sent_starts) -> None:
        words.append(token.text)
        spaces.append(bool(token.whitespace_))
        # "" is missing annotation; Doc() wants None for it
        ents.append(f"{token.ent_iob_}-{token.ent_type_}" if token.ent_iob_ in ("B", "I") else (token.ent_iob_ or None))
        sent_starts.append(token.is_sent_start)

    def _note_kept(self, label: str) -> None:
        if not self.kept_without_pool[label]:
            warnings.warn(
                f"spacy-ner-plus.mention_replace.v1: the mention pool {self.mentions} has no other mention "
                f"of the label {label!r}: its mentions are kept unchanged (counted in kept_without_pool)"
            )
        self.kept_without_pool[label] += 1


@registry.augmenters("spacy-ner-plus.mention_replace.v1")
def create_mention_replace_augmenter(
    mentions: Union[str, Path],
    level: float = 0.5,
    case_level: float = 0.0,
    seed: int = 0,
) -> MentionReplaceAugmenter:
    """Create an augmenter that replaces every entity mention by another of the same type.

    mentions (Union[str, Path]): the pool: a .spacy DocBin or a directory of
        them (typically ${paths.train}: the training data's own mentions) or a
        JSON file {"LABEL": ["mention text", ...]} (texts tokenized with
        nlp.make_doc). Read on the first call, once. A label with no other
        mention in the pool keeps its mentions (counted, warned once).
    level (float): probability that an example with entities is yielded as its
        augmented copy instead of itself; examples without entities always pass.
    case_level (float): probability that a replacement mention is written in
        lower, UPPER or Title case (one of the three at random), so a cased
        backbone does not learn to rely on case alone.
    seed (int): seed of the augmenter's own random generator.
    RETURNS (MentionReplaceAugmenter): the augmenter, called as
        augmenter(nlp, example) -> Iterator[Example].
    """
    return MentionReplaceAugmenter(mentions, level=level, case_level=case_level, seed=seed)
