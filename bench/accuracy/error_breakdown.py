"""Where the errors of one entity type come from, for pipelines side by side.

For each pipeline (NAME=PATH), on one gold set, per type: strict precision and
recall by entity length in tokens (predicted length for precision, gold length
for recall), every wrong prediction by kind (spurious: overlaps no gold entity;
boundary: overlaps a gold entity of its type, other span; type: the exact span
of another type; boundary+type), the most frequent false positives, and how
many wrong predictions a gold entity contains or is contained in (a span too
short or too long), and how many pairs of touching predictions of one type
(B-X B-X) would be a gold mention if merged; and the strict scores if every
run of touching same-type predictions were joined (decoding.join_touching:
what ner_plus's `join_touching` setting decodes, before its scores and
thresholds). A ner_plus pipeline whose config joins them (`join_touching =
true`) is read with the setting off, so that "as decoded" means from the tags.
Written to bench/results/errors_<name>.json and a ledger record (bench/provenance.py).

    python -m bench error_breakdown corpus/bench_bc5cdr/test.spacy --name bc5cdr_test \
        full=training/bench_lora/bc5cdr/compare/full/training/model-best \
        lora=training/bench_lora/bc5cdr/compare/lora_lr0.003/training/model-best
"""
import argparse
import os
import platform
from collections import Counter, defaultdict
from pathlib import Path

import spacy
from spacy.tokens import DocBin

from bench import provenance
from spacy_ner_plus.evaluation.evaluate import analyse_errors, doc_spans, join_touching_examples, predict_examples, strict_scores
from spacy_ner_plus.metrics import prf

ROOT = Path(__file__).resolve().parents[2]
BUCKETS = ("1", "2", "3", "4+")


def bucket(n: int) -> str:
    return BUCKETS[min(n, 4) - 1]


def breakdown(examples) -> dict:
    by_type: dict = defaultdict(lambda: {"pred": Counter(), "pred_ok": Counter(), "gold": Counter(), "gold_ok": Counter(), "wrong": Counter(), "adjacent": Counter()})
    for eg in examples:
        gold, pred = doc_spans(eg.reference), doc_spans(eg.predicted)
        gold_set, pred_set = set(gold), set(pred)
        # two predictions of one type that touch (B-X B-X): would merging them give a gold mention?
        for a, b in zip(sorted(pred), sorted(pred)[1:]):
            if a[1] == b[0] and a[2] == b[2]:
                t = by_type[a[2]]
                t["adjacent"]["pairs"] += 1
                t["adjacent"]["merged is gold"] += (a[0], b[1], a[2]) in gold_set
        for g in gold:
            t = by_type[g[2]]
            t["gold"][bucket(g[1] - g[0])] += 1
            t["gold_ok"][bucket(g[1] - g[0])] += g in pred_set
        for p in pred:
            t = by_type[p[2]]
            t["pred"][bucket(p[1] - p[0])] += 1
            if p in gold_set:
                t["pred_ok"][bucket(p[1] - p[0])] += 1
                continue
            overlaps = [g for g in gold if g[0] < p[1] and p[0] < g[1]]
            if not overlaps:
                kind = "spurious"
            elif any((g[0], g[1]) == (p[0], p[1]) for g in overlaps):
                kind = "type"
            elif any(g[2] == p[2] for g in overlaps):
                same = [g for g in overlaps if g[2] == p[2]]
                inside = any(g[0] <= p[0] and p[1] <= g[1] for g in same)
                kind = "boundary: too short" if inside else ("boundary: too long" if any(p[0] <= g[0] and g[1] <= p[1] for g in same) else "boundary: shifted")
            else:
                kind = "boundary+type"
            t["wrong"][kind] += 1
    out = {}
    for label, t in sorted(by_type.items()):
        predicted, correct, support = sum(t["pred"].values()), sum(t["pred_ok"].values()), sum(t["gold"].values())
        p, r, f = prf(correct, predicted, support)
        out[label] = {
            "precision": p, "recall": r, "f1": f, "predicted": predicted, "support": support,
            "precision_by_length": {b: {"predicted": t["pred"][b], "precision": t["pred_ok"][b] / t["pred"][b] if t["pred"][b] else None} for b in BUCKETS},
            "recall_by_length": {b: {"gold": t["gold"][b], "recall": t["gold_ok"][b] / t["gold"][b] if t["gold"][b] else None} for b in BUCKETS},
            "wrong_predictions": dict(t["wrong"].most_common()),
            "adjacent_same_type_predictions": {"pairs": t["adjacent"]["pairs"], "merged is gold": t["adjacent"]["merged is gold"]},
        }
    return out


def strict(examples) -> dict:
    """Strict P/R/F1 per type and "micro" (evaluate.strict_scores)."""
    scores = strict_scores(examples)
    pick = lambda d: {k: d[k] for k in ("precision", "recall", "f1")}
    return {**{label: pick(d) for label, d in scores["per_type"].items()}, "micro": pick(scores)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("pipelines", nargs="+", help="NAME=PATH")
    parser.add_argument("--name", required=True, help="bench/results/errors_<name>.json")
    args = parser.parse_args()
    record = {"data": str(args.data), "pipelines": {}}
    for item in args.pipelines:
        name, path = item.split("=", 1)
        nlp = spacy.load(path)
        if "ner_plus" in nlp.pipe_names:
            nlp.get_pipe("ner_plus").join_touching = False
        examples = predict_examples(nlp, DocBin().from_disk(args.data).get_docs(nlp.vocab))
        analysis = analyse_errors(examples, max_false_positives=25)
        record["pipelines"][name] = {
            "path": path, "per_type": breakdown(examples), "false_positives": analysis["false_positives"],
            # what a decoder that never splits a run of one type would score
            "scores": strict(examples), "scores_if_touching_merged": strict(join_touching_examples(examples)),
        }
        for label in record["pipelines"][name]["scores"]:
            a, b = record["pipelines"][name]["scores"][label], record["pipelines"][name]["scores_if_touching_merged"][label]
            print(f"{name} {label}: F1 {100 * a['f1']:.2f} -> {100 * b['f1']:.2f} with touching same-type predictions merged (P {100 * a['precision']:.2f} -> {100 * b['precision']:.2f})")
        for label, d in record["pipelines"][name]["per_type"].items():
            print(f"{name} {label}: P {d['precision']:.4f} R {d['recall']:.4f} F1 {d['f1']:.4f}; wrong {d['wrong_predictions']}; adjacent {d['adjacent_same_type_predictions']}")
            print("  precision by length:", {b: (v["predicted"], None if v["precision"] is None else round(v["precision"], 3)) for b, v in d["precision_by_length"].items()})
            print("  recall by length:   ", {b: (v["gold"], None if v["recall"] is None else round(v["recall"], 3)) for b, v in d["recall_by_length"].items()})
    record["command"] = "python -m bench error_breakdown " + " ".join(f"{a}" for a in [str(args.data), *args.pipelines, "--name", args.name])
    record["commit"] = provenance.commit()
    record["machine"] = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
    out = ROOT / "bench" / "results" / f"errors_{args.name}.json"
    provenance.write_result("error_breakdown", record, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
