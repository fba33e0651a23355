"""The resume corpus (dotin Inc.'s CVs: XML with inline ``<label type="...">``) as spaCy JSONL.

    python scripts/resume_to_jsonl.py ../shared/data/resume corpus/resume/jsonl

reads ``545_cvs_train_v2.zip`` (split train/dev by CV: ``--dev-fraction`` of the
CVs, drawn with ``random.Random(--seed)`` from the sorted file names) and
``set_aside_test_v2_50cvs.zip`` (all of it the test set), and writes
``train.jsonl``, ``dev.jsonl``, ``test.jsonl`` (one CV a line:
``{"text", "spans": [{"start", "end", "label"}], "meta": {"cv": ...}}``, read by
``python -m spacy_ner_plus convert``) and ``report.json``.

Each CV is one record, however long: the text of ``<cv>`` with the label tags
taken out (nothing else changed), the labelled text a span. Types become labels
``ner_plus`` can take: upper case, runs of non-word characters an underscore
("Tech Tools" -> TECH_TOOLS, "Companies worked at" -> COMPANIES_WORKED_AT).

What it cannot use is reported (printed and in report.json), never dropped
silently: a file that is not well-formed XML or whose root is not ``<cv>``
(skipped), an element other than ``<label>`` or a label without ``type``
(its text kept, no span), a label inside a label (the outer one kept), an
empty or whitespace-only label (no span), a type outside the corpus' twelve
(kept, listed). Whitespace at a label's edges is left out of its span and
counted. macOS metadata entries in the zips (``__MACOSX/``, ``._*``) are
skipped and counted.
"""
import argparse
import json
import random
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

TRAIN_ZIP = "545_cvs_train_v2.zip"
TEST_ZIP = "set_aside_test_v2_50cvs.zip"
KNOWN_TYPES = (
    "Tech Tools", "Job Specific Skills", "Designation", "Location", "Years of Experience", "Companies worked at",
    "College Name", "Soft Skills", "Degree", "Name", "Graduation Year", "Email Address",
)


def label_name(type_: str) -> str:
    """The label of a resume type: "Companies worked at" -> "COMPANIES_WORKED_AT"."""
    return re.sub(r"\W+", "_", type_.strip()).strip("_").upper()


class Report:
    """What the conversion could not use, and what it counted."""

    def __init__(self) -> None:
        self.problems: List[str] = []
        self.counts: Counter = Counter()
        self.unknown_types: Counter = Counter()

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


