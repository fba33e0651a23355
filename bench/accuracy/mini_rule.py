"""The mini workflow's rule: precision gained and recall lost, on dev and test.

Runs the trained mini pipeline once on dev and once on test, then applies each
rule variant (``ner_plus_entity_filter`` rules from
``rules_from_dropped_types``: texts the training sentences annotate only with
MISC, only with LOC, or only with either) to the same predictions, and
counts per type the predictions it removed that were right and wrong. The
variant is chosen on dev (micro F1); test is reported beside it.

    python -m bench mini_rule   # after: spacy project run mini-convert; mini-train
"""
import argparse
import os
import platform
from collections import Counter
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.training import Example

from bench import provenance
from spacy_ner_plus.pipeline.entity_filter import rules_from_dropped_types
from spacy_ner_plus.evaluation.evaluate import doc_spans, predict_examples, strict_scores

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {"MISC only": ["MISC"], "LOC only": ["LOC"], "LOC or MISC": []}


def scores(examples, removed) -> dict:
    """Strict P/R/F1 per type and micro (evaluate.strict_scores), with the
    entities in ``removed`` (per example) taken away, and how many of those
    were right and wrong."""
    kept, lost = [], Counter()
    for eg, gone in zip(examples, removed):
        doc = eg.predicted.copy()
        doc.ents = [e for e in doc.ents if (e.start, e.end, e.label_) not in gone]
        kept.append(Example(doc, eg.reference))
        gold = set(doc_spans(eg.reference))
        for span in gone:
            lost[span[2], "removed_right" if span in gold else "removed_wrong"] += 1
    strict = strict_scores(kept)
    labels = sorted({s[2] for eg in examples for s in doc_spans(eg.reference) + doc_spans(eg.predicted)})
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    out = {label: {**{k: strict["per_type"].get(label, zero)[k] for k in zero}, "removed_right": lost[label, "removed_right"],
                   "removed_wrong": lost[label, "removed_wrong"]} for label in labels}
    out["micro"] = {**{k: strict[k] for k in zero}, **{k: sum(out[label][k] for label in labels) for k in ("removed_right", "removed_wrong")}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, default=ROOT / "training" / "mini" / "model-best")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus" / "mini")
    parser.add_argument("--keep", default="PER,ORG")
    args = parser.parse_args()
    keep = args.keep.split(",")
    nlp = spacy.load(args.model)
    train_docs = list(DocBin().from_disk(args.corpus / "train_all_types.spacy").get_docs(nlp.vocab))
    filters = {}
    for name, types in VARIANTS.items():
        rules, n_texts, _ = rules_from_dropped_types(train_docs, keep, types)
        pipe = nlp.add_pipe("ner_plus_entity_filter", name=f"rule_{len(filters)}")
        pipe.initialize(rules=rules)
        filters[name] = (pipe, n_texts)
    record = {"model": str(args.model), "keep": keep, "variants": {}, "splits": {}}
    with nlp.select_pipes(disable=[p.name for p, _ in filters.values()]):
        for split in ("dev", "test"):
            examples = predict_examples(nlp, DocBin().from_disk(args.corpus / f"{split}.spacy").get_docs(nlp.vocab))
            record["splits"][split] = {"none": scores(examples, [set() for _ in examples])}
            for name, (pipe, n_texts) in filters.items():
                removed = [{(e.start, e.end, e.label_) for e in pipe.removed(eg.predicted)} for eg in examples]
                record["splits"][split][name] = scores(examples, removed)
                record["variants"][name] = {"from_types": VARIANTS[name] or "every type not kept", "texts": n_texts}
    dev = record["splits"]["dev"]
    record["chosen_on_dev"] = max(VARIANTS, key=lambda name: dev[name]["micro"]["f1"])
    for split, rows in record["splits"].items():
        for name, s in rows.items():
            m = s["micro"]
            print(f"{split} {name:12s} P {100 * m['precision']:.2f} R {100 * m['recall']:.2f} F1 {100 * m['f1']:.2f}  removed right {m['removed_right']} wrong {m['removed_wrong']}")
    print("chosen on dev:", record["chosen_on_dev"])
    record["command"] = "python -m bench mini_rule"
    record["commit"] = provenance.commit()
    record["machine"] = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
    provenance.write_result("mini_rule", record, ROOT / "bench" / "results" / "mini_rule.json")


if __name__ == "__main__":
    main()
