"""Low-resource NER with and without mention replacement (spacy-ner-plus.mention_replace.v1).

For every training size N and seed S: a random sample of N training sentences
(drawn with seed S, the same sample with and without augmentation) is written
to a DocBin, and configs/ner_plus.cfg is fine-tuned on it twice with
`python -m spacy train` (`--system.seed S`): once as it is, once with the
augmenter on the training corpus, its pool being the sample itself (low
resource: only the sample's own mentions) and its seed S. Checkpoints are
chosen on a seeded sample of `--dev-limit` dev sentences (the better of
model-best and model-last, as bench/accuracy/conll_benchmark.py does), then scored on
the whole test split with the package's strict seqeval scorer.

    python -m bench augmentation --sizes 1000 3000 --seeds 0 1 2
    python -m bench augmentation --data ../shared/data/bc5cdr --name bc5cdr --sizes 1000 3000 --seeds 0 1 2

Writes bench/results/augmentation_<name>.json (augmentation_<name>_level<L>_case<C>.json
for a level or case_level other than the augmenter's defaults): every run's
F1/P/R/per-type F1 and training seconds, and the mean ± sd per (size,
augmented) with the paired gain per seed. Work directories are under
training/bench_augment/<name>/; `--resume` reuses a run whose result is
already there with the same settings.

spaCy's training loop reads the training corpus once when max_epochs >= 0:
each sentence's augmentation is drawn once for the whole run, so `level` is
the share of sentences with entities that training sees only augmented.
"""
import argparse
import inspect
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from spacy.tokens import DocBin
from spacy.util import load_config
from spacy.vocab import Vocab

from bench.accuracy import conll_benchmark  # noqa: E402  (its convert / score_pipeline / best_checkpoint helpers)
from bench import provenance
from bench.accuracy.conll_benchmark import best_checkpoint, convert, score_pipeline  # noqa: E402

from spacy_ner_plus.training.augment import create_mention_replace_augmenter  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
AUGMENTER = "spacy-ner-plus.mention_replace.v1"
DEFAULTS = {k: p.default for k, p in inspect.signature(create_mention_replace_augmenter).parameters.items()}


def sample_docbin(source: Path, n: int, rng: random.Random, target: Path) -> int:
    """Write a random sample of n docs of source (in corpus order) to target; return its size."""
    docs = list(DocBin().from_disk(source).get_docs(Vocab()))
    if n > len(docs):
        sys.exit(f"{source}: asked for {n} sentences, it has {len(docs)}")
    keep = sorted(rng.sample(range(len(docs)), n))
    target.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=[docs[i] for i in keep]).to_disk(target)
    return n


def augmenter_block(pool: str, level: float, case_level: float, seed: Any) -> Dict[str, Any]:
    return {"@augmenters": AUGMENTER, "mentions": pool, "level": level, "case_level": case_level, "seed": seed}


def augmenter_pass(train: Path, level: float, case_level: float, seed: int) -> Dict[str, Any]:
    """What the augmenter does to the sample in one pass with the run's seed.

    The training run draws its own (nlp.initialize reads the corpus first), so
    these counts describe the sample, not the run's exact draws.
    """
    import spacy
    from spacy.training import Example

    nlp = spacy.blank("en")
    augmenter = create_mention_replace_augmenter(train, level=level, case_level=case_level, seed=seed)
    for doc in DocBin().from_disk(train).get_docs(nlp.vocab):
        for _ in augmenter(nlp, Example(doc.copy(), doc)):
            pass
    pool = augmenter.pool(nlp)
    return {
        **dict(augmenter.counts),
        "kept_without_pool": dict(augmenter.kept_without_pool),
        "pool_mentions": {label: len(m) for label, m in pool.mentions.items()},
    }


