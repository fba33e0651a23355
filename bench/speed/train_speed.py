"""Training throughput of ner_plus (words/s of nlp.update) on CPU or GPU.

Runs the training step of configs/ner_plus.cfg (same recipe, batches of 32
sentences) over a DocBin for --steps steps after --warmup untimed steps and
prints one JSON line. With --random-init DIR, the backbone is built from the
config and tokenizer in DIR with random weights: the speed is that of the
real model, without carrying its 90 MB of weights (the GPU machine has no
network and limited transfer).

    python -m bench train_speed corpus/conll/train.spacy --steps 30
    python -m bench train_speed train.spacy --gpu-id 0 --random-init DIR --steps 400
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import spacy
from spacy.training import Corpus
from spacy.training.initialize import init_nlp
from spacy.util import load_config, minibatch
from thinc.api import Adam, require_gpu

from bench import provenance
import spacy_ner_plus  # noqa: F401  (registers ner_plus where the package is not installed)

ROOT = Path(__file__).resolve().parents[2]


def random_init_backbone(source: Path, target: Path) -> Path:
    from transformers import AutoConfig, AutoModel

    target.mkdir(parents=True, exist_ok=True)
    for f in source.iterdir():
        if f.suffix in (".json", ".txt") and f.is_file():
            (target / f.name).write_bytes(f.read_bytes())
    AutoModel.from_config(AutoConfig.from_pretrained(source)).save_pretrained(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("train", type=Path)
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--random-init", type=Path, default=None, help="dir with config.json + tokenizer files")
    parser.add_argument("--name", default="train_speed", help="result name: bench/results/NAME.json and its ledger record")
    args = parser.parse_args()
    device = "cpu"
    if args.gpu_id >= 0:
        require_gpu(args.gpu_id)
        import torch

        device = torch.cuda.get_device_name(args.gpu_id)
    overrides = {"paths.train": str(args.train), "paths.dev": str(args.train)}
    if args.random_init is not None:
        backbone = random_init_backbone(args.random_init, Path("/tmp/random_backbone"))
        overrides["components.ner_plus.model.encoder.name"] = str(backbone)
    config = load_config(ROOT / "configs" / "ner_plus.cfg", overrides=overrides, interpolate=False)
    nlp = init_nlp(config, use_gpu=args.gpu_id)
    # the recipe's optimizer at a constant rate: the schedule does not change the speed
    optimizer = Adam(5e-5, L2=0.01, L2_is_weight_decay=True, grad_clip=0.0)
    examples = list(Corpus(args.train)(nlp))
    batches = list(minibatch(examples, size=args.batch_size))
    n_batches = args.warmup + args.steps
    batches = (batches * (n_batches // len(batches) + 1))[:n_batches]
    for batch in batches[: args.warmup]:
        nlp.update(batch, sgd=optimizer, drop=0.1)
    if args.gpu_id >= 0:
        import torch

        torch.cuda.synchronize()
    words = 0
    start = time.perf_counter()
    for batch in batches[args.warmup :]:
        nlp.update(batch, sgd=optimizer, drop=0.1)
        words += sum(len(eg.reference) for eg in batch)
    if args.gpu_id >= 0:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    record = {
        "device": device,
        "host": platform.node(),
        "steps": args.steps,
        "batch_size": args.batch_size,
        "words": words,
        "seconds": round(seconds, 2),
        "words_per_s": round(words / seconds, 1),
        "epoch_minutes_conll_train": round(203621 / (words / seconds) / 60, 2),
        "random_init": args.random_init is not None,
        "spacy": spacy.__version__,
        "command": " ".join(["python -m bench train_speed", *sys.argv[1:]]),
        "commit": provenance.commit(),
    }
    print(json.dumps(record))
    provenance.write_result("train_speed", record, ROOT / "bench" / "results" / f"{args.name}.json", configs=[ROOT / "configs" / "ner_plus.cfg"])


if __name__ == "__main__":
    main()