def parse_cv(data: bytes, where: str, report: Report) -> Optional[dict]:
    """One CV as a record (text and spans), or None when it cannot be parsed."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        report.problem(where, f"not well-formed XML ({err}): skipped")
        report.counts["files not parsed"] += 1
        return None
    if root.tag != "cv":
        report.problem(where, f"root element <{root.tag}>, not <cv>: skipped")
        report.counts["files not parsed"] += 1
        return None
    pieces: List[str] = []
    spans: List[dict] = []
    size = 0

    def add(text: Optional[str]) -> None:
        nonlocal size
        if text:
            pieces.append(text)
            size += len(text)

    add(root.text)
    for element in root:
        inner = "".join(element.itertext())
        type_ = element.get("type")
        if element.tag != "label" or type_ is None:
            what = f"<{element.tag}>" if element.tag != "label" else "<label> without a type"
            report.problem(where, f"{what} holding {json.dumps(inner[:40], ensure_ascii=False)}: its text kept, no span")
            report.counts["elements not used"] += 1
        elif len(element):
            report.problem(where, f"labels inside the <label type={type_!r}> holding {json.dumps(inner[:40], ensure_ascii=False)}: the outer one kept")
            report.counts["nested labels"] += 1
        if element.tag == "label" and type_ is not None:
            stripped = inner.strip()
            if not stripped:
                report.problem(where, f"<label type={type_!r}> is empty or whitespace: no span")
                report.counts["empty labels"] += 1
            else:
                if stripped != inner:
                    report.counts["labels trimmed of edge whitespace"] += 1
                if type_ not in KNOWN_TYPES:
                    report.unknown_types[type_] += 1
                start = size + (len(inner) - len(inner.lstrip()))
                spans.append({"start": start, "end": start + len(stripped), "label": label_name(type_)})
        add(inner)
        add(element.tail)
    return {"text": "".join(pieces), "spans": spans}


def read_zip(path: Path, report: Report) -> List[Tuple[str, dict]]:
    """(name, record) for every CV of a zip, sorted by name."""
    records = []
    with zipfile.ZipFile(path) as archive:
        for name in sorted(archive.namelist()):
            base = name.rsplit("/", 1)[-1]
            if name.endswith("/"):
                continue
            if name.startswith("__MACOSX/") or base.startswith("._"):
                report.counts["macOS metadata entries skipped"] += 1
                continue
            if not base.endswith(".xml"):
                report.problem(f"{path.name}:{name}", "not an .xml file: skipped")
                report.counts["files not parsed"] += 1
                continue
            record = parse_cv(archive.read(name), f"{path.name}:{name}", report)
            if record is not None:
                record["meta"] = {"cv": name}
                records.append((name, record))
    return records


def split_train_dev(names: List[str], dev_fraction: float, seed: int) -> Tuple[List[str], List[str]]:
    """Dev: round(dev_fraction * n) CVs drawn with random.Random(seed) from the sorted names."""
    ordered = sorted(names)
    n_dev = round(dev_fraction * len(ordered))
    dev = set(random.Random(seed).sample(ordered, n_dev))
    return [n for n in ordered if n not in dev], [n for n in ordered if n in dev]


def write_jsonl(path: Path, records: List[dict]) -> None:
    with open(path, "w", encoding="utf8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def summarize(records: List[dict]) -> Dict[str, object]:
    per_type = Counter(span["label"] for r in records for span in r["spans"])
    return {"cvs": len(records), "characters": sum(len(r["text"]) for r in records), "whitespace_tokens": sum(len(r["text"].split()) for r in records),
            "spans": sum(per_type.values()), "per_type": dict(per_type.most_common())}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("resume_dir", type=Path, help=f"folder with {TRAIN_ZIP} and {TEST_ZIP}")
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--train-zip", default=TRAIN_ZIP)
    parser.add_argument("--test-zip", default=TEST_ZIP)
    parser.add_argument("--dev-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 < args.dev_fraction < 1:
        parser.error("--dev-fraction must be between 0 and 1")
    for name in (args.train_zip, args.test_zip):
        if not (args.resume_dir / name).is_file():
            print(f"{args.resume_dir / name}: no such file", file=sys.stderr)
            return 1
    report = Report()
    training = dict(read_zip(args.resume_dir / args.train_zip, report))
    test = [record for _, record in read_zip(args.resume_dir / args.test_zip, report)]
    train_names, dev_names = split_train_dev(list(training), args.dev_fraction, args.seed)
    splits = {"train": [training[n] for n in train_names], "dev": [training[n] for n in dev_names], "test": test}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for split, records in splits.items():
        write_jsonl(args.output_dir / f"{split}.jsonl", records)
    summary = {
        "seed": args.seed,
        "dev_fraction": args.dev_fraction,
        "splits": {split: summarize(records) for split, records in splits.items()},
        "dev_cvs": dev_names,
        "counts": dict(sorted(report.counts.items())),
        "unknown_types": dict(report.unknown_types),
        "problems": report.problems,
    }
    (args.output_dir / "report.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    for split, s in summary["splits"].items():
        print(f"{split}: {s['cvs']} CVs, {s['whitespace_tokens']} whitespace tokens, {s['spans']} spans  " + ", ".join(f"{k} {v}" for k, v in s["per_type"].items()))
    for what, n in summary["counts"].items():
        print(f"{what}: {n}")
    for type_, n in report.unknown_types.items():
        print(f"type outside the corpus' twelve: {type_!r} ({n}), written as {label_name(type_)}")
    for problem in report.problems:
        print(f"could not use: {problem}")
    print(f"wrote {', '.join(f'{s}.jsonl' for s in splits)} and report.json to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
