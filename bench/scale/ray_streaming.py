"""Does the streaming Ray engine keep the driver's memory flat, and how fast is it?

Inputs: JSONL records {"id", "text"} written to a temp folder, one file per
size (--words, default 100,000 and 1,000,000 words): the CoNLL++ test
documents (tokens joined by spaces) repeated, or, where that file is absent
(--test), documents of generated sentences (fixed seed).
Pipeline: --model PATH, or by default the embedded default pipeline
(``ner_plus`` on the embedded backbone, head initialised with the CoNLL
labels, untrained: the speed and memory do not depend on the weights),
saved once into the temp folder.

Systems, each in a fresh process (``--one``), per size:

  local     annotate_files in one process, torch --workers threads
  ray       annotate_with_ray on a new local Ray instance: --workers actors
            x 1 CPU (torch 1 thread each), --preserve-order off (its default)
  ray_gpu   with --gpu: 1 actor x 1 GPU

Per run: wall seconds of the engine call with start-up (pipeline loading and
for ray ``ray.init``, actors starting) and after start-up (from the first
annotated record to the end), words/s both ways, and the driver's memory:
resident set size before the call, its peak during the call (sampled every
50 ms by a thread, psutil) and the growth (peak - before: imports, Ray's
start, for local the pipeline), the peak until the first record and the
growth after it (what the stream itself costs the driver: it should not grow
with the input; compare the sizes), plus the process's ``ru_maxrss``. The
local engine's start-up ends with its first record too, which with a sort
buffer (16,384 tokens by default) comes after the first buffer; its
``load_s`` is the pipeline's loading alone. Ratios ray/local per size, with and after start-up; the Ray
outputs compared record by record (by id) with the local engine's.

    python -m bench ray_streaming                       # 100k and 1M words
    python -m bench ray_streaming --model PATH --words 1000000
    python -m bench ray_streaming --quick               # smoke run: tiny inputs, ledger in the temp folder

Timings need the machine to itself: the record holds the load average.
"""
import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TEST = ROOT.parent / "shared" / "data" / "conll2003" / "test.iob"
LABELS = ["PER", "ORG", "LOC", "MISC"]
SAMPLE_S = 0.05


def default_pipeline(path: Path) -> str:
    """Save the embedded default pipeline (ner_plus on the embedded backbone,
    head initialised, untrained) to ``path``."""
    import spacy
    from spacy.training import Example

    import spacy_ner_plus  # noqa: F401

    nlp = spacy.blank("en")
    nlp.add_pipe("ner_plus")
    doc = nlp.make_doc("John Acme Paris German")
    examples = [Example.from_dict(doc, {"entities": ["U-PER", "U-ORG", "U-LOC", "U-MISC"]})]
    nlp.get_pipe("ner_plus").initialize(lambda: examples, nlp=nlp, labels=LABELS)
    nlp.to_disk(path)
    return str(path)


def documents(test: Optional[Path]) -> List[List[str]]:
    """Token lists of the source documents: CoNLL++ test, or generated."""
    if test is not None and test.is_file():
        from spacy_ner_plus.training.corpus import read_conll

        return [[w for s in doc for w in s.words] for doc in read_conll(test).documents]
    rng = random.Random(0)
    names, places, orgs = ["John", "Mary", "Ahmed", "Li Wei", "Olga"], ["Paris", "New York City", "Lagos", "Berlin"], ["Acme Corp", "the United Nations", "Siemens"]
    verbs = ["met", "visited", "called", "wrote to", "left"]
    docs = []
    for _ in range(200):
        words: List[str] = []
        while len(words) < 180:
            words += f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(orgs)} in {rng.choice(places)} on {rng.randint(1, 28)} May .".split()
        docs.append(words)
    return docs


def write_input(docs: List[List[str]], words: int, path: Path) -> Dict[str, int]:
    n_words = n_records = 0
    with open(path, "w", encoding="utf8") as f:
        while n_words < words:
            for tokens in docs:
                f.write(json.dumps({"id": n_records, "text": " ".join(tokens)}) + "\n")
                n_records += 1
                n_words += len(tokens)
                if n_words >= words:
                    break
    return {"words": n_words, "records": n_records, "bytes": path.stat().st_size}


