"""Calibration on CoNLL-2003 dev, measured on the CoNLL++ test set.

The trained pipeline is run once on dev and once on test (raw scores of every
decoded entity, and whether each is exactly right); every method and policy
is then fitted on dev and applied to the test predictions, which is what
`calibrate` + `spacy.load` would do. Reports ECE (15 equal-width bins) and
Brier per type and overall before/after, test precision/recall per type with
`precision:0.95`, and test F1 with `max_f1` against the uncalibrated F1
(every decoded entity kept). Methods: isotonic, temperature, logistic (raw
score and entity length) and logistic_pooled (the same, one fit for all
types); thresholds from DEV's point estimates and with 1,000 bootstrap
resamples (95% bounds; out-of-bag check for max_f1). Per type also the ECE's
lower bound on test, |mean calibrated confidence - precision|: no map can go
below it without changing the test predictions' mean confidence. And, to
choose a method on dev alone, each method's ECE on dev by 5-fold cross-fitting
(each fifth of every type's dev predictions mapped by a calibration fitted on
the other four; folds drawn with seed 0).

    python -m bench calibration_benchmark training/bench_conll_ner_plus/training/model-best \
        corpus/bench_conll/dev.spacy corpus/bench_conll/test.spacy [--name conll] [--join-touching]

``--join-touching`` loads the pipeline with ``join_touching = true`` (touching
entities of one type read as one, scored by ``decoding.run_confidence``);
without it the pipeline decodes as its config says. The record names the mode.
"""
import argparse
import platform
import sys
from pathlib import Path

import numpy
import spacy
from spacy.tokens import DocBin

from bench import provenance
from spacy_ner_plus.calibration import TypePredictions, calibrate_predictions
from spacy_ner_plus.evaluation.calibrate import collect_predictions
from spacy_ner_plus.evaluation.evaluate import confidence_summary
from spacy_ner_plus.metrics import ece, prf

ROOT = Path(__file__).resolve().parents[2]


def apply(results, test):
    """Test scores and kept/correct counts per type under fitted calibrators and thresholds."""
    out = {}
    for label, p in test.items():
        r = results[label]
        raw = numpy.asarray(p.raw)
        ok = numpy.asarray(p.correct, dtype=bool)
        cal = r.calibrator(raw, p.lengths)
        kept = cal >= r.threshold
        out[label] = {
            "threshold": r.threshold,
            "kept": int(kept.sum()), "tp_kept": int(ok[kept].sum()), "predicted": int(len(raw)), "tp_all": int(ok.sum()), "n_gold": p.n_gold,
            "scores": cal, "correct": ok, "raw": raw,
        }
    return out


def before_after(summary):
    """evaluate.confidence_summary's ECE and Brier, raw and as served, under this script's names."""
    return {"ece_before": summary["ece_raw"], "ece_after": summary["ece"], "brier_before": summary["brier_raw"], "brier_after": summary["brier"]}


def summarise(applied):
    confidence = confidence_summary(applied)
    tp_k = sum(a["tp_kept"] for a in applied.values())
    kept = sum(a["kept"] for a in applied.values())
    tp_all = sum(a["tp_all"] for a in applied.values())
    pred = sum(a["predicted"] for a in applied.values())
    gold = sum(a["n_gold"] for a in applied.values())
    return {
        "overall": {
            **before_after(confidence["overall"]),
            "f1_uncalibrated": prf(tp_all, pred, gold)[2], "f1_thresholded": prf(tp_k, kept, gold)[2],
            "precision_thresholded": prf(tp_k, kept, gold)[0], "recall_thresholded": prf(tp_k, kept, gold)[1],
            "recall_uncalibrated": prf(tp_all, pred, gold)[1], "precision_uncalibrated": prf(tp_all, pred, gold)[0],
        },
        "per_type": {
            label: {
                **before_after(confidence["per_type"][label]),
                "ece_lower_bound": abs(float(numpy.mean(a["scores"])) - a["tp_all"] / a["predicted"]) if a["predicted"] else 0.0,
                **{k: v for k, v in a.items() if k not in ("scores", "correct", "raw")},
                "precision": prf(a["tp_kept"], a["kept"], a["n_gold"])[0],
                "recall": prf(a["tp_kept"], a["kept"], a["n_gold"])[1],
                "recall_uncalibrated": prf(a["tp_all"], a["predicted"], a["n_gold"])[1],
                "precision_uncalibrated": prf(a["tp_all"], a["predicted"], a["n_gold"])[0],
            }
            for label, a in applied.items()
        },
    }


