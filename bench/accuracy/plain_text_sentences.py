"""Plain text into a packaged pipeline: which sentence path scores best (issue 31, part 2's last bullet).

Apps call ``nlp(text)``: the pipeline tokenizes the text itself and, unless a
component sets them, the Doc has no sentence boundaries, so ner_plus's
``within_sentences`` never applies. For each pipeline and gold file this
scores, strict entity F1 by character offsets (exact start, end and label;
the pipeline's own tokenization, so no gold tokens leak in), the paths a
packaged pipeline could take:

- plain: ``nlp(text)`` with no component that sets sentences (a sentencizer,
  senter or parser in the pipeline is disabled): the pipelines packaged
  before this issue;
- sentencizer_none / sentencizer_entities / sentencizer_windows: spaCy's
  rule-based ``sentencizer`` first, ner_plus's ``within_sentences`` set to
  "none" (sentences only place window starts), "entities" (no entity across
  a sentence start) or "windows" (each sentence predicted alone);
- gold_sentences: each gold sentence's text its own ``nlp(text)``, offsets
  shifted back (the reference: text already split into sentences; only where
  the gold file has sentences inside its documents).

Each path also gets an overlap score (a gold entity is found when a
prediction of its type shares a character with it; a prediction is right
when it shares one with a gold entity of its type), the criterion for the
resume corpus, whose spans are long and their boundaries loose.

Gold files: a column file (``-DOCSTART-`` documents; the text of a document is
its words joined by single spaces, as "CoNLL++ test documents built from plain
words"), a DocBin (``.spacy``: the text of each Doc, e.g. corpus/resume/test.spacy,
whole CVs), or a span export (``.jsonl``/``.json``: its spans at their own character offsets, not
snapped to tokens; a record's ``"unannotated"`` types are left out of the score, as the PII test set's
news part asks).

    python -m bench plain_text_sentences training/plaintext_conll/model-calibrated --data ../shared/data/conll2003/dev.iob --data ../shared/data/conll2003/test.iob --output plain_text_conll.json
    python -m bench plain_text_sentences training/pii-mix/model-calibrated --data corpus/pii/dev.spacy --data corpus/pii/test.spacy --data assets/pii_testset/written.jsonl --data corpus/pii_testset/conll.jsonl --output plain_text_pii.json
    python -m bench plain_text_sentences training/resume/model-calibrated --data corpus/resume/test.spacy --output plain_text_resume.json
    python -m bench plain_text_sentences MODEL --data FILE --quick      # 3 documents, to check it runs

Timings in the output are of one pass on the machine it ran on: run it alone.
"""
import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import spacy
import torch
from spacy.tokens import DocBin

import spacy_ner_plus  # noqa: F401
from spacy_ner_plus.pipeline.ner_plus import ner_plus_pipe_names
from spacy_ner_plus.training.corpus import Problem, read_conll
from spacy_ner_plus.training.span_formats import jsonl_records, labelstudio_records
from spacy_ner_plus.training.spans import SPAN_FORMATS, detect_format

ROOT = Path(__file__).resolve().parents[2]
PATHS = ("plain", "sentencizer_none", "sentencizer_entities", "sentencizer_windows", "gold_sentences")
SENTENCE_SETTERS = ("sentencizer", "senter", "parser")

Entity = Tuple[int, int, str]


class Document:
    """A gold document as plain text: its entities and sentences as character offsets."""

    def __init__(self, text: str, entities: List[Entity], sentences: Optional[List[Tuple[int, int]]], unannotated: Sequence[str] = ()):
        self.text = text
        self.entities = entities
        self.sentences = sentences
        # types the gold does not annotate in this text (the PII test set's news part: DATE_TIME):
        # predictions of them are left out of the score, as bench pii_testset does
        self.unannotated = frozenset(unannotated)


def from_words(sentences: Sequence[Tuple[Sequence[str], Sequence[Tuple[int, int, str]]]]) -> Document:
    """Words joined by single spaces; token spans -> character spans."""
    pieces: List[str] = []
    entities: List[Entity] = []
    bounds: List[Tuple[int, int]] = []
    offset = 0
    for words, spans in sentences:
        starts = []
        sent_start = offset
        for word in words:
            if pieces:
                pieces.append(" ")
                offset += 1
            if not starts:
                sent_start = offset
            starts.append(offset)
            pieces.append(word)
            offset += len(word)
        bounds.append((sent_start, offset))
        for start, end, label in spans:
            entities.append((starts[start], starts[end - 1] + len(words[end - 1]), label))
    return Document("".join(pieces), entities, bounds)