class RssSampler:
    """The resident set size of this process over time, sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.start = time.perf_counter()
        self.before = self.process.memory_info().rss
        self.samples = [(0.0, self.before)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.samples.append((time.perf_counter() - self.start, self.process.memory_info().rss))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_S)

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    def peak_between(self, start: float, end: float) -> int:
        """The peak of the samples from ``start`` to ``end`` seconds (0 if none)."""
        return max([rss for t, rss in self.samples if start <= t <= end], default=0)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def run_one(system: str, model: str, src: Path, out: Path, workers: int, batch_size: int) -> dict:
    """Run one system in this process; its numbers."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    mb = 1 / (1024 * 1024)
    with RssSampler() as rss:
        started = time.perf_counter()
        if system == "local":
            import spacy
            import torch

            from spacy_ner_plus.annotate.local import annotate_files

            torch.set_num_threads(workers)
            nlp = spacy.load(model)
            load_s = time.perf_counter() - started
            stats = annotate_files(nlp, [src], out, model=model, batch_size=batch_size, progress=False)
            first = load_s + (stats.seconds_to_first_record or 0.0)
            extra = {"load_s": round(load_s, 2)}
        else:
            from spacy_ner_plus.annotate.ray_engine import annotate_with_ray

            gpu = system == "ray_gpu"
            stats = annotate_with_ray(
                model, [src], out, workers=1 if gpu else workers, cpus_per_worker=1, gpus_per_worker=1 if gpu else 0, batch_size=batch_size, progress=False
            )
            first = stats.seconds_to_first_record or 0.0
            extra = {}
        total = time.perf_counter() - started
    # the sampler started just before `started`: its clock is the same within a few microseconds
    at_startup = rss.peak_between(0.0, first)
    after = rss.peak_between(first, float("inf"))
    return {
        "system": system,
        "seconds": round(total, 2),
        "startup_s": round(first, 2),
        "records": stats.written,
        "read": stats.read,
        "driver_rss_before_mb": round(rss.before * mb, 1),
        "driver_rss_peak_mb": round(rss.peak * mb, 1),
        "driver_rss_growth_mb": round((rss.peak - rss.before) * mb, 1),
        # what the stream itself costs: the peak after the first record over the peak until then
        "driver_rss_at_startup_mb": round(at_startup * mb, 1),
        "driver_rss_growth_after_startup_mb": round((after - at_startup) * mb, 1) if after else None,
        "driver_ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_samples": len(rss.samples),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="pipeline path (default: the embedded default pipeline, saved in the temp folder)")
    parser.add_argument("--test", type=Path, default=DEFAULT_TEST, help="CoNLL file whose documents make the input (absent: generated sentences)")
    parser.add_argument("--words", default="100000,1000000", help="input sizes in words, comma-separated")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors (1 CPU each); the local engine's torch threads")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gpu", action="store_true", help="also one GPU actor (ray_gpu)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1,000 and 3,000 words, batch 16; record and ledger in the temp folder")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "ray_streaming.json")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.model, args.src, args.out, args.workers, args.batch_size)))
        return
    from bench.scale.annotate_engines import compare

    sizes = [1000, 3000] if args.quick else [int(w) for w in args.words.split(",")]
    batch_size = 16 if args.quick else args.batch_size
    tmp = Path(tempfile.mkdtemp(prefix="ray_streaming_"))
    try:
        model = args.model or default_pipeline(tmp / "model")
        docs = documents(args.test)
        systems = ["local", "ray"] + (["ray_gpu"] if args.gpu else [])
        results: List[dict] = []
        inputs = {}
        for words in sizes:
            src = tmp / f"input_{words}.jsonl"
            inputs[words] = write_input(docs, words, src)
            print(json.dumps({"input": inputs[words]}), flush=True)
            outputs = {}
            for system in systems:
                out = tmp / f"{system}_{words}.jsonl"
                cmd = [sys.executable, "-m", "bench", "ray_streaming", "--one", system, "--model", model, "--src", str(src), "--out", str(out),
                       "--workers", str(args.workers), "--batch-size", str(batch_size)]
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if proc.returncode != 0:
                    sys.exit(f"{system} at {words} words failed:\n{proc.stderr[-3000:]}")
                record = json.loads(proc.stdout.strip().splitlines()[-1])
                n = inputs[words]["words"]
                record.update(words=n, words_per_s=round(n / record["seconds"], 1),
                              words_per_s_after_startup=round(n / max(record["seconds"] - record["startup_s"], 1e-9), 1))
                outputs[system] = out
                print(json.dumps(record), flush=True)
                results.append(record)
            for record in results[-len(systems):]:
                if record["system"] != "local":
                    record["vs_local"] = compare(outputs[record["system"]], outputs["local"])
            src.unlink()
            for out in outputs.values():
                out.unlink()
        summary: Dict[str, dict] = {}
        for words in sizes:
            local = next(r for r in results if r["system"] == "local" and r["words"] == inputs[words]["words"])
            for r in results:
                if r["system"] != "local" and r["words"] == local["words"]:
                    summary[f"{r['system']}/local at {words} words"] = {
                        "words_per_s": round(r["words_per_s"] / local["words_per_s"], 3),
                        "words_per_s_after_startup": round(r["words_per_s_after_startup"] / local["words_per_s_after_startup"], 3),
                        "driver_rss_growth_mb": r["driver_rss_growth_mb"],
                        "driver_rss_growth_after_startup_mb": r["driver_rss_growth_after_startup_mb"],
                        "local_rss_growth_mb": local["driver_rss_growth_mb"],
                        "local_rss_growth_after_startup_mb": local["driver_rss_growth_after_startup_mb"],
                        "identical_entities": r["vs_local"]["identical_entities"],
                    }
        import ray

        report = {
            "quick": args.quick,
            "model": args.model or "embedded default pipeline (ner_plus on the embedded backbone, untrained head)",
            "source": str(args.test) if args.test is not None and args.test.is_file() else "generated sentences (seed 0)",
            "ray": ray.__version__,
            "workers": args.workers,
            "batch_size": batch_size,
            "inputs": {str(w): inputs[w] for w in sizes},
            "summary": summary,
            "results": results,
        }
        if args.quick:
            # a smoke run is no measurement: its record stays in the temp folder
            path = provenance.write_result("ray_streaming", report, tmp / "ray_streaming_quick.json", ledger=tmp / "ledger")
            print(f"quick record (not kept): {path}", file=sys.stderr)
        else:
            provenance.write_result("ray_streaming", report, args.output)
        print(json.dumps(summary, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
