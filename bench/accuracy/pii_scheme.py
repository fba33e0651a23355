"""BIOES against BIO for the PII pipeline (issue 14 part 4: the scheme on the PII config).

    python -m bench pii_scheme BIOES --seed 0
    python -m bench pii_scheme BIOES --seed 0 --score-only   # score the trained pipeline again
    python -m bench pii_scheme --summary

Trains configs/ner_plus_pii.cfg as the ``pii`` workflow does (``pii-train``:
pii_patterns + ner_plus, the epochs and evaluation step of project.yml's vars,
model-best by dev F1 of the whole pipeline) with ``components.ner_plus.scheme``
set to SCHEME and ``system.seed`` to the seed, into
training/bench_pii_SCHEME_seedN. Then, as ``pii-calibrate`` and ``pii-evaluate``
do, scores model-best on the test split with every decoded entity kept, and
after calibrating it on dev (project.yml's ``calibration_method``,
``calibration_bootstrap`` and ``pii_threshold_policy``, F2 by default):
strict entity-level precision, recall, F1 and F2 (beta 2, what a redaction
service maximises), overall and per type; the same on dev with every entity
kept, where a scheme can be chosen without test. The corpus is the workflow's
(``spacy project run pii-convert``: corpus/pii).

Writes bench/results/pii_scheme_SCHEME_seedN.json; ``--summary`` reads every
such record and prints, per scheme, the per-seed values and the mean and
standard deviation over the seeds, and the BIOES - BIO difference over the
seeds both have.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy
import spacy
import srsly
from spacy.tokens import DocBin

from bench import provenance
from spacy_ner_plus.metrics import fbeta as _fbeta
from spacy_ner_plus.evaluation.evaluate import predict_examples, strict_scores
from spacy_ner_plus.evaluation.calibrate import calibrate_pipeline

ROOT = provenance.ROOT
RESULTS = ROOT / "bench" / "results"
CORPUS = ROOT / "corpus" / "pii"
SCHEMES = ("BIO", "BIOES")


def scores(nlp, docs) -> dict:
    s = strict_scores(predict_examples(nlp, docs))
    summary = lambda d: {**{k: d[k] for k in ("precision", "recall", "f1", "support", "predicted")}, "f2": float(_fbeta(numpy.float64(d["precision"]), numpy.float64(d["recall"]), 2.0))}  # noqa: E731
    return {**summary(s), "per_type": {label: summary(v) for label, v in s["per_type"].items()}}


def run(scheme: str, seed: int, train: bool = True) -> dict:
    project = srsly.read_yaml(ROOT / "project.yml")["vars"]
    for split in ("train", "dev", "test"):
        if not (CORPUS / f"{split}.spacy").exists():
            sys.exit(f"{CORPUS / split}.spacy missing: run `python -m spacy project run pii-convert` first")
    work = ROOT / "training" / f"bench_pii_{scheme}_seed{seed}"
    commit = provenance.commit()
    cmd = [
        sys.executable, "-m", "spacy", "train", str(ROOT / "configs" / "ner_plus_pii.cfg"), "--output", str(work),
        "--paths.train", str(CORPUS / "train.spacy"), "--paths.dev", str(CORPUS / "dev.spacy"),
        "--training.max_epochs", str(project["pii_max_epochs"]), "--training.eval_frequency", str(project["pii_eval_frequency"]),
        "--components.ner_plus.scheme", scheme, "--system.seed", str(seed), "--gpu-id", "-1",
    ]
    record_path = RESULTS / f"pii_scheme_{scheme}_seed{seed}.json"
    if train:
        print("+", " ".join(cmd), flush=True)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=ROOT)
        seconds, train_commit = time.perf_counter() - start, commit
    else:
        earlier = json.loads(record_path.read_text())
        seconds, train_commit = earlier["train_seconds"], earlier.get("train_commit", earlier["commit"])
    nlp = spacy.load(work / "model-best")
    dev = list(DocBin().from_disk(CORPUS / "dev.spacy").get_docs(nlp.vocab))
    test = list(DocBin().from_disk(CORPUS / "test.spacy").get_docs(nlp.vocab))
    all_kept, dev_all_kept = scores(nlp, test), scores(nlp, dev)
    calibrate_pipeline(nlp, dev, method=project["calibration_method"], policy=project["pii_threshold_policy"], bootstrap=project["calibration_bootstrap"])
    return {
        "scheme": scheme, "seed": seed, "train_seconds": round(seconds, 1),
        "test_all_kept": all_kept, "test_calibrated": scores(nlp, test), "dev_all_kept": dev_all_kept, "dev_calibrated": scores(nlp, dev),
        "calibration": {"method": project["calibration_method"], "policy": project["pii_threshold_policy"], "bootstrap": project["calibration_bootstrap"]},
        "command": "python -m bench pii_scheme " + " ".join(a for a in sys.argv[1:] if a != "--score-only"), "commit": commit, "train_commit": train_commit,
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
        + (f", torch threads {os.environ['OMP_NUM_THREADS']}" if os.environ.get("OMP_NUM_THREADS") else ""),
    }


def summary() -> None:
    records = {}
    for path in sorted(RESULTS.glob("pii_scheme_*_seed*.json")):
        r = json.loads(path.read_text())
        records[(r["scheme"], r["seed"])] = r
    rows = [("dev F1, calibrated (thresholds fitted on dev)", "dev_calibrated", "f1"), ("dev F1, all kept", "dev_all_kept", "f1"),
            ("test F1, all kept", "test_all_kept", "f1"), ("test F2, all kept", "test_all_kept", "f2"),
            ("test F1, calibrated", "test_calibrated", "f1"), ("test F2, calibrated", "test_calibrated", "f2"),
            ("dev F2, calibrated", "dev_calibrated", "f2")]
    print("| measure | " + " | ".join(SCHEMES) + " | BIOES - BIO (paired seeds) |")
    print("| --- | " + " | ".join("---" for _ in SCHEMES) + " | --- |")
    for title, part, key in rows:
        cells = []
        for scheme in SCHEMES:
            values = {seed: 100 * r[part][key] for (s, seed), r in sorted(records.items()) if s == scheme and part in r}
            spread = f" ± {statistics.stdev(values.values()):.2f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values.values()):.2f}{spread} (" + ", ".join(f"{s}: {v:.2f}" for s, v in values.items()) + ")" if values else "")
        paired = sorted(seed for (s, seed), r in records.items() if s == "BIOES" and part in r and part in records.get(("BIO", seed), {}))
        diffs = [100 * (records[("BIOES", seed)][part][key] - records[("BIO", seed)][part][key]) for seed in paired]
        cells.append(f"{statistics.mean(diffs):+.2f} over {len(diffs)} (" + ", ".join(f"{d:+.2f}" for d in diffs) + ")" if diffs else "")
        print(f"| {title} | " + " | ".join(cells) + " |")
    types = sorted({t for r in records.values() for t in r["test_calibrated"]["per_type"]})
    columns = [("dev_calibrated", "f1"), ("test_calibrated", "f1"), ("test_calibrated", "f2")]
    print("\nper type, calibrated, mean over seeds: | type | "
          + " | ".join(f"{scheme} {part.split('_')[0]} {key.upper()}" for part, key in columns for scheme in SCHEMES) + " |")
    for t in types:
        means = []
        for part, key in columns:
            for scheme in SCHEMES:
                values = [100 * r[part]["per_type"][t][key] for (s, _), r in records.items() if s == scheme and t in r[part]["per_type"]]
                means.append(f"{statistics.mean(values):.2f}" if values else "")
        print(f"| {t} | " + " | ".join(means) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scheme", nargs="?", choices=SCHEMES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--score-only", action="store_true", help="score the pipeline an earlier run trained; keep its training time")
    parser.add_argument("--summary", action="store_true", help="print the table of every pii_scheme record; train nothing")
    args = parser.parse_args()
    if args.summary:
        return summary()
    if args.scheme is None:
        parser.error("give a scheme, or --summary")
    record = run(args.scheme, args.seed, train=not args.score_only)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pii_scheme_{args.scheme}_seed{args.seed}.json"
    provenance.write_result("pii_scheme", record, out, configs=[ROOT / "configs" / "ner_plus_pii.cfg"])
    print(json.dumps({k: record[k] for k in ("scheme", "seed", "train_seconds")}, indent=2))
    for part in ("test_all_kept", "test_calibrated"):
        s = record[part]
        print(f"{part}: P {s['precision']:.4f} R {s['recall']:.4f} F1 {s['f1']:.4f} F2 {s['f2']:.4f}")


if __name__ == "__main__":
    main()
