"""Loss and scheme variants against the default, per type, in both decoding modes (issue 14 part 4).

    python -m bench variants --name conll --seed 1 ner_plus_inverse ner_plus_focal2 ner_plus_bioes

Reads the pipelines that ``bench/accuracy/conll_benchmark.py SYSTEM --seed N`` trained
(training/bench_NAME_SYSTEM[_seedN]/training) for the default (``ner_plus``) and
each variant (``--default SYSTEM`` names another default), and scores them all the same way, in one run, on the corpus the
benchmark converted (corpus/bench_NAME): each checkpoint predicts dev and test
once with ``join_touching`` off, and its entities are scored as decoded
("tags") and with each run of touching entities of one type joined ("join",
``evaluate.join_touching_examples``: what ``join_touching = true`` decodes
before thresholds; these pipelines have none). The pipelines were trained in
different decoding modes (configs/ner_plus.cfg set ``join_touching = true``
after the default's seeds were trained); the mode does not change training, so
scoring every pipeline in both modes compares them like for like. As in the
benchmark, the checkpoint (model-best or model-last) is the one with the higher
dev F1, chosen per mode.

Writes bench/results/variants_NAME[_TAG][_seedN].json and prints a Markdown table:
test F1 overall and per type, and the difference to the default. ``--tag TAG``
keeps a comparison against a newer default apart from the older records (e.g.
``--tag bioes``: the default trained with the BIOES workflow config).

    python -m bench variants --name conll --summary ner_plus_bioes
    python -m bench variants --name conll --tag bioes --summary ner_plus_focal1

reads those records (with ``--tag``, the tagged ones), one per seed, and prints for each variant its dev and
test F1 against the default's, per seed and in the mean over the seeds that
scored both, in each mode (no new record: every number is in the per-seed files).
"""
import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import spacy
from spacy.tokens import DocBin

from bench import provenance
from spacy_ner_plus.evaluation.evaluate import join_touching_examples, predict_examples, strict_scores

ROOT = provenance.ROOT
RESULTS = ROOT / "bench" / "results"
MODES = ("tags", "join")


def scores_by_mode(model_dir: Path, docs_path: Path) -> dict:
    nlp = spacy.load(model_dir, config={"components": {"ner_plus": {"join_touching": False}}})
    examples = predict_examples(nlp, DocBin().from_disk(docs_path).get_docs(nlp.vocab))
    return {"tags": strict_scores(examples), "join": strict_scores(join_touching_examples(examples))}


def score_system(training: Path, corpus: Path) -> dict:
    checkpoints = {}
    for name in ("model-best", "model-last"):
        print(f"scoring {training / name}", flush=True)
        checkpoints[name] = {"dev": scores_by_mode(training / name, corpus / "dev.spacy"), "test": scores_by_mode(training / name, corpus / "test.spacy")}
    result = {}
    for mode in MODES:
        chosen = max(checkpoints, key=lambda name: checkpoints[name]["dev"][mode]["f1"])
        test = checkpoints[chosen]["test"][mode]
        result[mode] = {
            "checkpoint": chosen,
            "dev_f1": checkpoints[chosen]["dev"][mode]["f1"],
            "f1": test["f1"], "precision": test["precision"], "recall": test["recall"],
            "per_type": {label: {k: test["per_type"][label][k] for k in ("f1", "precision", "recall", "support")} for label in test["per_type"]},
        }
    return result


def default_system(record: dict) -> str:
    """The system a record's variants were compared with (records before --default: ner_plus)."""
    return record.get("default", "ner_plus")


def table(record: dict, mode: str) -> str:
    systems = record["systems"]
    default = default_system(record)
    base = systems[default][mode]
    types = sorted(base["per_type"])
    lines = [
        f"| system ({mode}) | checkpoint | F1 | P | R | " + " | ".join(f"F1 {t}" for t in types) + " | F1 vs default |",
        "| --- | --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in types) + " | ---: |",
    ]
    for system, by_mode in systems.items():
        r = by_mode[mode]
        cells = " | ".join(
            f"{100 * r['per_type'][t]['f1']:.2f}" + ("" if system == default else f" ({100 * (r['per_type'][t]['f1'] - base['per_type'][t]['f1']):+.2f})")
            for t in types
        )
        delta = "-" if system == default else f"{100 * (r['f1'] - base['f1']):+.2f}"
        lines.append(f"| {system} | {r['checkpoint']} | {100 * r['f1']:.2f} | {100 * r['precision']:.2f} | {100 * r['recall']:.2f} | {cells} | {delta} |")
    return "\n".join(lines)


