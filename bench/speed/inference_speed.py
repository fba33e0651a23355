"""CPU inference speed, one run, same backbone (embedded MiniLM-L6-H384), same texts.

Texts: the CoNLL++ test set as sentences (3,453) and as whole documents (231),
each given to every system as a plain string (tokens joined by spaces).
Words = spaCy tokens of those strings. Each system runs in its own process
(so peak RSS is its own), after one untimed warm-up pass on 64 texts:

  a   ner_plus fp32 (nlp.pipe)           a2  the same with n_process=2
  b   ner_plus int8 (quantize = true)
  c   spaCy's stock transformer + ner pipeline (spacy init config -p ner -G)
  d   Hugging Face pipeline("token-classification", aggregation_strategy="first"),
      stride 128 for texts over 512 wordpieces
  e   bare backbone forward over length-sorted batches of 32 in inference_mode
      (wordpieces computed before the clock starts; a text over 512 wordpieces
      is cut into consecutive 510-piece segments, each piece encoded once):
      the floor of the work

--repeats N runs N rounds, each round every system once in the order above
(sentences then documents), and reports per system the median words/s over
the rounds: this machine's speed drifts between processes (one system moved
2.6x between the rounds of one run), and interleaved rounds spread that drift
over all systems alike.

Heads are untrained where no trained pipeline is given (speed does not depend
on the weights); pass --trained MODEL to time a trained ner_plus instead, and
--stride N to give its windows another stride than the one it was saved with
(pipelines trained before the default became 112 carry 96).

    python -m bench inference_speed --test ../shared/data/conll2003/test.iob
"""
import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ["e", "a", "b", "c", "d", "a2"]
TIMEOUT_S = 240  # a guard: a2 (n_process=2) hung before the package's at-fork hook existed
LABELS = ["LOC", "MISC", "ORG", "PER"]


def load_texts(test: Path, mode: str):
    from spacy_ner_plus.training.corpus import read_conll

    result = read_conll(test)
    if mode == "sentences":
        return [" ".join(s.words) for doc in result.documents for s in doc]
    return [" ".join(w for s in doc for w in s.words) for doc in result.documents]


def label_examples(nlp):
    from spacy.training import Example

    doc = nlp.make_doc("John Acme Paris German")
    return [Example.from_dict(doc, {"entities": ["U-PER", "U-ORG", "U-LOC", "U-MISC"]})]


def untrained_ner_plus(quantize: bool):
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("ner_plus", config={"quantize": quantize})
    nlp.get_pipe("ner_plus").initialize(lambda: label_examples(nlp), nlp=nlp, labels=LABELS)
    return nlp


def spacy_stock():
    from spacy.cli.init_config import init_config
    from spacy.util import load_model_from_config

    config = init_config(lang="en", pipeline=["ner"], optimize="accuracy", gpu=True, pretraining=False, silent=True)
    config["components"]["transformer"]["model"]["name"] = {"@misc": "spacy-ner-plus.embedded_backbone.v1"}
    nlp = load_model_from_config(config, auto_fill=True)
    nlp.initialize(lambda: label_examples(nlp))
    return nlp


