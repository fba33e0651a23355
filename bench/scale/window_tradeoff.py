"""Window overlap on whole documents: strict F1 against the wordpieces encoded and the time.

For each (window, stride) setting, one pass of a trained ner_plus pipeline over
the CoNLL++ test documents (gold tokenization and sentence starts, as
long_documents.py gives them): strict entity F1, the wordpieces its windows
encode (special tokens included) against the document's own wordpieces, and
the seconds of the faster of two passes (after an untimed pass that fills the
wordpiece cache).

    python -m bench window_tradeoff MODEL [--settings 128:96,128:112] [--output NAME.json]
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import spacy

import spacy_ner_plus  # noqa: F401
from bench import provenance
from spacy_ner_plus.training.corpus import read_conll, result_to_docs
from spacy_ner_plus.evaluation.evaluate import predict_examples, strict_scores
from spacy_ner_plus.ml.transformer import n_special_tokens, word_pieces

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    parser.add_argument("--settings", default="128:96,128:112,128:120,256:224,256:240")
    parser.add_argument("--output", default="window_tradeoff.json", help="file under bench/results")
    args = parser.parse_args()
    nlp = spacy.load(args.model)
    ner = nlp.get_pipe("ner_plus")
    encoder = ner._encoder()
    docs = result_to_docs(read_conll(args.test), nlp.vocab, "document")
    specials = n_special_tokens(encoder)
    own = sum(sum(len(p) for p in word_pieces(encoder, [t.text for t in d])) + specials for d in docs)
    predict_examples(nlp, docs)
    rows = []
    for setting in args.settings.split(","):
        window, stride = map(int, setting.split(":"))
        ner.window, ner.stride = window, stride
        _, owners, n_pieces = ner._windows(docs)
        times = []
        for _ in range(2):
            start = time.perf_counter()
            examples = predict_examples(nlp, docs)
            times.append(time.perf_counter() - start)
        encoded = sum(n_pieces) + specials * len(n_pieces)
        row = {"window": window, "stride": stride, "f1": round(100 * strict_scores(examples)["f1"], 2), "windows": len(owners),
               "wordpieces_encoded": encoded, "overlap": round(encoded / own, 3), "seconds": round(min(times), 2)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    commit = provenance.commit()
    out = ROOT / "bench" / "results" / args.output
    provenance.write_result("window_tradeoff", {"model": args.model, "command": "python -m bench window_tradeoff " + " ".join(sys.argv[1:]),
                                                "commit": commit, "machine": platform.node(), "document_wordpieces": own, "rows": rows}, out)


if __name__ == "__main__":
    main()
