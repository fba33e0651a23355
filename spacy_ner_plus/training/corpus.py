"""Reading CoNLL-style column files into Docs, with FILE:LINE problems.

Format: one token a line, columns separated by a tab (when the line has one)
or by spaces; the token in ``token_column``, the tag in ``tag_column``; blank
lines between sentences; ``-DOCSTART-`` lines between documents.

Repairs (``on_error="repair"``), each reported with its FILE:LINE and counted:
- ``scheme``: an ill-formed tag sequence is decoded leniently and re-encoded
  (``schemes.repair``); no entity token is lost.
- ``columns``: a line whose column count differs from the file's first token
  line is read with its first column as token and last as tag (only when
  those are the configured columns and the line has at least two).
- ``utf8``: undecodable bytes become U+FFFD.
- ``empty-token``: an empty token tagged ``O`` is removed. An empty token
  inside an entity is not repairable.
- ``invisible-line``: a line holding only invisible format characters
  (Unicode category Cf: a stray BOM U+FEFF, zero-width space U+200B,
  ZWNJ U+200C, ZWJ U+200D, word joiner U+2060, ...) and whitespace is read
  as the blank line it looks like. In ``fail`` mode the error names the
  characters.
Everything else (unknown tag prefixes, a one-column line, a label the
``ner_plus`` component cannot take, see ``schemes.label_problem``) stays an
error.
"""
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from spacy.tokens import Doc
from spacy.vocab import Vocab

from .. import schemes

DOCSTART = "-DOCSTART-"


@dataclass
class Problem:
    """A problem or a repair at a line of an input file."""

    path: str
    line: int
    message: str
    kind: str = "error"

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Sentence:
    words: List[str]
    tags: List[str]
    lines: List[int]
    spans: List[schemes.SpanTuple] = field(default_factory=list)


@dataclass
class ReadResult:
    """What ``read_conll`` found: documents (lists of sentences) and problems."""

    path: str
    scheme: str
    documents: List[List[Sentence]]
    errors: List[Problem]
    repairs: List[Problem]
    has_doc_markers: bool

    def counts(self) -> Dict[str, object]:
        sentences = [s for doc in self.documents for s in doc]
        labels = Counter(label for s in sentences for _, _, label in s.spans)
        return {
            "documents": len(self.documents),
            "sentences": len(sentences),
            "tokens": sum(len(s.words) for s in sentences),
            "entities": sum(labels.values()),
            "per_type": dict(sorted(labels.items())),
        }


class ConllFormatError(ValueError):
    """Raised with every FILE:LINE problem of a file, one a line."""

    def __init__(self, errors: Sequence[Problem]):
        self.errors = list(errors)
        lines = [str(e) for e in self.errors]
        super().__init__(f"{len(lines)} problem(s):\n" + "\n".join(lines))


def _decode_lines(path: Path, repair: bool, problems: List[Problem], repairs: List[Problem]) -> Iterator[Tuple[int, str]]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        try:
            text = raw.decode("utf8")
        except UnicodeDecodeError as err:
            where = f"bytes are not UTF-8 at byte {err.start} ({raw[err.start:err.start + 4]!r})"
            if repair:
                text = raw.decode("utf8", errors="replace")
                repairs.append(Problem(str(path), lineno, f"{where}: replaced by U+FFFD", "utf8"))
            else:
                problems.append(Problem(str(path), lineno, where))
                continue
        yield lineno, text


