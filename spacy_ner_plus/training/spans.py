"""Reading span-annotated exports (character offsets) into Docs, with FILE:LINE problems.

Formats (``SPAN_FORMATS``; ``detect_format`` guesses one from the extension and content):

- ``spacy``: spaCy/Prodigy JSONL, one record a line:
  ``{"text": ..., "spans": [{"start": 0, "end": 5, "label": "ORG"}, ...]}``.
  A record with ``"answer": "reject"`` or ``"ignore"`` is skipped and counted;
  a record without ``spans`` has no entities.
- ``doccano``: Doccano JSONL, ``{"text": ..., "label": [[start, end, "LABEL"], ...]}``;
  ``"entities"`` instead of ``"label"`` too, its items lists or objects
  (``{"start_offset", "end_offset", "label"}``).
- ``labelstudio``: Label Studio's JSON export, a list of tasks
  ``{"data": {"text": ...}, "annotations": [{"completed_by": ..., "result":
  [{"type": "labels", "value": {"start", "end", "labels": ["LABEL"]}}], ...}]}``.
  One annotation per task is read: the one by ``annotator`` (its
  ``completed_by``: an id, or the id or e-mail of a user object) when given,
  else the latest by ``updated_at`` (then ``created_at``; a tie goes to the
  later in the file). Cancelled annotations are never chosen; a task with
  none left is skipped and counted. Results of other types (choices,
  relations) are ignored.

Where: a JSONL problem is at ``FILE:LINE``; a Label Studio problem at the line
where its task starts, with the task's number (1-based) and id.

Alignment: the text is tokenised with ``spacy.blank(lang)`` and every span
must start and end on token boundaries. With ``on_error="repair"`` these
rules apply, each reported at its FILE:LINE and counted by kind:

- ``utf16``: offsets that count UTF-16 code units (JavaScript tools such as
  Label Studio do, so a text with an emoji before a span shifts it) are
  converted to characters, when the span's own ``text`` shows they are.
- ``trim``: whitespace at a span's edges is left out of it.
- ``expand``: a span off token boundaries becomes the smallest run of tokens
  that covers it (``Doc.char_span(alignment_mode="expand")``).
- ``empty`` / ``whitespace``: an empty or whitespace-only span is removed.
- ``overlap``: of spans that overlap (after alignment), the longest in tokens
  is kept, then the earliest start, then the first in the record; the others
  are removed.

Identical spans (same tokens and label, e.g. the same mention annotated
twice) are merged in both modes and counted as ``duplicate``. Everything else
is an error in both modes: bad JSON, a record without text, offsets that are
not integers or fall outside the text, a span whose own ``text`` differs from
the text at its offsets (and not as UTF-16 offsets either), a
label ``ner_plus`` cannot take (``schemes.label_problem``), a Label Studio
region with several labels.

Docs (``doc_mode``): "document" keeps each record one Doc, however long, with
no sentence boundaries; "sentence" splits each record with spaCy's
``sentencizer`` into one Doc per sentence, except that a sentence boundary
inside an entity is not a cut: the sentences it joins stay one Doc (counted
as ``joined``). Whitespace-only sentences are left out.

This module only reads: it writes nothing and imports nothing from the
service, annotate, evaluation or cli modules.
"""
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, Span

from .corpus import ConllFormatError, Problem
from .span_formats import RawSpan, Record, context, is_blank, jsonl_records, labelstudio_records

SPAN_FORMATS = ("spacy", "doccano", "labelstudio")
INPUT_FORMATS = ("conll",) + SPAN_FORMATS
SPAN_DOC_MODES = ("document", "sentence")
CONLL_SUFFIXES = {".iob", ".iob1", ".iob2", ".bio", ".bioes", ".bilou", ".conll", ".conllu", ".tsv", ".txt"}



@dataclass
class SpanReadResult:
    """What ``read_spans`` found: Docs, problems, repairs and skipped records."""

    path: str
    format: str
    doc_mode: str
    docs: List[Doc]
    records: int
    errors: List[Problem]
    repairs: List[Problem]
    skipped: Dict[str, int] = field(default_factory=dict)
    joined: int = 0
    dropped: Dict[str, int] = field(default_factory=dict)

    def counts(self) -> Dict[str, object]:
        """The keys of ``ReadResult.counts`` (the column reader's summary):
        documents are the records read, sentences the Docs of
        ``doc_mode="sentence"`` (None in document mode: not split)."""
        labels = Counter(ent.label_ for doc in self.docs for ent in doc.ents)
        return {
            "documents": self.records,
            "sentences": len(self.docs) if self.doc_mode == "sentence" else None,
            "tokens": sum(len(doc) for doc in self.docs),
            "entities": sum(labels.values()),
            "per_type": dict(sorted(labels.items())),
        }

    def repair_counts(self) -> Dict[str, int]:
        return dict(sorted(Counter(r.kind for r in self.repairs).items()))


