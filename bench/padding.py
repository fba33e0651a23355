"""Padded wordpieces of the CoNLL++ test sentences under different length-sorting buffers.

Counts the wordpieces (special tokens included) a forward pass in batches of
32 would encode when the sentences are sorted by length within buffers of N
consecutive sentences, against a global sort; no model runs.

    python bench/padding.py
"""
import argparse
from pathlib import Path

from transformers import AutoTokenizer

from spacy_ner_plus.backbone import embedded_backbone_path
from spacy_ner_plus.corpus import read_conll

ROOT = Path(__file__).resolve().parents[1]


def padded(lengths, buffer: int, batch: int) -> int:
    total = 0
    for start in range(0, len(lengths), buffer):
        group = sorted(lengths[start : start + buffer])
        for i in range(0, len(group), batch):
            chunk = group[i : i + batch]
            total += max(chunk) * len(chunk)
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    args = parser.parse_args()
    texts = [" ".join(s.words) for doc in read_conll(args.test).documents for s in doc]
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_backbone_path()))
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    print(f"{len(texts)} sentences, {sum(lengths)} wordpieces without padding")
    for buffer in (64, 256, 1024, len(lengths)):
        name = "global sort" if buffer == len(lengths) else f"buffer of {buffer}"
        print(f"{name}: {padded(lengths, buffer, 32)} padded wordpieces in batches of 32")


if __name__ == "__main__":
    main()
