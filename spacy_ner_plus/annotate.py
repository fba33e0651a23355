"""Batch annotation: plain text or JSONL in, JSONL out, in constant memory.

Each output line is the input record (``{"text": ...}`` for plain text) plus
``"entities"``: character offsets, label, text and confidence of each entity
in ``doc.ents``. A bad input line (not JSON, not an object, no string under
the text key) is reported as FILE:LINE and either skipped (counted) or fatal.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterator, List, TextIO, Tuple

from spacy.tokens import Doc

from .corpus import Problem


class AnnotateError(ValueError):
    """A fatal bad input line (``on_error="fail"``)."""


@dataclass
class AnnotateStats:
    read: int = 0
    written: int = 0
    skipped: List[Problem] = field(default_factory=list)


def entities_of(doc: Doc) -> List[Dict[str, Any]]:
    return [
        {"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text, "confidence": e._.confidence}
        for e in doc.ents
    ]


def read_records(handle: BinaryIO, path: str, fmt: str, text_key: str, on_error: str, stats: AnnotateStats) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """Yield (text, record) per usable line, lazily."""
    for lineno, raw in enumerate(handle, start=1):
        stats.read += 1
        problem = None
        record: Any = None
        try:
            line = raw.decode("utf8").rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as err:
            problem = f"bytes are not UTF-8 at byte {err.start}"
        else:
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if fmt == "text":
                yield line, {"text": line}
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                problem = f"not JSON ({err.msg} at column {err.colno})"
        if problem is None:
            if not isinstance(record, dict):
                problem = f"a JSON {type(record).__name__}, not an object"
            elif not isinstance(record.get(text_key), str):
                problem = f"no string under the key '{text_key}'"
        if problem is not None:
            issue = Problem(path, lineno, problem)
            if on_error == "fail":
                raise AnnotateError(str(issue))
            stats.skipped.append(issue)
            continue
        yield record[text_key], record


def annotate_file(nlp, input_path: Path, output: TextIO, *, fmt: str = "jsonl", text_key: str = "text", on_error: str = "skip", batch_size: int = 64, progress: bool = True) -> AnnotateStats:
    """Annotate ``input_path`` line by line into ``output`` (JSONL)."""
    from tqdm import tqdm

    if fmt not in ("text", "jsonl") or on_error not in ("skip", "fail"):
        raise ValueError("format is text|jsonl and on_error skip|fail")
    stats = AnnotateStats()
    with open(input_path, "rb") as handle:
        records = read_records(handle, str(input_path), fmt, text_key, on_error, stats)
        for doc, record in tqdm(nlp.pipe(records, as_tuples=True, batch_size=batch_size), disable=not progress, unit=" lines"):
            out = dict(record)
            out["entities"] = entities_of(doc)
            output.write(json.dumps(out, ensure_ascii=False) + "\n")
            stats.written += 1
    return stats