def read_conll(
    path: Path,
    *,
    scheme: Optional[str] = None,
    on_error: str = "fail",
    token_column: int = 0,
    tag_column: int = -1,
) -> ReadResult:
    """Read a column file; collect every problem instead of stopping at the first.

    path (Path): the file.
    scheme (Optional[str]): IOB1, IOB2/BIO or BIOES/BILOU; None detects it.
    on_error (str): "fail" collects errors; "repair" applies the module's rules.
    token_column (int): index of the token column.
    tag_column (int): index of the tag column (-1: last).
    RETURNS (ReadResult): documents, the scheme used, errors and repairs.
    """
    if on_error not in ("fail", "repair"):
        raise ValueError(f"on_error must be 'fail' or 'repair', not '{on_error}'")
    repair_mode = on_error == "repair"
    path = Path(path)
    errors: List[Problem] = []
    repairs: List[Problem] = []
    documents: List[List[Sentence]] = [[]]
    has_markers = False
    n_columns: Optional[int] = None
    current = Sentence([], [], [])

    def close_sentence() -> None:
        nonlocal current
        if current.words:
            documents[-1].append(current)
        current = Sentence([], [], [])

    for lineno, text in _decode_lines(path, repair_mode, errors, repairs):
        if not text.strip():
            close_sentence()
            continue
        invisible = _invisible_only(text)
        if invisible:
            # Read as the blank line it looks like in an editor, in both modes, so the
            # sentences around it are checked as the author saw them.
            close_sentence()
            what = "line holds only invisible characters " + ", ".join(map(schemes.describe_character, invisible))
            if repair_mode:
                repairs.append(Problem(str(path), lineno, f"{what}: read as a blank line", "invisible-line"))
            else:
                errors.append(Problem(str(path), lineno, what))
            continue
        columns = text.split("\t") if "\t" in text else text.split()
        if columns[0].strip() == DOCSTART:
            close_sentence()
            has_markers = True
            if documents[-1]:
                documents.append([])
            continue
        if n_columns is None:
            n_columns = len(columns)
        if len(columns) != n_columns:
            msg = f"expected {n_columns} columns (as on the first token line), found {len(columns)}"
            usable = token_column == 0 and tag_column == -1 and len(columns) >= 2
            if repair_mode and usable:
                repairs.append(Problem(str(path), lineno, f"{msg}: read first column as token, last as tag", "columns"))
            else:
                errors.append(Problem(str(path), lineno, msg))
                continue
        try:
            word = columns[token_column].strip()
            tag = columns[tag_column].strip()
        except IndexError:
            errors.append(Problem(str(path), lineno, f"no column {tag_column} for the tag in {len(columns)} column(s)"))
            continue
        if not word:
            if repair_mode and tag == "O":
                repairs.append(Problem(str(path), lineno, "empty token tagged O: removed", "empty-token"))
            else:
                errors.append(Problem(str(path), lineno, f"empty token (tag '{tag}')"))
            continue
        label_error = _label_error(tag)
        if label_error:
            # not repairable; the token is kept so the sentence's scheme is still checked
            errors.append(Problem(str(path), lineno, label_error))
        current.words.append(word)
        current.tags.append(tag)
        current.lines.append(lineno)
    close_sentence()
    if not documents[-1]:
        documents.pop()

    sentences = [s for doc in documents for s in doc]
    if scheme is None:
        scheme = schemes.detect_scheme(s.tags for s in sentences)
    scheme = schemes.normalize_scheme(scheme)
    for sent in sentences:
        problems = schemes.find_errors(sent.tags, scheme)
        decodable = all(_parses(sent.tags[index]) for index, _ in problems)
        if problems and repair_mode and decodable:
            sent.tags, changes = schemes.repair(sent.tags, scheme)
            for index, change in changes:
                repairs.append(Problem(str(path), sent.lines[index], f"{change} ({scheme})", "scheme"))
        else:
            for index, message in problems:
                errors.append(Problem(str(path), sent.lines[index], message))
        if decodable:
            sent.spans = schemes.tags_to_spans(sent.tags)
    errors.sort(key=lambda p: p.line)
    repairs.sort(key=lambda p: p.line)
    return ReadResult(str(path), scheme, documents, errors, repairs, has_markers)


def _invisible_only(text: str) -> List[str]:
    """The distinct invisible format characters of a line that holds nothing
    else (whitespace aside), in order of appearance; [] for any other line."""
    found: List[str] = []
    for char in text:
        if unicodedata.category(char) == "Cf":
            if char not in found:
                found.append(char)
        elif not char.isspace():
            return []
    return found


def _label_error(tag: str) -> Optional[str]:
    """The problem of a parseable tag's label for ner_plus (unparseable tags are
    reported by the scheme check)."""
    try:
        _, label = schemes.split_tag(tag)
    except schemes.TagError:
        return None
    if label is None:
        return None
    problem = schemes.label_problem(label)
    return f"tag {tag!r}: label {label!r} cannot be used: {problem}" if problem else None


def _parses(tag: str) -> bool:
    try:
        schemes.split_tag(tag)
    except schemes.TagError:
        return False
    return True


def sentences_to_doc(vocab: Vocab, sentences: Sequence[Sentence]) -> Doc:
    """One Doc from sentences: sentence starts set, entities from their spans."""
    words: List[str] = []
    sent_starts: List[bool] = []
    ents: List[str] = []
    for sent in sentences:
        words.extend(sent.words)
        sent_starts.extend([True] + [False] * (len(sent.words) - 1))
        ents.extend(schemes.spans_to_tags(sent.spans, len(sent.words), "IOB2"))
    return Doc(vocab, words=words, sent_starts=sent_starts, ents=ents)


DOC_MODES = ("document", "sentence", "chunk", "mixed")


