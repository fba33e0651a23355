"""DOSE in the ADE corpus: where it is scored, and what training on its partial annotation costs.

ADE v2 annotates doses only in the sentences of DRUG-DOSE.rel (213 of 4,272), so a dose in any other
sentence is unannotated. The healthcare workflow's policy (scripts/ade_to_jsonl.py --dose keep):
train DOSE where it is annotated and score DOSE on test_dose (the test sentences of DRUG-DOSE.rel).
This scores every healthcare model that conll_benchmark trained (ner_plus and its two peers, each
seed found, and ner_plus trained with --dose drop) on:

- test: every test sentence; a predicted dose in a sentence outside DRUG-DOSE.rel counts as a false
  positive even where the text holds a dose (the alternative scoring);
- test_dose: the policy's DOSE score.

and puts DRUG and ADVERSE_EFFECT on test beside the --dose drop model's (the alternative training:
what learning DOSE from partial labels costs the other two types).

    python -m bench healthcare_dose     # after conll_benchmark --corpus corpus/healthcare runs

Checkpoints are those conll_benchmark kept (the better of model-best and model-last on dev).
"""
import argparse
import json
import os
import platform
from pathlib import Path
from typing import Dict, List

from spacy.tokens import DocBin
from spacy.training import Example

from bench import provenance
from bench.accuracy.conll_benchmark import best_checkpoint, score_pipeline

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def scores(metrics: dict) -> Dict[str, dict]:
    keep = ("precision", "recall", "f1", "support", "predicted", "correct")
    return {"micro": {k: metrics[k] for k in keep}, **{t: {k: v[k] for k in keep} for t, v in metrics["per_type"].items()}}


def hf_scores(model_dir: Path, data: Path) -> dict:
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from bench.accuracy.peer_hf_token_classification import encode, load, predict
    from spacy_ner_plus.evaluation.evaluate import evaluate_examples

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(model_dir))
    docs = load(data)
    label2id = model.config.label2id
    # encode also writes training labels: a gold tag the model never saw gets any id (unused here)
    features = encode(tokenizer, docs, {**label2id, **_unknown(docs, label2id)})
    predicted = predict(model, features, docs, model.config.id2label, tokenizer.pad_token_id)
    return evaluate_examples([Example(p, g) for p, g in zip(predicted, docs)], "IOB2")


def _unknown(docs, label2id) -> Dict[str, int]:
    from bench.accuracy.peer_hf_token_classification import doc_tags

    return {t: 0 for d in docs for t in doc_tags(d) if t not in label2id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpus" / "healthcare")
    parser.add_argument("--output", type=Path, default=RESULTS / "healthcare_dose.json")
    args = parser.parse_args()
    paths = {split: args.corpus / f"{split}.spacy" for split in ("dev", "test", "test_dose")}
    runs: List[dict] = []
    for name, system in (("healthcare", "ner_plus"), ("healthcare", "spacy_trf_ner_recipe"), ("healthcare", "hf_token_cls"),
                         ("healthcare_dose_drop", "ner_plus")):
        for seed in (0, 1, 2):
            suffix = f"_seed{seed}" if seed else ""
            work = ROOT / "training" / f"bench_{name}_{system}{suffix}"
            # a finished run only: conll_benchmark writes its result after the last checkpoint
            # (spaCy rewrites model-last at every evaluation of a run still training)
            result = RESULTS / f"{name}_{system}{suffix}.json"
            newest = max((f.stat().st_mtime for f in work.rglob("*") if f.is_file()), default=None)
            if newest is None or not result.exists() or result.stat().st_mtime < newest - 60:
                continue
            if system == "hf_token_cls":
                if not (work / "model" / "config.json").exists():
                    continue
                split_scores = {split: scores(hf_scores(work / "model", paths[split])) for split in ("test", "test_dose")}
                checkpoint = "model"
            else:
                if not (work / "training" / "model-last").exists():
                    continue
                chosen = best_checkpoint(work / "training", {"dev": paths["dev"]})
                split_scores = {split: scores(score_pipeline(chosen, paths[split])) for split in ("test", "test_dose")}
                checkpoint = chosen.name
            runs.append({"corpus": name, "system": system, "seed": seed, "checkpoint": checkpoint, **split_scores})
            print(json.dumps(runs[-1]["test_dose"].get("DOSE", {})), name, system, seed, flush=True)
    if not runs:
        parser.error("no trained healthcare model found under training/bench_healthcare_*: run conll_benchmark --corpus corpus/healthcare first")
    record = {
        "corpus": str(args.corpus),
        "test_sentences": len(DocBin().from_disk(paths["test"])),
        "test_dose_sentences": len(DocBin().from_disk(paths["test_dose"])),
        "runs": runs,
        "commit": provenance.commit(),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
    }
    provenance.write_result("healthcare_dose", record, args.output)
    print(json.dumps({r["system"] + str(r["seed"]) + r["corpus"]: r["test"].get("DOSE") for r in runs}, indent=1))


if __name__ == "__main__":
    main()