def load_span_records(path: Path) -> List[Document]:
    """A span export's texts with their spans at the file's own character offsets.

    Not aligned to spaCy tokens: the score is by character offsets, and a value inside a larger
    token (``ip=203.0.113.9``, a CSV field) is gold at its own characters; snapping it to token
    boundaries (``convert --on-error repair``) would change the gold the pipelines are scored on.
    A record's ``"unannotated"`` types (the PII test set's news part) are kept.
    """
    fmt = detect_format(path)
    errors: List[Problem] = []
    skipped: Counter = Counter()
    records = list(labelstudio_records(path, None, errors, skipped) if fmt == "labelstudio" else jsonl_records(path, fmt, errors, skipped))
    unannotated: Dict[int, List[str]] = {}
    if fmt != "labelstudio":
        for lineno, raw in enumerate(path.read_text(encoding="utf-8-sig").split("\n"), start=1):
            if raw.strip():
                value = json.loads(raw).get("unannotated") if raw.lstrip().startswith("{") else None
                if value is not None:
                    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                        errors.append(Problem(str(path), lineno, f"'unannotated' must be a list of type names, not {value!r}"))
                    unannotated[lineno] = value
    out = []
    for record in records:
        entities = []
        for raw in record.spans:
            inside = 0 <= raw.start < raw.end <= len(record.text)
            if not inside or (raw.text is not None and record.text[raw.start : raw.end] != raw.text):
                errors.append(Problem(str(path), record.line, f"{record.where}: span {raw.number} ({raw.start}-{raw.end} {raw.label}) "
                                      f"does not hold its text {raw.text!r} in code points (convert --on-error repair reads UTF-16 offsets)"))
                continue
            entities.append((raw.start, raw.end, raw.label))
        out.append(Document(record.text, entities, None, unannotated.get(record.line, ())))
    if errors:
        raise SystemExit("\n".join(map(str, errors)))
    return out


def load_documents(path: Path) -> List[Document]:
    if not path.exists():
        raise SystemExit(f"{path}: no such file")
    if path.suffix == ".spacy":
        docs = list(DocBin().from_disk(path).get_docs(spacy.blank("en").vocab))
    elif path.suffix in (".jsonl", ".json") or detect_format(path) in SPAN_FORMATS:
        return load_span_records(path)
    else:
        result = read_conll(path)
        if result.errors:
            raise SystemExit("\n".join(map(str, result.errors)))
        return [from_words([(s.words, s.spans) for s in doc]) for doc in result.documents if doc]
    out = []
    for doc in docs:
        sentences = [(s.start_char, s.end_char) for s in doc.sents] if doc.has_annotation("SENT_START") else None
        out.append(Document(doc.text, [(e.start_char, e.end_char, e.label_) for e in doc.ents], sentences))
    return out


def score_entities(gold: List[List[Entity]], predicted: List[List[Entity]]) -> Dict[str, object]:
    tp: Counter = Counter()
    n_gold: Counter = Counter()
    n_pred: Counter = Counter()
    for g, p in zip(gold, predicted):
        gs, ps = set(g), set(p)
        for _, _, label in gs:
            n_gold[label] += 1
        for _, _, label in ps:
            n_pred[label] += 1
        for _, _, label in gs & ps:
            tp[label] += 1

    def prf(t: int, ng: int, np_: int) -> Dict[str, float]:
        p = t / np_ if np_ else 0.0
        r = t / ng if ng else 0.0
        return {"precision": round(100 * p, 2), "recall": round(100 * r, 2), "f1": round(100 * (2 * p * r / (p + r) if p + r else 0.0), 2), "support": ng}

    per_type = {label: prf(tp[label], n_gold[label], n_pred[label]) for label in sorted(set(n_gold) | set(n_pred))}
    # overlap criterion (resume spans are long, their boundaries loose): a gold entity is found when a
    # prediction of its type shares a character with it (recall), a prediction is right when it shares
    # one with a gold entity of its type (precision)
    found = sum(any(pl == gl and ps < ge and gs < pe for ps, pe, pl in p) for g, p in zip(gold, predicted) for gs, ge, gl in set(g))
    right = sum(any(pl == gl and ps < ge and gs < pe for gs, ge, gl in g) for g, p in zip(gold, predicted) for ps, pe, pl in set(p))
    n_g, n_p = sum(n_gold.values()), sum(n_pred.values())
    op, orc = (right / n_p if n_p else 0.0), (found / n_g if n_g else 0.0)
    overlap = {"precision": round(100 * op, 2), "recall": round(100 * orc, 2), "f1": round(100 * (2 * op * orc / (op + orc) if op + orc else 0.0), 2)}
    return {**prf(sum(tp.values()), n_g, n_p), "overlap": overlap, "per_type": per_type}


