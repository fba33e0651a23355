"""The command-line app: ``python -m spacy_ner_plus COMMAND``. Thin: it parses
arguments, calls the modules and prints with wasabi; errors exit non-zero
without a traceback.

Only typer and wasabi are imported here: spaCy, torch and the package's
modules are imported inside the commands, after their arguments are checked,
so ``--help`` and argument errors answer at once (tests/test_cli.py checks
that no heavy module is imported for them).

Size: one Typer command per subcommand (convert, evaluate, calibrate, annotate, quantize,
export-onnx, render, serve), each with its documented options and the argument checks that must run
before any heavy import; the work itself lives in the modules the commands call."""
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable, List, Optional

import typer
from wasabi import Printer

app = typer.Typer(help="spacy-ner-plus: transformer NER for spaCy, production-ready.", no_args_is_help=True, pretty_exceptions_enable=False)
# the CLI's own printer: its colours follow the stream it prints to (set per run in _main),
# leaving wasabi's shared ``msg`` to its other users
msg = Printer()


def use_color(stream) -> bool:
    """Colour codes only for a terminal, and never when NO_COLOR is set
    (https://no-color.org): piped or redirected output stays plain text.

    stream (IO): the stream printed to.
    RETURNS (bool): whether to print colour codes.
    """
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


@app.callback()
def _main() -> None:
    # decided when a command runs, on the stdout it runs with (a test runner swaps it)
    msg.show_color = use_color(sys.stdout)


def _fail(message: str) -> None:
    msg.fail(message)
    raise typer.Exit(1)


def _warn_stderr(message: str) -> None:
    """A warning on stderr, so it reaches the user when stdout is piped into a file."""
    printer = Printer(no_print=True)
    printer.show_color = use_color(sys.stderr)
    print(printer.warn(message), file=sys.stderr)


def _print_problems(problems: Iterable[object]) -> None:
    # one ``FILE:LINE: message`` a line, unwrapped, so editors and grep can jump to each
    for problem in problems:
        print(str(problem))


def _load_pipeline(model: str, config: Optional[dict] = None):
    import spacy

    try:
        return spacy.load(model, config=config or {})
    except OSError as err:
        _fail(f"cannot load pipeline '{model}': {err}")


def _pipeline_location(model: str) -> Optional[Path]:
    """The folder ``spacy.load(model)`` reads (an installed package comes first,
    as in spacy.load), or None when MODEL names neither."""
    from spacy.util import get_package_path, is_package

    if is_package(model):
        return get_package_path(model).resolve()
    path = Path(model)
    return path.resolve() if path.exists() else None


def _check_output(model: str, output: Path, kind: str) -> None:
    """Refuse, before any work, an OUTPUT that is, holds or lies inside the input
    pipeline: outputs replace their path whole (atomic_output.py), so writing
    there would destroy the only copy of the input.

    kind (str): "pipeline" (a directory, replaced whole) or "file".
    """
    source = _pipeline_location(model)
    target = output.resolve()
    if source is not None:
        if target == source:
            _fail(f"OUTPUT {output} is the input pipeline '{model}': write to another path (the input is never changed)")
        if target in source.parents:
            _fail(f"OUTPUT {output} contains the input pipeline {source}: replacing it would delete the input; write to another path")
        if source in target.parents:
            _fail(f"OUTPUT {output} lies inside the input pipeline {source}: write to a path outside it")
    if kind == "file" and output.is_dir():
        _fail(f"OUTPUT {output} is a directory: give the path of a file")
    if kind == "pipeline" and output.exists():
        if not output.is_dir():
            _fail(f"OUTPUT {output} exists and is not a directory: give a new path or a pipeline directory to replace")
        # a pipeline output replaces its directory whole: never a folder that holds something else
        if any(output.iterdir()) and not (output / "config.cfg").is_file():
            _fail(f"OUTPUT {output} is a folder without a spaCy pipeline (no config.cfg) and would be replaced whole: give a new, empty or pipeline path")


def _write_failed(output: Path, err: OSError) -> None:
    _fail(f"cannot write {output}: {err}; nothing half-written was left, and a previous {output.name} is unchanged")


def _load_gold(nlp, path: Path, doc_mode: str):
    from .training.corpus import ConllFormatError, read_docs

    if not path.exists():
        _fail(f"{path}: no such file")
    try:
        return read_docs(path, nlp.vocab, doc_mode=doc_mode)
    except ConllFormatError as err:
        _print_problems(err.errors)
        _fail(f"{len(err.errors)} problem(s) in {path}, listed above: fix them and run again")


