"""Batch annotation: plain text or JSONL in, JSONL out, in constant memory,
resumable after a crash.

Each input file is read in its own format (plain text or JSONL), so one run
may mix both. Each output line is the input record (``{"text": ...}`` for
plain text) plus ``"entities"``: character offsets, label, text and confidence of each entity
in ``doc.ents``. A bad input line (not UTF-8, not JSON, not an object, no
string under the text key) is reported as FILE:LINE and either skipped
(counted) or fatal.

Crash safety. The output is written to ``OUTPUT.part`` and renamed to
``OUTPUT`` only when every input line has been read. Beside it,
``OUTPUT.part.progress`` is an append-only journal: its first line names the
run (inputs with their sizes and modification times, model, settings); every
later line is a checkpoint, written only after the records it covers are
flushed and fsynced to ``OUTPUT.part``. A checkpoint holds the input position
after the last written record (file, line, byte offset), the size of
``OUTPUT.part`` at that moment, the counts, and the bad lines found since the
previous checkpoint. ``--resume`` takes the last complete checkpoint (a
truncated last journal line is ignored), cuts ``OUTPUT.part`` back to the
recorded size (dropping records written after it, including a half-written
line), and reads on from the recorded input position. So every record is
written once, in input order, and every bad line is counted once, whatever
moment the run was killed at. ``--resume`` with no partial output is refused:
it never starts over, so it never replaces a finished output.

This module imports neither spaCy nor torch at import time: the CLI uses it
to check its arguments before the slow imports.
"""
from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from ..training.corpus import Problem

INPUT_FORMATS = ("text", "jsonl")
ON_ERROR = ("skip", "fail")
PARTIAL_SUFFIX = ".part"
JOURNAL_SUFFIX = ".part.progress"
JOURNAL_VERSION = 1


class AnnotateError(ValueError):
    """An input or output the run cannot use: a missing input, a partial
    output that cannot be resumed or must not be overwritten."""


class BadLineError(AnnotateError):
    """A bad input line with ``on_error="fail"``."""


@dataclass
class AnnotateStats:
    """Counts of an annotation run.

    read (int): input lines read, good and bad.
    written (int): records written.
    skipped (List[Problem]): bad lines skipped, in input order.
    resumed_from (int): records an interrupted run had written before this
        one resumed it (0 for a fresh run).
    seconds_to_first_record (Optional[float]): from the start of the engine
        (after the pipeline is loaded for the local engine) until the first
        record was annotated; None when nothing was annotated.
    seconds (float): the engine's wall time.
    """

    read: int = 0
    written: int = 0
    skipped: List[Problem] = field(default_factory=list)
    resumed_from: int = 0
    seconds_to_first_record: Optional[float] = None
    seconds: float = 0.0


class InputRecord(NamedTuple):
    """A good input record and where the reader stood after it.

    text (str): the text to annotate.
    record (Dict[str, Any]): the record to write back (``{"text": ...}`` for plain text).
    file (int): index of its input file.
    line (int): its line number (1-based).
    end_offset (int): byte offset just past its line in its file.
    read (int): lines read so far in the run, this one included.
    skipped (int): bad lines met so far in the run.
    """

    text: str
    record: Dict[str, Any]
    file: int
    line: int
    end_offset: int
    read: int
    skipped: int


@dataclass(frozen=True)
class ReadStart:
    """Where a reader starts: file index, the line before the first one to
    read, and that line's end offset. ``ReadStart()`` is the beginning."""

    file: int = 0
    line: int = 0
    offset: int = 0


def entities_of(doc: Doc) -> List[Dict[str, Any]]:
    """The entities of ``doc.ents`` as JSON-ready dicts.

    doc (Doc): an annotated Doc.
    RETURNS (List[Dict[str, Any]]): ``start``/``end`` character offsets,
        ``label``, ``text`` and ``confidence`` of each entity (None from a
        pipe that scores none).
    """
    # registers Span._.confidence, which a pipeline without ner_plus lacks
    # (imported here, not at the top: see the module docstring)
    from ..pipeline import scored_spans  # noqa: F401

    return [
        {"start": e.start_char, "end": e.end_char, "label": e.label_, "text": e.text, "confidence": e._.confidence}
        for e in doc.ents
    ]


def annotated_record(record: Dict[str, Any], doc: Doc) -> Dict[str, Any]:
    """The output record: a copy of the input record plus ``entities``
    (replacing an ``entities`` field of the input)."""
    out = dict(record)
    out["entities"] = entities_of(doc)
    return out


