"""Strict entity F1 and training time on CoNLL-2003 (CoNLL++ test), ner_plus against its peers.

Every system fine-tunes the same backbone (the embedded MiniLM-L6-H384) on
the same sentences (CoNLL-2003 train, one Doc per sentence) for the same
number of epochs, keeps its best checkpoint on dev, and is scored on the
CoNLL++ test set sentence by sentence with the same scorer
(spacy_ner_plus.evaluation.evaluate: seqeval strict, IOB2):

- ner_plus:        configs/ner_plus.cfg (lexical features on, the default;
                   scheme BIOES since 429c7f0, BIO before: a record's
                   train_commit says which)
- ner_plus_bio:    the same with scheme = BIO, what ner_plus trained before
- ner_plus_nolex:  the same without lexical features
- ner_plus_context: the same config trained on document context: train and dev
                   converted with `--doc-mode chunk --chunk-tokens 128`
                   (consecutive sentences packed into Docs of <= 128 tokens),
                   batches of 5 chunks (about the tokens and steps of 32
                   sentences); still scored sentence by sentence here
- ner_plus_inverse, ner_plus_sqrt_inverse, ner_plus_focal1, ner_plus_focal2,
  ner_plus_bioes:  the default config with class_weights = inverse_frequency /
                   sqrt_inverse_frequency, focal_gamma = 1 / 2, scheme = BIOES
                   (the last is the default config itself since 429c7f0)
- ner_plus_mixed:  the same config trained on `--doc-mode mixed` (the 128-token
                   chunks, every other one split into sentences), batches of
                   round(32 x docs / sentences) docs (the steps of 32 sentences),
                   within_sentences = "entities" (context windows, entities kept
                   inside sentences; runs before 2026-12-05 predicted with "none")
- ner_plus_holdout: the default config trained without a held-out slice of
                   train (15% of its -DOCSTART- documents, drawn with seed 0:
                   corpus/bench_NAME/train_holdout.spacy, one Doc per sentence),
                   calibration data that neither the weights nor the checkpoint
                   choice has seen (issue 14 part 3; bench/calibration/calibration_benchmark.py)

`--documents` also scores whole test documents (one Doc per -DOCSTART-
document) and records them under "documents".
- spacy_trf_ner:   spaCy's stock transformer + transition-based ner config
                   (`spacy init config -p ner -G -o accuracy`), backbone swapped
- spacy_trf_ner_recipe: the same pipeline trained with ner_plus's recipe:
                   batches of 32 sentences (spacy.batch_by_sequence.v1), no
                   gradient accumulation, linear warm-up over 10% of the steps
                   it takes and decay to 0 at its last step
                   (spacy-ner-plus.warmup_linear_epochs.v1), peak 5e-5, AdamW
                   0.01, clipping 1.0, an evaluation after every epoch
- hf_token_cls:    AutoModelForTokenClassification, the same recipe in plain
                   PyTorch (bench/accuracy/peer_hf_token_classification.py)

    python -m bench conll_benchmark ner_plus --epochs 3
    python -m bench conll_benchmark spacy_trf_ner_recipe --epochs 3 --seed 1   # bench/results/conll_spacy_trf_ner_recipe_seed1.json
    python -m bench conll_benchmark --data ../shared/data/bc5cdr --name bc5cdr ner_plus

Span-annotated corpora that a workflow has converted already (one DocBin per
split: train.spacy, dev.spacy, test.spacy) are read with --corpus; --config
picks ner_plus's base config and --batch-size the docs per optimizer step,
the same for every system (whole CVs: 1 a batch, about the tokens of 64 CoNLL sentences). The HF peer then cuts docs
into pieces of --chunk-tokens tokens (as many a batch as --batch-size docs
hold on average: the same text per optimizer step) and scores whole documents; spaCy's
transformer peer trains on the same pieces (on whole CVs it was killed at 19.2 GB: it runs
all of a doc's strided spans in one pass) and predicts whole documents with its strided windows. Records carry the overlap scores too.

    python -m bench conll_benchmark --corpus corpus/healthcare --name healthcare ner_plus --seed 1
    python -m bench conll_benchmark --corpus corpus/resume --name resume --config configs/ner_plus_resume.cfg \
        --batch-size 1 --chunk-tokens 128 --epochs 2 hf_token_cls

Each run writes bench/results/<name>_<system>.json.
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import spacy
from spacy.tokens import DocBin
from spacy.util import load_config
from spacy.vocab import Vocab

from bench import provenance
from spacy_ner_plus.training.corpus import read_conll, result_to_docs
from spacy_ner_plus.evaluation.evaluate import evaluate_examples, predict_examples

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


def convert(data: Path, out: Path, with_holdout: bool = False) -> dict:
    paths = {}
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": ("train", "sentence"), "dev": ("dev", "sentence"), "test": ("test", "sentence"),
              "train_chunks": ("train", "chunk"), "dev_chunks": ("dev", "chunk"),
              "train_mixed": ("train", "mixed"), "dev_mixed": ("dev", "mixed"), "test_docs": ("test", "document")}
    for split, (source, mode) in splits.items():
        target = out / f"{split}.spacy"
        if not target.exists():
            result = read_conll(data / f"{source}.iob")
            if result.errors:
                sys.exit("\n".join(map(str, result.errors)))
            DocBin(docs=result_to_docs(result, Vocab(), mode, chunk_tokens=128)).to_disk(target)
        paths[split] = target
    if with_holdout:
        paths.update(split_holdout(data / "train.iob", out))
    return paths


HOLDOUT_FRACTION = 0.15


def split_holdout(train_file: Path, out: Path) -> dict:
    """train_fit.spacy and train_holdout.spacy: train's documents split at random
    (seed 0), HOLDOUT_FRACTION of them held out, one Doc per sentence."""
    paths = {"train_fit": out / "train_fit.spacy", "train_holdout": out / "train_holdout.spacy"}
    if all(p.exists() for p in paths.values()):
        return paths
    result = read_conll(train_file)
    if result.errors:
        sys.exit("\n".join(map(str, result.errors)))
    if not result.has_doc_markers:
        sys.exit(f"{train_file}: no -DOCSTART- documents to hold out")
    n = len(result.documents)
    held = set(random.Random(0).sample(range(n), round(HOLDOUT_FRACTION * n)))
    for split, keep in (("train_fit", lambda i: i not in held), ("train_holdout", lambda i: i in held)):
        part = replace(result, documents=[doc for i, doc in enumerate(result.documents) if keep(i)])
        DocBin(docs=result_to_docs(part, Vocab(), "sentence")).to_disk(paths[split])
    return paths


OPTIONS = {"gpu_id": -1, "backbone": None, "seed": 0, "documents": False, "config": ROOT / "configs" / "ner_plus.cfg", "batch_size": 32, "chunk_tokens": 0,
           "pieces_per_batch": 32}


def spacy_train(config_path: Path, paths: dict, output: Path, epochs: int, batch_size: int) -> float:
    # evaluate on dev once per epoch (batches of batch_size docs), so model-best is a per-epoch checkpoint
    per_epoch = -(-len(DocBin().from_disk(paths["train"])) // batch_size)
    cmd = [
        sys.executable, "-m", "spacy", "train", str(config_path), "--output", str(output),
        "--paths.train", str(paths["train"]), "--paths.dev", str(paths["dev"]),
        "--training.max_epochs", str(epochs), "--training.max_steps", "0", "--training.eval_frequency", str(per_epoch),
        "--gpu-id", str(OPTIONS["gpu_id"]), "--code", str(ROOT / "bench" / "register_package.py"),
        "--system.seed", str(OPTIONS["seed"]),
    ]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def score_pipeline(model_dir: Path, data: Path) -> dict:
    if OPTIONS["gpu_id"] >= 0:
        spacy.require_gpu(OPTIONS["gpu_id"])
    nlp = spacy.load(model_dir)
    gold = list(DocBin().from_disk(data).get_docs(nlp.vocab))
    return evaluate_examples(predict_examples(nlp, gold), "IOB2")


def best_checkpoint(training: Path, paths: dict) -> Path:
    """model-best or model-last, whichever scores higher on dev.

    spaCy evaluates every eval_frequency steps and not after the last one, so
    model-best may predate the final epoch; model-last is the final epoch.
    """
    scores = {name: score_pipeline(training / name, paths["dev"])["f1"] for name in ("model-best", "model-last")}
    print("dev F1 of the checkpoints:", scores, flush=True)
    return training / max(scores, key=scores.get)


def score_best(work: Path, paths: dict) -> dict:
    """Test scores of the better checkpoint; with --documents also on whole test documents."""
    best = best_checkpoint(work / "training", paths)
    metrics = score_pipeline(best, paths["test"])
    if OPTIONS["documents"]:
        metrics["documents"] = score_pipeline(best, paths["test_docs"])
    return metrics


def run_ner_plus(paths, work, epochs, train=True, lexical=True, context=False, mixed=False, component=None, holdout=False):
    config = load_config(OPTIONS["config"])
    # settings of the component that differ from the default config (issue 14 part 4: loss and scheme variants)
    config["components"]["ner_plus"].update(component or {})
    batch_size = OPTIONS["batch_size"]
    config["training"]["batcher"]["size"] = batch_size
    if context:
        batch_size = 5
        config["training"]["batcher"]["size"] = batch_size
        paths = {**paths, "train": paths["train_chunks"], "dev": paths["dev_chunks"]}
    if mixed:
        # as many optimizer steps per epoch as 32-sentence batches give: 32 x docs / sentences docs a batch
        n_docs, n_sents = len(DocBin().from_disk(paths["train_mixed"])), len(DocBin().from_disk(paths["train"]))
        batch_size = max(1, round(32 * n_docs / n_sents))
        config["training"]["batcher"]["size"] = batch_size
        paths = {**paths, "train": paths["train_mixed"], "dev": paths["dev_mixed"]}
    if holdout:
        paths = {**paths, "train": paths["train_fit"]}
    if not lexical:
        # null, not deleted: spaCy fills a missing block back in from the factory's default
        config["components"]["ner_plus"]["model"]["lexical"] = None
    if OPTIONS["backbone"]:
        config["components"]["ner_plus"]["model"]["encoder"]["name"] = OPTIONS["backbone"]
    cfg_path = work / "config.cfg"
    config.to_disk(cfg_path)
    seconds = spacy_train(cfg_path, paths, work / "training", epochs, batch_size) if train else None
    return seconds, score_best(work, paths)


def run_spacy_trf_ner(paths, work, epochs, train=True, recipe=False):
    from spacy.cli.init_config import init_config

    config = init_config(lang="en", pipeline=["ner"], optimize="accuracy", gpu=True, pretraining=False, silent=True)
    config["components"]["transformer"]["model"]["name"] = {"@misc": "spacy-ner-plus.embedded_backbone.v1"}
    batch_size = OPTIONS["batch_size"]
    if OPTIONS["chunk_tokens"]:
        # spacy-transformers trains every strided span of a batch's docs in one pass: on one whole CV a
        # batch it was killed by the kernel at 19.2 GB (issue 31). It trains on the pieces the HF peer
        # trains on (as many a batch as the docs of --batch-size hold) and predicts whole documents.
        from bench.accuracy.peer_hf_token_classification import chunk_docs

        pieces = work / "train_pieces.spacy"
        docs = list(DocBin().from_disk(paths["train"]).get_docs(Vocab()))
        DocBin(docs=chunk_docs(docs, OPTIONS["chunk_tokens"])[0]).to_disk(pieces)
        batch_size = OPTIONS["pieces_per_batch"]
        paths = {**paths, "train": pieces}
    if recipe:
        training = config["training"]
        training["batcher"] = {"@batchers": "spacy.batch_by_sequence.v1", "size": batch_size, "get_length": None}
        training["accumulate_gradient"] = 1
        training["optimizer"].update({"L2": 0.01, "L2_is_weight_decay": True, "grad_clip": 1.0})
        training["optimizer"]["learn_rate"] = {
            "@schedules": "spacy-ner-plus.warmup_linear_epochs.v1", "corpus": "${paths.train}", "batch_size": batch_size,
            "epochs": "${training.max_epochs}", "max_steps": "${training.max_steps}", "initial_rate": 5e-5, "warmup_fraction": 0.1,
        }
    cfg_path = work / "config.cfg"
    config.to_disk(cfg_path)
    seconds = spacy_train(cfg_path, paths, work / "training", epochs, batch_size) if train else None
    return seconds, score_best(work, paths)


def pieces_per_batch(train: Path, batch_size: int, chunk_tokens: int) -> int:
    """Sequences per step of a peer that trains on pieces: as many pieces of
    ``chunk_tokens`` as ``batch_size`` docs of ``train`` hold on average (the same
    text per optimizer step); ``batch_size`` without pieces."""
    if not chunk_tokens:
        return batch_size
    docs = list(DocBin().from_disk(train).get_docs(Vocab()))
    pieces_per_doc = sum(-(-len(d) // chunk_tokens) for d in docs) / len(docs)
    return max(1, round(batch_size * pieces_per_doc))


def run_hf(paths, work, epochs, train=True):
    cmd = [sys.executable, "-m", "bench", "peer_hf_token_classification", str(paths["train"]), str(paths["dev"]),
           str(paths["test"]), "--epochs", str(epochs), "--output", str(work / "metrics.json"), "--save", str(work / "model"),
           "--seed", str(OPTIONS["seed"]), "--chunk-tokens", str(OPTIONS["chunk_tokens"]), "--batch-size", str(OPTIONS["pieces_per_batch"])]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    return seconds, json.loads((work / "metrics.json").read_text())


SYSTEMS = {
    "ner_plus": lambda p, w, e, t: run_ner_plus(p, w, e, t, lexical=True),
    "ner_plus_nolex": lambda p, w, e, t: run_ner_plus(p, w, e, t, lexical=False),
    "ner_plus_context": lambda p, w, e, t: run_ner_plus(p, w, e, t, context=True),
    "ner_plus_mixed": lambda p, w, e, t: run_ner_plus(p, w, e, t, mixed=True, component={"within_sentences": "entities"}),
    "ner_plus_inverse": lambda p, w, e, t: run_ner_plus(p, w, e, t, component={"class_weights": "inverse_frequency"}),
    "ner_plus_sqrt_inverse": lambda p, w, e, t: run_ner_plus(p, w, e, t, component={"class_weights": "sqrt_inverse_frequency"}),
    "ner_plus_focal1": lambda p, w, e, t: run_ner_plus(p, w, e, t, component={"focal_gamma": 1.0}),
    "ner_plus_focal2": lambda p, w, e, t: run_ner_plus(p, w, e, t, component={"focal_gamma": 2.0}),
    "ner_plus_bioes": lambda p, w, e, t: run_ner_plus(p, w, e, t, component={"scheme": "BIOES"}),
    "ner_plus_bio": lambda p, w, e, t: run_ner_plus(p, w, e, t, component={"scheme": "BIO"}),
    "ner_plus_holdout": lambda p, w, e, t: run_ner_plus(p, w, e, t, holdout=True),
    "spacy_trf_ner": run_spacy_trf_ner,
    "spacy_trf_ner_recipe": lambda p, w, e, t: run_spacy_trf_ner(p, w, e, t, recipe=True),
    "hf_token_cls": run_hf,
}


def _gpu_name(gpu_id: int) -> str:
    import torch

    return torch.cuda.get_device_name(gpu_id)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system", choices=sorted(SYSTEMS))
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--name", default="conll")
    parser.add_argument("--corpus", type=Path, default=None, help="a folder of converted train.spacy, dev.spacy, test.spacy (instead of --data's column files)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "ner_plus.cfg", help="ner_plus's base config")
    parser.add_argument("--batch-size", type=int, default=32, help="docs per optimizer step, every system")
    parser.add_argument("--chunk-tokens", type=int, default=0, help="the HF peer cuts docs into pieces of at most N tokens (0: whole docs)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--score-only", action="store_true", help="score an earlier run's checkpoints again; keep its training time")
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--backbone", default=None, help="backbone directory instead of the embedded package (ner_plus only)")
    parser.add_argument("--seed", type=int, default=0, help="spaCy's system.seed; results of seeds other than 0 get a _seedN suffix")
    parser.add_argument("--documents", action="store_true", help="also score whole test documents (--doc-mode document): record['documents']")
    args = parser.parse_args()
    OPTIONS.update(gpu_id=args.gpu_id, backbone=args.backbone, seed=args.seed, documents=args.documents,
                   config=args.config.resolve(), batch_size=args.batch_size, chunk_tokens=args.chunk_tokens)
    suffix = f"_seed{args.seed}" if args.seed else ""
    if args.corpus is not None:
        if args.name == "conll" or args.system in ("ner_plus_context", "ner_plus_mixed", "ner_plus_holdout") or args.documents:
            parser.error("--corpus needs its own --name, and reads only train, dev and test (no chunk, mixed, holdout or document splits)")
        paths = {split: args.corpus / f"{split}.spacy" for split in ("train", "dev", "test")}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            parser.error(f"--corpus {args.corpus}: missing {', '.join(missing)} (run the workflow's convert step first)")
    else:
        paths = convert(args.data, ROOT / "corpus" / f"bench_{args.name}", with_holdout=args.system == "ner_plus_holdout")
    OPTIONS["pieces_per_batch"] = pieces_per_batch(paths["train"], args.batch_size, args.chunk_tokens)
    work = ROOT / "training" / f"bench_{args.name}_{args.system}{suffix}"
    work.mkdir(parents=True, exist_ok=True)
    result_path = RESULTS / f"{args.name}_{args.system}{suffix}.json"
    # the commit that trains, read before training: later commits during a long run must not be credited with it
    commit = provenance.commit()
    seconds, metrics = SYSTEMS[args.system](paths, work, args.epochs, not args.score_only)
    train_commit = None
    if args.score_only:
        earlier = json.loads(result_path.read_text())
        seconds, train_commit = earlier["train_seconds"], earlier.get("train_commit", earlier["commit"])
    record = {
        "system": args.system,
        "data": str(args.corpus if args.corpus is not None else args.data),
        "batch_size": args.batch_size,
        **({"chunk_tokens": args.chunk_tokens, "pieces_per_batch": OPTIONS["pieces_per_batch"]} if args.system in ("hf_token_cls", "spacy_trf_ner_recipe", "spacy_trf_ner") and args.chunk_tokens else {}),
        "epochs": args.epochs,
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
        "f1": metrics["f1"],
        "precision": metrics["precision"],
        "recall": metrics["recall"],
        "per_type": {k: round(v["f1"], 4) for k, v in metrics["per_type"].items()},
        "per_type_scores": {k: {m: round(v[m], 4) if isinstance(v[m], float) else v[m] for m in ("precision", "recall", "f1", "support")}
                            for k, v in metrics["per_type"].items()},
        "overlap": {"f1": metrics["overlap"]["f1"], "precision": metrics["overlap"]["precision"], "recall": metrics["overlap"]["recall"],
                    "per_type": {k: round(v["f1"], 4) for k, v in metrics["overlap"]["per_type"].items()}},
        "confusion": metrics["confusion"],
        **({"documents": {"f1": metrics["documents"]["f1"], "precision": metrics["documents"]["precision"], "recall": metrics["documents"]["recall"],
                          "per_type": {k: round(v["f1"], 4) for k, v in metrics["documents"]["per_type"].items()}}} if "documents" in metrics else {}),
        "command": " ".join(["python", "-m", "bench", "conll_benchmark", *[a for a in sys.argv[1:] if a != "--score-only"]]),
        "commit": commit,
        "train_commit": train_commit or commit,
        # os.cpu_count, not nproc: nproc follows OMP_NUM_THREADS
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
        + (f", torch threads {os.environ['OMP_NUM_THREADS']}" if os.environ.get("OMP_NUM_THREADS") else "")
        + (f", GPU {args.gpu_id}: {_gpu_name(args.gpu_id)}" if args.gpu_id >= 0 else ""),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # the base config and the one the system trained with (spaCy-trained systems write it beside their checkpoints)
    configs = [args.config.resolve()] if args.system.startswith("ner_plus") else []
    provenance.write_result("conll_benchmark", record, result_path, configs=configs + [p for p in [work / "config.cfg"] if p.exists()])
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
