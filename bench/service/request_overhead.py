"""What a /v1/analyze request costs beyond the forward: issue 30's service targets, in one run.

    python -m bench request_overhead MODEL [--texts 64] [--rounds 3] [--clients 16] [--threads auto] [--name NAME]
    python -m bench request_overhead MODEL --quick      # 8 texts, 1 round, 4 clients: checks the script, not the numbers

Texts: ``--texts`` texts of about 400 characters from the PII test split (assets/pii/test.iob,
pii_latency.make_texts: consecutive documents joined until each holds 400 characters; their mean
length is recorded). Everything runs with the threads the server chooses (``serve --threads
auto``: service.settings.worker_threads), unless ``--threads N``. In this order:

1. in this process, the pipeline loaded as the service loads it (``load_served_model``: the
   bounded tokenizer), one text at a time, ``--rounds`` rounds over the texts:
   - bare tokenize + forward: ``nlp.make_doc``, ner_plus's windows (wordpieces) and its model's
     forward; no patterns, no decoding, no annotations;
   - in-process ``nlp(text)``;
   then offline ``nlp.pipe(texts)`` (texts/s, the median of the rounds); the model is freed;
2. ``python -m spacy_ner_plus serve MODEL`` on 127.0.0.1 (pii_latency.start_server) and httpx
   clients (pii_latency.load, after untimed warm-up requests): one sequential client
   (``--rounds`` x ``--texts`` requests: p50, p95), then ``--clients`` concurrent clients (texts/s).

Targets (met/missed in the record): service p50 <= 1.25 x in-process p50; service p95 <= 1.5 x
service p50; ``--clients`` clients >= 0.9 x offline nlp.pipe texts/s. The client runs on the same
machine as the server and takes CPU from it: measure alone (the record holds the load averages).
Writes bench/results/request_overhead[_NAME].json and its ledger record (``--out-dir`` elsewhere).
"""
import argparse
import gc
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List

from bench import provenance
from bench.service.pii_latency import load, make_texts, percentile, start_server

ROOT = Path(__file__).resolve().parents[2]
TEXT_CHARS = 400
TARGETS = {
    "service_p50_over_inprocess_p50": 1.25,  # at most
    "service_p95_over_service_p50": 1.5,  # at most
    "concurrent_over_pipe_throughput": 0.9,  # at least
}


def in_process(model: str, texts: List[str], rounds: int, threads: int) -> Dict[str, Any]:
    """p50/p95 (ms) of the bare tokenize + forward and of nlp(text), one text at a time, and
    nlp.pipe texts/s, in this process with ``threads`` torch threads."""
    import torch

    from spacy_ner_plus.service.settings import ServeSettings
    from spacy_ner_plus.service.state import load_served_model

    served = load_served_model(ServeSettings(model=model, threads=threads))  # sets torch's threads
    nlp, ner = served.nlp, served.pipe

    def bare(text: str) -> None:
        doc = nlp.make_doc(text)
        windows = ner._windows([doc])[0]
        with torch.inference_mode():
            ner.model.predict(windows)

    for text in texts[:4]:  # warm-up: first calls build caches and torch's kernels
        bare(text)
        nlp(text)
    times: Dict[str, List[float]] = {"bare_forward": [], "nlp": []}
    for _ in range(rounds):
        for text in texts:  # the two side by side, text by text: the same machine state for both
            started = time.perf_counter()
            bare(text)
            times["bare_forward"].append(time.perf_counter() - started)
            started = time.perf_counter()
            nlp(text)
            times["nlp"].append(time.perf_counter() - started)
    pipe_rates = []
    for _ in range(rounds):
        started = time.perf_counter()
        n = sum(1 for _ in nlp.pipe(texts))
        pipe_rates.append(n / (time.perf_counter() - started))
    out: Dict[str, Any] = {
        name: {"p50_ms": percentile(values, 0.5) * 1000, "p95_ms": percentile(values, 0.95) * 1000, "n": len(values)}
        for name, values in times.items()
    }
    out["pipe"] = {"texts_per_s": statistics.median(pipe_rates), "rounds": pipe_rates}
    del served, nlp, ner
    gc.collect()
    return out


def targets(numbers: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Each target's ratio, its bound and whether it was met."""
    ratios = {
        "service_p50_over_inprocess_p50": numbers["service"]["sequential"]["p50_ms"] / numbers["in_process"]["nlp"]["p50_ms"],
        "service_p95_over_service_p50": numbers["service"]["sequential"]["p95_ms"] / numbers["service"]["sequential"]["p50_ms"],
        "concurrent_over_pipe_throughput": numbers["service"]["concurrent"]["requests_per_s"] / numbers["in_process"]["pipe"]["texts_per_s"],
    }
    out = {}
    for name, ratio in ratios.items():
        bound = TARGETS[name]
        met = ratio >= bound if name == "concurrent_over_pipe_throughput" else ratio <= bound
        out[name] = {"ratio": round(ratio, 4), "bound": bound, "met": bool(met)}
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--texts", type=int, default=64, help="texts of about 400 characters")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the texts, in process and through the server")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for the throughput target")
    parser.add_argument("--threads", default="auto", help="torch threads, in process and in the server: auto (the server's rule) or N")
    parser.add_argument("--name", default="", help="suffix of the result file")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results", help="where the result and its ledger go")
    parser.add_argument("--quick", action="store_true", help="8 texts, 1 round, 4 clients: checks the script only")
    args = parser.parse_args(argv)
    if args.quick:
        args.texts, args.rounds, args.clients = 8, 1, 4
    from spacy_ner_plus.service.settings import parse_threads, usable_cores, worker_threads

    threads = worker_threads(parse_threads(args.threads), workers=1)
    warnings.filterwarnings("ignore", message=".*wordpieces were cut.*")
    texts = make_texts(TEXT_CHARS, args.texts)
    numbers: Dict[str, Any] = {
        "model": args.model,
        "texts": {
            "source": "assets/pii/test.iob (the PII test split), consecutive documents joined to about 400 characters",
            "n": len(texts),
            "mean_chars": sum(map(len, texts)) / len(texts),
        },
        "threads": {"setting": args.threads, "torch_threads": threads, "usable_cores": usable_cores()},
        "rounds": args.rounds,
        "quick": args.quick,
    }
    numbers["in_process"] = in_process(args.model, texts, args.rounds, threads)
    print(f"in process: {numbers['in_process']}", flush=True)
    proc, base = start_server(args.model, 64, threads if args.threads != "auto" else 0)
    try:
        sequential = load(base, texts, 1, args.rounds * len(texts))
        concurrent = load(base, texts, args.clients, max(args.rounds * len(texts), 4 * args.clients))
    finally:
        proc.terminate()
        proc.wait(60)
    numbers["service"] = {"sequential": sequential, "concurrent": concurrent}
    if sequential["errors"] or concurrent["errors"] or not sequential["ok"] or not concurrent["ok"]:
        sys.exit(f"the server answered errors: {sequential['errors']} sequential, {concurrent['errors']} concurrent")
    numbers["targets"] = targets(numbers)
    for name, target in numbers["targets"].items():
        print(f"{name}: {target['ratio']:.3f} ({'met' if target['met'] else 'missed'}, bound {target['bound']})", flush=True)
    latest = args.out_dir / f"request_overhead{'_' + args.name if args.name else ''}.json"
    record = provenance.write_result("request_overhead", numbers, latest, ledger=args.out_dir / "ledger")
    print(f"wrote {latest} and {record}")


if __name__ == "__main__":
    main()