def detect_format(path: Path) -> str:
    """The input format of ``path``: "conll" or one of ``SPAN_FORMATS``.

    ``.json`` is Label Studio; ``.jsonl``/``.ndjson`` is spaCy/Prodigy when
    the first record has ``spans``, Doccano when it has ``label`` or
    ``entities``; a known column-file extension is "conll". Any other
    extension is read by its first non-blank character (``[``: Label Studio,
    ``{``: JSONL as above, else a column file).

    RAISES (ValueError): a JSONL file whose first record tells no format.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES:
        return "conll"
    if suffix == ".json":
        return "labelstudio"
    head = _first_nonblank(path)
    if suffix not in (".jsonl", ".ndjson"):
        if head is None or head[1][:1] not in "[{":
            return "conll"
        if head[1][:1] == "[":
            return "labelstudio"
    if head is None:
        raise ValueError(f"{path}: no record to tell its format from; give --input-format")
    lineno, text = head
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{lineno}: not JSON ({err.msg} at column {err.colno}); cannot tell the format, give --input-format") from None
    if isinstance(record, dict):
        if "spans" in record:
            return "spacy"
        if "label" in record or "entities" in record:
            return "doccano"
        if "annotations" in record:
            raise ValueError(f"{path}:{lineno}: a Label Studio task in a JSONL file: export Label Studio as JSON (a list of tasks)")
        keys = ", ".join(sorted(map(str, record))) or "none"
    else:
        keys = f"a {type(record).__name__}, not an object"
    raise ValueError(f"{path}:{lineno}: the first record has neither 'spans' (spaCy/Prodigy) nor 'label'/'entities' (Doccano) (keys: {keys}); give --input-format")


def _first_nonblank(path: Path) -> Optional[Tuple[int, str]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            text = raw.decode("utf8", errors="replace").lstrip("\ufeff").strip()
            if text:
                return lineno, text
    return None


def read_spans(
    path: Path,
    *,
    input_format: Optional[str] = None,
    on_error: str = "fail",
    doc_mode: str = "document",
    annotator: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    lang: str = "en",
) -> SpanReadResult:
    """Read a span-annotated export; collect every problem instead of stopping at the first.

    path (Path): the file.
    input_format (Optional[str]): one of SPAN_FORMATS; None detects it.
    on_error (str): "fail" collects errors; "repair" applies the module's rules.
    doc_mode (str): "document" (a Doc per record) or "sentence" (a Doc per
        sentence, entities never cut).
    annotator (Optional[str]): Label Studio: whose annotations to read.
    labels (Optional[Sequence[str]]): keep only these types (others dropped
        and counted); a type no span has is an error.
    lang (str): the language of the tokenizer (spacy.blank).
    RETURNS (SpanReadResult): Docs, errors, repairs, skipped records.
    """
    import spacy

    path = Path(path)
    if on_error not in ("fail", "repair"):
        raise ValueError(f"on_error must be 'fail' or 'repair', not '{on_error}'")
    if doc_mode not in SPAN_DOC_MODES:
        raise ValueError(f"doc_mode for span formats must be one of {', '.join(SPAN_DOC_MODES)}, not '{doc_mode}'")
    if input_format is None:
        input_format = detect_format(path)
    if input_format not in SPAN_FORMATS:
        raise ValueError(f"{path}: input format must be one of {', '.join(SPAN_FORMATS)}, not '{input_format}'")
    if annotator is not None and input_format != "labelstudio":
        raise ValueError(f"--annotator chooses among Label Studio annotations; {path} is read as {input_format}")
    errors: List[Problem] = []
    repairs: List[Problem] = []
    skipped: Counter = Counter()
    if input_format == "labelstudio":
        records = list(labelstudio_records(path, annotator, errors, skipped))
    else:
        records = list(jsonl_records(path, input_format, errors, skipped))
    nlp = spacy.blank(lang)
    sentencizer = nlp.add_pipe("sentencizer") if doc_mode == "sentence" else None
    repair = on_error == "repair"
    aligned: List[Doc] = []
    for record in records:
        doc = _align(nlp, path, record, repair, errors, repairs)
        if doc is not None:
            aligned.append(doc)
    dropped: Dict[str, int] = {}
    if labels is not None:
        aligned, dropped = _keep_labels(path, aligned, labels)
    docs: List[Doc] = []
    joined = 0
    for doc in aligned:
        if sentencizer is None:
            docs.append(doc)
        else:
            pieces, n_joined = split_sentences(sentencizer(doc))
            docs.extend(pieces)
            joined += n_joined
    errors.sort(key=lambda p: p.line)
    repairs.sort(key=lambda p: p.line)
    return SpanReadResult(str(path), input_format, doc_mode, docs, len(aligned), errors, repairs, dict(sorted(skipped.items())), joined, dropped)


def read_span_docs(path: Path, **kwargs: Any) -> List[Doc]:
    """The Docs of ``read_spans`` (strict unless ``on_error`` says otherwise).

    RAISES (ConllFormatError): with every FILE:LINE problem of the file.
    """
    result = read_spans(path, **kwargs)
    if result.errors:
        raise ConllFormatError(result.errors)
    return result.docs


# -- the formats -------------------------------------------------------------


def _from_utf16(text: str, start: int, end: int) -> Optional[Tuple[int, int]]:
    """Character offsets of UTF-16 code-unit offsets into ``text`` (None when they
    fall outside it or inside a surrogate pair)."""
    positions = {}
    units = 0
    for index, char in enumerate(text):
        positions[units] = index
        units += 2 if ord(char) > 0xFFFF else 1
    positions[units] = len(text)
    if start not in positions or end not in positions:
        return None
    return positions[start], positions[end]


def _align(nlp, path: Path, record: Record, repair: bool, errors: List[Problem], repairs: List[Problem]) -> Optional[Doc]:
    """The record's Doc with its spans as entities, or None when it has an error."""
    doc = nlp.make_doc(record.text)
    text = record.text
    n_errors = len(errors)

    def report(message: str, kind: Optional[str] = None) -> None:
        problem = Problem(str(path), record.line, f"{record.where}: {message}", kind or "error")
        (repairs if kind else errors).append(problem)

    # (span, number, first-in-record order)
    aligned: List[Tuple[Span, RawSpan]] = []
    for raw in record.spans:
        what = f"span {raw.number} ({raw.start}-{raw.end} {raw.label})"
        start, end = raw.start, raw.end
        inside = 0 <= start <= end <= len(text)
        if raw.text is not None and (not inside or text[start:end] != raw.text):
            # UTF-16 offsets can run past the end of the text counted in characters
            converted = _from_utf16(text, start, end) if 0 <= start <= end else None
            at = f"the text at the offsets is {json.dumps(text[start:end], ensure_ascii=False)}" if inside else f"the offsets are outside the text (0-{len(text)})"
            mismatch = f"{what}: {at}, the span's own text {json.dumps(raw.text, ensure_ascii=False)}"
            if converted is None or text[converted[0]:converted[1]] != raw.text:
                report(f"{mismatch} (offsets counted in other units?)")
                continue
            if not repair:
                report(f"{mismatch}: the offsets count UTF-16 code units (as JavaScript tools do); --on-error repair converts them")
                continue
            start, end = converted
            report(f"{what}: offsets in UTF-16 code units converted to characters {start}-{end}", "utf16")
        elif not inside:
            report(f"{what}: offsets outside the text (0-{len(text)}) or end before start")
            continue
        covered = text[start:end]
        if start == end or is_blank(covered):
            kind = "empty" if start == end else "whitespace"
            message = f"{what} is {'empty' if kind == 'empty' else 'whitespace only'} at {context(text, start, end)}"
            report(f"{message}: removed", kind) if repair else report(message)
            continue
        stripped_start = start + (len(covered) - len(covered.lstrip()))
        stripped_end = end - (len(covered) - len(covered.rstrip()))
        if (stripped_start, stripped_end) != (start, end):
            # an entity never starts or ends with whitespace, even where the tokenizer made it a token
            if not repair:
                report(f"{what} has whitespace at its edges: {context(text, start, end)}; --on-error repair leaves it out")
                continue
            report(f"{what}: whitespace at its edges left out, {context(text, start, end)}", "trim")
            start, end = stripped_start, stripped_end
        span = doc.char_span(start, end, raw.label)
        if span is None and repair:
            span = doc.char_span(start, end, raw.label, alignment_mode="expand")
            if span is not None:
                report(f"{what}: off token boundaries at {context(text, start, end)}: expanded to tokens "
                       f"{span.start_char}-{span.end_char} {json.dumps(span.text, ensure_ascii=False)}", "expand")
        if span is None:
            tokens = [t.text for t in doc if t.idx < end and t.idx + len(t) > start]
            hint = "" if repair else "; --on-error repair expands it to whole tokens"
            report(f"{what} does not fall on token boundaries: {context(text, start, end)}; the tokens there are {json.dumps(tokens, ensure_ascii=False)}{hint}")
            continue
        aligned.append((span, raw))
    if len(errors) > n_errors:
        return None
    kept = _resolve(aligned, repair, report)
    if len(errors) > n_errors:
        return None
    doc.ents = sorted(kept, key=lambda s: s.start)
    return doc


