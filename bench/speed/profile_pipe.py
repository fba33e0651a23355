"""Where ner_plus spends its time in nlp.pipe: cProfile of one pass over the CoNLL++ test sentences.

Not a speed benchmark (the profiler adds overhead); it splits the time of
inference_speed.py's system (a) into transformer forward, windows and
wordpieces, spaCy tokenization and decoding.

    python -m bench profile_pipe training/bench_conll_ner_plus/training/model-last
"""
import argparse
import cProfile
import io
import pstats
import sys
from pathlib import Path

import spacy

from bench import provenance
import spacy_ner_plus  # noqa: F401
from spacy_ner_plus.training.corpus import read_conll

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--test", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003" / "test.iob")
    parser.add_argument("--rows", type=int, default=45)
    args = parser.parse_args()
    result = read_conll(args.test)
    texts = [" ".join(s.words) for doc in result.documents for s in doc]
    nlp = spacy.load(args.model)
    list(nlp.pipe(texts[:64]))
    profile = cProfile.Profile()
    profile.enable()
    list(nlp.pipe(texts, batch_size=64))
    profile.disable()
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("cumulative").print_stats(args.rows)
    print(text.getvalue())
    record = {"model": args.model, "texts": len(texts), "total_seconds": round(stats.total_tt, 2), "profile": text.getvalue(),
              "command": " ".join(["python -m bench profile_pipe", *sys.argv[1:]]), "commit": provenance.commit()}
    provenance.write_result("profile_pipe", record, ROOT / "bench" / "results" / "profile_pipe.json")


if __name__ == "__main__":
    main()