def expand_inputs(patterns: Sequence[str]) -> List[Path]:
    """Input files from paths or glob patterns, in the order given (a glob's
    matches sorted by name).

    patterns (Sequence[str]): file paths or glob patterns (``data/*.jsonl``).
    RETURNS (List[Path]): the files, each once.
    RAISES (AnnotateError): a path that is not a file, a glob that matches
        no file, or a file named twice.
    """
    paths: List[Path] = []
    for pattern in patterns:
        if Path(pattern).is_file():
            matches = [pattern]
        elif glob.has_magic(pattern):
            matches = sorted(m for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
            if not matches:
                raise AnnotateError(f"{pattern}: the glob matches no file")
        else:
            raise AnnotateError(f"{pattern}: no such file")
        paths.extend(Path(m) for m in matches)
    seen = set()
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise AnnotateError(f"{path}: named twice among the inputs (each record would be annotated twice)")
        seen.add(key)
    return paths


def input_format_of(path: Path) -> str:
    """The default input format of a file: ``jsonl`` for ``.jsonl``/``.json``, else ``text``."""
    return "jsonl" if path.suffix in (".jsonl", ".json") else "text"


def read_records(
    handle: BinaryIO, path: str, fmt: str, text_key: str, on_error: str, stats: AnnotateStats, *, file: int = 0, first_line: int = 1, offset: int = 0
) -> Iterator[InputRecord]:
    """Yield the good records of one open input file, lazily.

    Every line read counts in ``stats.read``; a bad line is appended to
    ``stats.skipped`` (``on_error="skip"``) or raises (``"fail"``).

    handle (BinaryIO): the file, opened in binary mode and positioned at ``offset``.
    path (str): its name, for messages.
    fmt (str): ``text`` (one text a line) or ``jsonl``.
    text_key (str): the JSONL key holding the text.
    on_error (str): ``skip`` or ``fail``.
    stats (AnnotateStats): updated in place.
    file (int): the file's index among the inputs, copied into each record.
    first_line (int): the line number of the first line read.
    offset (int): the byte offset the handle is positioned at.
    YIELDS (InputRecord): each good record with its position.
    RAISES (BadLineError): the first bad line when ``on_error="fail"``.
    """
    from ..training.corpus import Problem

    for lineno, raw in enumerate(handle, start=first_line):
        stats.read += 1
        offset += len(raw)
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
                yield InputRecord(line, {"text": line}, file, lineno, offset, stats.read, len(stats.skipped))
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
                raise BadLineError(str(issue))
            stats.skipped.append(issue)
            continue
        yield InputRecord(record[text_key], record, file, lineno, offset, stats.read, len(stats.skipped))


def formats_per_input(fmt: Union[str, Sequence[str]], n_inputs: int) -> List[str]:
    """The format of each input file: ``fmt`` for every file, or one per file.

    fmt (Union[str, Sequence[str]]): ``text`` or ``jsonl``, or one of them per input.
    n_inputs (int): the number of input files.
    RETURNS (List[str]): one format per input.
    RAISES (ValueError): an unknown format, or a list of another length.
    """
    formats = [fmt] * n_inputs if isinstance(fmt, str) else list(fmt)
    if len(formats) != n_inputs:
        raise ValueError(f"{len(formats)} input formats for {n_inputs} input files: give one format, or one per file")
    unknown = sorted(set(formats) - set(INPUT_FORMATS))
    if unknown:
        raise ValueError(f"unknown input format(s) {unknown}: the input formats are {INPUT_FORMATS}")
    return formats


def iter_input_records(
    paths: Sequence[Path], fmt: Union[str, Sequence[str]], text_key: str, on_error: str, stats: AnnotateStats, start: ReadStart = ReadStart()
) -> Iterator[InputRecord]:
    """Yield the good records of several input files in order, from ``start``.

    The one reader of both engines: the ray engine validates in its driver
    with this function, so both count and report the same bad lines.

    paths (Sequence[Path]): the input files.
    fmt (Union[str, Sequence[str]]): ``text`` or ``jsonl`` for every file, or one per file.
    text_key (str): the JSONL key holding the text.
    on_error (str): ``skip`` or ``fail``.
    stats (AnnotateStats): updated in place.
    start (ReadStart): where to start reading.
    YIELDS (InputRecord): each good record with its position.
    """
    formats = formats_per_input(fmt, len(paths))
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error is one of {ON_ERROR}")
    for index in range(start.file, len(paths)):
        first_line, offset = (start.line + 1, start.offset) if index == start.file else (1, 0)
        with open(paths[index], "rb") as handle:
            handle.seek(offset)
            yield from read_records(handle, str(paths[index]), formats[index], text_key, on_error, stats, file=index, first_line=first_line, offset=offset)


def partial_paths(output_path: Path) -> Tuple[Path, Path]:
    """The partial output and its progress journal beside ``output_path``."""
    return output_path.with_name(output_path.name + PARTIAL_SUFFIX), output_path.with_name(output_path.name + JOURNAL_SUFFIX)


def _run_header(paths: Sequence[Path], model: str, fmt: Union[str, Sequence[str]], text_key: str, on_error: str) -> Dict[str, Any]:
    # A resumed run must read the same bytes with the same settings, or the
    # recorded offsets and counts would describe another input.
    inputs = []
    for path in paths:
        st = path.stat()
        inputs.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    # one format for all inputs is recorded as its name (as before formats could mix)
    formats = formats_per_input(fmt, len(paths))
    input_format: Union[str, List[str]] = fmt if isinstance(fmt, str) else formats[0] if len(set(formats)) == 1 else formats
    return {"version": JOURNAL_VERSION, "inputs": inputs, "model": model, "input_format": input_format, "text_key": text_key, "on_error": on_error}


def _read_journal(journal_path: Path) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]], List[Problem]]:
    """The header, the last complete checkpoint (None if none) and every bad
    line recorded up to it."""
    from ..training.corpus import Problem

    lines = journal_path.read_bytes().split(b"\n")
    # Every entry ends with a newline, so the last piece is b"" unless the
    # run died while writing it: that entry never took effect.
    complete = lines[:-1]
    if not complete:
        raise AnnotateError(f"{journal_path}: no run header (the run died before it started); delete it and the partial output to start over")
    try:
        entries = [json.loads(line) for line in complete]
    except json.JSONDecodeError as err:
        raise AnnotateError(f"{journal_path}: a damaged entry ({err.msg}); delete it and the partial output to start over")
    header, checkpoints = entries[0], entries[1:]
    problems = [Problem(path, line, message) for cp in checkpoints for path, line, message in cp["skipped"]]
    return header, (checkpoints[-1] if checkpoints else None), problems


