"""A guard around spaCy's tokenizer that keeps its work linear in the text.

spaCy's tokenizer splits a text at white space, then peels prefixes, suffixes and infixes off
each whitespace-free run, searching the rest of the run again after every piece it peels
(spaCy issues #4362 and #1768). A run of n brackets therefore costs O(n²): 40,000 × "(" took
two minutes, 100 KB of them would take far longer, and a service that tokenizes for all its
clients stalls for all of them.

What this guard does: it SPLITS PATHOLOGICAL RUNS BEFORE THE TOKENIZER SEES THEM. A
whitespace-free run longer than ``max_run`` characters does not go to the wrapped tokenizer;
it becomes tokens of its own: runs of word characters (``\\w+``) and runs of one repeated
other character, each at most ``max_run`` characters: "https://x.org/a?b=(((" gives "https",
":", "//", "x", ".", "org", "/", "a", "?", "b", "=", "(((". The rest of the text, every
run of at most ``max_run`` characters, is tokenized by the wrapped tokenizer as before, and
the Doc is built from the pieces' words and spaces, so ``doc.text == text`` and every
character offset is kept. A text without such a run goes to the wrapped tokenizer unchanged
and gets the very same Doc (token attributes of special cases, such as the NORM of "n't",
included), so ordinary prose tokenizes exactly as before.

Why the work is then linear: the wrapped tokenizer only sees runs of at most ``max_run``
characters, each costing at most O(max_run²); the long runs are cut by one regular
expression, in one pass. Why cut at character-class boundaries rather than at a fixed length:
an e-mail address or a number inside a long run still starts and ends on token boundaries,
so a pattern's match aligns with tokens and redaction takes in no more than the match.

The cost: a run longer than ``max_run`` that spaCy would have kept as one token (a URL with
a long query string, a base64 blob) becomes several tokens. The default, 64 characters,
keeps words, e-mail addresses, phone numbers, IBANs and most URLs whole.
"""
import re
from typing import Any, Callable, List

from spacy.language import Language
from spacy.tokens import Doc
from spacy.util import registry

DEFAULT_MAX_RUN = 64


class BoundedTokenizer:
    """A spaCy tokenizer whose work is linear in the text (module docstring).

    tokenizer (Callable[[str], Doc]): the tokenizer to wrap (``nlp.tokenizer``).
    max_run (int): the longest whitespace-free run the wrapped tokenizer sees.
    """

    def __init__(self, tokenizer: Callable[[str], Doc], max_run: int = DEFAULT_MAX_RUN) -> None:
        if isinstance(tokenizer, BoundedTokenizer):
            tokenizer = tokenizer.tokenizer
        if not isinstance(max_run, int) or max_run < 2:
            raise ValueError(f"BoundedTokenizer: max_run must be an integer >= 2, not {max_run!r}")
        self.tokenizer = tokenizer
        self.max_run = max_run
        # a run is tried from its start only, so finding the long runs is one pass
        self._long_run = re.compile(r"(?<!\S)\S{%d,}" % (max_run + 1))
        self._piece = re.compile(r"\w{1,%d}|([^\w\s])\1{0,%d}" % (max_run, max_run - 1))

    @property
    def vocab(self):
        return self.tokenizer.vocab

    def __call__(self, text: str) -> Doc:
        long_runs = list(self._long_run.finditer(text))
        if not long_runs:
            return self.tokenizer(text)
        docs: List[Doc] = []
        position = 0
        for run in long_runs:
            if run.start() > position:
                docs.append(self.tokenizer(text[position:run.start()]))
            words = [m.group(0) for m in self._piece.finditer(text, run.start(), run.end())]
            spaces = [False] * len(words)
            position = run.end()
            # spaCy keeps one " " after a token as its whitespace; any other goes to the next part
            if text.startswith(" ", position):
                spaces[-1] = True
                position += 1
            docs.append(Doc(self.vocab, words=words, spaces=spaces))
        if position < len(text):
            docs.append(self.tokenizer(text[position:]))
        doc = Doc.from_docs(docs, ensure_whitespace=False)
        if doc.text != text:  # cannot happen unless the wrapped tokenizer changes characters
            raise ValueError("BoundedTokenizer: the wrapped tokenizer does not keep the text's characters")
        return doc

    def pipe(self, texts, batch_size: int = 1000):
        for text in texts:
            yield self(text)

    # serialization and everything else (explain, rules, prefix_search...) is the wrapped tokenizer's
    def to_disk(self, path, **kwargs) -> None:
        self.tokenizer.to_disk(path, **kwargs)

    def from_disk(self, path, **kwargs) -> "BoundedTokenizer":
        self.tokenizer.from_disk(path, **kwargs)
        return self

    def to_bytes(self, **kwargs) -> bytes:
        return self.tokenizer.to_bytes(**kwargs)

    def from_bytes(self, bytes_data: bytes, **kwargs) -> "BoundedTokenizer":
        self.tokenizer.from_bytes(bytes_data, **kwargs)
        return self

    def __getattr__(self, name: str) -> Any:
        if name in ("tokenizer", "max_run", "_long_run", "_piece"):  # not yet set (unpickling)
            raise AttributeError(name)
        return getattr(self.tokenizer, name)

    def __reduce__(self):
        return (BoundedTokenizer, (self.tokenizer, self.max_run))


def bound_tokenizer(nlp: Language, max_run: int = DEFAULT_MAX_RUN) -> Language:
    """Wrap ``nlp.tokenizer`` in a BoundedTokenizer (once: a guarded pipeline is left as is).

    nlp (Language): the pipeline; changed in place.
    max_run (int): see BoundedTokenizer.
    RETURNS (Language): ``nlp``.
    """
    if not isinstance(nlp.tokenizer, BoundedTokenizer):
        nlp.tokenizer = BoundedTokenizer(nlp.tokenizer, max_run)
    return nlp


@registry.tokenizers("spacy-ner-plus.BoundedTokenizer.v1")
def create_bounded_tokenizer(max_run: int = DEFAULT_MAX_RUN) -> Callable[[Language], BoundedTokenizer]:
    """spaCy's default tokenizer for the language, guarded (module docstring). In a config:

        [nlp.tokenizer]
        @tokenizers = "spacy-ner-plus.BoundedTokenizer.v1"
        max_run = 64

    max_run (int): the longest whitespace-free run spaCy's tokenizer sees.
    RETURNS (Callable[[Language], BoundedTokenizer]): the tokenizer factory.
    """
    default = registry.tokenizers.get("spacy.Tokenizer.v1")()

    def make(nlp: Language) -> BoundedTokenizer:
        return BoundedTokenizer(default(nlp), max_run)

    return make