def result_to_docs(result: ReadResult, vocab: Vocab, doc_mode: str = "document", chunk_tokens: int = 128) -> List[Doc]:
    """Docs from a ReadResult.

    doc_mode (str): "document" makes one Doc per -DOCSTART- document (a file
        without markers gives one Doc per sentence); "sentence" one Doc per
        sentence; "chunk" packs consecutive sentences of one document greedily
        into Docs of at most ``chunk_tokens`` tokens (a longer sentence stays
        whole, a chunk never crosses a document boundary), to train on
        multi-sentence context at about the cost of training on sentences;
        "mixed" packs the same chunks and writes every other chunk of a
        document (the 1st, 3rd, ...) whole and the others as one Doc per
        sentence, so one model sees both single sentences and context, the
        same tokens as "sentence" gives. Without -DOCSTART- markers,
        "document", "chunk" and "mixed" give one Doc per sentence: sentences
        are not known to belong together.
    chunk_tokens (int): most tokens of a chunk.
    """
    if doc_mode not in DOC_MODES:
        raise ValueError(f"doc_mode must be one of {', '.join(DOC_MODES)}, not '{doc_mode}'")
    if doc_mode in ("chunk", "mixed") and chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be >= 1, not {chunk_tokens}")
    if doc_mode == "document" and result.has_doc_markers:
        return [sentences_to_doc(vocab, doc) for doc in result.documents if doc]
    if doc_mode == "chunk" and result.has_doc_markers:
        return [sentences_to_doc(vocab, chunk) for doc in result.documents for chunk in pack_sentences(doc, chunk_tokens)]
    if doc_mode == "mixed" and result.has_doc_markers:
        docs = []
        for doc in result.documents:
            for i, chunk in enumerate(pack_sentences(doc, chunk_tokens)):
                docs.extend([sentences_to_doc(vocab, chunk)] if i % 2 == 0 else [sentences_to_doc(vocab, [s]) for s in chunk])
        return docs
    return [sentences_to_doc(vocab, [s]) for doc in result.documents for s in doc]


def select(result: ReadResult, labels: Optional[Sequence[str]] = None, sample: Optional[int] = None, seed: int = 0) -> Tuple[ReadResult, Dict[str, int]]:
    """A subset of a corpus: some entity types, a sample of sentences.

    labels: keep the mentions of these types; every other mention becomes
        ``O`` (its tokens stay), counted per type in the returned report.
        A label the file does not hold is an error (a typo would otherwise
        give a corpus without that type).
    sample: that many sentences drawn uniformly without replacement
        (``random.Random(seed)``), kept in file order, each its own
        document: sampled sentences no longer belong together.
    RETURNS: the selected ReadResult and {"dropped <TYPE>": n, "sentences
        left out": n} for what was removed.
    RAISES (ValueError): naming the file, the label or the size.
    """
    report: Dict[str, int] = {}
    documents = result.documents
    has_doc_markers = result.has_doc_markers
    if labels is not None:
        if not labels:
            raise ValueError(f"{result.path}: no type to keep was named")
        present = set(result.counts()["per_type"])
        unknown = sorted(set(labels) - present)
        if unknown:
            raise ValueError(f"{result.path}: no mention of type {', '.join(unknown)} to keep (its types: {', '.join(sorted(present)) or 'none'})")
        keep = set(labels)
        dropped = Counter(label for doc in documents for s in doc for _, _, label in s.spans if label not in keep)
        report.update((f"dropped {label}", n) for label, n in sorted(dropped.items()))
        documents = [[_keep_types(s, keep) for s in doc] for doc in documents]
    if sample is not None:
        sentences = [s for doc in documents for s in doc]
        if not 0 < sample <= len(sentences):
            raise ValueError(f"{result.path}: cannot sample {sample} of its {len(sentences)} sentences")
        chosen = sorted(random.Random(seed).sample(range(len(sentences)), sample))
        report["sentences left out"] = len(sentences) - sample
        documents = [[sentences[i]] for i in chosen]
        has_doc_markers = False
    return replace(result, documents=documents, has_doc_markers=has_doc_markers), report


def _keep_types(sent: Sentence, keep: set) -> Sentence:
    spans = [span for span in sent.spans if span[2] in keep]
    if len(spans) == len(sent.spans):
        return sent
    tags = list(sent.tags)
    for start, end, label in sent.spans:
        if label not in keep:
            tags[start:end] = ["O"] * (end - start)
    return replace(sent, tags=tags, spans=spans)


def pack_sentences(sentences: Sequence[Sentence], max_tokens: int) -> List[List[Sentence]]:
    """Consecutive sentences grouped greedily into runs of at most ``max_tokens`` tokens."""
    chunks: List[List[Sentence]] = []
    size = 0
    for sent in sentences:
        if not chunks or size + len(sent.words) > max_tokens:
            chunks.append([])
            size = 0
        chunks[-1].append(sent)
        size += len(sent.words)
    return chunks


def read_docs(path: Path, vocab: Vocab, *, doc_mode: str = "sentence", scheme: Optional[str] = None) -> List[Doc]:
    """Gold Docs from a CoNLL file (strict) or a ``.spacy`` DocBin.

    RAISES (ConllFormatError): with every FILE:LINE problem of a bad CoNLL file.
    """
    from spacy.tokens import DocBin

    path = Path(path)
    if path.suffix == ".spacy":
        return list(DocBin().from_disk(path).get_docs(vocab))
    result = read_conll(path, scheme=scheme)
    if result.errors:
        raise ConllFormatError(result.errors)
    return result_to_docs(result, vocab, doc_mode)
