"""The annotation tools' export formats, read into records of text and character spans:
spaCy/Prodigy JSONL, Doccano JSONL and Label Studio's JSON export (one annotator chosen per
task). Structural problems are reported at FILE:LINE; aligning the spans to tokens is
spans.py's job."""
import json
import unicodedata
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from .. import schemes
from .corpus import Problem

SKIPPED_ANSWERS = ("reject", "ignore")
CONTEXT_CHARS = 30


@dataclass
class RawSpan:
    """A span as the file gives it, before alignment."""

    start: int
    end: int
    label: str
    text: Optional[str] = None
    number: int = 0  # 1-based position in its record, for messages


@dataclass
class Record:
    """One annotated text of an input file."""

    line: int
    where: str  # "record 3" or "task 3 (id 17)"
    text: str
    spans: List[RawSpan]


def jsonl_records(path: Path, fmt: str, errors: List[Problem], skipped: Counter) -> Iterator[Record]:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    number = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        number += 1
        where = f"record {number}"

        def problem(message: str) -> None:
            errors.append(Problem(str(path), lineno, f"{where}: {message}"))

        try:
            obj = json.loads(raw.decode("utf8"))
        except UnicodeDecodeError as err:
            problem(f"bytes are not UTF-8 at byte {err.start} ({raw[err.start:err.start + 4]!r})")
            continue
        except json.JSONDecodeError as err:
            problem(f"not JSON: {err.msg} at column {err.colno}")
            continue
        if not isinstance(obj, dict):
            problem(f"a record must be a JSON object, not {_json_type(obj)}")
            continue
        answer = obj.get("answer")
        if answer in SKIPPED_ANSWERS:
            skipped[f"answer {answer}"] += 1
            continue
        text = obj.get("text", obj.get("data") if fmt == "doccano" else None)
        if not isinstance(text, str):
            problem("no 'text' string" if text is None else f"'text' must be a string, not {_json_type(text)}")
            continue
        spans = _spacy_spans(obj, problem) if fmt == "spacy" else _doccano_spans(obj, problem)
        if spans is not None:
            yield Record(lineno, where, text, spans)


def _spacy_spans(obj: Dict[str, Any], problem) -> Optional[List[RawSpan]]:
    items = obj.get("spans", [])
    if items is None:
        items = []
    if not isinstance(items, list):
        problem(f"'spans' must be a list, not {_json_type(items)}")
        return None
    spans = []
    ok = True
    for k, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            problem(f"span {k}: must be an object with start, end and label, not {_json_type(item)}")
            ok = False
            continue
        span = _raw_span(item.get("start"), item.get("end"), item.get("label"), item.get("text"), k, problem)
        if span is None:
            ok = False
        else:
            spans.append(span)
    return spans if ok else None


def _doccano_spans(obj: Dict[str, Any], problem) -> Optional[List[RawSpan]]:
    key = "label" if "label" in obj else "entities"
    items = obj.get(key, [])
    if items is None:
        items = []
    if not isinstance(items, list):
        problem(f"'{key}' must be a list of [start, end, label], not {_json_type(items)}")
        return None
    spans = []
    ok = True
    for k, item in enumerate(items, start=1):
        if isinstance(item, dict):
            values = (item.get("start_offset", item.get("start")), item.get("end_offset", item.get("end")), item.get("label"))
        elif isinstance(item, list) and len(item) == 3:
            values = tuple(item)
        else:
            problem(f"'{key}' item {k}: must be [start, end, label], not {json.dumps(item)[:60]}")
            ok = False
            continue
        span = _raw_span(*values, None, k, problem)
        if span is None:
            ok = False
        else:
            spans.append(span)
    return spans if ok else None


def _raw_span(start: Any, end: Any, label: Any, text: Any, number: int, problem) -> Optional[RawSpan]:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, int) or isinstance(value, bool):
            problem(f"span {number}: '{name}' must be an integer character offset, not {json.dumps(value)}")
            return None
    label_error = schemes.label_problem(label)
    if label_error:
        problem(f"span {number} ({start}-{end}): label {json.dumps(label)} cannot be used: {label_error}")
        return None
    if text is not None and not isinstance(text, str):
        text = None
    return RawSpan(start, end, label, text, number)


