"""`annotate --engine local` against `--engine ray`, in one run, same input, same model.

Input: the CoNLL++ test documents (231, read with spacy_ner_plus.training.corpus),
each a JSONL record {"id", "text"} (tokens joined by spaces), repeated until
the input holds --words words (CoNLL tokens; default 1,000,000).
Systems, each in its own process, started afresh:

  local     annotate_files in one process, torch 2 threads
  ray_2x1   annotate_with_ray on a new local Ray instance (num_cpus=2):
            2 actors x 1 CPU (torch 1 thread each)
  ray_1x2   the same with 1 actor x 2 CPUs (torch 2 threads)

All three with --batch-size (64); the ray engine without --preserve-order
(its default). Per system: start-up seconds (from the start of the engine
call, pipeline loading and for ray `ray.init`, the driver's reading and the
actors' start included, until the first annotated record reaches the
writer), words/s end to end (words / wall seconds of the engine call) and
after start-up (words / seconds after the first record: the first batch's
words count twice, about 1% at 1M words, alike for all systems), peak RSS
of the engine's process (for ray: the driver) and of each actor (VmHWM of
this run's actor processes, polled every 0.2 s from /proc), and how the
output compares with the local engine's, record by record by id: identical
lines, identical entities (offsets, labels), largest confidence difference
(batches of other texts change float32 scores in the last digits).

--rounds N repeats the three systems N times, each round in a rotated order
(the machine is shared: its speed drifts), and reports per system the median
over rounds and the ratios to local per round.

    python -m bench annotate_engines --model training/sample/model-calibrated --words 1000000
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"local": None, "ray_2x1": (2, 1), "ray_1x2": (1, 2)}
ACTOR_MARK = "PipelineActor"  # in the process title of Ray Data's actors: ray::MapWorker(MapBatches(PipelineActor))


def write_input(test: Path, words: int, path: Path) -> Dict[str, int]:
    """Write the repeated documents as JSONL; return the counts."""
    from spacy_ner_plus.training.corpus import read_conll

    docs = [[w for s in doc for w in s.words] for doc in read_conll(test).documents]
    n_words = n_docs = 0
    with open(path, "w", encoding="utf8") as f:
        while n_words < words:
            for i, tokens in enumerate(docs):
                f.write(json.dumps({"id": n_docs, "doc": i, "text": " ".join(tokens)}) + "\n")
                n_docs += 1
                n_words += len(tokens)
                if n_words >= words:
                    break
    return {"words": n_words, "records": n_docs, "test_documents": len(docs)}


def run_one(system: str, model: str, src: Path, out: Path, batch_size: int) -> dict:
    """Run one system in this process and return its numbers."""
    import torch

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = time.perf_counter()
    if system == "local":
        import spacy

        from spacy_ner_plus.annotate.local import annotate_files

        torch.set_num_threads(2)
        nlp = spacy.load(model)
        load_s = time.perf_counter() - started
        stats = annotate_files(nlp, [src], out, model=model, batch_size=batch_size, progress=False)
        first = load_s + stats.seconds_to_first_record
    else:
        from spacy_ner_plus.annotate.ray_engine import annotate_with_ray

        workers, cpus = SYSTEMS[system]
        stats = annotate_with_ray(model, [src], out, workers=workers, cpus_per_worker=cpus, batch_size=batch_size, progress=False)
        first = stats.seconds_to_first_record
    total = time.perf_counter() - started
    return {
        "system": system,
        "seconds": round(total, 2),
        "startup_s": round(first, 2),
        "records": stats.written,
        "skipped": len(stats.skipped),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def _descends_from(pid: str, root: int) -> bool:
    # Only this run's actors: an actor of the previous run may still be
    # exiting, and other jobs on this machine may run Ray too.
    while pid not in ("0", "1"):
        if int(pid) == root:
            return True
        with open(f"/proc/{pid}/stat") as f:
            pid = f.read().rsplit(")", 1)[1].split()[1]
    return False


def _actor_peaks(stop: threading.Event, root: List[int], peaks: Dict[int, float]) -> None:
    while not stop.is_set():
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or not root:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if ACTOR_MARK.encode() not in f.read() or not _descends_from(pid, root[0]):
                        continue
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peaks[int(pid)] = max(peaks.get(int(pid), 0.0), int(line.split()[1]) / 1024)
            except OSError:
                continue  # the process ended between listdir and open
        stop.wait(0.2)


def compare(path: Path, reference: Path) -> dict:
    """How an output differs from the local engine's, record by record (by id:
    ray writes them in finishing order): identical lines; identical entities
    (offsets, labels); the largest confidence difference."""

    def by_id(p: Path) -> Dict[int, str]:
        with open(p, encoding="utf8") as f:
            return {json.loads(line)["id"]: line for line in f}

    got, ref = by_id(path), by_id(reference)
    same_ids = got.keys() == ref.keys()
    same_entities, max_diff = same_ids, 0.0
    for key in ref.keys() & got.keys():
        a, b = json.loads(got[key])["entities"], json.loads(ref[key])["entities"]
        if [(e["start"], e["end"], e["label"]) for e in a] != [(e["start"], e["end"], e["label"]) for e in b]:
            same_entities = False
        else:
            max_diff = max([max_diff] + [abs(x["confidence"] - y["confidence"]) for x, y in zip(a, b)])
    return {"same_records": same_ids, "identical_lines": same_ids and got == ref, "identical_entities": same_entities, "max_confidence_difference": max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    parser.add_argument("--model", default=str(ROOT / "training" / "sample" / "model-calibrated"))
    parser.add_argument("--words", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "annotate_engines.json")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--src", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.model, args.src, args.out, args.batch_size)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="annotate_engines_"))
    src = tmp / "input.jsonl"
    counts = write_input(args.test, args.words, src)
    print(json.dumps(counts), flush=True)
    results: List[dict] = []
    names = list(SYSTEMS)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        reference = None
        outputs = {}
        for system in order:
            out = tmp / f"{system}_{round_}.jsonl"
            peaks: Dict[int, float] = {}
            root: List[int] = []
            stop = threading.Event()
            watcher = threading.Thread(target=_actor_peaks, args=(stop, root, peaks), daemon=True)
            watcher.start()
            cmd = [sys.executable, "-m", "bench", "annotate_engines", "--one", system, "--model", args.model, "--src", str(src), "--out", str(out), "--batch-size", str(args.batch_size)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
            root.append(proc.pid)
            stdout, stderr = proc.communicate()
            stop.set()
            watcher.join()
            if proc.returncode != 0:
                sys.exit(f"{system} failed:\n{stderr[-3000:]}")
            record = json.loads(stdout.strip().splitlines()[-1])
            record["words_per_s"] = round(counts["words"] / record["seconds"], 1)
            # the first batch's words count, but not the time until they
            # arrived: a ~1% overstatement at 1M words, the same for all systems
            record["words_per_s_after_startup"] = round(counts["words"] / (record["seconds"] - record["startup_s"]), 1)
            record["actor_peak_rss_mb"] = sorted(round(v, 1) for v in peaks.values())
            record["round"] = round_
            outputs[system] = out
            print(json.dumps(record), flush=True)
            results.append(record)
        for record in results[-len(order) :]:
            record["vs_local"] = compare(outputs[record["system"]], outputs["local"])
        for out in outputs.values():
            out.unlink()
    summary = {}
    for key in ("words_per_s", "words_per_s_after_startup", "startup_s"):
        summary[key] = {s: statistics.median(r[key] for r in results if r["system"] == s) for s in names}
    ratios = {}
    for s in ("ray_2x1", "ray_1x2"):
        for key in ("words_per_s", "words_per_s_after_startup"):
            per_round = [
                next(r[key] for r in results if r["system"] == s and r["round"] == k) / next(r[key] for r in results if r["system"] == "local" and r["round"] == k)
                for k in range(args.rounds)
            ]
            ratios[f"{s}/local {key}"] = {"per_round": [round(x, 3) for x in per_round], "median": round(statistics.median(per_round), 3)}
    summary["ratios"] = ratios
    summary["identical_lines"] = all(r["vs_local"]["identical_lines"] for r in results)
    summary["identical_entities"] = all(r["vs_local"]["identical_entities"] for r in results)
    summary["max_confidence_difference"] = max(r["vs_local"]["max_confidence_difference"] for r in results)
    commit = provenance.commit()
    import ray

    report = {
        "command": "python -m bench annotate_engines " + " ".join(sys.argv[1:]),
        "commit": commit,
        "machine": f"{platform.node()}: {os.cpu_count()} CPUs, {platform.machine()}, shared with other jobs",
        "ray": ray.__version__,
        "model": args.model,
        "input": counts,
        "batch_size": args.batch_size,
        "summary": summary,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    provenance.write_result("annotate_engines", report, args.output)
    print(json.dumps(summary, indent=2))
    src.unlink()
    tmp.rmdir()


if __name__ == "__main__":
    main()
