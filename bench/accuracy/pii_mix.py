"""Real sentences in the PII training corpus (issue 29 part 4): the mixes scored on dev data only.

    python -m bench pii_mix baseline training/pii --log training/logs/pii.log
    python -m bench pii_mix mix3000 training/pii-mix-3000 --log training/logs/mix3000.log
    python -m bench pii_mix mix training/pii-mix --metrics metrics/pii-mix   # scores pii-mix-evaluate wrote
    python -m bench pii_mix mix3000 training/pii-mix-3000 --quick   # 20 texts of each dev set, no record
    python -m bench pii_mix --summary

Reads a trained PII run directory (``pii-train`` or ``pii-mix-train`` then
``pii-calibrate``/``pii-mix-calibrate`` wrote it: ``model-best`` and
``model-calibrated``) and records, for the run NAME:

- the training recipe, from ``model-best/config.cfg``: training corpus (its
  texts and entities per type, when the file is there), epochs, evaluation
  step, augmenter level, seed;
- ``model-best``'s dev score as spaCy's training loop measured it (the whole
  pipeline, every decoded entity kept: ``meta.json`` ``performance``);
- ``model-calibrated`` scored here with the strict seqeval scorer of
  ``python -m spacy_ner_plus evaluate``: precision, recall, F1 and F2 overall
  and per type on the PII dev set (``corpus/pii/dev.spacy``; its thresholds
  were fitted on it, so these are in-sample for the thresholds) and on
  CoNLL-2003 dev mapped to PERSON/ORGANIZATION/LOCATION
  (``corpus/pii/mix/conll_dev.spacy``, written by ``pii-mix-evaluate``; its micro scores count the
  other types' predictions as spurious, so the three types are also pooled alone);
- with ``--metrics DIR``, the scores are read from the ``metrics.json`` that
  ``python -m spacy_ner_plus evaluate`` wrote under DIR/pii_dev and
  DIR/conll_dev (the same scorer; ``pii-mix-evaluate`` writes metrics/pii-mix),
  which must be newer than ``model-calibrated``;
- with ``--log``, the training's wall-clock time and peak memory from a
  ``/usr/bin/time -v`` log of ``spacy train``.

No test set is read: the mix is chosen on these. Writes
bench/results/pii_mix_NAME.json and a ledger record; ``--summary`` prints the
table of every pii_mix record.
"""
import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional

import numpy

from bench import provenance

ROOT = provenance.ROOT
RESULTS = ROOT / "bench" / "results"
PII_DEV = ROOT / "corpus" / "pii" / "dev.spacy"
CONLL_DEV = ROOT / "corpus" / "pii" / "mix" / "conll_dev.spacy"
TYPES = ("PERSON", "ORGANIZATION", "LOCATION")


def scores(nlp, docs) -> Dict[str, Any]:
    from spacy_ner_plus.evaluation.evaluate import predict_examples, strict_scores
    from spacy_ner_plus.metrics import fbeta

    s = strict_scores(predict_examples(nlp, docs))

    def summary(d: Dict[str, Any]) -> Dict[str, Any]:
        return {**{k: d[k] for k in ("precision", "recall", "f1", "support", "predicted")}, "f2": float(fbeta(numpy.float64(d["precision"]), numpy.float64(d["recall"]), 2.0))}

    return {**summary(s), "per_type": {label: summary(v) for label, v in sorted(s["per_type"].items())}}


