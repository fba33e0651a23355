"""The ADE corpus v2 (drugs, adverse effects, doses in case-report sentences) as spaCy JSONL.

    python scripts/ade_to_jsonl.py ../shared/data/ade corpus/healthcare/jsonl

reads ``DRUG-AE.rel`` and ``DRUG-DOSE.rel`` (``PubMed-ID|sentence|mention|begin|end|drug|begin|end``,
one line per relation) and writes ``train.jsonl``, ``dev.jsonl``, ``test.jsonl``,
``test_dose.jsonl`` (spaCy JSONL, one sentence a line, read by ``python -m
spacy_ner_plus convert``), ``unplaced.tsv`` and ``report.json``.

Labels: DRUG, ADVERSE_EFFECT (the effect of DRUG-AE.rel), DOSE (the dose of DRUG-DOSE.rel).

Sentences: a sentence is its PubMed ID and its text; its entities are the
union of all its relation lines in both files (a mention on several lines is
one span). Overlapping mentions (a drug inside an effect: "lithium toxicity")
are all written; ``convert --on-error repair`` keeps the longest and counts
the others.

Placing mentions: offsets are at the level of the abstract ("PubMed-ID\\n\\n
Title\\n\\nAbstract"), not the sentence, so each mention is found in its
sentence. Every mention of a sentence is shifted by the same amount (where
the sentence starts in the abstract), so the shift that places the most
mentions exactly where their text occurs is taken, and a mention is placed
where ``begin - shift`` finds its text. A mention that does not fit the
shift is placed at its only occurrence in the sentence if it has exactly
one; a mention that occurs several times without fitting the shift is
ambiguous, one that does not occur at all is missing: both are left out,
listed in ``unplaced.tsv`` and counted in report.json, never dropped silently.

Split: by PubMed ID, never by sentence: the sorted IDs shuffled with
``random.Random(--seed)``, the first 80% train, the next 10% dev, the rest test.

Partial annotation, the policy (documented here and in project.yml):

- DOSE: annotated only where a dose relation was, so a sentence outside
  DRUG-DOSE.rel may hold unannotated doses. With ``--dose keep`` (default)
  DOSE spans are written wherever DRUG-DOSE.rel has them, in every split,
  and ``test_dose.jsonl`` holds the test sentences of DRUG-DOSE.rel: score
  DOSE there (its precision on test.jsonl is a lower bound, unannotated doses
  counting as false positives). ``--dose drop`` writes no DOSE span at all and
  leaves DRUG-DOSE-only sentences out (the alternative to measure against:
  a two-type model); test_dose.jsonl then holds the test sentences of
  DRUG-DOSE.rel that are left, without their doses.
- ADE-NEG.txt: its sentences are not annotated for drugs at all, so by
  default they are left out (as negatives they would teach that drugs are
  not DRUG). ``--negatives`` adds them without spans (to the split of their
  PubMed ID), for a model that must see sentences without adverse effects;
  a NEG sentence that is also annotated is not added twice.
"""
import argparse
import json
import random
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

FILES = {"DRUG-AE.rel": "ADVERSE_EFFECT", "DRUG-DOSE.rel": "DOSE"}
NEG_FILE = "ADE-NEG.txt"
SPLIT = (("train", 0.8), ("dev", 0.1), ("test", 0.1))


@dataclass(frozen=True)
class Mention:
    text: str
    begin: int
    end: int
    label: str


@dataclass
class Sentence:
    pmid: str
    text: str
    mentions: List[Mention]
    sources: set
    order: int