def _describe_difference(old: Dict[str, Any], new: Dict[str, Any]) -> str:
    if [i["path"] for i in old["inputs"]] != [i["path"] for i in new["inputs"]]:
        return "other input files"
    for before, now in zip(old["inputs"], new["inputs"]):
        if before != now:
            return f"{now['path']} changed since (size or modification time)"
    changed = [key for key in ("model", "input_format", "text_key", "on_error") if old.get(key) != new.get(key)]
    return "another " + ", ".join(changed)


def check_partial_output(output_path: Path, *, resume: bool = False, restart: bool = False) -> None:
    """Refuse a run that the partial output beside ``output_path`` (or its
    absence) does not allow, before any work: ``annotate_files`` checks the
    same, and the CLI calls this before it loads the pipeline.

    output_path (Path): the output file of the run.
    resume (bool): the run is to continue an interrupted one.
    restart (bool): the run is to discard an interrupted one.
    RAISES (AnnotateError): a partial output without ``resume`` or
        ``restart``; ``resume`` with no partial output (a finished output is
        never replaced by a resumed run, nor a run started over by one).
    """
    part, journal_path = partial_paths(output_path)
    if part.exists() or journal_path.exists():
        if not (resume or restart):
            raise AnnotateError(
                f"{part} is the partial output of an interrupted run: pass --resume to continue it or --restart to discard it"
            )
    elif resume:
        if output_path.exists():
            raise AnnotateError(
                f"{output_path} is already complete: there is no partial output ({part.name}) to resume; "
                f"{output_path} is left as it is (run without --resume to annotate again and replace it)"
            )
        raise AnnotateError(f"there is no partial output {part} to resume: run without --resume to start")