def time_log(path: Path) -> Dict[str, Any]:
    """Wall-clock seconds and peak RSS of a ``/usr/bin/time -v`` log."""
    text = path.read_text(encoding="utf8", errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if not wall:
        sys.exit(f"{path}: no 'Elapsed (wall clock) time' line: give the /usr/bin/time -v log of the training")
    h, m, s = wall.groups()
    return {
        "train_wall_seconds": round(int(h or 0) * 3600 + int(m) * 60 + float(s), 1),
        "train_peak_rss_mb": round(int(rss.group(1)) / 1024) if rss else None,
        "train_log": str(path),
    }


def recipe(model_best: Path) -> Dict[str, Any]:
    from spacy.tokens import DocBin
    from spacy.util import load_config
    from spacy.vocab import Vocab

    config = load_config(model_best / "config.cfg", interpolate=False)
    augmenter = config["corpora"]["train"].get("augmenter") or {}
    out: Dict[str, Any] = {
        "train": config["paths"]["train"],
        "max_epochs": config["training"]["max_epochs"],
        "eval_frequency": config["training"]["eval_frequency"],
        "batch_size": config["training"]["batcher"]["size"],
        "seed": config["system"]["seed"],
        "augmenter_level": augmenter.get("level", 0.0) if isinstance(augmenter, dict) else 0.0,
        "scheme": config["components"]["ner_plus"].get("scheme"),
    }
    train = Path(out["train"])
    train = train if train.is_absolute() else ROOT / train
    if train.is_file():
        docs = list(DocBin().from_disk(train).get_docs(Vocab()))
        out["train_texts"] = len(docs)
        out["train_tokens"] = sum(len(d) for d in docs)
        out["train_entities"] = dict(sorted(Counter(e.label_ for d in docs for e in d.ents).items()))
    return out


def summarise(metrics: Dict[str, Any]) -> Dict[str, Any]:
    """The strict scores of a ``python -m spacy_ner_plus evaluate`` metrics.json, with F2."""
    from spacy_ner_plus.metrics import fbeta

    def summary(d: Dict[str, Any]) -> Dict[str, Any]:
        return {**{k: d[k] for k in ("precision", "recall", "f1", "support", "predicted")}, "f2": float(fbeta(numpy.float64(d["precision"]), numpy.float64(d["recall"]), 2.0))}

    return {**summary(metrics), "per_type": {label: summary(v) for label, v in sorted(metrics["per_type"].items())}}


def read_metrics(folder: Path, model: Path) -> Dict[str, Any]:
    """metrics.json of ``evaluate --output FOLDER``; it must be newer than the pipeline it scored."""
    path = folder / "metrics.json"
    if not path.is_file():
        sys.exit(f"{path}: missing; run python -m spacy_ner_plus evaluate {model} DATA --output {folder} (pii-mix-evaluate does)")
    newest = max(p.stat().st_mtime for p in model.rglob("*") if p.is_file())
    if path.stat().st_mtime < newest:
        sys.exit(f"{path} is older than {model}: evaluate the pipeline again")
    return {"metrics": str(path), **summarise(json.loads(path.read_text(encoding="utf8")))}


def run(name: str, directory: Path, log: Optional[Path], limit: Optional[int], metrics: Optional[Path] = None) -> Dict[str, Any]:
    import spacy
    from spacy.tokens import DocBin

    for path, how in ((PII_DEV, "spacy project run pii-convert"), (CONLL_DEV, "spacy project run pii-mix-evaluate")):
        if not path.exists():
            sys.exit(f"{path} missing: run `python -m {how}` first")
    for sub in ("model-best", "model-calibrated"):
        if not (directory / sub).is_dir():
            sys.exit(f"{directory / sub}: no such pipeline; train and calibrate the run first (pii-mix-train, pii-mix-calibrate)")
    meta = json.loads((directory / "model-best" / "meta.json").read_text(encoding="utf8"))
    nlp = spacy.load(directory / "model-calibrated")
    record: Dict[str, Any] = {
        "name": name,
        "directory": str(directory),
        "recipe": recipe(directory / "model-best"),
        "training_dev_model_best": meta.get("performance", {}),
        "pipeline": nlp.pipe_names,
        "calibration": nlp.get_pipe("ner_plus").cfg.get("thresholds"),
    }
    for key, path, folder in (("pii_dev", PII_DEV, "pii_dev"), ("conll_dev_mapped", CONLL_DEV, "conll_dev")):
        if metrics is not None:
            record[key] = {"data": str(path.relative_to(ROOT)), **read_metrics(metrics / folder, directory / "model-calibrated")}
            continue
        docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))[:limit]
        record[key] = {"data": str(path.relative_to(ROOT)), "texts": len(docs), **scores(nlp, docs)}
    # CoNLL-2003 annotates none of the other types: their predictions count as spurious in its micro
    # scores, so the three types it has are also scored together
    record["conll_dev_mapped"]["three_types"] = pooled(record["conll_dev_mapped"]["per_type"], TYPES)
    if log is not None:
        record.update(time_log(log))
    return record


