"""Length-aware maps followed by isotonic regression, and isotonic regression of a
length-normalised score, against the default isotonic map (issue 14 part 3).

The issue's "things to try" for a span score that shrinks with the entity's
length (a product of per-token marginals): calibrate on features that know
the length, then isotonic; or calibrate a length-normalised score. Maps, per
type, all fitted on dev predictions:

- ``isotonic`` (the workflow's default) and ``logistic_pooled`` (score, length
  and type; one fit, an intercept per type), as ``calibrate`` fits them;
- ``logistic_pooled+isotonic``: isotonic regression of the pooled logistic map's
  output (the map orders a type's entities by score *and* length; isotonic
  bends that order to the type's dev accuracy);
- ``logistic+isotonic``: the same after the per-type ``logistic`` map;
- ``isotonic_per_token``: isotonic regression of the geometric mean of the
  per-token probabilities, ``raw ** (1 / length)``.

A type that ``calibrate`` would leave with the identity map (too few dev
predictions, all right or all wrong) keeps it under every map.

Reported per map: test ECE (15 bins) overall and per type, Brier, the ECE's
lower bound on test (|mean calibrated confidence - precision|, overall and per
type: no map of these scores goes below it), and the map's ECE on dev by 5-fold
cross-fitting over ``--fold-draws`` draws of the folds (mean, standard deviation,
and the paired difference to isotonic: a map is better on dev only when that
difference is beyond its spread). The pipeline predicts dev and test once.

    python -m bench calibration_variants training/bench_conll_ner_plus/training/model-last \
        corpus/bench_conll/dev.spacy corpus/bench_conll/test.spacy --name conll_bioes_seed0 --join-touching

Writes bench/results/calibration_variants_NAME.json.
"""
import argparse
import platform
import sys
from pathlib import Path
from typing import Callable, Dict

import numpy
import spacy
from spacy.tokens import DocBin

from bench import provenance
from bench.calibration.calibration_benchmark import dev_cross_fitted_ece  # bench/calibration/calibration_benchmark.py
from spacy_ner_plus.calibration import (
    TypePredictions,
    _identity_fallback,
    brier,
    calibrate_predictions,
    ece,
    fit_calibrator,
)
from spacy_ner_plus.evaluation.calibrate import collect_predictions

MIN_SPANS = 30  # calibrate's default
Map = Callable[[numpy.ndarray, numpy.ndarray], numpy.ndarray]


def _then_isotonic(first: Dict[str, Map], dev: Dict[str, TypePredictions]) -> Dict[str, Map]:
    """Per type: isotonic regression fitted on the output of ``first`` on dev."""
    out = {}
    for label, p in dev.items():
        z = first[label](numpy.asarray(p.raw, dtype="float64"), numpy.asarray(p.lengths))
        iso = fit_calibrator(z, p.correct, "isotonic")
        out[label] = lambda raw, lengths, f=first[label], iso=iso: iso(f(raw, lengths))
    return out


def _identity(raw: numpy.ndarray, lengths: numpy.ndarray) -> numpy.ndarray:
    return numpy.asarray(raw, dtype="float64")


def _per_token(raw: numpy.ndarray, lengths: numpy.ndarray) -> numpy.ndarray:
    return numpy.asarray(raw, dtype="float64") ** (1.0 / numpy.asarray(lengths, dtype="float64"))


def fit_maps(dev: Dict[str, TypePredictions], name: str) -> Dict[str, Map]:
    """label -> map(raw scores, lengths) -> calibrated scores, fitted on dev."""
    if name in ("isotonic", "logistic_pooled", "logistic"):
        results = calibrate_predictions(dev, name, "max_f1", {}, MIN_SPANS, 0.5)
        return {label: results[label].calibrator for label in dev}
    if name == "logistic_pooled+isotonic":
        maps = _then_isotonic(fit_maps(dev, "logistic_pooled"), dev)
    elif name == "logistic+isotonic":
        maps = _then_isotonic(fit_maps(dev, "logistic"), dev)
    elif name == "isotonic_per_token":
        maps = {}
        for label, p in dev.items():
            iso = fit_calibrator(_per_token(p.raw, p.lengths), p.correct, "isotonic")
            maps[label] = lambda raw, lengths, iso=iso: iso(_per_token(raw, lengths))
    else:
        raise ValueError(f"unknown map {name}")
    return {label: _identity if _identity_fallback(p.correct, MIN_SPANS) else maps[label] for label, p in dev.items()}


