"""int8 dynamic quantization variants of a trained ner_plus: strict F1 and words/s, one run.

Each variant replaces the pipeline's transformer by a copy quantized with
torch.ao.quantization.quantize_dynamic, then annotates the CoNLL++ test set
sentence by sentence (gold tokens, nlp.pipe, batch_size 64) once: the same
pass gives the strict F1 and the speed. Variants:

  fp32                 no quantization
  per_tensor           every Linear, one weight scale per matrix
  per_channel          every Linear, one weight scale per output channel (the
                       component's `quantize = true`)
  per_channel_no_ffn_out / _no_ffn_in / _no_attention / _no_first_last_layer
                       per-channel, leaving those Linear layers in fp32

  per_channel_no_ffn_out_layer0 .. 5   (--variants per_layer: fp32, per_channel
                       and these) per-channel, leaving one layer's feed-forward
                       output product in fp32

    python -m bench int8_variants training/bench_conll_ner_plus/training/model-last
"""
import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import spacy
import torch
from spacy.tokens import DocBin
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from bench import provenance
from spacy_ner_plus.evaluation.evaluate import predict_examples, strict_scores

ROOT = Path(__file__).resolve().parents[2]

KEEP_FP32 = {
    "per_channel": lambda name: False,
    "per_channel_no_ffn_out": lambda name: name.endswith("output.dense") and "attention" not in name,
    "per_channel_no_ffn_in": lambda name: "intermediate" in name,
    "per_channel_no_attention": lambda name: "attention" in name,
    "per_channel_no_first_last_layer": lambda name: ".layer.0." in name or ".layer.5." in name,
}
# --variants per_layer: one layer's feed-forward output product kept in fp32
KEEP_FP32_PER_LAYER = {
    f"per_channel_no_ffn_out_layer{k}": (lambda name, k=k: f".layer.{k}.output.dense" in name and "attention" not in name)
    for k in range(6)
}


def variants(fp32: torch.nn.Module, per_layer: bool):
    yield "fp32", fp32
    if per_layer:
        keep_fp32 = {"per_channel": KEEP_FP32["per_channel"], **KEEP_FP32_PER_LAYER}
    else:
        yield "per_tensor", quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
        keep_fp32 = KEEP_FP32
    linears = [n for n, m in fp32.named_modules() if isinstance(m, torch.nn.Linear)]
    for name, keep in keep_fp32.items():
        spec = {n: per_channel_dynamic_qconfig for n in linears if not keep(n)}
        yield name, quantize_dynamic(copy.deepcopy(fp32), spec)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--test", type=Path, default=ROOT / "corpus" / "bench_conll" / "test.spacy")
    parser.add_argument("--variants", choices=["main", "per_layer"], default="main")
    parser.add_argument("--output", default="int8_variants.json", help="file under bench/results")
    args = parser.parse_args()
    nlp = spacy.load(args.model, config={"components": {"ner_plus": {"quantize": False}}})
    ner = nlp.get_pipe("ner_plus")
    shim = ner._encoder().layers[0].shims[0]
    gold = list(DocBin().from_disk(args.test).get_docs(nlp.vocab))
    words = sum(len(d) for d in gold)
    predict_examples(nlp, gold[:64])  # warm-up
    rows = []
    for name, model in variants(shim._model, args.variants == "per_layer"):
        # prediction runs an eval view of the shim's transformer, rebuilt when that object changes
        shim._model = shim._hfmodel.transformer = model.eval()
        start = time.perf_counter()
        examples = predict_examples(nlp, gold)
        seconds = time.perf_counter() - start
        row = {"variant": name, "f1": round(strict_scores(examples)["f1"], 4), "words_per_s": round(words / seconds, 1)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    commit = provenance.commit()
    out = ROOT / "bench" / "results" / args.output
    provenance.write_result("int8_variants", {"command": "python -m bench int8_variants " + " ".join(sys.argv[1:]), "commit": commit, "machine": platform.node(),
                                              "torch_threads": torch.get_num_threads(), "rows": rows}, out)


if __name__ == "__main__":
    main()