def train_run(run_dir: Path, train: Path, dev: Path, args: argparse.Namespace, seed: int, augmented: bool) -> float:
    config = load_config(ROOT / "configs" / "ner_plus.cfg")
    if augmented:
        # the pool is the training sample itself: ${paths.train} stays a reference in the written config
        config["corpora"]["train"]["augmenter"] = augmenter_block("${paths.train}", args.level, args.case_level, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    config.to_disk(run_dir / "config.cfg")
    # evaluate on the dev sample once per epoch, so model-best is a per-epoch checkpoint
    per_epoch = -(-len(DocBin().from_disk(train)) // config["training"]["batcher"]["size"])
    cmd = [
        sys.executable, "-m", "spacy", "train", str(run_dir / "config.cfg"), "--output", str(run_dir / "training"),
        "--paths.train", str(train), "--paths.dev", str(dev), "--system.seed", str(seed),
        "--training.max_epochs", str(args.epochs), "--training.max_steps", "0", "--training.eval_frequency", str(per_epoch),
        "--gpu-id", str(args.gpu_id), "--code", str(ROOT / "bench" / "register_package.py"),
    ]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    return time.perf_counter() - start


def mean_sd(values: List[float]) -> Dict[str, Any]:
    return {
        "mean": round(statistics.mean(values), 4),
        "sd": round(statistics.stdev(values), 4) if len(values) > 1 else None,
        "n": len(values),
    }


def summarize(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    rows = []
    for size in sorted({r["size"] for r in runs}):
        by_seed = {(r["seed"], r["augmented"]): r for r in runs if r["size"] == size}
        for augmented in (False, True):
            chosen = [r for (_, a), r in sorted(by_seed.items()) if a == augmented]
            if not chosen:
                continue
            row = {"size": size, "augmented": augmented, "f1": mean_sd([r["f1"] for r in chosen]),
                   "precision": mean_sd([r["precision"] for r in chosen]), "recall": mean_sd([r["recall"] for r in chosen]),
                   "train_seconds": mean_sd([r["train_seconds"] for r in chosen])}
            if augmented:
                gains = [by_seed[(s, True)]["f1"] - by_seed[(s, False)]["f1"] for s, a in by_seed if a and (s, False) in by_seed]
                row["f1_gain_over_baseline"] = mean_sd(gains) if gains else None
            rows.append(row)
    return rows


def print_table(summary: List[Dict[str, Any]]) -> None:
    def pct(stat):
        return f"{100 * stat['mean']:.2f}" + (f" ± {100 * stat['sd']:.2f}" if stat["sd"] is not None else "")

    print("| train sentences | augmented | runs | F1 | P | R | F1 gain (paired) | train time |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in summary:
        gain = row.get("f1_gain_over_baseline")
        print(f"| {row['size']} | {'yes' if row['augmented'] else 'no'} | {row['f1']['n']} | {pct(row['f1'])} | {pct(row['precision'])} | "
              f"{pct(row['recall'])} | {('%+.2f' % (100 * gain['mean'])) if gain else '-'} | {row['train_seconds']['mean'] / 60:.1f} min |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--name", default="conll", help="names the converted corpus, the work directory and the result file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000], help="training sentences per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dev-limit", type=int, default=1000, help="dev sentences (a seeded sample) for checkpoint selection")
    parser.add_argument("--level", type=float, default=DEFAULTS["level"])
    parser.add_argument("--case-level", type=float, default=DEFAULTS["case_level"])
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--resume", action="store_true", help="reuse runs already finished with the same settings")
    args = parser.parse_args()
    conll_benchmark.OPTIONS.update(gpu_id=args.gpu_id)

    paths = convert(args.data, ROOT / "corpus" / f"bench_{args.name}")
    n_dev = len(DocBin().from_disk(paths["dev"]))
    work = ROOT / "training" / "bench_augment" / args.name
    runs: List[Dict[str, Any]] = []
    for size in args.sizes:
        for seed in args.seeds:
            sample_dir = work / f"n{size}_seed{seed}"
            rng = random.Random(seed)
            train = sample_dir / "train.spacy"
            dev = sample_dir / "dev.spacy"
            sample_docbin(paths["train"], size, rng, train)
            sample_docbin(paths["dev"], min(args.dev_limit, n_dev), rng, dev)
            for augmented in (False, True):
                run_dir = sample_dir / ("augmented" if augmented else "baseline")
                settings = {"size": size, "seed": seed, "augmented": augmented, "epochs": args.epochs, "dev_limit": args.dev_limit,
                            "data": str(args.data), "level": args.level if augmented else None,
                            "case_level": args.case_level if augmented else None}
                result_file = run_dir / "result.json"
                if args.resume and result_file.exists():
                    earlier = json.loads(result_file.read_text())
                    if {k: earlier.get(k) for k in settings} == settings:
                        print(f"reusing {result_file}", flush=True)
                        runs.append(earlier)
                        continue
                seconds = train_run(run_dir, train, dev, args, seed, augmented)
                best = best_checkpoint(run_dir / "training", {"dev": dev})
                metrics = score_pipeline(best, paths["test"])
                record = {
                    **settings,
                    "train_seconds": round(seconds, 1),
                    "checkpoint": best.name,
                    "f1": metrics["f1"],
                    "precision": metrics["precision"],
                    "recall": metrics["recall"],
                    "per_type": {k: round(v["f1"], 4) for k, v in metrics["per_type"].items()},
                }
                if augmented:
                    record["augmenter_pass"] = augmenter_pass(train, args.level, args.case_level, seed)
                result_file.write_text(json.dumps(record, indent=2) + "\n")
                print(json.dumps(record), flush=True)
                runs.append(record)

    summary = summarize(runs)
    suffix = "" if (args.level, args.case_level) == (DEFAULTS["level"], DEFAULTS["case_level"]) else f"_level{args.level:g}_case{args.case_level:g}"
    commit = provenance.commit()
    record = {
        "benchmark": "augmentation",
        "data": str(args.data),
        "augmenter": augmenter_block("the run's training sample", args.level, args.case_level, "the run's seed"),
        "epochs": args.epochs,
        "dev_limit": args.dev_limit,
        "sizes": args.sizes,
        "seeds": args.seeds,
        "runs": runs,
        "summary": summary,
        "command": " ".join(["python", "-m", "bench", "augmentation", *[a for a in sys.argv[1:] if a != "--resume"]]),
        "commit": commit,
        # tracked files that differed from the commit while this ran (others edit the same tree)
        "uncommitted_changes": [line[3:] for line in provenance.git("status", "--porcelain", "--untracked-files=no").splitlines()],
        # os.cpu_count, not nproc: nproc follows OMP_NUM_THREADS
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores"
        + (f", torch threads {os.environ['OMP_NUM_THREADS']}" if os.environ.get("OMP_NUM_THREADS") else ""),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    result_path = RESULTS / f"augmentation_{args.name}{suffix}.json"
    provenance.write_result("augmentation", record, result_path, configs=[ROOT / "configs" / "ner_plus.cfg"])
    print(f"wrote {result_path}")
    print_table(summary)


if __name__ == "__main__":
    main()