def _subset(p, mask):
    """A type's predictions where mask is true (its gold count kept: recall is not used here)."""
    return TypePredictions(*([v for v, m in zip(values, mask) if m] for values in (p.raw, p.correct)), p.n_gold,
                           [v for v, m in zip(p.lengths, mask) if m])


def fitted_by(method):
    """fit(type predictions) -> {label: map(raw, lengths)}: ``calibrate``'s calibrators of METHOD."""
    return lambda dev: {label: r.calibrator for label, r in calibrate_predictions(dev, method, "max_f1", {}, 30, 0.5).items()}


def dev_cross_fitted_ece(dev, fit, folds=5, seed=0):
    """ECE on dev, overall and per type, of maps fitted without the predictions they map:
    each fifth of every type's predictions is mapped by ``fit`` of the other four
    (folds drawn with ``seed``)."""
    rng = numpy.random.default_rng(seed)
    fold = {label: rng.integers(0, folds, len(p.raw)) for label, p in dev.items()}
    scores = {label: numpy.zeros(len(p.raw)) for label, p in dev.items()}
    for k in range(folds):
        maps = fit({label: _subset(p, fold[label] != k) for label, p in dev.items()})
        for label, p in dev.items():
            mask = fold[label] == k
            scores[label][mask] = maps[label](numpy.asarray(p.raw)[mask], numpy.asarray(p.lengths)[mask])
    correct = {label: numpy.asarray(p.correct, dtype=bool) for label, p in dev.items()}
    return {
        "overall": ece(numpy.concatenate(list(scores.values())), numpy.concatenate(list(correct.values()))),
        "per_type": {label: ece(scores[label], correct[label]) for label in dev},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("dev_path", type=Path)
    parser.add_argument("test_path", type=Path)
    parser.add_argument("--name", default="conll", help="the result file: bench/results/calibration_<name>.json")
    parser.add_argument("--join-touching", action="store_true", help="decode with the ner_plus setting join_touching = true")
    args = parser.parse_args()
    model, dev_path, test_path = args.model, args.dev_path, args.test_path
    commit = provenance.commit()
    nlp = spacy.load(model, config={"components": {"ner_plus": {"join_touching": True}}} if args.join_touching else {})
    dev = list(DocBin().from_disk(dev_path).get_docs(nlp.vocab))
    test = list(DocBin().from_disk(test_path).get_docs(nlp.vocab))
    dev_pred = collect_predictions(nlp, "ner_plus", dev)
    test_pred = collect_predictions(nlp, "ner_plus", test)
    runs = {}
    methods = ("isotonic", "temperature", "logistic", "logistic_pooled")
    dev_cv = {method: dev_cross_fitted_ece(dev_pred, fitted_by(method)) for method in methods}
    for method in methods:
        for policy in ("max_f1", "precision:0.95"):
            for bootstrap in (0, 1000):
                results = calibrate_predictions(dev_pred, method, policy, {}, 30, 0.5, bootstrap=bootstrap, confidence=0.95)
                runs[f"{method} {policy}" + (f" bootstrap {bootstrap}" if bootstrap else "")] = summarise(apply(results, test_pred))
    record = {"model": str(model), "dev": str(dev_path), "test": str(test_path), "join_touching": nlp.get_pipe("ner_plus").join_touching, "runs": runs,
              "dev_cross_fitted_ece": dev_cv, "commit": commit,
              "command": "python -m bench calibration_benchmark " + " ".join(sys.argv[1:]), "machine": platform.node()}
    out = ROOT / "bench" / "results" / f"calibration_{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    provenance.write_result("calibration_benchmark", record, out)
    for method, cv in dev_cv.items():
        print(f"## {method}: ECE on dev, 5-fold cross-fitted {cv['overall']:.4f} ("
              + ", ".join(f"{label} {v:.4f}" for label, v in cv["per_type"].items()) + ")")
    for name, run in runs.items():
        o = run["overall"]
        print(f"## {name}: ECE {o['ece_before']:.4f} -> {o['ece_after']:.4f}, Brier {o['brier_before']:.4f} -> {o['brier_after']:.4f}, "
              f"F1 {o['f1_uncalibrated']:.4f} -> {o['f1_thresholded']:.4f}")
        for label, t in run["per_type"].items():
            print(f"  {label}: ECE {t['ece_before']:.4f} -> {t['ece_after']:.4f} (bound {t['ece_lower_bound']:.4f}), threshold {t['threshold']:.3f}, "
                  f"P {t['precision_uncalibrated']:.4f} -> {t['precision']:.4f}, R {t['recall_uncalibrated']:.4f} -> {t['recall']:.4f}")


if __name__ == "__main__":
    main()