@app.command()
def convert(
    input_path: Path = typer.Argument(..., help="CoNLL-style column file"),
    output_path: Path = typer.Argument(..., help="DocBin (.spacy) to write"),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="IOB1, IOB2/BIO or BIOES/BILOU (default: detect)"),
    doc_mode: str = typer.Option("document", "--doc-mode", help="document: one Doc per -DOCSTART- document; sentence: one Doc per sentence; chunk: consecutive sentences of a document packed into Docs of at most --chunk-tokens tokens; mixed: those chunks, every other one split into its sentences (train one model for sentences and documents)"),
    chunk_tokens: int = typer.Option(128, "--chunk-tokens", help="most tokens of a Doc in --doc-mode chunk or mixed"),
    on_error: str = typer.Option("fail", "--on-error", help="fail: report every problem and write nothing; repair: apply the documented repairs"),
    token_column: int = typer.Option(0, "--token-column", help="index of the token column"),
    tag_column: int = typer.Option(-1, "--tag-column", help="index of the tag column (-1: last)"),
    labels: Optional[str] = typer.Option(None, "--labels", help="comma-separated types to keep (e.g. PER,ORG); mentions of other types become O, counted"),
    sample: Optional[int] = typer.Option(None, "--sample", help="write a uniform sample of this many sentences (one Doc each; --doc-mode sentence only)"),
    seed: int = typer.Option(0, "--seed", help="seed of --sample"),
    input_format: Optional[str] = typer.Option(None, "--input-format", help="conll | spacy (spaCy/Prodigy JSONL) | doccano (JSONL) | labelstudio (JSON export); default: detect from the extension and content"),
    annotator: Optional[str] = typer.Option(None, "--annotator", help="Label Studio: read this annotator's annotations (completed_by id or e-mail); default: the latest annotation of each task"),
) -> None:
    """Convert a BIO/IOB/BIOES column file, or span-annotated JSONL/JSON (spaCy/Prodigy, Doccano, Label Studio), into a spaCy DocBin."""
    if not input_path.is_file():
        _fail(f"{input_path}: no such file")
    if on_error not in ("fail", "repair"):
        _fail("--on-error takes fail|repair")
    if input_format != "conll":
        from .training.spans import INPUT_FORMATS, detect_format

        if input_format is not None and input_format not in INPUT_FORMATS:
            _fail(f"--input-format takes {'|'.join(INPUT_FORMATS)}, not {input_format}")
        try:
            input_format = input_format or detect_format(input_path)
        except ValueError as err:
            _fail(str(err))
        if input_format != "conll":
            if scheme is not None or sample is not None or token_column != 0 or tag_column != -1:
                _fail("--scheme, --sample, --token-column and --tag-column are for column files; " f"{input_path} is read as {input_format}")
            _convert_spans(input_path, output_path, input_format, doc_mode, on_error, annotator, labels)
            return
    if chunk_tokens < 1:
        _fail(f"--chunk-tokens must be >= 1, not {chunk_tokens}")
    if sample is not None and doc_mode != "sentence":
        _fail(f"--sample draws sentences: use it with --doc-mode sentence, not {doc_mode}")
    from spacy.vocab import Vocab

    from .training.corpus import DOC_MODES, read_conll, result_to_docs, select

    if doc_mode not in DOC_MODES:
        _fail(f"--doc-mode takes {'|'.join(DOC_MODES)}")
    try:
        result = read_conll(input_path, scheme=scheme, on_error=on_error, token_column=token_column, tag_column=tag_column)
    except ValueError as err:
        _fail(str(err))
    for repair in result.repairs:
        msg.warn(str(repair))
    if result.repairs:
        kinds = {}
        for r in result.repairs:
            kinds[r.kind] = kinds.get(r.kind, 0) + 1
        msg.warn(f"{len(result.repairs)} repair(s): " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    if result.errors:
        _print_problems(result.errors)
        hint = "" if on_error == "repair" else " (--on-error repair fixes what a documented rule can)"
        _fail(f"{len(result.errors)} problem(s) in {input_path}; nothing written{hint}")
    if labels is not None or sample is not None:
        try:
            result, removed = select(result, labels=[x.strip() for x in labels.split(",") if x.strip()] if labels is not None else None, sample=sample, seed=seed)
        except ValueError as err:
            _fail(str(err))
        for what, n in removed.items():
            msg.info(f"{what}: {n}")
    if doc_mode != "sentence" and not result.has_doc_markers:
        msg.info(f"{input_path} has no {'-DOCSTART-'} lines: writing one Doc per sentence")
    docs = result_to_docs(result, Vocab(), doc_mode, chunk_tokens)
    _write_docbin(docs, output_path)
    msg.good(f"Wrote {len(docs)} docs to {output_path} (scheme {result.scheme}, {len(result.repairs)} repair(s))")
    _summary_table(docs, result.counts())


def _write_docbin(docs, output_path: Path) -> None:
    from spacy.tokens import DocBin

    output_path.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a failure never leaves a partial file.
    fd, tmp = tempfile.mkstemp(dir=output_path.parent, suffix=".spacy.tmp")
    os.close(fd)
    try:
        DocBin(docs=docs, store_user_data=False).to_disk(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, output_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _summary_table(docs, counts: dict) -> None:
    sentences = "-" if counts["sentences"] is None else counts["sentences"]
    msg.table(
        [("docs", len(docs)), ("documents", counts["documents"]), ("sentences", sentences), ("tokens", counts["tokens"]), ("entities", counts["entities"])]
        + [(f"  {label}", n) for label, n in counts["per_type"].items()],
        header=("", "count"),
        aligns=("l", "r"),
    )


def _convert_spans(input_path: Path, output_path: Path, input_format: str, doc_mode: str, on_error: str, annotator: Optional[str], labels: Optional[str]) -> None:
    """convert for span formats (training/spans.py): the column path's checks, table and atomic write."""
    from .training.spans import SPAN_DOC_MODES, read_spans

    if on_error not in ("fail", "repair") or doc_mode not in SPAN_DOC_MODES:
        _fail(f"--on-error takes fail|repair and --doc-mode {'|'.join(SPAN_DOC_MODES)} for {input_format} files")
    keep = [x.strip() for x in labels.split(",") if x.strip()] if labels is not None else None
    try:
        result = read_spans(input_path, input_format=input_format, on_error=on_error, doc_mode=doc_mode, annotator=annotator, labels=keep)
    except ValueError as err:
        _fail(str(err))
    for repair in result.repairs:
        msg.warn(str(repair))
    if result.repairs:
        msg.warn(f"{len(result.repairs)} repair(s): " + ", ".join(f"{k} {v}" for k, v in result.repair_counts().items()))
    for what, n in result.skipped.items():
        msg.info(f"skipped: {what}: {n}")
    if result.errors:
        _print_problems(result.errors)
        hint = "" if on_error == "repair" else " (--on-error repair fixes what a documented rule can)"
        _fail(f"{len(result.errors)} problem(s) in {input_path}; nothing written{hint}")
    for what, n in result.dropped.items():
        msg.info(f"{what}: {n}")
    if result.joined:
        msg.info(f"{result.joined} sentence boundar{'y' if result.joined == 1 else 'ies'} inside an entity not cut")
    _write_docbin(result.docs, output_path)
    msg.good(f"Wrote {len(result.docs)} docs to {output_path} ({input_format}, {len(result.repairs)} repair(s))")
    _summary_table(result.docs, result.counts())


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="pipeline name or path"),
    data_path: Path = typer.Argument(..., help="gold data: a DocBin (.spacy) or a CoNLL column file"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="directory for metrics.json, report.md, confusion.png, errors.html"),
    scheme: str = typer.Option("IOB2", "--scheme", help="IOB2 or BIOES: the strict seqeval scheme"),
    doc_mode: str = typer.Option("sentence", "--doc-mode", help="for a CoNLL file: document or sentence"),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    """Strict entity-level evaluation (seqeval) with an error analysis."""
    if not data_path.exists():  # before the slow part: loading the pipeline
        _fail(f"{data_path}: no such file")
    from .schemes import normalize_scheme

    try:
        scheme = normalize_scheme(scheme)
    except ValueError:
        _fail(f"--scheme takes IOB2 or BIOES, not '{scheme}'")
    if scheme == "IOB1":
        _fail("--scheme takes IOB2 or BIOES")
    from .evaluation.evaluate import entity_labels, evaluate_examples, predict_examples

    nlp = _load_pipeline(model)
    from .pipeline.ner_plus import stale_calibrations

    for message in stale_calibrations(nlp):
        msg.warn(message)
    gold = _load_gold(nlp, data_path, doc_mode)
    examples = predict_examples(nlp, gold, batch_size=batch_size)
    from .pipeline.ner_plus import ner_plus_pipe_names

    names = ner_plus_pipe_names(nlp)
    spans_key = nlp.get_pipe(names[0]).spans_key if names else None
    metrics = evaluate_examples(examples, scheme, output, spans_key=spans_key, model_labels=entity_labels(nlp))
    for warning in metrics.get("warnings", []):
        _warn_stderr(warning)
    rows = [(label, f"{d['precision']:.4f}", f"{d['recall']:.4f}", f"{d['f1']:.4f}", d["support"]) for label, d in metrics["per_type"].items()]
    rows.append(("micro", f"{metrics['precision']:.4f}", f"{metrics['recall']:.4f}", f"{metrics['f1']:.4f}", metrics["support"]))
    msg.table(rows, header=("type", "P", "R", "F1", "support"), aligns=("l", "r", "r", "r", "r"))
    msg.info("errors: " + json.dumps(metrics["errors"]))
    touching = metrics["if_touching_joined"]
    if touching["pairs"]:
        msg.info(f"touching entities of one type: {touching['pairs']} pairs; joined (join_touching = true), F1 would be {touching['f1']:.4f}")
    if "confidence" in metrics:
        o = metrics["confidence"]["overall"]
        msg.info(f"confidence ECE {o['ece_raw']:.4f} raw, {o['ece']:.4f} as served ({o['n']} entities)")
    if output is not None:
        msg.good(f"Wrote {output}/metrics.json, report.md, confusion.png, errors.html" + (", reliability.png" if "confidence" in metrics else ""))


@app.command()
def calibrate(
    model: str = typer.Argument(..., help="trained pipeline with a ner_plus component"),
    dev_path: Path = typer.Argument(..., help="DEV gold data: a DocBin (.spacy) or a CoNLL column file"),
    output_model: Path = typer.Argument(..., help="where to write the calibrated pipeline"),
    method: str = typer.Option("isotonic", "--method", help="temperature | isotonic | logistic (raw score and entity length) | logistic_pooled (the same, one fit for all types, an intercept per type)"),
    policy: List[str] = typer.Option(
        ["max_f1"], "--policy", help="max_f1 | precision:P | recall:R | fbeta:B; repeat as LABEL=POLICY for a per-type override"
    ),
    min_spans: int = typer.Option(30, "--min-spans", help="fewest DEV predictions of a type to fit its calibrator"),
    default_threshold: float = typer.Option(0.5, "--default-threshold", help="threshold of a type absent from DEV"),
    report: Optional[Path] = typer.Option(None, "--report", help="directory for calibration.json/.md and the plots"),
    doc_mode: str = typer.Option("sentence", "--doc-mode", help="for a CoNLL file: document or sentence"),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="resamples of DEV for thresholds with confidence bounds (precision:P keeps P at the bound; "
        "a max_f1/fbeta threshold must beat keeping all out of bag in --confidence of them); 0: DEV's point estimates"
    ),
    confidence: float = typer.Option(0.95, "--confidence", help="level of the --bootstrap bounds (0.95 held P on new data in about 90% of simulated DEV sets)"),
    seed: int = typer.Option(0, "--seed", help="seed of the --bootstrap resampling"),
) -> None:
    """Fit per-type confidence calibration and thresholds on DEV; save them inside the pipeline."""
    from contextlib import ExitStack

    from .annotate.atomic_output import atomic_directory, atomic_files_into

    if not dev_path.exists():
        _fail(f"{dev_path}: no such file")
    _check_output(model, output_model, "pipeline")
    from .evaluation.calibration_report import write_report
    from .evaluation.calibrate import calibrate_pipeline

    default_policy = "max_f1"
    overrides = {}
    for item in policy:
        if "=" in item:
            label, _, value = item.partition("=")
            overrides[label] = value
        else:
            default_policy = item
    nlp = _load_pipeline(model)
    gold = _load_gold(nlp, dev_path, doc_mode)
    try:
        results = calibrate_pipeline(
            nlp, gold, method=method, policy=default_policy, overrides=overrides, min_spans=min_spans,
            default_threshold=default_threshold, bootstrap=bootstrap, confidence=confidence, seed=seed,
        )
    except ValueError as err:
        _fail(str(err))
    for label, r in results.items():
        for note in r.notes:
            msg.warn(f"{label}: {note}")
    data = None
    try:
        with ExitStack() as stack:
            # exits run last-in first-out: the pipeline is renamed into place, then the report
            tmp_report = stack.enter_context(atomic_files_into(report)) if report is not None else None
            tmp_model = stack.enter_context(atomic_directory(output_model))
            nlp.to_disk(tmp_model)
            if tmp_report is not None:
                data = write_report(results, tmp_report)
    except OSError as err:
        _write_failed(output_model, err)
    rows = [(label, r.calibrator.method, r.policy, f"{r.decoding_bias:g}", f"{r.threshold:.3f}", len(r.raw), r.n_gold) for label, r in results.items()]
    msg.table(rows, header=("type", "method", "policy", "bias", "threshold", "predicted", "gold"), aligns=("l", "l", "l", "r", "r", "r", "r"))
    for label, r in results.items():
        for note in r.notes:
            if r.bias_search and "decoding bias" in note:
                msg.info(f"{label}: {note}")
    if data is not None:
        o = data["overall"]
        msg.info(f"ECE {o['ece_before']:.4f} -> {o['ece_after']:.4f}, Brier {o['brier_before']:.4f} -> {o['brier_after']:.4f}")
        msg.good(f"Wrote {report}/calibration.md, calibration.json, reliability.png, thresholds.png")
    msg.good(f"Saved the calibrated pipeline to {output_model}")