def read_rel(path: Path, label: str, sentences: Dict[Tuple[str, str], Sentence], problems: List[str]) -> int:
    """Add the relation lines of ``path`` to ``sentences``; RETURNS the lines read."""
    n = 0
    with open(path, encoding="utf8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("|")
            if len(fields) < 8:
                problems.append(f"{path.name}:{lineno}: {len(fields)} fields, expected 8: line skipped")
                continue
            # a '|' inside the sentence leaves the first and the last six fields in place
            pmid, sentence, rest = fields[0], "|".join(fields[1:-6]), fields[-6:]
            try:
                mention = Mention(rest[0], int(rest[1]), int(rest[2]), label)
                drug = Mention(rest[3], int(rest[4]), int(rest[5]), "DRUG")
            except ValueError:
                problems.append(f"{path.name}:{lineno}: offsets are not integers ({'|'.join(rest)}): line skipped")
                continue
            n += 1
            key = (pmid, sentence)
            if key not in sentences:
                sentences[key] = Sentence(pmid, sentence, [], set(), len(sentences))
            record = sentences[key]
            record.sources.add(path.name)
            for m in (mention, drug):
                if m not in record.mentions:
                    record.mentions.append(m)
    return n


def occurrences(text: str, sub: str) -> List[int]:
    found, i = [], text.find(sub)
    while i >= 0 and sub:
        found.append(i)
        i = text.find(sub, i + 1)
    return found


def place(sentence: Sentence, how: Optional[Counter] = None) -> Tuple[List[dict], List[Tuple[Mention, str]]]:
    """Sentence-level spans of a sentence's mentions, and the mentions that
    could not be placed with the reason ("missing" or "ambiguous"); ``how``
    counts how each placed mention was placed."""
    how = Counter() if how is None else how
    where = {m: occurrences(sentence.text, m.text) for m in sentence.mentions}
    support: Counter = Counter()
    for m, positions in where.items():
        for shift in {m.begin - p for p in positions}:
            support[shift] += 1
    ranked = support.most_common()
    # a tie for the most-supported shift leaves no shift: only unique occurrences are placed
    shift = ranked[0][0] if ranked and (len(ranked) == 1 or ranked[0][1] > ranked[1][1]) else None
    spans, unplaced = [], []
    for m in sentence.mentions:
        positions = where[m]
        if shift is not None and m.begin - shift in positions:
            start = m.begin - shift
            how["by the sentence's offset" + (" among several occurrences" if len(positions) > 1 else "")] += 1
        elif len(positions) == 1:
            start = positions[0]
            how["at its only occurrence, off the sentence's offset"] += 1
        else:
            unplaced.append((m, "missing" if not positions else f"ambiguous ({len(positions)} occurrences)"))
            continue
        spans.append({"start": start, "end": start + len(m.text), "label": m.label})
    spans.sort(key=lambda s: (s["start"], -s["end"], s["label"]))
    unique = [s for i, s in enumerate(spans) if s not in spans[:i]]
    return unique, unplaced


def split_ids(pmids: List[str], seed: int) -> Dict[str, str]:
    """PubMed ID -> split: the sorted IDs shuffled with random.Random(seed), 80/10/10."""
    ordered = sorted(set(pmids), key=lambda p: (len(p), p))
    random.Random(seed).shuffle(ordered)
    n_train = round(SPLIT[0][1] * len(ordered))
    n_dev = round(SPLIT[1][1] * len(ordered))
    return {p: "train" if i < n_train else "dev" if i < n_train + n_dev else "test" for i, p in enumerate(ordered)}


def read_negatives(path: Path, problems: List[str]) -> List[Tuple[str, str]]:
    out = []
    with open(path, encoding="utf8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip():
                continue
            parts = line.split(" ", 2)
            if len(parts) < 3 or parts[1] != "NEG":
                problems.append(f"{path.name}:{lineno}: not 'PubMed-ID NEG sentence': line skipped")
                continue
            out.append((parts[0], parts[2]))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ade_dir", type=Path, help="folder with DRUG-AE.rel, DRUG-DOSE.rel (and ADE-NEG.txt for --negatives)")
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dose", choices=("keep", "drop"), default="keep", help="keep: DOSE spans where annotated, DOSE scored on test_dose.jsonl; drop: no DOSE (see the module's policy)")
    parser.add_argument("--negatives", action="store_true", help="add the ADE-NEG sentences, without spans")
    args = parser.parse_args(argv)
    needed = list(FILES) + ([NEG_FILE] if args.negatives else [])
    missing = [name for name in needed if not (args.ade_dir / name).is_file()]
    if missing:
        print(f"{args.ade_dir}: missing {', '.join(missing)}", file=sys.stderr)
        return 1
    problems: List[str] = []
    sentences: Dict[Tuple[str, str], Sentence] = {}
    lines = {name: read_rel(args.ade_dir / name, label, sentences, problems) for name, label in FILES.items()}
    records: List[dict] = []
    unplaced_rows: List[str] = []
    unplaced: Counter = Counter()
    placed: Counter = Counter()
    how: Counter = Counter()
    for sentence in sorted(sentences.values(), key=lambda s: s.order):
        dose_only = sentence.sources == {"DRUG-DOSE.rel"}
        if args.dose == "drop":
            if dose_only:
                continue
            sentence.mentions = [m for m in sentence.mentions if m.label != "DOSE"]
        spans, missed = place(sentence, how)
        placed.update(s["label"] for s in spans)
        for m, reason in missed:
            kind = reason.split(" ")[0]
            unplaced[f"{m.label} {kind}"] += 1
            unplaced_rows.append("\t".join([sentence.pmid, m.label, m.text, str(m.begin), str(m.end), reason, sentence.text]))
        records.append({"text": sentence.text, "spans": spans,
                        "meta": {"pmid": sentence.pmid, "dose_annotated": "DRUG-DOSE.rel" in sentence.sources}})
    negatives = 0
    if args.negatives:
        seen = {(r["meta"]["pmid"], r["text"]) for r in records}
        for pmid, text in read_negatives(args.ade_dir / NEG_FILE, problems):
            if (pmid, text) not in seen:
                seen.add((pmid, text))
                records.append({"text": text, "spans": [], "meta": {"pmid": pmid, "dose_annotated": False, "negative": True}})
                negatives += 1
    assignment = split_ids([r["meta"]["pmid"] for r in records], args.seed)
    splits: Dict[str, List[dict]] = {name: [] for name, _ in SPLIT}
    for record in records:
        splits[assignment[record["meta"]["pmid"]]].append(record)
    splits["test_dose"] = [r for r in splits["test"] if r["meta"]["dose_annotated"]]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(args.output_dir / f"{name}.jsonl", "w", encoding="utf8") as f:
            for record in rows:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    with open(args.output_dir / "unplaced.tsv", "w", encoding="utf8") as f:
        f.write("pmid\tlabel\tmention\tbegin\tend\treason\tsentence\n")
        f.writelines(row + "\n" for row in unplaced_rows)
    summary = {
        "seed": args.seed,
        "dose": args.dose,
        "negatives": args.negatives,
        "relation_lines": lines,
        "sentences": len(sentences),
        "negative_sentences_added": negatives,
        "pubmed_ids": len(assignment),
        "dose_sentences": sum("DRUG-DOSE.rel" in s.sources for s in sentences.values()),
        "spans_placed": dict(sorted(placed.items())),
        "mentions_placed": dict(sorted(how.items())),
        "mentions_unplaced": dict(sorted(unplaced.items())),
        "splits": {name: {"sentences": len(rows), "pubmed_ids": len({r["meta"]["pmid"] for r in rows}),
                          "spans": dict(sorted(Counter(s["label"] for r in rows for s in r["spans"]).items()))}
                   for name, rows in splits.items()},
        "problems": problems,
    }
    (args.output_dir / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{sum(lines.values())} relation lines ({', '.join(f'{k} {v}' for k, v in lines.items())}) -> {len(sentences)} sentences from {len(assignment)} PubMed IDs")
    print("spans placed: " + ", ".join(f"{k} {v}" for k, v in summary["spans_placed"].items()) + f" ({summary['dose_sentences']} sentences with a dose relation)")
    print("mentions placed: " + ", ".join(f"{k} {v}" for k, v in summary["mentions_placed"].items()))
    print("mentions not placed: " + (", ".join(f"{k} {v}" for k, v in summary["mentions_unplaced"].items()) or "none") + f" (listed in {args.output_dir / 'unplaced.tsv'})")
    for name, s in summary["splits"].items():
        print(f"{name}: {s['sentences']} sentences, {s['pubmed_ids']} PubMed IDs, spans " + ", ".join(f"{k} {v}" for k, v in s["spans"].items()))
    for problem in problems:
        print(f"could not use: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
