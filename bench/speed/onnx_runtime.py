"""ner_plus with runtime = "onnxruntime" against torch, side by side in one process (issue 30, part 1).

Three loaded pipelines of one trained model: torch fp32 (runtime = "torch", quantize = false),
ONNX Runtime fp32 and ONNX Runtime int8 (the files ``export-onnx --int8`` writes into a temporary
copy of the model; the model itself is never changed). Measured in interleaved rounds, the
order of the three rotating from round to round so that the machine's drift falls on all alike:

  sentences   the CoNLL++ test sentences through nlp.pipe (words/s)
  documents   the CoNLL++ test documents through nlp.pipe (words/s; long ones are windowed)
  short       one text of about 400 characters (the first CoNLL++ test sentences cut at a token
              boundary), nlp(text) called --short-calls times a round, the three systems' calls
              alternating; p50 in ms

Every component of the model runs (the PII pipeline's pii_patterns before ner_plus too), as
users run it; --ner-only loads ner_plus alone.

Beside the speeds: entity equality and the largest score difference against torch fp32 on every
sentence and document of the first round; strict entity F1 of each system (the package's
evaluation, gold tokenization) on --gold; and each absolute figure as a share of the hardware
limit that ``python -m bench int8_gemm`` measured: the time the linear layers of the transformer
would take for the same wordpieces at that study's fp32 (or best int8) GEMM speed, divided by
the measured time (1.0 = nothing but those GEMMs at the study's speed; the study used M = 700
rows, so a single short text, about 110 wordpieces, cannot reach it). Load averages: the ledger
record (bench.provenance).

Model: --model, by default the PII workflow's calibrated pipeline (training/pii/model-calibrated),
as no CoNLL-trained pipeline is kept on disk (conll_benchmark trains in a temporary folder). Its
speed on CoNLL++ text is the speed of its backbone and windows, whatever its labels; its F1 is
measured on corpus/pii/test.spacy (the workflow's test split) unless --gold names another file.
A model whose labels are CoNLL's (PER, LOC, ORG, MISC) is scored on CoNLL++ test by default.

    python -m bench onnx_runtime                       # alone on the machine: about 7 minutes on 2 cores
    python -m bench onnx_runtime --ner-only            # the same with ner_plus alone (no pii_patterns before it)
    python -m bench onnx_runtime --model PATH --gold FILE.spacy|FILE.iob
    python -m bench onnx_runtime --quick               # smoke run: 40 sentences, 3 documents; ledger in the temp folder
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "training" / "pii" / "model-calibrated"
DEFAULT_TEST = ROOT.parent / "shared" / "data" / "conll2003" / "test.iob"
PII_TEST = ROOT / "corpus" / "pii" / "test.spacy"
CONLL_LABELS = {"PER", "LOC", "ORG", "MISC"}
SYSTEMS = {
    "torch_fp32": {"runtime": "torch", "quantize": False},
    "onnxruntime_fp32": {"runtime": "onnxruntime", "quantize": False},
    "onnxruntime_int8": {"runtime": "onnxruntime", "quantize": True},
}
SHORT_CHARS = 400


def conll_texts(test: Path):
    from spacy_ner_plus.training.corpus import read_conll

    result = read_conll(test)
    sentences = [" ".join(s.words) for doc in result.documents for s in doc]
    documents = [" ".join(w for s in doc for w in s.words) for doc in result.documents]
    return sentences, documents


def short_text(sentences: List[str]) -> str:
    """The first test sentences joined and cut at the last space before SHORT_CHARS characters."""
    text = ""
    for sentence in sentences:
        text = f"{text} {sentence}".strip()
        if len(text) >= SHORT_CHARS:
            break
    return text[: text.rfind(" ", 0, SHORT_CHARS + 1)] if len(text) > SHORT_CHARS else text


def export_copy(model: Path, work: Path) -> Dict[str, Any]:
    """Copy the model into ``work`` and export it there with --int8; the export's seconds."""
    target = work / "model"
    shutil.copytree(model, target)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spacy_ner_plus", "export-onnx", str(target), "--int8"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return {"path": target, "seconds": round(time.perf_counter() - start, 1)}


