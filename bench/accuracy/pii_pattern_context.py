"""What pii_patterns before ner_plus buys the model's own types (PII test split).

    python -m bench pii_pattern_context training/pii/model-calibrated training/pii/model-best

bench/accuracy/pii_accuracy.py found the same trained model scoring higher on PERSON in
our pipeline than as Presidio's NLP engine, where ``pii_patterns`` is removed.
This script tells the two causes apart on ``corpus/pii/test.spacy``: for every
gold mention of the model's types (PERSON, ORGANIZATION, LOCATION,
STREET_ADDRESS, DATE_TIME) it checks, with exact character spans, whether it is
found by (a) our service's decisions (pii_accuracy's ``run_ours``), (b) the same
trained pipeline without ``pii_patterns`` (``doc.ents``, every entity kept), and
(c) Presidio with that pipeline as its engine at the threshold pii_accuracy
tunes on dev. A mention found by (a) and missed by both (b) and (c) is one the
preset pattern entities fixed; the record keeps, for each such mention, what
the pipeline without patterns predicted over it instead.

Writes bench/results/pii_pattern_context.json.
"""
import collections
import os
import platform
from pathlib import Path

import spacy
import typer

from bench import provenance
from bench.accuracy.pii_accuracy import NER_TYPES, at, load_gold, presidio_engine, run_ours, run_presidio, tune

ROOT = Path(__file__).resolve().parents[2]


def main(
    ours_model: str = typer.Argument(..., help="Calibrated pipeline, as for bench/accuracy/pii_accuracy.py"),
    model: str = typer.Argument(..., help="The trained pipeline it was calibrated from"),
    dev: Path = typer.Option(Path("corpus/pii/dev.spacy")),
    test: Path = typer.Option(Path("corpus/pii/test.spacy")),
    output: Path = typer.Option(ROOT / "bench" / "results" / "pii_pattern_context.json"),
) -> None:
    commit = provenance.commit()
    texts, gold = load_gold(test)
    ours, _ = run_ours(ours_model, texts)
    nlp = spacy.load(model)
    nlp.remove_pipe("pii_patterns")
    bare = [[(e.start_char, e.end_char, e.label_) for e in doc.ents] for doc in nlp.pipe(texts, batch_size=32)]
    engine = presidio_engine(model, with_ner=True)
    dev_texts, dev_gold = load_gold(dev)
    threshold, _ = tune(run_presidio(engine, dev_texts), dev_gold)
    presidio = at(run_presidio(engine, texts), threshold)

    found = {label: collections.Counter() for label in NER_TYPES}
    fixed_by_patterns = []
    for text, g, o, b, p in zip(texts, gold, ours, bare, presidio):
        for span in g:
            if span[2] not in found:
                continue
            key = "+".join(name for name, preds in (("ours", o), ("bare", b), ("presidio", p)) if span in preds) or "none"
            found[span[2]][key] += 1
            if key == "ours":
                instead = [(text[s:e], label) for s, e, label in b if s < span[1] and span[0] < e]
                fixed_by_patterns.append({"type": span[2], "gold": text[span[0]:span[1]], "without_patterns": instead})
    record = {
        "found_by": {label: dict(sorted(c.items())) for label, c in found.items()},
        "key": "which systems find the gold mention exactly: ours (service decisions), bare (pipeline without pii_patterns, all kept), presidio (Presidio + that pipeline at its dev threshold)",
        "presidio_threshold": threshold,
        "found_only_with_patterns": fixed_by_patterns,
        "command": f"python -m bench pii_pattern_context {ours_model} {model}",
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
    }
    provenance.write_result("pii_pattern_context", record, output, ensure_ascii=False)
    for label, c in found.items():
        print(label, dict(sorted(c.items())))
    print(f"{len(fixed_by_patterns)} mentions found only with pii_patterns preset; first five:")
    for item in fixed_by_patterns[:5]:
        print(" ", item)


if __name__ == "__main__":
    typer.run(main)