def _resolve(aligned: List[Tuple[Span, RawSpan]], repair: bool, report) -> List[Span]:
    """Merge duplicates; keep non-overlapping spans: longest, then earliest, then first in the record."""
    unique: List[Tuple[Span, RawSpan]] = []
    seen: Dict[Tuple[int, int, str], RawSpan] = {}
    for span, raw in aligned:
        key = (span.start, span.end, span.label_)
        if key in seen:
            report(f"span {raw.number} ({raw.start}-{raw.end} {raw.label}) covers the same tokens as span {seen[key].number} with the same label: merged", "duplicate")
            continue
        seen[key] = raw
        unique.append((span, raw))
    order = sorted(range(len(unique)), key=lambda i: (-len(unique[i][0]), unique[i][0].start, i))
    kept: List[Tuple[Span, RawSpan]] = []
    for i in order:
        span, raw = unique[i]
        clash = next((k for k in kept if k[0].start < span.end and span.start < k[0].end), None)
        if clash is None:
            kept.append((span, raw))
            continue
        other_span, other = clash
        message = (f"span {raw.number} ({raw.start}-{raw.end} {raw.label} {json.dumps(span.text, ensure_ascii=False)}) overlaps "
                   f"span {other.number} ({other.start}-{other.end} {other.label} {json.dumps(other_span.text, ensure_ascii=False)})")
        if repair:
            report(f"{message}: removed (the longest, then earliest, span is kept)", "overlap")
        else:
            report(message)
    return [span for span, _ in kept]