def ner_pipe_name(path: Path):
    """The ner_plus component's name and the names of the other components."""
    from spacy.util import load_config

    components = load_config(path / "config.cfg", interpolate=False)["components"]
    names = [n for n, c in components.items() if c.get("factory") == "ner_plus"]
    if len(names) != 1:
        raise SystemExit(f"the model needs exactly one ner_plus component, it has {names}")
    return names[0], [n for n in components if n != names[0]]


def wordpieces(nlp, name: str, docs) -> int:
    """Wordpieces the encoder runs for ``docs`` (special tokens included, no padding)."""
    from spacy_ner_plus.ml.transformer import encode_windows

    pipe = nlp.get_pipe(name)
    encoder = pipe.model.get_ref("encoder")
    total = 0
    for doc in docs:
        windows = [doc[s:e] for s, e in pipe.doc_windows(doc)]
        if windows:
            total += int(encode_windows(encoder, windows).attention_mask.sum())
    return total


def annotations(docs, key: str):
    return [([(e.start, e.end, e.label_) for e in d.ents], [(s.start, s.end, s.label_) for s in d.spans[key]],
             list(d.spans[key].attrs["scores"])) for d in docs]


def compare(reference, found) -> Dict[str, Any]:
    """Texts whose entities (doc.ents) or scored spans differ from the reference, and the largest score
    difference over the texts whose spans agree."""
    ents_differ = sum(a[0] != b[0] for a, b in zip(reference, found))
    spans_differ = sum(a[1] != b[1] for a, b in zip(reference, found))
    diffs = [abs(x - y) for a, b in zip(reference, found) if a[1] == b[1] for x, y in zip(a[2], b[2])]
    return {"texts": len(reference), "texts_with_other_entities": ents_differ, "texts_with_other_scored_spans": spans_differ,
            "max_score_difference": max(diffs, default=0.0), "same_entities": ents_differ == 0}


def gemm_limit() -> Optional[Dict[str, Any]]:
    """Milliseconds per row of the linear layers of one MiniLM-L6 layer, fp32 and best int8, from the
    newest int8_gemm ledger record."""
    records = sorted((ROOT / "bench" / "results" / "ledger" / "int8_gemm").glob("*.json"))
    if not records:
        return None
    record = json.loads(records[-1].read_text())
    per_shape = {}
    for row in record["numbers"]["rows"]:
        fp32 = min(v for k, v in row.items() if k.startswith("fp32_ms_beside_"))
        int8 = min(v for k, v in row.items() if k.endswith("_ms") and not k.startswith(("fp32", "int_mm")))
        per_shape[(row["in"], row["out"])] = (fp32 / row["rows"], int8 / row["rows"])
    try:  # one layer: Q, K, V, attention output (384 -> 384), then 384 -> 1536 -> 384
        layer = [per_shape[(384, 384)]] * 4 + [per_shape[(384, 1536)], per_shape[(1536, 384)]]
    except KeyError:
        return None
    return {"record": str(records[-1].relative_to(ROOT)), "fp32_ms_per_row": sum(a for a, _ in layer), "int8_ms_per_row": sum(b for _, b in layer),
            "rows": record["numbers"]["rows"][0]["rows"], "shapes": {"hidden": 384, "intermediate": 1536}}


def share(limit, transformer_config, system: str, n_wordpieces: int, seconds: float) -> Optional[float]:
    if limit is None or (transformer_config.hidden_size, transformer_config.intermediate_size) != (384, 1536) or seconds <= 0:
        return None
    per_row = limit["int8_ms_per_row" if system.endswith("int8") else "fp32_ms_per_row"]
    return round(n_wordpieces * per_row * transformer_config.num_hidden_layers / 1000 / seconds, 3)