def labelstudio_records(path: Path, annotator: Optional[str], errors: List[Problem], skipped: Counter) -> Iterator[Record]:
    raw = path.read_bytes()
    try:
        content = raw.decode("utf8").lstrip("\ufeff")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        errors.append(Problem(str(path), line, f"bytes are not UTF-8 at byte {err.start}"))
        return
    decoder = json.JSONDecoder()
    pos = _skip_space(content, 0)
    if content[pos:pos + 1] != "[":
        errors.append(Problem(str(path), _line_at(content, pos), "a Label Studio JSON export is a list of tasks: expected '['"))
        return
    pos = _skip_space(content, pos + 1)
    number = 0
    seen_annotator = False
    while pos < len(content) and content[pos] != "]":
        number += 1
        line = _line_at(content, pos)
        try:
            task, end = decoder.raw_decode(content, pos)
        except json.JSONDecodeError as err:
            errors.append(Problem(str(path), err.lineno, f"task {number}: not JSON: {err.msg} at column {err.colno}"))
            return
        pos = _skip_space(content, end)
        if content[pos:pos + 1] == ",":
            pos = _skip_space(content, pos + 1)
        elif content[pos:pos + 1] != "]":
            errors.append(Problem(str(path), _line_at(content, pos), f"after task {number}: expected ',' or ']'"))
            return
        if not isinstance(task, dict):
            errors.append(Problem(str(path), line, f"task {number}: must be a JSON object, not {_json_type(task)}"))
            continue
        where = f"task {number}" + (f" (id {task['id']})" if "id" in task else "")

        def problem(message: str, where=where, line=line) -> None:
            errors.append(Problem(str(path), line, f"{where}: {message}"))

        text = _labelstudio_text(task.get("data"))
        if not isinstance(text, str):
            problem("no text in 'data' (expected data.text, or a single string field)")
            continue
        annotations = task.get("annotations") or task.get("completions") or []
        if not isinstance(annotations, list):
            problem(f"'annotations' must be a list, not {_json_type(annotations)}")
            continue
        usable = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
        if len(usable) < len(annotations):
            skipped["cancelled annotations"] += len(annotations) - len(usable)
        if annotator is not None:
            usable = [a for a in usable if _completed_by_matches(a.get("completed_by"), annotator)]
            seen_annotator = seen_annotator or bool(usable)
        if not usable:
            skipped["tasks without annotation" + (f" by {annotator}" if annotator is not None else "")] += 1
            continue
        # the latest; a tie goes to the later in the file
        chosen = max(enumerate(usable), key=lambda pair: (_timestamp(pair[1]), pair[0]))[1]
        spans = _labelstudio_spans(chosen.get("result"), problem)
        if spans is not None:
            yield Record(line, where, text, spans)
    if annotator is not None and number and not seen_annotator:
        errors.append(Problem(str(path), 1, f"no task has an annotation by {annotator!r} (compared with completed_by: an id, or a user's id or email)"))


def _labelstudio_text(data: Any) -> Optional[str]:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("text"), str):
        return data["text"]
    strings = [v for v in data.values() if isinstance(v, str)]
    return strings[0] if len(strings) == 1 else None


def _completed_by_matches(value: Any, annotator: str) -> bool:
    if isinstance(value, dict):
        return any(str(value.get(key)) == annotator for key in ("id", "email") if key in value)
    return value is not None and str(value) == annotator


def _timestamp(annotation: Dict[str, Any]) -> Tuple[float, float]:
    return (_parse_time(annotation.get("updated_at")), _parse_time(annotation.get("created_at")))


def _parse_time(value: Any) -> float:
    if not isinstance(value, str):
        return float("-inf")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return float("-inf")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _labelstudio_spans(result: Any, problem) -> Optional[List[RawSpan]]:
    if result is None:
        return []
    if not isinstance(result, list):
        problem(f"'result' must be a list, not {_json_type(result)}")
        return None
    spans = []
    ok = True
    for k, item in enumerate(result, start=1):
        if not isinstance(item, dict) or not isinstance(item.get("value"), dict):
            problem(f"result {k}: no 'value' object")
            ok = False
            continue
        value = item["value"]
        labels = value.get("labels")
        if item.get("type") not in (None, "labels") or labels is None:
            continue  # choices, relations, text areas: not spans
        if not isinstance(labels, list) or len(labels) != 1:
            problem(f"result {k} ({value.get('start')}-{value.get('end')}): a region needs exactly one label, it has {json.dumps(labels)}")
            ok = False
            continue
        span = _raw_span(value.get("start"), value.get("end"), labels[0], value.get("text"), k, problem)
        if span is None:
            ok = False
        else:
            spans.append(span)
    return spans if ok else None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line_at(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), f"a {type(value).__name__}")


# -- alignment ---------------------------------------------------------------


def context(text: str, start: int, end: int, width: int = CONTEXT_CHARS) -> str:
    """The text around ``[start, end)``, the span in brackets, line breaks shown as \\n."""
    left = text[max(0, start - width):start]
    right = text[end:end + width]
    shown = ("…" if start > width else "") + left + "[" + text[start:end] + "]" + right + ("…" if end + width < len(text) else "")
    return json.dumps(shown, ensure_ascii=False)


def is_blank(text: str) -> bool:
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)