def annotate_files(
    nlp,
    inputs: Sequence[Path],
    output_path: Path,
    *,
    model: str = "",
    fmt: Union[str, Sequence[str]] = "jsonl",
    text_key: str = "text",
    on_error: str = "skip",
    batch_size: int = 64,
    resume: bool = False,
    restart: bool = False,
    progress: bool = True,
) -> AnnotateStats:
    """Annotate input files into one JSONL file, crash-safely (see the module
    docstring): records go to ``OUTPUT.part``, which is renamed to
    ``output_path`` at the end.

    nlp (Language): the loaded pipeline.
    inputs (Sequence[Path]): input files, read in order.
    output_path (Path): the JSONL file to write.
    model (str): the pipeline's name or path, recorded so that ``resume``
        refuses to mix two models in one output.
    fmt (Union[str, Sequence[str]]): input format, ``text`` or ``jsonl``, for
        every input or one per input (a run may mix them).
    text_key (str): the JSONL key holding the text.
    on_error (str): ``skip`` (count bad lines and go on) or ``fail`` (stop at
        the first, deleting the partial output).
    batch_size (int): texts per ``nlp.pipe`` batch; a checkpoint follows
        every batch written.
    resume (bool): continue the partial output of an interrupted run; refused
        when there is none (see ``check_partial_output``).
    restart (bool): discard the partial output of an interrupted run.
    progress (bool): show a progress bar.
    RETURNS (AnnotateStats): counts for the whole output, earlier runs included.
    RAISES (AnnotateError): a bad line with ``on_error="fail"``; a partial
        output without ``resume`` or ``restart``; ``resume`` without a partial
        output; a partial output made with other inputs or settings.
    """
    from tqdm import tqdm

    inputs = list(inputs)
    formats_per_input(fmt, len(inputs))
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error is one of {ON_ERROR}")
    if resume and restart:
        raise ValueError("resume and restart exclude each other")
    part, journal_path = partial_paths(output_path)
    check_partial_output(output_path, resume=resume, restart=restart)
    header = _run_header(inputs, model, fmt, text_key, on_error)
    stats = AnnotateStats()
    start = ReadStart()
    output_bytes = 0
    exists = part.exists() or journal_path.exists()
    if exists and resume:
        if journal_path.exists() and not part.exists() and output_path.exists():
            old, checkpoint, problems = _read_journal(journal_path)
            if old == header and checkpoint is not None and checkpoint["file"] == len(inputs):
                # Killed between the rename and the journal's removal: done.
                journal_path.unlink()
                return AnnotateStats(read=checkpoint["read"], written=checkpoint["written"], skipped=problems, resumed_from=checkpoint["written"])
        if not journal_path.exists() or not part.exists():
            raise AnnotateError(f"{part} and {journal_path} go together and one is missing: pass --restart to start over")
        old, checkpoint, problems = _read_journal(journal_path)
        if old != header:
            raise AnnotateError(f"{part} was made with {_describe_difference(old, header)}: pass --restart to start over")
        if checkpoint is not None:
            if part.stat().st_size < checkpoint["output_bytes"]:
                raise AnnotateError(f"{part} is shorter than its journal says it was: pass --restart to start over")
            start = ReadStart(checkpoint["file"], checkpoint["line"], checkpoint["offset"])
            output_bytes = checkpoint["output_bytes"]
            stats.read, stats.written, stats.skipped = checkpoint["read"], checkpoint["written"], problems
            stats.resumed_from = stats.written
        # Records written after the checkpoint (a half-written line among
        # them) are dropped here and annotated again below.
        os.truncate(part, output_bytes)
    else:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with open(journal_path, "wb") as journal:
            journal.write(json.dumps(header).encode("utf8") + b"\n")
            journal.flush()
            os.fsync(journal.fileno())
        # The journal names the run before any record exists, so a crash
        # from here on always leaves a resumable pair.
        with open(part, "wb"):
            pass
    journaled = len(stats.skipped)

    def checkpoint_at(out: BinaryIO, journal: BinaryIO, file: int, line: int, offset: int, read: int, n_skipped: int) -> None:
        nonlocal journaled
        # Data first, on disk, then the checkpoint that vouches for it: a
        # checkpoint never promises bytes that a crash could still lose.
        out.flush()
        os.fsync(out.fileno())
        new = [[p.path, p.line, p.message] for p in stats.skipped[journaled:n_skipped]]
        entry = {"file": file, "line": line, "offset": offset, "output_bytes": out.tell(), "written": stats.written, "read": read, "skipped": new}
        journal.write(json.dumps(entry, ensure_ascii=False).encode("utf8") + b"\n")
        journal.flush()
        os.fsync(journal.fileno())
        journaled = n_skipped

    started = time.perf_counter()
    try:
        with open(part, "ab") as out, open(journal_path, "ab") as journal:
            records = iter_input_records(inputs, fmt, text_key, on_error, stats, start)
            pairs = ((r.text, r) for r in records)
            bar = tqdm(disable=not progress, unit=" records", initial=stats.written)
            last: Optional[InputRecord] = None
            for doc, rec in nlp.pipe(pairs, as_tuples=True, batch_size=batch_size):
                if stats.seconds_to_first_record is None:
                    stats.seconds_to_first_record = time.perf_counter() - started
                out.write(json.dumps(annotated_record(rec.record, doc), ensure_ascii=False).encode("utf8") + b"\n")
                stats.written += 1
                last = rec
                bar.update(1)
                if stats.written % batch_size == 0:
                    checkpoint_at(out, journal, rec.file, rec.line, rec.end_offset, rec.read, rec.skipped)
            bar.close()
            # All input read: the final checkpoint covers trailing bad lines
            # and makes a crash before the rename resume to just the rename.
            checkpoint_at(out, journal, len(inputs), 0, 0, stats.read, len(stats.skipped))
    except BadLineError:
        # --on-error fail: nothing is written, partial or not.
        part.unlink(missing_ok=True)
        journal_path.unlink(missing_ok=True)
        raise
    os.replace(part, output_path)
    journal_path.unlink()
    stats.seconds = time.perf_counter() - started
    return stats

