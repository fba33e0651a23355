"""Whole documents with one model: what stays inside sentences (ner_plus's ``within_sentences``).

For each trained pipeline and each split (a BIO/IOB column file with
-DOCSTART- markers), strict entity F1 of:

- sentences: every sentence its own Doc (how CoNLL is usually scored);
- none, entities, windows: whole documents with their gold sentence starts,
  predicted with ``within_sentences`` set so: "none" lets windows and
  entities run across sentences, "entities" keeps entities inside sentences
  (windows still see the context), "windows" predicts each sentence alone;
- sentencizer_entities, sentencizer_windows: whole documents as raw text
  would come: the gold sentence starts dropped, spaCy's rule-based
  ``sentencizer`` sets them (what a pipeline with a sentencizer first does).

Each row also gives the seconds of one prediction pass over the split (the
split's words are wordpiece-tokenized once before any pass) and how many
sentences the sentencizer found against the gold count.

    python -m bench document_inference MODEL [MODEL ...] --data ../shared/data/conll2003 --splits dev,test --output NAME.json
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import spacy
from spacy.tokens import Doc
from spacy.training import Example

import spacy_ner_plus  # noqa: F401
from bench import provenance
from spacy_ner_plus.training.corpus import read_conll, result_to_docs
from spacy_ner_plus.evaluation.evaluate import strict_scores
from spacy_ner_plus.ml.transformer import word_pieces

ROOT = Path(__file__).resolve().parents[2]
MODES = ("sentences", "none", "entities", "windows", "sentencizer_entities", "sentencizer_windows")


def inputs_for(nlp, gold: List[Doc], sent_starts: str, sentencizer=None) -> List[Doc]:
    """Copies of the gold docs' words; sentence starts "gold", "none" or set by ``sentencizer``."""
    docs = []
    for g in gold:
        starts: Optional[List[bool]] = [bool(t.is_sent_start) for t in g] if sent_starts == "gold" else None
        doc = Doc(nlp.vocab, words=[t.text for t in g], spaces=[bool(t.whitespace_) for t in g], sent_starts=starts)
        docs.append(sentencizer(doc) if sentencizer is not None else doc)
    return docs


def score(nlp, inputs: List[Doc], gold: List[Doc]) -> dict:
    start = time.perf_counter()
    predicted = list(nlp.pipe(inputs, batch_size=64))
    seconds = time.perf_counter() - start
    scores = strict_scores([Example(p, g) for p, g in zip(predicted, gold)])
    return {"f1": round(100 * scores["f1"], 2), "precision": round(100 * scores["precision"], 2),
            "recall": round(100 * scores["recall"], 2), "seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--splits", default="dev,test", help="column files NAME.iob under --data")
    parser.add_argument("--output", default="document_inference.json", help="file under bench/results")
    args = parser.parse_args()
    sentencizer = spacy.blank("en").add_pipe("sentencizer")
    rows = []
    for model in args.models:
        nlp = spacy.load(model)
        ner = nlp.get_pipe("ner_plus")
        for split in args.splits.split(","):
            result = read_conll(args.data / f"{split}.iob")
            sentences = result_to_docs(result, nlp.vocab, "sentence")
            documents = result_to_docs(result, nlp.vocab, "document")
            word_pieces(ner._encoder(), [t.text for d in documents for t in d])
            found = sum(len(list(sentencizer(Doc(nlp.vocab, words=[t.text for t in d])).sents)) for d in documents)
            row = {"model": model, "split": split, "n_documents": len(documents), "n_sentences": len(sentences),
                   "n_sentencizer_sentences": found}
            for mode in MODES:
                if mode == "sentences":
                    row[mode] = score(nlp, inputs_for(nlp, sentences, "gold"), sentences)
                else:
                    ner.within_sentences = mode.split("_")[-1]
                    splitter = sentencizer if mode.startswith("sentencizer") else None
                    row[mode] = score(nlp, inputs_for(nlp, documents, "none" if splitter else "gold", splitter), documents)
                print(json.dumps({"model": model, "split": split, "mode": mode, **row[mode]}), flush=True)
            rows.append(row)
    out = ROOT / "bench" / "results" / args.output
    provenance.write_result("document_inference", {"command": "python -m bench document_inference " + " ".join(sys.argv[1:]), "commit": provenance.commit(),
                                                   "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                                                   "rows": rows}, out)


if __name__ == "__main__":
    main()
