"""Latency and throughput of the PII service against offline ``nlp.pipe``, in one run.

    python -m bench pii_latency MODEL [--concurrency 1 4 16] [--requests 64] [--sizes 400 5000] [--torch-threads N]

Texts: the PII test split (assets/pii/test.iob, read with the corpus script's
reader, original whitespace kept), consecutive texts joined by a blank line
until each holds about SIZE characters. For each size the script
1. predicts the texts offline with ``nlp.pipe`` in this process (words/s, the
   ceiling), then frees the model;
2. starts ``python -m spacy_ner_plus serve MODEL`` on 127.0.0.1 and, per
   concurrency C, lets C client threads send ``--requests`` POST /v1/analyze
   requests in all (one text each, after 2*C untimed warm-up requests), and
   records every request's latency and status.
Reported: p50/p95/p99 latency, requests/s, words/s, errors, and words/s at
each concurrency divided by offline words/s. Load generator and server share
the machine (the issue asks for them side by side): the client threads take
CPU from the server, so the ratio is a lower bound for a remote client.
Writes bench/results/pii_latency[_NAME].json.
"""
import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))


def make_texts(size: int, n: int) -> List[str]:
    """``n`` texts of about ``size`` characters from the PII test split (cycled when short)."""
    import spacy
    from make_pii_corpus import read_column_docs

    docs = read_column_docs(ROOT / "assets" / "pii" / "test.iob", spacy.blank("en"))
    pieces = [d.text.strip() for d in docs]
    texts, current, i = [], [], 0
    while len(texts) < n:
        current.append(pieces[i % len(pieces)])
        i += 1
        if sum(len(p) + 2 for p in current) >= size:
            texts.append("\n\n".join(current))
            current = []
    return texts


def percentile(values: List[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def offline(model: str, texts: List[str], torch_threads: int) -> Dict[str, float]:
    import spacy
    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    nlp = spacy.load(model)
    list(nlp.pipe(texts[:4]))  # warm-up
    start = time.perf_counter()
    words = sum(len(doc) for doc in nlp.pipe(texts))
    seconds = time.perf_counter() - start
    return {"texts": len(texts), "words": words, "seconds": seconds, "words_per_s": words / seconds}


def load(base: str, texts: List[str], concurrency: int, n_requests: int) -> Dict[str, float]:
    import httpx

    latencies: List[float] = []
    errors: Dict[str, int] = {}
    lock = threading.Lock()
    counter = iter(range(n_requests))
    words = [0]

    def worker(client):
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            text = texts[i % len(texts)]
            t0 = time.perf_counter()
            try:
                r = client.post("/v1/analyze", json={"text": text})
                status = str(r.status_code)
            except httpx.HTTPError as err:
                status = type(err).__name__
            dt = time.perf_counter() - t0
            with lock:
                if status == "200":
                    latencies.append(dt)
                    words[0] += len(text.split())
                else:
                    errors[status] = errors.get(status, 0) + 1

    with httpx.Client(base_url=base, timeout=300, limits=httpx.Limits(max_connections=concurrency + 2)) as client:
        for text in texts[: 2 * concurrency]:
            client.post("/v1/analyze", json={"text": text})
        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(client,)) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - start
    out = {"concurrency": concurrency, "requests": n_requests, "ok": len(latencies), "errors": errors, "seconds": seconds, "requests_per_s": len(latencies) / seconds}
    if latencies:
        out.update({f"p{int(q * 100)}_ms": percentile(latencies, q) * 1000 for q in (0.5, 0.95, 0.99)})
    out["whitespace_words_per_s"] = words[0] / seconds
    return out


def start_server(model: str, max_texts: int, torch_threads: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "spacy_ner_plus", "serve", model, "--host", "127.0.0.1", "--port", str(port),
           "--max-body-bytes", "10000000", "--max-texts", str(max_texts), "--queue-chars", "1000000000"]  # fmt: skip
    if torch_threads:
        cmd += ["--torch-threads", str(torch_threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import httpx

    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode()[-2000:])
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server not ready in 300 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 5000])
    parser.add_argument("--name", default="", help="suffix of the result file")
    parser.add_argument("--torch-threads", type=int, default=0, help="torch threads, offline and in the server (0: torch's default)")
    args = parser.parse_args()
    commit = provenance.commit()
    result = {
        "model": args.model, "commit": commit, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "torch_threads": args.torch_threads or "default",
        "sizes": {},
    }  # fmt: skip
    for size in args.sizes:
        texts = make_texts(size, max(args.requests, 2 * max(args.concurrency)))
        entry = {"mean_chars": sum(map(len, texts)) / len(texts), "offline": offline(args.model, texts, args.torch_threads), "service": []}
        proc, base = start_server(args.model, 64, args.torch_threads)
        try:
            for c in args.concurrency:
                run = load(base, texts, c, args.requests)
                # the offline count is spaCy tokens; the service's words are whitespace-split: compare requests instead
                run["texts_per_s_vs_offline"] = run["requests_per_s"] / (entry["offline"]["texts"] / entry["offline"]["seconds"])
                entry["service"].append(run)
                print(json.dumps({"size": size, **run}), flush=True)
        finally:
            proc.terminate()
            proc.wait(60)
        result["sizes"][str(size)] = entry
        print(json.dumps({"size": size, "offline": entry["offline"]}), flush=True)
    result["machine"]["load_avg_end"] = os.getloadavg()
    out = ROOT / "bench" / "results" / f"pii_latency{'_' + args.name if args.name else ''}.json"
    provenance.write_result("pii_latency", result, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
