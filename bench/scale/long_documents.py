"""Long documents: whole CoNLL++ test documents against the same text sentence by sentence,
a tiny window against the default, scaling to 1,000,000 characters, and the Hugging Face
token-classification pipeline with stride on the same documents.

    python -m bench long_documents MODEL [--hf-model DIR] [--output NAME.json]

MODEL is a trained ner_plus pipeline (bench/accuracy/conll_benchmark.py ner_plus leaves one);
--hf-model a token-classification model on the same backbone (the hf_token_cls peer's).
"""
import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench import provenance

ROOT = Path(__file__).resolve().parents[2]


def f1_of(nlp, gold):
    from spacy_ner_plus.evaluation.evaluate import predict_examples, strict_scores

    return strict_scores(predict_examples(nlp, gold))["f1"]


def scaling_run(model: str, n_chars: int, test: Path) -> dict:
    import spacy

    from spacy_ner_plus.training.corpus import read_conll

    result = read_conll(test)
    text = "\n\n".join(" ".join(w for s in doc for w in s.words) for doc in result.documents)
    while len(text) < n_chars:
        text = text + "\n\n" + text
    text = text[:n_chars]
    nlp = spacy.load(model)
    nlp.max_length = max(nlp.max_length, n_chars + 1)
    start = time.perf_counter()
    doc = nlp(text)
    seconds = time.perf_counter() - start
    return {"chars": n_chars, "tokens": len(doc), "entities": len(doc.ents), "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def hf_pipeline_f1(hf_model: Path, gold) -> float:
    from spacy.tokens import Doc
    from spacy.training import Example
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    from spacy_ner_plus.evaluation.evaluate import strict_scores

    pipe = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(hf_model),
                    tokenizer=AutoTokenizer.from_pretrained(hf_model), aggregation_strategy="first", stride=128, device=-1)
    examples = []
    for g in gold:
        pred = Doc(g.vocab, words=[t.text for t in g], spaces=[bool(t.whitespace_) for t in g])
        spans = []
        for ent in pipe(g.text):
            span = pred.char_span(ent["start"], ent["end"], label=ent["entity_group"], alignment_mode="expand")
            if span is not None and all(span.end <= s.start or span.start >= s.end for s in spans):
                spans.append(span)
        pred.ents = sorted(spans, key=lambda s: s.start)
        examples.append(Example(pred, g))
    return strict_scores(examples)["f1"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--hf-model", type=Path, default=None)
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    parser.add_argument("--parts", default="f1,hf,scaling", help="comma-separated: f1, hf, scaling (results merge into one file)")
    parser.add_argument("--output", default="long_documents.json", help="file under bench/results (parts of one model merge into it)")
    parser.add_argument("--scale", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if args.scale:
        print(json.dumps(scaling_run(args.model, args.scale, args.test)))
        return
    import spacy

    from spacy_ner_plus.training.corpus import read_conll, result_to_docs

    nlp = spacy.load(args.model)
    result = read_conll(args.test)
    docs = result_to_docs(result, nlp.vocab, "document")
    sents = result_to_docs(result, nlp.vocab, "sentence")
    out_path = ROOT / "bench" / "results" / args.output
    record = json.loads(out_path.read_text()) if out_path.exists() else {}
    if record.get("model") != args.model:
        record = {}
    record.update({"model": args.model, "documents": len(docs), "max_doc_tokens": max(len(d) for d in docs)})
    if "f1" in parts:
        record["f1_sentences"] = f1_of(nlp, sents)
        record["f1_documents"] = f1_of(nlp, docs)
        ner = nlp.get_pipe("ner_plus")
        default = (ner.window, ner.stride)
        ner.window, ner.stride = 32, 16
        record["f1_documents_window32_stride16"] = f1_of(nlp, docs)
        ner.window, ner.stride = default
        record["default_window"] = list(default)
    if "hf" in parts and args.hf_model:
        record["hf_pipeline_stride128_f1_documents"] = hf_pipeline_f1(args.hf_model, docs)
        record["hf_pipeline_stride128_f1_sentences"] = hf_pipeline_f1(args.hf_model, sents)
    if "scaling" in parts:
        record["scaling"] = []
    for n in ((10_000, 100_000, 1_000_000) if "scaling" in parts else ()):
        out = subprocess.run([sys.executable, "-m", "bench", "long_documents", args.model, "--test", str(args.test), "--scale", str(n)], capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        record["scaling"].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(record["scaling"][-1]), flush=True)
    record.setdefault("commands", []).append("python -m bench long_documents " + " ".join(sys.argv[1:]))
    record["commit"] = provenance.commit()
    record["machine"] = platform.node()
    provenance.write_result("long_documents", record, out_path)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
