"""LoRA against full fine-tuning of ner_plus: F1, trainable parameters, time, memory, size.

Two modes:

    # choose LoRA's learning rate on dev only: a seeded sample of train, a seeded dev sample
    python -m bench lora sweep --lrs 3e-4 1e-3 3e-3 --train-sample 2000 --dev-limit 1000
    # configs/ner_plus.cfg (full) and configs/ner_plus_lora.cfg side by side on one corpus
    python -m bench lora compare --data ../shared/data/bc5cdr --name bc5cdr --systems full lora --parallel
    # training and prediction speed of both in one process, interleaved rounds on the same batches
    python -m bench lora speed --rounds 3 --steps 20 --threads 2

`compare` trains each system with `python -m spacy train` on the whole train
split for `--epochs` epochs (dev evaluated once per epoch), keeps the better of
model-best and model-last on dev (as bench/accuracy/conll_benchmark.py does) and scores
it on the test split with the package's strict seqeval scorer. With
`--parallel` the systems train at the same time with one torch thread each, so
their times and the ratio between them are taken under the same load. Peak
memory is the training process's maximum resident set (wait4's ru_maxrss);
pipeline size is the bytes of the saved checkpoint directory.

`speed` builds both pipelines in one process and times `nlp.update` on the
same 32-sentence batches of the train split and `nlp.pipe` on the same dev
sentences, alternating the systems in each round (machine noise hits both);
it reports the ratio LoRA / full per round.

`--corpus DIR` takes train.spacy, dev.spacy and test.spacy from DIR instead of
converting `--data` (e.g. corpus/mini, written by `spacy project run mini-convert`).

`--scheme BIO|BIOES` trains every system with that tagging scheme instead of
its config's (``components.ner_plus.scheme``); the work directory and the
result file then end in ``_bio``/``_bioes``; with ``--seed N`` (N > 0) they also end
in ``_seedN``.

Writes bench/results/lora_sweep_<name>.json, bench/results/lora_<name>.json or
bench/results/lora_speed_<name>.json.
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import spacy
from spacy.tokens import DocBin
from spacy.training import Example
from spacy.util import load_config

from bench import provenance
from bench.accuracy.augmentation import sample_docbin  # noqa: E402
from bench.accuracy.conll_benchmark import best_checkpoint, convert, score_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
CONFIGS = {"full": ROOT / "configs" / "ner_plus.cfg", "lora": ROOT / "configs" / "ner_plus_lora.cfg"}
# config overrides every system gets (--scheme)
OVERRIDES: Dict[str, str] = {}


def start_training(system: str, train: Path, dev: Path, out: Path, epochs: int, seed: int, lr: Optional[float], threads: Optional[int]):
    out.mkdir(parents=True, exist_ok=True)
    per_epoch = -(-len(DocBin().from_disk(train)) // 32)
    cmd = [
        sys.executable, "-m", "spacy", "train", str(CONFIGS[system]), "--output", str(out / "training"),
        "--paths.train", str(train), "--paths.dev", str(dev), "--system.seed", str(seed),
        "--training.max_epochs", str(epochs), "--training.max_steps", "0", "--training.eval_frequency", str(per_epoch),
        "--code", str(ROOT / "bench" / "register_package.py"),
    ]
    if lr is not None:
        cmd += ["--training.optimizer.learn_rate.initial_rate", str(lr)]
    for key, value in OVERRIDES.items():
        cmd += [f"--{key}", value]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    print("+", " ".join(cmd), flush=True)
    log = open(out / "train.log", "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.perf_counter()


def wait_training(proc, started: float, out: Path) -> Dict[str, float]:
    """Wait for one training process: its wall time and peak resident memory."""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"training failed (exit {proc.returncode}); see {out / 'train.log'}")
    return {"train_seconds": round(seconds, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def trainable_parameters(system: str, train: Path) -> Dict[str, int]:
    """Parameters that get gradients, counted on a pipeline initialized as training does."""
    config = load_config(CONFIGS[system], overrides={"paths.train": str(train), "paths.dev": str(train), **OVERRIDES}, interpolate=True)
    nlp = spacy.util.load_model_from_config(config, auto_fill=True)
    docs = list(DocBin().from_disk(train).get_docs(nlp.vocab))[:32]
    nlp.initialize(lambda: [Example(nlp.make_doc(d.text), d) for d in docs])
    model = nlp.get_pipe("ner_plus").model
    thinc = sum(node.get_param(name).size for node in model.walk() for name in node.param_names if node.has_param(name))
    torch_model = model.get_ref("encoder").layers[0].shims[0]._model
    trainable = sum(p.numel() for p in torch_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in torch_model.parameters())
    return {"trainable": int(thinc + trainable), "transformer_trainable": int(trainable), "transformer_total": int(total), "head_and_lexical": int(thinc)}


def directory_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def run_systems(systems: List[str], train: Path, dev: Path, test: Optional[Path], work: Path, args, lrs: Dict[str, Optional[float]]) -> List[Dict[str, Any]]:
    threads = 1 if args.parallel else None
    runs = []
    pending = []
    records = []
    for system in systems:
        out = work / f"{system}_lr{lrs[system]}" if lrs[system] is not None else work / system
        if args.resume and (out / "record.json").exists():
            print(f"reusing {out / 'record.json'}", flush=True)
            records.append(json.loads((out / "record.json").read_text()))
            continue
        pending.append((system, out, *start_training(system, train, dev, out, args.epochs, args.seed, lrs[system], threads)))
        if not args.parallel:
            runs.append((system, out, wait_training(pending[-1][2], pending[-1][3], out)))
            pending.pop()
    for system, out, proc, started in pending:
        runs.append((system, out, wait_training(proc, started, out)))
    for system, out, timing in runs:
        checkpoint = best_checkpoint(out / "training", {"dev": dev})
        dev_metrics = score_pipeline(checkpoint, dev)
        record: Dict[str, Any] = {
            "system": system,
            "learning_rate": lrs[system] if lrs[system] is not None else load_config(CONFIGS[system])["training"]["optimizer"]["learn_rate"]["initial_rate"],
            "checkpoint": checkpoint.name,
            "scheme": spacy.load(checkpoint).get_pipe("ner_plus").cfg["scheme"],
            "dev_f1": dev_metrics["f1"],
            **timing,
            "seconds_per_epoch": round(timing["train_seconds"] / args.epochs, 1),
            "pipeline_mb": directory_mb(checkpoint),
            "parameters": trainable_parameters(system, train),
        }
        if test is not None:
            metrics = score_pipeline(checkpoint, test)
            record.update(f1=metrics["f1"], precision=metrics["precision"], recall=metrics["recall"],
                          per_type={k: round(v["f1"], 4) for k, v in metrics["per_type"].items()})
        print(json.dumps(record), flush=True)
        (out / "record.json").write_text(json.dumps(record, indent=2) + "\n")
        records.append(record)
    return records


def speed(paths: Dict[str, Path], args) -> Dict[str, Any]:
    import torch
    from thinc.api import fix_random_seed

    torch.set_num_threads(args.threads)
    fix_random_seed(args.seed)
    nlps, optimizers = {}, {}
    train_docs = None
    for system in ("full", "lora"):
        config = load_config(CONFIGS[system], overrides={"paths.train": str(paths["train"]), "paths.dev": str(paths["dev"]), **OVERRIDES}, interpolate=True)
        nlp = spacy.util.load_model_from_config(config, auto_fill=True)
        if train_docs is None:
            train_docs = list(DocBin().from_disk(paths["train"]).get_docs(nlp.vocab))
        examples = [Example(nlp.make_doc(d.text), d) for d in train_docs[: 32 * (args.steps + 2)]]
        optimizers[system] = nlp.initialize(lambda: examples[:200])
        nlps[system] = (nlp, examples)
    dev_texts = [d.text for d in list(DocBin().from_disk(paths["dev"]).get_docs(nlps["full"][0].vocab))[: args.predict_sentences]]
    batches = lambda examples: [examples[i : i + 32] for i in range(0, len(examples), 32)]  # noqa: E731
    for system, (nlp, examples) in nlps.items():  # warm-up: 2 updates and one prediction pass, not timed
        for batch in batches(examples)[:2]:
            nlp.update(batch, sgd=optimizers[system])
        list(nlp.pipe(dev_texts[:64]))
    rounds = []
    for r in range(args.rounds):
        order = ("full", "lora") if r % 2 == 0 else ("lora", "full")
        row: Dict[str, Any] = {"order": list(order)}
        for system in order:
            nlp, examples = nlps[system]
            start = time.perf_counter()
            for batch in batches(examples)[2 : 2 + args.steps]:
                nlp.update(batch, sgd=optimizers[system])
            row[f"{system}_seconds_per_step"] = round((time.perf_counter() - start) / args.steps, 4)
            start = time.perf_counter()
            list(nlp.pipe(dev_texts))
            row[f"{system}_predict_sentences_per_second"] = round(len(dev_texts) / (time.perf_counter() - start), 1)
        row["train_step_ratio_lora_over_full"] = round(row["lora_seconds_per_step"] / row["full_seconds_per_step"], 3)
        row["predict_ratio_lora_over_full"] = round(row["lora_predict_sentences_per_second"] / row["full_predict_sentences_per_second"], 3)
        print(json.dumps(row), flush=True)
        rounds.append(row)
    return {"mode": "speed", "threads": args.threads, "steps_per_round": args.steps, "predict_sentences": len(dev_texts), "rounds": rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=["sweep", "compare", "speed"])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--name", default="conll")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="+", default=["full", "lora"], choices=sorted(CONFIGS))
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3], help="sweep: LoRA learning rates")
    parser.add_argument("--lora-lr", type=float, default=None, help="compare: LoRA's rate (default: its config's)")
    parser.add_argument("--train-sample", type=int, default=2000, help="sweep: train sentences (seeded sample)")
    parser.add_argument("--dev-limit", type=int, default=1000, help="sweep: dev sentences (seeded sample)")
    parser.add_argument("--parallel", action="store_true", help="train the systems at the same time, one torch thread each")
    parser.add_argument("--resume", action="store_true", help="reuse a run whose record.json exists (same work directory)")
    parser.add_argument("--rounds", type=int, default=3, help="speed: interleaved rounds")
    parser.add_argument("--steps", type=int, default=20, help="speed: timed updates per system and round")
    parser.add_argument("--threads", type=int, default=2, help="speed: torch threads")
    parser.add_argument("--predict-sentences", type=int, default=500, help="speed: dev sentences predicted per system and round")
    parser.add_argument("--scheme", choices=["BIO", "BIOES"], default=None, help="tagging scheme of every system (default: each config's)")
    parser.add_argument("--corpus", type=Path, default=None, help="train/dev/test.spacy already converted (instead of --data)")
    args = parser.parse_args()
    commit = provenance.commit()  # before the trainings: the tree may change while they run
    suffix = ""
    if args.scheme:
        OVERRIDES["components.ner_plus.scheme"] = args.scheme
        suffix = "_" + args.scheme.lower()
    if args.seed != 0:  # seed 0's files keep the names they had before --seed was part of them
        suffix += f"_seed{args.seed}"

    if args.corpus is not None:
        paths = {split: args.corpus / f"{split}.spacy" for split in ("train", "dev", "test")}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            sys.exit(f"--corpus {args.corpus}: missing {', '.join(missing)}")
    else:
        paths = convert(args.data, ROOT / "corpus" / f"bench_{args.name}")
    work = ROOT / "training" / "bench_lora" / args.name / (args.mode + suffix)
    if args.mode == "speed":
        result = speed(paths, args)
        result_path = RESULTS / f"lora_speed_{args.name}{suffix}.json"
    elif args.mode == "sweep":
        rng = random.Random(args.seed)
        train = work / f"train_{args.train_sample}.spacy"
        dev = work / f"dev_{args.dev_limit}.spacy"
        sample_docbin(paths["train"], args.train_sample, rng, train)
        sample_docbin(paths["dev"], args.dev_limit, rng, dev)
        records = []
        for lr in args.lrs:
            records += run_systems(["lora"], train, dev, None, work, args, {"lora": lr})
        result = {"mode": "sweep", "train_sample": args.train_sample, "dev_sample": args.dev_limit,
                  "best_learning_rate": max(records, key=lambda r: r["dev_f1"])["learning_rate"], "runs": records}
        result_path = RESULTS / f"lora_sweep_{args.name}{suffix}.json"
    else:
        lrs = {"full": None, "lora": args.lora_lr}
        records = run_systems(args.systems, paths["train"], paths["dev"], paths["test"], work, args, lrs)
        by = {r["system"]: r for r in records}
        result = {"mode": "compare", "runs": records}
        if "full" in by and "lora" in by:
            result["lora_vs_full"] = {
                "f1_difference": round(by["lora"]["f1"] - by["full"]["f1"], 4),
                "time_ratio": round(by["lora"]["train_seconds"] / by["full"]["train_seconds"], 3),
                "peak_memory_ratio": round(by["lora"]["peak_rss_mb"] / by["full"]["peak_rss_mb"], 3),
                "trainable_parameter_ratio": round(by["lora"]["parameters"]["trainable"] / by["full"]["parameters"]["trainable"], 4),
            }
        result_path = RESULTS / f"lora_{args.name}{'_' + '_'.join(args.systems) if set(args.systems) != set(CONFIGS) else ''}{suffix}.json"
    result.update(
        data=str(args.corpus if args.corpus is not None else args.data), epochs=args.epochs, seed=args.seed, parallel=args.parallel, scheme=args.scheme,
        command=" ".join(["python", "-m", "bench", "lora", *sys.argv[1:]]),
        commit=commit,
        machine=f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    provenance.write_result("lora", result, result_path, configs=[CONFIGS[s] for s in getattr(args, "systems", CONFIGS)])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
