"""Determinism of a loaded ner_plus pipeline, measured: threads and batch composition.

    python -m bench determinism MODEL [--texts FILE] [--threads 8] [--output determinism.json]

1. Threads: THREADS threads call ``nlp(text)`` and ``nlp.pipe(texts)`` on one
   loaded pipeline at once (texts: the short ones plus two documents longer than
   one window); counts the texts whose entities or scores differ from the same
   calls made one after another, in fp32 and with ``quantize = true``.
2. Batch composition: the same texts through ``nlp.pipe`` with ``batch_size`` 1
   and 64 (sort buffer off), for ``window_batch_size`` 32 (default) and 1:
   texts whose entities differ, the largest score difference, and words per
   second of each setting (interleaved rounds; medians).

Texts: one a line (default: the CoNLL++ test sentences from ../shared/data,
first 80 of 25 tokens or more, plus two documents of about 1,500 tokens made
of the following sentences). Writes bench/results/OUTPUT.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
CONLLPP = ROOT.parent / "shared" / "data" / "conll2003" / "test.iob"  # CoNLL++, the corrected test set


def default_texts():
    from spacy_ner_plus.training.corpus import read_conll

    result = read_conll(CONLLPP)
    sentences = [" ".join(s.words) for doc in result.documents for s in doc]
    short = [s for s in sentences if len(s.split()) >= 25][:80]
    rest = [s for s in sentences if s not in short]
    docs, current = [], []
    for sentence in rest:
        current.append(sentence)
        if sum(len(s.split()) for s in current) >= 1500:
            docs.append(" ".join(current))
            current = []
        if len(docs) == 2:
            break
    return short + docs


def annotations(docs):
    return [[(e.start, e.end, e.label_, e._.confidence) for e in d.ents] for d in docs]


def thread_check(nlp, texts, threads):
    sequential = [annotations([nlp(t)])[0] for t in texts]
    piped = annotations(nlp.pipe(texts))

    def call(i):
        if i % 2:
            return "pipe", annotations(nlp.pipe(texts))
        return "call", [annotations([nlp(t)])[0] for t in texts]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(call, range(2 * threads)))
    differ = set()
    for kind, result in results:
        reference = piped if kind == "pipe" else sequential
        differ.update(i for i, (a, b) in enumerate(zip(result, reference)) if a != b)
    return {"texts": len(texts), "texts_differing": len(differ), "calls": len(results)}


def batch_check(nlp, texts, rounds):
    ner = nlp.get_pipe("ner_plus")
    words = sum(len(t.split()) for t in texts)
    out = {}
    timings = {1: [], 32: []}
    runs = {}
    for _ in range(rounds):
        for window_batch_size in (32, 1):
            ner.window_batch_size = window_batch_size
            ner.sort_buffer_tokens = 0
            for batch_size in (1, 64):
                start = time.perf_counter()
                runs[(window_batch_size, batch_size)] = annotations(nlp.pipe(texts, batch_size=batch_size))
                if batch_size == 64:
                    timings[window_batch_size].append(time.perf_counter() - start)
    for window_batch_size in (32, 1):
        a, b = runs[(window_batch_size, 1)], runs[(window_batch_size, 64)]
        ents_differ = sum(1 for x, y in zip(a, b) if [e[:3] for e in x] != [e[:3] for e in y])
        score_diff = max((abs(p[3] - q[3]) for x, y in zip(a, b) for p, q in zip(x, y) if p[:3] == q[:3]), default=0.0)
        out[f"window_batch_size_{window_batch_size}"] = {
            "texts_entities_differ": ents_differ,
            "texts_identical": sum(1 for x, y in zip(a, b) if x == y),
            "max_score_difference": score_diff,
            "words_per_second": words / statistics.median(timings[window_batch_size]),
        }
    out["texts"] = len(texts)
    out["cost_of_window_batch_size_1"] = out["window_batch_size_32"]["words_per_second"] / out["window_batch_size_1"]["words_per_second"]
    return out


def main() -> None:
    import spacy
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--texts", type=Path)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="determinism.json")
    args = parser.parse_args()
    texts = args.texts.read_text(encoding="utf8").splitlines() if args.texts else default_texts()
    record = {
        "model": args.model,
        "commit": provenance.commit(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "threads": {},
    }
    for quantize in (False, True):
        nlp = spacy.load(args.model, config={"components": {"ner_plus": {"quantize": quantize}}})
        record["threads"]["int8" if quantize else "fp32"] = thread_check(nlp, texts, args.threads)
        print(("int8" if quantize else "fp32"), record["threads"]["int8" if quantize else "fp32"], flush=True)
    record["batch_composition"] = batch_check(spacy.load(args.model), texts, args.rounds)
    print(json.dumps(record["batch_composition"], indent=2))
    out = ROOT / "bench" / "results" / args.output
    provenance.write_result("determinism", record, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
