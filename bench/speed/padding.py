"""Padded wordpieces of the CoNLL++ test sentences under different length-sorting buffers.

Counts the wordpieces (special tokens included) a forward pass in batches of
32 would encode when the sentences are sorted by length within buffers of N
consecutive sentences, against a global sort; then the buffers ner_plus's
`nlp.pipe` makes (Docs up to 16,384 spaCy tokens) sorted by wordpieces (what
`predict` does since 8c60ca5) and by spaCy tokens (before). No model runs.

    python -m bench padding
"""
import argparse
import sys
from pathlib import Path

import spacy
from transformers import AutoTokenizer

from bench import provenance
from spacy_ner_plus.ml.backbone import embedded_backbone_path
from spacy_ner_plus.training.corpus import read_conll

ROOT = Path(__file__).resolve().parents[2]


def padded(lengths, buffer: int, batch: int, tokens=None, sort_by=None) -> int:
    """Padded wordpieces of batches of ``batch`` texts sorted (stably) by ``sort_by``
    (default: the lengths) within consecutive buffers: of ``buffer`` texts, or, when
    ``tokens`` is given, of texts until they hold ``buffer`` tokens (``_buffered``)."""
    sort_by = lengths if sort_by is None else sort_by
    groups, group, n = [], [], 0
    for i in range(len(lengths)):
        group.append(i)
        n += 1 if tokens is None else tokens[i]
        if n >= buffer:
            groups.append(group)
            group, n = [], 0
    groups.append(group)
    total = 0
    for group in groups:
        ordered = [lengths[i] for i in sorted(group, key=sort_by.__getitem__)]
        for i in range(0, len(ordered), batch):
            chunk = ordered[i : i + batch]
            total += max(chunk) * len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    args = parser.parse_args()
    texts = [" ".join(s.words) for doc in read_conll(args.test).documents for s in doc]
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_backbone_path()))
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    record = {"sentences": len(texts), "wordpieces": sum(lengths), "padded_batches_of_32": {}}
    print(f"{len(texts)} sentences, {sum(lengths)} wordpieces without padding")
    for buffer in (64, 256, 1024, len(lengths)):
        name = "global sort" if buffer == len(lengths) else f"buffer of {buffer}"
        record["padded_batches_of_32"][name] = padded(lengths, buffer, 32)
        print(f"{name}: {record['padded_batches_of_32'][name]} padded wordpieces in batches of 32")
    nlp = spacy.blank("en")
    tokens = [len(doc) for doc in nlp.pipe(texts)]
    for key, sort_by in (("wordpieces", None), ("spaCy tokens", tokens)):
        name = f"ner_plus buffers of 16,384 spaCy tokens, sorted by {key}"
        record["padded_batches_of_32"][name] = padded(lengths, 16384, 32, tokens, sort_by)
        print(f"{name}: {record['padded_batches_of_32'][name]}")
    record.update(command=" ".join(["python -m bench padding", *sys.argv[1:]]), commit=provenance.commit())
    provenance.write_result("padding", record, ROOT / "bench" / "results" / "padding.json")


if __name__ == "__main__":
    main()