MAPS = ("isotonic", "logistic_pooled", "logistic_pooled+isotonic", "logistic+isotonic", "isotonic_per_token")


def test_scores(maps: Dict[str, Map], test: Dict[str, TypePredictions]) -> dict:
    scores = {label: maps[label](numpy.asarray(p.raw), numpy.asarray(p.lengths)) for label, p in test.items()}
    correct = {label: numpy.asarray(p.correct, dtype=bool) for label, p in test.items()}
    every_score = numpy.concatenate(list(scores.values()))
    every_correct = numpy.concatenate(list(correct.values()))

    def floor(s, c):
        return abs(float(s.mean()) - float(c.mean())) if len(s) else 0.0

    return {
        "ece": ece(every_score, every_correct),
        "brier": brier(every_score, every_correct),
        "ece_lower_bound": floor(every_score, every_correct),
        "per_type": {
            label: {"ece": ece(scores[label], correct[label]), "ece_lower_bound": floor(scores[label], correct[label]), "n": int(len(correct[label]))}
            for label in test
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("dev_path", type=Path)
    parser.add_argument("test_path", type=Path)
    parser.add_argument("--name", required=True, help="the result file: bench/results/calibration_variants_<name>.json")
    parser.add_argument("--join-touching", action="store_true", help="decode with the ner_plus setting join_touching = true")
    parser.add_argument("--fold-draws", type=int, default=10, help="draws of the 5 dev folds (seeds 0..N-1)")
    args = parser.parse_args()
    commit = provenance.commit()
    nlp = spacy.load(args.model, config={"components": {"ner_plus": {"join_touching": True}}} if args.join_touching else {})
    dev = collect_predictions(nlp, "ner_plus", list(DocBin().from_disk(args.dev_path).get_docs(nlp.vocab)))
    test = collect_predictions(nlp, "ner_plus", list(DocBin().from_disk(args.test_path).get_docs(nlp.vocab)))
    dev = {label: p for label, p in dev.items() if p.n_gold}
    test = {label: test[label] for label in dev}
    draws = {name: [dev_cross_fitted_ece(dev, lambda d, name=name: fit_maps(d, name), seed=seed)["overall"] for seed in range(args.fold_draws)]
             for name in MAPS}
    maps = {}
    for name in MAPS:
        diff = numpy.asarray(draws[name]) - numpy.asarray(draws["isotonic"])
        maps[name] = {
            "dev_cross_fitted_ece": {"mean": float(numpy.mean(draws[name])), "sd": float(numpy.std(draws[name], ddof=1)), "draws": draws[name],
                                     "minus_isotonic_mean": float(diff.mean()), "minus_isotonic_sd": float(numpy.std(diff, ddof=1))},
            "test": test_scores(fit_maps(dev, name), test),
        }
    raw = test_scores({label: _identity for label in test}, test)
    record = {"model": str(args.model), "dev": str(args.dev_path), "test": str(args.test_path),
              "join_touching": nlp.get_pipe("ner_plus").join_touching, "fold_draws": args.fold_draws,
              "test_raw": raw, "maps": maps, "commit": commit,
              "command": "python -m bench calibration_variants " + " ".join(sys.argv[1:]), "machine": platform.node()}
    out = provenance.ROOT / "bench" / "results" / f"calibration_variants_{args.name}.json"
    provenance.write_result("calibration_variants", record, out)
    labels = list(test)
    print(f"| map | dev ECE (5-fold, {args.fold_draws} draws) | − isotonic | test ECE | floor | Brier | " + " / ".join(labels) + " |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    print(f"| raw | | | {raw['ece']:.4f} | {raw['ece_lower_bound']:.4f} | {raw['brier']:.4f} | "
          + " / ".join(f"{raw['per_type'][label]['ece']:.3f}" for label in labels) + " |")
    for name, m in maps.items():
        cv, t = m["dev_cross_fitted_ece"], m["test"]
        print(f"| {name} | {cv['mean']:.4f} ± {cv['sd']:.4f} | {cv['minus_isotonic_mean']:+.4f} ± {cv['minus_isotonic_sd']:.4f} | "
              f"{t['ece']:.4f} | {t['ece_lower_bound']:.4f} | {t['brier']:.4f} | "
              + " / ".join(f"{t['per_type'][label]['ece']:.3f}" for label in labels) + " |")


if __name__ == "__main__":
    main()