def _keep_labels(path: Path, docs: List[Doc], labels: Sequence[str]) -> Tuple[List[Doc], Dict[str, int]]:
    if not labels:
        raise ValueError(f"{path}: no type to keep was named")
    present = {ent.label_ for doc in docs for ent in doc.ents}
    unknown = sorted(set(labels) - present)
    if unknown:
        raise ValueError(f"{path}: no mention of type {', '.join(unknown)} to keep (its types: {', '.join(sorted(present)) or 'none'})")
    keep = set(labels)
    dropped: Counter = Counter()
    for doc in docs:
        dropped.update(ent.label_ for ent in doc.ents if ent.label_ not in keep)
        doc.ents = [ent for ent in doc.ents if ent.label_ in keep]
    return docs, {f"dropped {label}": n for label, n in sorted(dropped.items())}


# -- sentences ---------------------------------------------------------------


def split_sentences(doc: Doc) -> Tuple[List[Doc], int]:
    """One Doc per sentence of ``doc`` (which has sentence boundaries), except
    that a boundary inside an entity is no cut; whitespace-only sentences are
    left out.

    RETURNS (Tuple[List[Doc], int]): the Docs (each one sentence, entities
        kept) and how many boundaries were not cut because an entity spans them.
    """
    inside = set()
    for ent in doc.ents:
        inside.update(range(ent.start + 1, ent.end))
    starts = [sent.start for sent in doc.sents]
    cuts = [s for s in starts if s not in inside]
    joined = len(starts) - len(cuts)
    bounds = list(zip(cuts, cuts[1:] + [len(doc)]))
    pieces = []
    for a, b in bounds:
        tokens = doc[a:b]
        if all(t.is_space for t in tokens):
            continue
        words = [t.text for t in tokens]
        spaces = [bool(t.whitespace_) for t in tokens]
        ents = [f"{t.ent_iob_}-{t.ent_type_}" if t.ent_iob_ in ("B", "I") else "O" for t in tokens]
        pieces.append(Doc(doc.vocab, words=words, spaces=spaces, ents=ents, sent_starts=[True] + [False] * (len(words) - 1)))
    return pieces, joined