def run_system(system: str, texts, trained, stride=None):
    import spacy
    import torch

    import spacy_ner_plus  # noqa: F401
    from spacy_ner_plus.ml.backbone import embedded_backbone_path

    words = sum(len(d) for d in spacy.blank("en").pipe(texts))
    windows = None  # ner_plus's window/stride
    if system in ("a", "a2", "b", "c"):
        if system == "c":
            nlp = spacy_stock()
        elif trained:
            settings = {"quantize": system == "b", **({"stride": stride} if stride else {})}
            nlp = spacy.load(trained, config={"components": {"ner_plus": settings}})
        else:
            nlp = untrained_ner_plus(system == "b")
        if system != "c":
            ner = nlp.get_pipe("ner_plus")
            windows = f"{ner.window}/{ner.stride}"
        list(nlp.pipe(texts[:64]))
        n_process = 2 if system == "a2" else 1
        start = time.perf_counter()
        n_ents = sum(len(d.ents) for d in nlp.pipe(texts, batch_size=64, n_process=n_process))
        seconds = time.perf_counter() - start
    elif system == "d":
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        path = str(embedded_backbone_path())
        labels = ["O"] + [f"{p}-{l}" for l in LABELS for p in "BI"]
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
        pipe = pipeline("token-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(path), aggregation_strategy="first", stride=128, device=-1)
        pipe(texts[:64], batch_size=32)
        start = time.perf_counter()
        n_ents = sum(len(r) for r in pipe(texts, batch_size=32))
        seconds = time.perf_counter() - start
    else:
        from transformers import AutoModel, AutoTokenizer

        path = str(embedded_backbone_path())
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path).eval()
        # every wordpiece once: a text over the backbone's 512 becomes consecutive
        # 510-piece segments (no overlap, no truncation)
        limit = tok.model_max_length - 2
        enc = [
            tok.build_inputs_with_special_tokens(ids[i : i + limit])
            for ids in tok(texts, add_special_tokens=False)["input_ids"]
            for i in range(0, max(1, len(ids)), limit)
        ]
        order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
        batches = []
        for s in range(0, len(order), 32):
            chunk = [enc[i] for i in order[s : s + 32]]
            width = max(map(len, chunk))
            ids = torch.zeros((len(chunk), width), dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, row in enumerate(chunk):
                ids[j, : len(row)] = torch.tensor(row)
                mask[j, : len(row)] = 1
            batches.append((ids, mask))
        with torch.inference_mode():
            model(input_ids=batches[0][0], attention_mask=batches[0][1])
            start = time.perf_counter()
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask)
            seconds = time.perf_counter() - start
        n_ents = None
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"system": system, "words": words, "seconds": round(seconds, 2), "words_per_s": round(words / seconds, 1),
            "peak_rss_mb": round(max(rss_mb, children), 1), "entities": n_ents, "torch_threads": torch.get_num_threads(), **({"window/stride": windows} if windows else {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    parser.add_argument("--trained", default=None)
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_system(args.one, load_texts(args.test, args.mode), args.trained, args.stride)))
        return
    results = []
    for round_ in range(args.repeats):
        for mode in ("sentences", "documents"):
            for system in SYSTEMS:
                cmd = [sys.executable, "-m", "bench", "inference_speed", "--test", str(args.test), "--one", system, "--mode", mode]
                if args.trained:
                    cmd += ["--trained", args.trained]
                if args.stride:
                    cmd += ["--stride", str(args.stride)]
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    record = {"system": system, "mode": mode, "failed": f"no result within {TIMEOUT_S} s (hung)"}
                else:
                    if out.returncode != 0:
                        sys.exit(f"{system}/{mode} failed:\n{out.stderr[-3000:]}")
                    record = json.loads(out.stdout.strip().splitlines()[-1])
                    record["mode"] = mode
                record["round"] = round_
                print(json.dumps(record), flush=True)
                results.append(record)
    summary = {}
    for mode in ("sentences", "documents"):
        speeds = {}
        for r in results:
            if r["mode"] == mode and "words_per_s" in r:
                speeds.setdefault(r["system"], []).append(r["words_per_s"])
        median = {system: statistics.median(v) for system, v in speeds.items()}
        a = median["a"]
        ratios = {"a/c": a / median["c"], "a/d": a / median["d"], "a/e": a / median["e"], "b/a": median["b"] / a}
        if "a2" in median:
            ratios["a2/a"] = median["a2"] / a
        summary[mode] = {"median_words_per_s": median, "ratios": {k: round(v, 2) for k, v in ratios.items()}}
        print(f"{mode}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    commit = provenance.commit()
    out = ROOT / "bench" / "results" / "inference_speed.json"
    provenance.write_result("inference_speed", {"commit": commit, "machine": platform.node(), "command": "python -m bench inference_speed " + " ".join(sys.argv[1:]),
                                                "summary": summary, "results": results}, out)


if __name__ == "__main__":
    main()