@app.command()
def annotate(
    model: str = typer.Argument(..., help="pipeline name or path (with --engine ray: loadable on every node, e.g. an installed pipeline package)"),
    paths: List[str] = typer.Argument(..., metavar="INPUT... OUTPUT", help="input files or globs (plain text, one text a line, or JSONL; with --engine ray also Parquet, and URIs such as s3://bucket/a.jsonl), then the output file"),
    input_format: Optional[str] = typer.Option(None, "--input-format", help="text, jsonl or parquet (--engine ray) for every INPUT (default: from each INPUT's extension, .jsonl/.json -> jsonl, .parquet -> parquet, else text; the local engine's inputs may mix text and JSONL)"),
    output_format: str = typer.Option("jsonl", "--format", help="output: jsonl, or parquet (--engine ray)"),
    text_key: str = typer.Option("text", "--text-key", help="JSONL key holding the text"),
    on_error: str = typer.Option("skip", "--on-error", help="skip: report bad lines and go on; fail: stop at the first, writing nothing"),
    batch_size: int = typer.Option(64, "--batch-size", help="texts per batch (per actor call with --engine ray)"),
    resume: bool = typer.Option(False, "--resume", help="continue the partial output (OUTPUT.part) of an interrupted run"),
    restart: bool = typer.Option(False, "--restart", help="discard the partial output of an interrupted run and start over"),
    engine: str = typer.Option("local", "--engine", help="local: this process; ray: an actor pool on Ray Data (pip install 'spacy-ner-plus\\[ray]')"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: auto, HOST:PORT or ray://HOST:PORT (default: RAY_ADDRESS, else a new local instance)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="ray: actors (default: as many as the cluster's CPUs or GPUs hold)"),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="ray: CPUs per actor, also its torch threads"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="ray: GPUs per actor"),
    preserve_order: bool = typer.Option(False, "--preserve-order", help="ray: write records in input order (the local engine always does)"),
) -> None:
    """Annotate files in constant memory: JSONL (or Parquet) out with each entity's offsets, label and confidence.

    Each INPUT is read in its own format, so a run may mix JSONL and plain text
    files: a plain text line becomes the record {"text": LINE}."""
    # light: imports neither spaCy nor torch, so bad arguments are refused at once
    from .annotate.local import AnnotateError, BadLineError, annotate_files, check_partial_output, expand_inputs, input_format_of, partial_paths

    if len(paths) < 2:
        _fail("give at least one INPUT and the OUTPUT file")
    *patterns, output = paths
    output_path = Path(output)
    if input_format not in (None, "text", "jsonl", "parquet"):
        _fail("--input-format takes text|jsonl|parquet")
    if output_format not in ("jsonl", "parquet"):
        hint = " (the input's format is --input-format now)" if output_format == "text" else ""
        _fail(f"--format takes jsonl|parquet{hint}")
    if on_error not in ("skip", "fail") or engine not in ("local", "ray"):
        _fail("--on-error takes skip|fail and --engine local|ray")
    if resume and restart:
        _fail("--resume and --restart exclude each other")
    if output_path.is_dir():
        _fail(f"{output_path} is a folder; OUTPUT is a file")
    # --engine ray reads URIs itself (any file system pyarrow knows); local
    # paths and globs are checked here, in the order given
    is_uri = (lambda p: "://" in p) if engine == "ray" else (lambda p: False)  # noqa: E731
    try:
        expand_inputs([p for p in patterns if not is_uri(p)] or [])  # missing files, a file named twice
        inputs = [item for p in patterns for item in ([p] if is_uri(p) else expand_inputs([p]))]
    except AnnotateError as err:
        _fail(str(err))
    formats = [input_format or ("parquet" if str(path).endswith(".parquet") else input_format_of(Path(str(path)))) for path in inputs]
    # one name when every input has the same format (as the journal of a resumable run records it)
    fmt = formats[0] if len(set(formats)) == 1 else formats
    if "parquet" in formats and engine != "ray":
        _fail("Parquet inputs need --engine ray; the local engine reads text and JSONL")
    if output_path.resolve() in {path.resolve() for path in inputs if isinstance(path, Path)}:
        _fail(f"{output_path} is also an INPUT")
    if engine == "local":
        try:
            check_partial_output(output_path, resume=resume, restart=restart)
        except AnnotateError as err:
            _fail(str(err))
    try:
        if engine == "ray":
            if resume or restart:
                _fail("--resume and --restart work with --engine local only")
            if not isinstance(fmt, str):
                jsonl = [str(path) for path, f in zip(inputs, formats) if f == "jsonl"]
                text = [str(path) for path, f in zip(inputs, formats) if f == "text"]
                _fail(
                    f"--engine ray reads all inputs in one format, and these mix JSONL ({', '.join(jsonl)}) with plain text "
                    f"({', '.join(text)}): annotate them in two runs, give --input-format, or use --engine local, which reads each file in its own format"
                )
            try:
                from .annotate.ray_engine import annotate_with_ray
            except ImportError as err:
                _fail(f"--engine ray needs Ray Data ({err}): pip install 'spacy-ner-plus[ray]'")
            stats = annotate_with_ray(
                model, inputs, output_path, fmt=fmt, text_key=text_key, on_error=on_error, output_format=output_format,
                address=address, workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                batch_size=batch_size, preserve_order=preserve_order,
            )
        else:
            if output_format != "jsonl":
                _fail("--format parquet needs --engine ray; the local engine writes JSONL")
            if any(value is not None for value in (address, workers)) or preserve_order or cpus_per_worker != 1.0 or gpus_per_worker != 0.0:
                _fail("--address, --workers, --cpus-per-worker, --gpus-per-worker and --preserve-order go with --engine ray")
            nlp = _load_pipeline(model)
            stats = annotate_files(
                nlp, inputs, output_path, model=model, fmt=fmt, text_key=text_key, on_error=on_error,
                batch_size=batch_size, resume=resume, restart=restart, progress=sys.stderr.isatty(),
            )
    except BadLineError as err:
        _fail(f"{err} (nothing written; --on-error skip goes on past bad lines)")
    except AnnotateError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        part, _ = partial_paths(output_path)
        _fail(f"interrupted; {part} keeps what was written: run the same command with --resume to continue" if engine == "local" and part.exists() else "interrupted; nothing written")
    for problem in stats.skipped:
        msg.warn(f"{problem}: skipped")
    resumed = f" (resumed after {stats.resumed_from})" if stats.resumed_from else ""
    msg.good(
        f"Wrote {stats.written} of {stats.read} lines to {output_path}{resumed}" + (f"; {len(stats.skipped)} bad line(s) skipped" if stats.skipped else "")
    )


@app.command()
def quantize(
    model: str = typer.Argument(..., help="trained pipeline with a ner_plus component"),
    output_model: Path = typer.Argument(..., help="where to write the int8 pipeline"),
) -> None:
    """Write a pipeline whose ner_plus predicts with int8 dynamically quantized linear layers (CPU)."""
    from .annotate.atomic_output import atomic_directory
    from .pipeline.ner_plus import ner_plus_pipe_names

    _check_output(model, output_model, "pipeline")
    nlp = _load_pipeline(model)
    pipes = ner_plus_pipe_names(nlp)
    if not pipes:
        _fail(f"'{model}' has no ner_plus component")
    # quantize is a setting, read from the config at every load: loading with the
    # override turns it on and makes nlp.to_disk write `quantize = true` to config.cfg
    nlp = _load_pipeline(model, config={"components": {name: {"quantize": True} for name in pipes}})
    try:
        with atomic_directory(output_model) as tmp:
            nlp.to_disk(tmp)
    except OSError as err:
        _write_failed(output_model, err)
    msg.good(f"Saved {output_model}: {', '.join(pipes)} predict with int8 linear layers on CPU")


@app.command("export-onnx")
def export_onnx(
    pipeline_dir: Path = typer.Argument(..., help="trained pipeline directory with a ner_plus component (changed in place)"),
    int8: bool = typer.Option(False, "--int8", help="also write an int8 copy (ONNX Runtime's quantize_dynamic) and predict with it (quantize = true)"),
) -> None:
    """Export each ner_plus encoder to ONNX into PIPELINE_DIR and set runtime = "onnxruntime" in its config.cfg.

    Writes NAME/encoder.onnx (and NAME/encoder.int8.onnx with --int8) and NAME/encoder.onnx.json (the
    weights fingerprint, opset, dynamic axes, file hashes); then checks the fp32 export against torch on
    a probe text. Needs pip install 'spacy-ner-plus\\[onnx]'."""
    if not (pipeline_dir / "config.cfg").is_file():
        _fail(f"{pipeline_dir}: not a pipeline directory (no config.cfg); export-onnx writes into a saved pipeline")
    import contextlib

    import numpy
    import torch
    from spacy.util import load_config

    from .ml.inference import eval_view
    from .ml.onnx_runtime import OnnxEncoder, export_encoder
    from .ml.transformer import encode_windows, get_transformer

    config = load_config(pipeline_dir / "config.cfg", interpolate=False)
    pipes = [name for name, component in config["components"].items() if component.get("factory") == "ner_plus"]
    if not pipes:
        _fail(f"'{pipeline_dir}' has no ner_plus component")
    # torch while exporting: an export of older weights must not stop the new one
    nlp = _load_pipeline(str(pipeline_dir), config={"components": {name: {"runtime": "torch"} for name in pipes}})
    probe = nlp.make_doc("Export check: Ada Lovelace met Charles Babbage in London on 5 June 1833 .")
    for name in pipes:
        pipe = nlp.get_pipe(name)
        encoder = pipe.model.get_ref("encoder")
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the exporter prints its progress
                meta = export_encoder(get_transformer(encoder), pipeline_dir / name, pipe.weights_fingerprint(), int8=int8)
        except (OSError, ImportError) as err:
            _fail(f"{name}: the export failed: {err}")
        batch = encode_windows(encoder, [probe[:]])
        with torch.no_grad():  # fp32 torch, whatever quantize says
            expected = eval_view(get_transformer(encoder))(
                input_ids=torch.as_tensor(batch.input_ids), attention_mask=torch.as_tensor(batch.attention_mask)
            ).last_hidden_state.float().numpy()
        found = OnnxEncoder(pipeline_dir / name, meta).run(batch.input_ids, batch.attention_mask, False)
        difference = float(numpy.abs(found - expected).max())
        if difference > 1e-3:
            _fail(f"{name}: the fp32 export differs from torch by {difference:.2e} on a probe text (more than 1e-3); it is not used")
        sizes = ", ".join(f"{file} {info['bytes'] / 1e6:.1f} MB" for file, info in meta["files"].items())
        msg.good(f"{name}: exported {sizes}; fp32 hidden states within {difference:.1e} of torch on a probe text")
    for name in pipes:
        config["components"][name]["runtime"] = "onnxruntime"
        config["components"][name]["quantize"] = int8
    with tempfile.NamedTemporaryFile("w", dir=pipeline_dir, suffix=".cfg", delete=False, encoding="utf8") as tmp:
        tmp.write(config.to_str())
    os.replace(tmp.name, pipeline_dir / "config.cfg")
    msg.good(f"{pipeline_dir}/config.cfg: runtime = \"onnxruntime\", quantize = {str(int8).lower()} for {', '.join(pipes)}")


@app.command()
def render(
    model: str = typer.Argument(..., help="pipeline name or path"),
    input_path: Path = typer.Argument(..., help="plain text, one text a line, or JSONL (the text under --text-key)"),
    output_path: Path = typer.Argument(..., help="HTML page to write"),
    input_format: Optional[str] = typer.Option(None, "--input-format", help="text or jsonl (default: from the extension, .jsonl/.json -> jsonl, as annotate)"),
    text_key: str = typer.Option("text", "--text-key", help="JSONL key holding the text"),
) -> None:
    """Render the entities of each text with their confidences (displaCy) into one HTML page."""
    from .annotate.atomic_output import atomic_file
    from .annotate.local import AnnotateError, AnnotateStats, input_format_of, iter_input_records

    if not input_path.is_file():
        _fail(f"{input_path}: no such file")
    if input_format not in (None, "text", "jsonl"):
        _fail("--input-format takes text|jsonl")
    _check_output(model, output_path, "file")
    # the reader of annotate: the same formats, text key and FILE:LINE errors
    records = iter_input_records([input_path], input_format or input_format_of(input_path), text_key, "fail", AnnotateStats())
    try:
        texts = [record.text for record in records]
    except AnnotateError as err:
        _fail(f"{err}: nothing rendered")
    from .evaluation.visualize import render_entities

    nlp = _load_pipeline(model)
    page = render_entities(list(nlp.pipe(texts)))
    try:
        with atomic_file(output_path) as tmp:
            tmp.write_text(page, encoding="utf8")
    except OSError as err:
        _write_failed(output_path, err)
    msg.good(f"Wrote {output_path} ({len(texts)} texts)")


def _threshold_bounds(values: List[str], option: str) -> dict:
    """``[TYPE=]VALUE`` items of --min-threshold/--max-threshold; the key "" is every other type."""
    bounds = {}
    for item in values:
        label, _, value = item.rpartition("=")
        try:
            bounds[label] = float(value)
        except ValueError:
            _fail(f"{option} takes VALUE or TYPE=VALUE with VALUE a number in [0, 1], not '{item}'")
        if not 0.0 <= bounds[label] <= 1.0:
            _fail(f"{option} {item}: the value must lie in [0, 1]")
    return bounds


def _serve_default(name: str):
    """ServeSettings' default of ``name``: the CLI's defaults live there, in one place."""
    from dataclasses import MISSING, fields

    from .service.settings import ServeSettings

    field = next(f for f in fields(ServeSettings) if f.name == name)
    return field.default_factory() if field.default is MISSING else field.default


@app.command()
def serve(
    model: str = typer.Argument(..., help="pipeline name or path with one ner_plus component"),
    host: str = typer.Option(_serve_default("host"), "--host", help="address to bind; anything but loopback (127.0.0.0/8, ::1) needs --api-keys"),
    port: int = typer.Option(8080, "--port"),
    api_keys: Optional[Path] = typer.Option(None, "--api-keys", help="file of CLIENT_ID:sha256:HEX lines (python -m spacy_ner_plus.service.auth add CLIENT_ID --file PATH); requests then need Authorization: Bearer KEY"),
    allowed_hosts: List[str] = typer.Option([], "--allowed-hosts", help="Host header name clients use, repeatable (default: the bound address, plus localhost names on loopback); others get 421"),
    wait_for_model: bool = typer.Option(_serve_default("wait_for_model"), "--wait-for-model", help="bind before the model is loaded and stay up if it cannot be (/readyz and /v1 answer 503 with the reason); default: load first, exit non-zero on failure"),
    workers: int = typer.Option(_serve_default("workers"), "--workers", help="worker processes; each loads the model"),
    audit_log: Optional[Path] = typer.Option(None, "--audit-log", help="JSON-lines audit log, one line per /v1 request (never text)"),
    audit_max_bytes: int = typer.Option(_serve_default("audit_max_bytes"), "--audit-max-bytes", help="rotate the audit log at this size"),
    audit_backups: int = typer.Option(_serve_default("audit_backups"), "--audit-backups", help="rotated audit logs kept"),
    min_threshold: List[str] = typer.Option([], "--min-threshold", help="lowest threshold a request may set: VALUE or TYPE=VALUE, repeatable (default 0)"),
    max_threshold: List[str] = typer.Option([], "--max-threshold", help="highest threshold a request may set: VALUE or TYPE=VALUE, repeatable (default: the pipeline's threshold)"),
    hash_key_file: Optional[Path] = typer.Option(None, "--hash-key-file", help="HMAC key of the hash operator (else $NER_PLUS_HASH_KEY)"),
    max_body_bytes: int = typer.Option(_serve_default("max_body_bytes"), "--max-body-bytes", help="larger bodies get 413"),
    max_json_depth: int = typer.Option(_serve_default("max_json_depth"), "--max-json-depth", help="deeper nesting of arrays/objects gets 400, checked before parsing"),
    max_texts: int = typer.Option(_serve_default("max_texts"), "--max-texts", help="more texts per request get 413"),
    max_json_strings: int = typer.Option(_serve_default("max_json_strings"), "--max-json-strings", help="more strings to analyze in one request's json get 413"),
    queue_chars: int = typer.Option(_serve_default("queue_chars"), "--queue-chars", help="most characters waiting for prediction, all requests together; beyond: 503 (a larger single request: 413)"),
    long_text_chars: int = typer.Option(_serve_default("long_text_chars"), "--long-text-chars", help="texts longer than this go to a batcher thread of their own, so they never hold up short texts by more than one short batch"),
    request_timeout: float = typer.Option(_serve_default("request_timeout"), "--request-timeout", help="seconds a /v1 request may take, queueing included; beyond: 503 deadline_exceeded"),
    stall_timeout: float = typer.Option(_serve_default("stall_timeout"), "--stall-timeout", help="/readyz answers 503 when work is queued and no batch finished for this many seconds"),
    batch_tokens: int = typer.Option(_serve_default("batch_tokens"), "--batch-tokens", help="token budget of one micro-batch"),
    batch_wait_ms: float = typer.Option(_serve_default("batch_wait_ms"), "--batch-wait-ms", help="how long a text waits for others to share its batch"),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", help="seconds requests in flight get to finish at shutdown"),
    code: Optional[Path] = typer.Option(None, "--code", help="Python file to import first (custom components)"),
    threads: str = typer.Option(str(_serve_default("threads")), "--threads", "--torch-threads", help="torch threads per worker: auto (the cores this process may use, CPU affinity and cgroup quota, divided among --workers, less one per worker for its event loop) or N; 1 on a machine whose cores other busy processes share"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="operator policy file, TOML or YAML (docs/service-policy.md); default: every type redacted, keep off"),
) -> None:
    """Serve the PII service (analyze, redact, metrics, audit log) with FastAPI on uvicorn.

    The model is loaded before the port is bound: a model or settings that cannot serve
    stop the command with exit status 1 and the reason (unless --wait-for-model)."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        _fail(f"serve needs the 'serve' extra: pip install 'spacy-ner-plus[serve]' ({err.name} is missing)")
    import spacy

    from .service.app import run
    from .service.settings import ServeSettings, load_hash_key, parse_threads, worker_threads
    from .service.state import load_served_model, uncalibrated_warning
    from .service.auth import ApiKeys, KeyFileError, default_allowed_hosts, is_loopback

    if not (spacy.util.is_package(model) or (Path(model) / "config.cfg").is_file()):
        _fail(f"'{model}' is neither an installed pipeline package nor a directory with a config.cfg")
    for name, value in (
        ("--workers", workers), ("--max-body-bytes", max_body_bytes), ("--max-texts", max_texts), ("--max-json-strings", max_json_strings), ("--batch-tokens", batch_tokens),
        ("--queue-chars", queue_chars), ("--long-text-chars", long_text_chars), ("--audit-max-bytes", audit_max_bytes), ("--max-json-depth", max_json_depth),
    ):  # fmt: skip
        if value < 1:
            _fail(f"{name} must be >= 1, not {value}")
    try:
        thread_setting = parse_threads(threads)
    except ValueError as err:
        _fail(str(err))
    if batch_wait_ms < 0 or drain_timeout < 0 or audit_backups < 0:
        _fail("--batch-wait-ms, --drain-timeout and --audit-backups must be >= 0")
    if request_timeout <= 0 or stall_timeout <= 0:
        _fail("--request-timeout and --stall-timeout must be > 0 (seconds)")
    if code is not None and not code.is_file():
        _fail(f"--code {code}: no such file")
    if api_keys is not None:
        try:
            keys = ApiKeys.from_file(str(api_keys))
        except KeyFileError as err:
            _fail(str(err))
        msg.info(f"authentication on: {len(keys.entries)} API key(s) from {api_keys}")
    elif not is_loopback(host):
        _fail(f"--host {host} is not loopback: the service then needs --api-keys PATH (docs/service-deploy.md)")
    else:
        msg.warn("authentication off (loopback, no --api-keys): any local process can call the service")
    if not (allowed_hosts or default_allowed_hosts(host)):
        _fail(f"--host {host} binds every interface: name the Host headers clients use with --allowed-hosts NAME (DNS rebinding)")
    settings = ServeSettings(
        model=model,
        audit_log=str(audit_log) if audit_log else None,
        audit_max_bytes=audit_max_bytes,
        audit_backups=audit_backups,
        min_thresholds=_threshold_bounds(min_threshold, "--min-threshold"),
        max_thresholds=_threshold_bounds(max_threshold, "--max-threshold"),
        hash_key_file=str(hash_key_file) if hash_key_file else None,
        max_body_bytes=max_body_bytes,
        max_texts=max_texts,
        max_json_strings=max_json_strings,
        batch_tokens=batch_tokens,
        batch_wait_ms=batch_wait_ms,
        queue_chars=queue_chars,
        long_text_chars=long_text_chars,
        request_timeout=request_timeout,
        stall_timeout=stall_timeout,
        max_json_depth=max_json_depth,
        host=host,
        api_keys_file=str(api_keys) if api_keys else None,
        allowed_hosts=[h.strip().lower() for h in allowed_hosts],
        wait_for_model=wait_for_model,
        workers=workers,
        code=str(code) if code else None,
        threads=thread_setting,
        policy=str(policy) if policy else None,
    )
    from .service.policy import load_policy

    try:
        key = load_hash_key(settings)
        operator_policy = load_policy(settings.policy)  # checked here, so a bad file stops the command with its reason
    except ValueError as err:
        _fail(str(err))
    msg.info(f"hash operator {'on' if key else 'off (no key: set $NER_PLUS_HASH_KEY or --hash-key-file)'}")
    how = "auto: the usable cores divided among the workers, less one for each event loop" if thread_setting == "auto" else "--threads"
    msg.info(f"torch threads per worker: {worker_threads(thread_setting, workers)} ({how})")
    if workers > 1 and not wait_for_model:
        # uvicorn restarts a worker whose start-up fails, forever: check the model here, once
        try:
            served = load_served_model(settings, operator_policy, key is not None)
        except Exception as err:
            _fail(f"cannot serve {model}: {type(err).__name__}: {err}")
        warning = uncalibrated_warning(served)
        if warning:
            msg.warn(warning)
        del served
    status = run(settings, port, drain_timeout)
    if status != 0:
        _fail(f"cannot serve {model}: the server did not start (exit status {status}); the reason is in the log above")