def f1_scores(pipelines, gold_path: Optional[Path], limit: Optional[int]) -> Dict[str, Any]:
    if gold_path is None or not gold_path.exists():
        return {"skipped": f"no gold file ({gold_path})"}
    from spacy.tokens import DocBin

    from spacy_ner_plus.evaluation.evaluate import evaluate_examples, predict_examples
    from spacy_ner_plus.training.corpus import read_docs

    out: Dict[str, Any] = {"gold": str(gold_path)}
    for system, nlp in pipelines.items():
        if gold_path.suffix == ".spacy":
            gold = list(DocBin().from_disk(gold_path).get_docs(nlp.vocab))
        else:
            gold = list(read_docs(gold_path, nlp.vocab, doc_mode="sentence"))
        gold = gold[:limit] if limit else gold
        metrics = evaluate_examples(predict_examples(nlp, gold), "IOB2")
        out[system] = {"f1": round(100 * metrics["f1"], 2), "precision": round(100 * metrics["precision"], 2), "recall": round(100 * metrics["recall"], 2)}
    base = out["torch_fp32"]["f1"]
    for system in pipelines:
        out[system]["f1_change_vs_torch"] = round(out[system]["f1"] - base, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="trained pipeline (copied, never changed)")
    parser.add_argument("--test", type=Path, default=DEFAULT_TEST, help="CoNLL++ test (CoNLL columns): the texts timed")
    parser.add_argument("--gold", type=Path, default=None, help="gold for F1 (.spacy or CoNLL columns); default by the model's labels")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--short-calls", type=int, default=200, help="nlp(text) calls per system and round for the short text")
    parser.add_argument("--ner-only", action="store_true", help="load the model without its other components (the PII pipeline's pii_patterns): ner_plus alone")
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 sentences, 3 documents, 1 round; record and ledger in the temp folder")
    args = parser.parse_args()
    if not args.model.exists():
        raise SystemExit(f"{args.model}: no such pipeline (train the PII workflow or give --model PATH)")
    if not args.test.exists():
        raise SystemExit(f"{args.test}: no such file (CoNLL++ test, /work/shared/data/conll2003/test.iob)")
    import spacy
    import torch

    from spacy_ner_plus.ml.transformer import get_transformer

    rounds, short_calls = (1, 10) if args.quick else (args.rounds, args.short_calls)
    sentences, documents = conll_texts(args.test)
    if args.quick:
        sentences, documents = sentences[:40], documents[:3]
    short = short_text(sentences)
    with tempfile.TemporaryDirectory(prefix="onnx_runtime_bench_") as tmp:
        exported = export_copy(args.model, Path(tmp))
        name, others = ner_pipe_name(exported["path"])
        exclude = others if args.ner_only else []
        pipelines = {system: spacy.load(exported["path"], config={"components": {name: settings}}, exclude=exclude) for system, settings in SYSTEMS.items()}
        reference = pipelines["torch_fp32"]
        key = reference.get_pipe(name).spans_key
        labels = set(reference.get_pipe(name).labels)
        gold = args.gold or (args.test if CONLL_LABELS <= labels else PII_TEST)
        sets = {"sentences": sentences, "documents": documents}
        n_words = {k: sum(len(d) for d in reference.tokenizer.pipe(v)) for k, v in sets.items()}
        n_pieces = {k: wordpieces(reference, name, list(reference.pipe(v, disable=[name]))) for k, v in sets.items()}
        n_pieces["short"] = wordpieces(reference, name, [reference.make_doc(short)])
        for nlp in pipelines.values():  # warm-up: sessions made, caches filled
            list(nlp.pipe(sentences[:64]))
            for _ in range(3):
                nlp(short)
        order = list(SYSTEMS)
        speeds: Dict[str, Dict[str, List[float]]] = {s: {"sentences": [], "documents": [], "short_ms": []} for s in SYSTEMS}
        outputs: Dict[str, Dict[str, Any]] = {s: {} for s in SYSTEMS}
        for r in range(rounds):
            rotated = order[r % len(order):] + order[: r % len(order)]
            for what, texts in sets.items():
                for system in rotated:
                    start = time.perf_counter()
                    docs = list(pipelines[system].pipe(texts, batch_size=64))
                    seconds = time.perf_counter() - start
                    speeds[system][what].append(seconds)
                    if r == 0:
                        outputs[system][what] = annotations(docs, key)
                    print(f"round {r + 1} {what} {system}: {n_words[what] / seconds:,.0f} words/s", file=sys.stderr, flush=True)
            calls: Dict[str, List[float]] = {s: [] for s in SYSTEMS}
            for _ in range(short_calls):
                for system in rotated:
                    start = time.perf_counter()
                    pipelines[system](short)
                    calls[system].append(time.perf_counter() - start)
            for system in SYSTEMS:
                speeds[system]["short_ms"].append(1000 * statistics.median(calls[system]))
            print(f"round {r + 1} short p50 ms: " + ", ".join(f"{s} {speeds[s]['short_ms'][-1]:.1f}" for s in SYSTEMS), file=sys.stderr, flush=True)
        limit = gemm_limit()
        transformer_config = get_transformer(reference.get_pipe(name).model.get_ref("encoder")).config
        results: Dict[str, Any] = {}
        for system in SYSTEMS:
            row: Dict[str, Any] = {}
            for what in sets:
                seconds = statistics.median(speeds[system][what])
                row[f"{what}_words_per_s"] = round(n_words[what] / seconds)
                row[f"{what}_speedup_vs_torch"] = round(statistics.median(
                    [t / s for t, s in zip(speeds["torch_fp32"][what], speeds[system][what])]), 3)
                row[f"{what}_share_of_gemm_limit"] = share(limit, transformer_config, system, n_pieces[what], seconds)
            p50 = statistics.median(speeds[system]["short_ms"])
            row["short_p50_ms"] = round(p50, 2)
            row["short_speedup_vs_torch"] = round(statistics.median(
                [t / s for t, s in zip(speeds["torch_fp32"]["short_ms"], speeds[system]["short_ms"])]), 3)
            row["short_share_of_gemm_limit"] = share(limit, transformer_config, system, n_pieces["short"], p50 / 1000)
            row["per_round_seconds"] = {k: [round(v, 4) for v in vs] for k, vs in speeds[system].items()}
            if system != "torch_fp32":
                row["equality_vs_torch"] = {what: compare(outputs["torch_fp32"][what], outputs[system][what]) for what in sets}
            results[system] = row
        accuracy = f1_scores(pipelines, gold, 20 if args.quick else None)
        numbers = {
            "model": str(args.model),
            "test": str(args.test),
            "quick": args.quick,
            "ner_only": args.ner_only,
            "components": pipelines["torch_fp32"].pipe_names,
            "rounds": rounds,
            "short_calls_per_round": short_calls,
            "short_text_chars": len(short),
            "words": n_words,
            "wordpieces": n_pieces,
            "torch_threads": torch.get_num_threads(),
            "onnxruntime_intra_op_threads": "torch.get_num_threads() at the first prediction (ml/onnx_runtime.py)",
            "cpu_count": os.cpu_count(),
            "export_seconds": exported["seconds"],
            "export_files": json.loads((exported["path"] / name / "encoder.onnx.json").read_text())["files"],
            "gemm_limit": limit,
            "systems": results,
            "f1": accuracy,
        }
        print(json.dumps({s: {k: v for k, v in r.items() if k != "per_round_seconds"} for s, r in results.items()}, indent=1))
        print(json.dumps(accuracy, indent=1))
        if args.quick:
            path = provenance.write_result("onnx_runtime", numbers, Path(tmp) / "onnx_runtime_quick.json", ledger=Path(tmp) / "ledger")
            print(f"quick record (not kept): {path}", file=sys.stderr)
        else:
            provenance.write_result("onnx_runtime", numbers, ROOT / "bench" / "results" / "onnx_runtime.json")


if __name__ == "__main__":
    main()
