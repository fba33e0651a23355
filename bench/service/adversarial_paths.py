"""Old against new on each request path that grew faster than the text (issue 28, finding 1).

For every path, the release's code (``--old-ref``, read with ``git show``) and the working tree's
are timed on the same adversarial text, each in its own process with a time limit, so a path
that takes minutes before the change is reported as "> limit" and does not hold the run up:

  tokenizer      spaCy's tokenizer on "(" x n               / the BoundedTokenizer guard
  entity_source  source of each of n/25 e-mail entities    / one index per doc
  phone_lines    phone-like junk (digit-before rescans)    / bounded look-behind, windows
  iban_words     words shaped like IBANs (backtracking)    / lookahead + possessive body
  url_parens     "http://a.bc/" + ")" x n (trimming loop)  / one pass
  ones_then_phone "1 " x n/2 then a number (65,535 tries)  / windows: is the number found?

    python -m bench adversarial_paths --size 100000 --max-seconds 300
    python -m bench adversarial_paths --quick          # 10 KB, a check that it runs

The texts come from tests/adversarial_texts.py (the adversarial test suite uses the same).
Timings need a machine to themselves (load average recorded at start and end).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.provenance import write_result  # noqa: E402  (imported first: it notes the load average at the start)

PATHS = ("tokenizer", "entity_source", "phone_lines", "iban_words", "url_parens", "ones_then_phone")
REGIONS = ["US", "GB", "DE", "FR", "IN"]


def old_patterns(ref: str) -> types.ModuleType:
    """The release's pii_patterns module, loaded from git without registering its factory."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:spacy_ner_plus/pipeline/pii_patterns.py"], check=True, capture_output=True, text=True
    ).stdout
    source = source.replace("from .scored_spans import", "from spacy_ner_plus.pipeline.scored_spans import")
    source = source.replace("@Language.factory(", "@(lambda *args, **kwargs: (lambda f: f))(")
    module = types.ModuleType("old_pii_patterns")
    exec(compile(source, f"{ref}:pii_patterns.py", "exec"), module.__dict__)
    return module


def run_one(path: str, impl: str, size: int, ref: str) -> dict:
    """Time one path with one implementation; RETURNS the record."""
    import spacy

    import adversarial_texts as texts
    from spacy_ner_plus.pipeline import pii_patterns as new
    from spacy_ner_plus.pipeline.bounded_tokenizer import BoundedTokenizer

    patterns = new if impl == "new" else old_patterns(ref)
    result = {}
    if path == "tokenizer":
        text = texts.parens(size)
        tokenizer = spacy.blank("en").tokenizer
        tokenizer = BoundedTokenizer(tokenizer) if impl == "new" else tokenizer
        started = time.perf_counter()
        result["tokens"] = len(tokenizer(text))
    elif path == "entity_source":
        nlp = spacy.blank("en")
        nlp.add_pipe("pii_patterns", config={"labels": ["EMAIL_ADDRESS"]})
        doc = nlp(texts.emails(size))
        started = time.perf_counter()
        if impl == "new":
            index = new.entity_sources(doc)
            sources = [index.get((e.start, e.end, e.label), "other") for e in doc.ents]
        else:
            sources = [patterns.entity_source(e) for e in doc.ents]
        result["entities"] = len(sources)
    elif path in ("phone_lines", "ones_then_phone"):
        text = getattr(texts, path)(size)
        started = time.perf_counter()
        found = [(m.start, m.end) for m in patterns.find_phone_numbers(text, REGIONS)]
        result["numbers"] = len(found)
        if path == "ones_then_phone":
            start = text.index(texts.KNOWN_PHONE)
            result["number_found"] = (start, start + len(texts.KNOWN_PHONE)) in found
    elif path == "iban_words":
        text = texts.iban_words(size)
        started = time.perf_counter()
        result["ibans"] = len(list(patterns.find_ibans(text)))
    elif path == "url_parens":
        text = texts.url_parens(size)
        started = time.perf_counter()
        result["urls"] = [(m.start, m.end) for m in patterns.find_urls(text)]
    else:
        raise ValueError(f"unknown path {path!r}; known: {', '.join(PATHS)}")
    result["seconds"] = round(time.perf_counter() - started, 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000, help="characters per adversarial text")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="time limit per path and implementation")
    parser.add_argument("--old-ref", default="128429b", help="git revision holding the code before the change")
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=PATHS)
    parser.add_argument("--quick", action="store_true", help="10 KB texts, 60 s limit: checks that the script runs")
    parser.add_argument("--output", default=None, help="record the run in the ledger under this bench/results name (not with --quick)")
    parser.add_argument("--one", nargs=2, metavar=("PATH", "IMPL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.size, args.old_ref)))
        return
    if args.quick:
        args.size, args.max_seconds = 10_000, 60.0
    load_start = os.getloadavg()[0]
    records = []
    for path in args.paths:
        row = {"path": path, "size": args.size}
        for impl in ("old", "new"):
            command = [sys.executable, __file__, "--one", path, impl, "--size", str(args.size), "--old-ref", args.old_ref]
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=args.max_seconds, check=True)
                row[impl] = json.loads(done.stdout.strip().splitlines()[-1])
            except subprocess.TimeoutExpired:
                row[impl] = {"seconds": None, "timed_out_after": args.max_seconds}
            except subprocess.CalledProcessError as err:
                raise SystemExit(f"{path} ({impl}) failed:\n{err.stderr}") from None
        records.append(row)
        old_s, new_s = row["old"].get("seconds"), row["new"]["seconds"]
        old_text = f"{old_s:9.3f} s" if old_s is not None else f"> {args.max_seconds:.0f} s".rjust(11)
        results = {impl: {k: v for k, v in row[impl].items() if k not in ("seconds", "timed_out_after")} for impl in ("old", "new")}
        print(f"{path:16s} {args.size:>9,d} chars  old {old_text}  new {new_s:8.3f} s  old {results['old']} new {results['new']}", flush=True)
    load_end = os.getloadavg()[0]
    print(f"load average (1 min): {load_start:.2f} at start, {load_end:.2f} at end")
    if args.output and not args.quick:
        numbers = {"old_ref": args.old_ref, "size": args.size, "max_seconds": args.max_seconds, "paths": records,
                   "load_1min_start_end": [load_start, load_end]}
        print(f"wrote {write_result('adversarial_paths', numbers, ROOT / 'bench' / 'results' / f'{args.output}.json')}")

if __name__ == "__main__":
    main()