def predict(nlp, texts: List[str], batch_size: int) -> Tuple[List[List[Entity]], float, int]:
    start = time.perf_counter()
    docs = list(nlp.pipe(texts, batch_size=batch_size))
    seconds = time.perf_counter() - start
    n_sents = sum(len(list(d.sents)) if d.has_annotation("SENT_START") else 1 for d in docs)
    return [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs], seconds, n_sents


def run_paths(nlp, documents: List[Document], paths: Sequence[str], batch_size: int) -> Dict[str, dict]:
    names = ner_plus_pipe_names(nlp)
    if not names:
        raise SystemExit("the pipeline has no ner_plus component")
    ner = nlp.get_pipe(names[0])
    original = ner.within_sentences
    setters = [name for name in nlp.pipe_names if name in SENTENCE_SETTERS or nlp.get_pipe_meta(name).factory in SENTENCE_SETTERS]
    gold = [d.entities for d in documents]
    texts = [d.text for d in documents]
    rows: Dict[str, dict] = {}

    def score(predicted: List[List[Entity]]) -> Dict[str, object]:
        kept = [[e for e in p if e[2] not in d.unannotated] for d, p in zip(documents, predicted)]
        return score_entities(gold, kept)

    with nlp.select_pipes(disable=setters):
        if "plain" in paths:
            predicted, seconds, n_sents = predict(nlp, texts, batch_size)
            rows["plain"] = {**score(predicted), "seconds": round(seconds, 2), "within_sentences": original}
        if "gold_sentences" in paths and all(d.sentences for d in documents):
            pieces = [(i, a, b) for i, d in enumerate(documents) for a, b in d.sentences]
            predicted_pieces, seconds, _ = predict(nlp, [documents[i].text[a:b] for i, a, b in pieces], batch_size)
            predicted = [[] for _ in documents]
            for (i, a, _), ents in zip(pieces, predicted_pieces):
                predicted[i].extend((s + a, e + a, label) for s, e, label in ents)
            rows["gold_sentences"] = {**score(predicted), "seconds": round(seconds, 2), "sentences": len(pieces)}
        wanted = [p for p in paths if p.startswith("sentencizer_")]
        if wanted:
            nlp.add_pipe("sentencizer", name="_bench_sentencizer", first=True)
            try:
                for path in wanted:
                    ner.within_sentences = path.split("_", 1)[1]
                    predicted, seconds, n_sents = predict(nlp, texts, batch_size)
                    rows[path] = {**score(predicted), "seconds": round(seconds, 2), "sentences": n_sents}
            finally:
                nlp.remove_pipe("_bench_sentencizer")
                ner.within_sentences = original
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="pipelines (paths or package names) with a ner_plus component")
    parser.add_argument("--data", type=Path, action="append", required=True, help="gold file (column file, .spacy or span export); repeatable")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}")
    parser.add_argument("--limit", type=int, default=0, help="first N documents of each file (0: all)")
    parser.add_argument("--quick", action="store_true", help="3 documents a file: check that it runs (no result worth keeping)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--output", default=None, help="file under bench/results (default: print only)")
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown path(s) {', '.join(unknown)}; choose from {', '.join(PATHS)}")
    limit = 3 if args.quick else args.limit
    rows = []
    for model in args.models:
        nlp = spacy.load(model)
        for data in args.data:
            documents = load_documents(data)
            if limit:
                documents = documents[:limit]
            row = {"model": str(model), "data": str(data), "documents": len(documents),
                   "gold_entities": sum(len(d.entities) for d in documents), "paths": run_paths(nlp, documents, paths, args.batch_size)}
            for path, result in row["paths"].items():
                print(json.dumps({"model": str(model), "data": str(data), "path": path, "f1": result["f1"],
                                  "precision": result["precision"], "recall": result["recall"], "overlap_f1": result["overlap"]["f1"],
                                  "seconds": result["seconds"]}), flush=True)
            rows.append(row)
    if args.output and not args.quick:
        from bench.provenance import write_result

        out = ROOT / "bench" / "results" / args.output
        record = write_result("plain_text_sentences", {"command": "python -m bench plain_text_sentences " + " ".join(sys.argv[1:] if argv is None else argv),
                                                       "torch_threads": torch.get_num_threads(), "rows": rows}, out)
        print(f"wrote {record} and {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