def pooled(per_type: Dict[str, Any], types) -> Dict[str, Any]:
    """Micro precision, recall, F1 and F2 over some types, from their per-type scores."""
    from spacy_ner_plus.metrics import fbeta

    present = [per_type[t] for t in types if t in per_type]
    correct = sum(round(d["recall"] * d["support"]) for d in present)
    predicted = sum(d["predicted"] for d in present)
    support = sum(d["support"] for d in present)
    p = correct / predicted if predicted else 0.0
    r = correct / support if support else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"types": list(types), "precision": p, "recall": r, "f1": f1, "f2": float(fbeta(numpy.float64(p), numpy.float64(r), 2.0)), "support": support, "predicted": predicted}


def summary() -> None:
    records = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("pii_mix_*.json"))]
    if not records:
        sys.exit("no bench/results/pii_mix_*.json yet")
    head = "| run | CoNLL texts | aug | PII dev F1 | PII dev F2 | " + " | ".join(f"{t[:3]} P/R/F" for t in TYPES) + " | CoNLL dev F1 (3 types) | " + " | ".join(f"CoNLL {t[:3]} P/R/F" for t in TYPES) + " | train min |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for r in records:
        ents = r["recipe"].get("train_entities")
        conll = r["recipe"].get("train_texts", 0) - 1800 if ents else ""

        def prf(part: str, t: str) -> str:
            d = r[part]["per_type"].get(t)
            return f"{100 * d['precision']:.1f}/{100 * d['recall']:.1f}/{100 * d['f1']:.1f}" if d else "-"

        wall = f"{r['train_wall_seconds'] / 60:.1f}" if r.get("train_wall_seconds") else ""
        print(f"| {r['name']} | {conll} | {r['recipe']['augmenter_level']} | {100 * r['pii_dev']['f1']:.2f} | {100 * r['pii_dev']['f2']:.2f} | "
              + " | ".join(prf("pii_dev", t) for t in TYPES) + f" | {100 * r['conll_dev_mapped']['f1']:.2f} ({100 * r['conll_dev_mapped'].get('three_types', {}).get('f1', float('nan')):.2f}) | "
              + " | ".join(prf("conll_dev_mapped", t) for t in TYPES) + f" | {wall} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="the run's name in the record (pii_mix_NAME)")
    parser.add_argument("directory", nargs="?", type=Path, help="the run's training directory (model-best, model-calibrated)")
    parser.add_argument("--log", type=Path, help="the /usr/bin/time -v log of its spacy train")
    parser.add_argument("--metrics", type=Path, help="read the scores from pii_dev/ and conll_dev/ of this folder (pii-mix-evaluate's metrics/pii-mix) instead of scoring here")
    parser.add_argument("--quick", action="store_true", help="20 texts of each dev set; print, write no record")
    parser.add_argument("--summary", action="store_true", help="print the table of every pii_mix record")
    args = parser.parse_args()
    if args.summary:
        return summary()
    if not args.name or args.directory is None:
        parser.error("give NAME and DIRECTORY, or --summary")
    if not re.fullmatch(r"[\w-]+", args.name):
        parser.error(f"NAME {args.name!r}: letters, digits, _ and - only")
    directory = args.directory if args.directory.is_absolute() else Path.cwd() / args.directory
    record = run(args.name, directory, args.log, 20 if args.quick else None, args.metrics)
    if args.quick:
        print(json.dumps({k: record[k] for k in ("name", "recipe")}, indent=1))
        print({k: round(record[k]["f1"], 4) for k in ("pii_dev", "conll_dev_mapped")})
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pii_mix_{args.name}.json"
    ledger = provenance.write_result("pii_mix", record, out, configs=[directory / "model-best" / "config.cfg"])
    print(f"wrote {out} and {ledger}")
    summary()


if __name__ == "__main__":
    main()