def mean_sd(values: list, sign: str = "") -> str:
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):{sign}.2f}{spread}"


def summary(name: str, variants: list) -> str:
    """Dev and test F1 of each variant against the default over the seeds of variants_NAME[_seedN].json
    (NAME includes the tag, if any)."""
    paths = [*RESULTS.glob(f"variants_{name}.json"), *RESULTS.glob(f"variants_{name}_seed*.json")]
    records = sorted((json.loads(p.read_text()) for p in paths), key=lambda r: r["seed"])
    if not records:
        sys.exit(f"no bench/results/variants_{name}[_seedN].json: run bench/accuracy/variants.py --name {name} --seed N first")
    lines = [
        "| variant | mode | seeds | dev F1 Δ per seed | dev F1 Δ mean | test F1 per seed (default → variant) "
        "| test F1 mean ± sd (default → variant) | test F1 Δ mean ± sd |",
        "| --- | --- | --- | --- | ---: | --- | --- | ---: |",
    ]
    for variant in variants:
        runs = [r for r in records if variant in r["systems"]]
        if not runs:
            sys.exit(f"{variant}: in no bench/results/variants_{name}[_seedN].json")
        for mode in MODES:
            pairs = [(r["seed"], r["systems"][default_system(r)][mode], r["systems"][variant][mode]) for r in runs]
            dev = [100 * (v["dev_f1"] - d["dev_f1"]) for _, d, v in pairs]
            default, ours = [100 * d["f1"] for _, d, _ in pairs], [100 * v["f1"] for _, _, v in pairs]
            lines.append(
                f"| {variant} | {mode} | {', '.join(str(s) for s, _, _ in pairs)} | {', '.join(f'{x:+.2f}' for x in dev)} | {statistics.mean(dev):+.2f} | "
                + ", ".join(f"{s}: {d:.2f} → {v:.2f}" for (s, _, _), d, v in zip(pairs, default, ours))
                + f" | {mean_sd(default)} → {mean_sd(ours)} | {mean_sd([v - d for d, v in zip(default, ours)], '+')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="systems of bench/accuracy/conll_benchmark.py, e.g. ner_plus_inverse")
    parser.add_argument("--name", default="conll")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--default", default="ner_plus", help="the system the variants are compared with (a pipeline trained with the workflow config before ner_plus followed it, e.g. ner_plus_bioes)")
    parser.add_argument("--tag", default="", help="records go to variants_NAME_TAG[_seedN].json (and --summary reads those)")
    parser.add_argument("--summary", action="store_true", help="print the variants against the default over the seeds already scored")
    args = parser.parse_args()
    record_name = f"{args.name}_{args.tag}" if args.tag else args.name
    if args.summary:
        print(summary(record_name, args.variants))
        return
    suffix = f"_seed{args.seed}" if args.seed else ""
    corpus = ROOT / "corpus" / f"bench_{args.name}"
    systems = [args.default, *args.variants]
    missing = [s for s in systems if not (ROOT / "training" / f"bench_{args.name}_{s}{suffix}" / "training" / "model-last").exists()]
    if missing or not (corpus / "test.spacy").exists():
        sys.exit(f"not trained or not converted: {', '.join(missing) or corpus}; run bench/accuracy/conll_benchmark.py SYSTEM --name {args.name} --seed {args.seed} first")
    commit = provenance.commit()
    record = {
        "name": args.name,
        "seed": args.seed,
        "default": args.default,
        "systems": {s: score_system(ROOT / "training" / f"bench_{args.name}_{s}{suffix}" / "training", corpus) for s in systems},
        "trained_by": {s: json.loads(p.read_text()).get("command") for s in systems if (p := RESULTS / f"{args.name}_{s}{suffix}.json").exists()},
        "command": " ".join(["python", "-m", "bench", "variants", *sys.argv[1:]]),
        "commit": commit,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
        + (f", torch threads {os.environ['OMP_NUM_THREADS']}" if os.environ.get("OMP_NUM_THREADS") else ""),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"variants_{record_name}{suffix}.json"
    provenance.write_result("variants", record, out)
    for mode in MODES:
        print(table(record, mode) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
