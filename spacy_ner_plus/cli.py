"""The command-line app: ``python -m spacy_ner_plus COMMAND``. Thin: it parses
arguments, calls the modules and prints with wasabi; errors exit non-zero
without a traceback."""
import json
import os
import tempfile
from pathlib import Path
from typing import List, Optional

import typer
from wasabi import msg

app = typer.Typer(help="spacy-ner-plus: transformer NER for spaCy, production-ready.", no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    msg.fail(message)
    raise typer.Exit(1)


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
        _fail(str(err))


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
) -> None:
    """Convert a BIO/IOB/BIOES column file into a spaCy DocBin."""
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from .training.corpus import DOC_MODES, read_conll, result_to_docs, select

    if not input_path.is_file():
        _fail(f"{input_path}: no such file")
    if on_error not in ("fail", "repair") or doc_mode not in DOC_MODES:
        _fail(f"--on-error takes fail|repair and --doc-mode {'|'.join(DOC_MODES)}")
    if chunk_tokens < 1:
        _fail(f"--chunk-tokens must be >= 1, not {chunk_tokens}")
    if sample is not None and doc_mode != "sentence":
        _fail(f"--sample draws sentences: use it with --doc-mode sentence, not {doc_mode}")
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
        for error in result.errors:
            print(str(error))
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
    counts = result.counts()
    msg.good(f"Wrote {len(docs)} docs to {output_path} (scheme {result.scheme}, {len(result.repairs)} repair(s))")
    msg.table(
        [("docs", len(docs)), ("documents", counts["documents"]), ("sentences", counts["sentences"]), ("tokens", counts["tokens"]), ("entities", counts["entities"])]
        + [(f"  {label}", n) for label, n in counts["per_type"].items()],
        header=("", "count"),
        aligns=("l", "r"),
    )


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
    from .evaluation.evaluate import evaluate_examples, predict_examples
    from .schemes import normalize_scheme

    scheme = normalize_scheme(scheme)
    if scheme == "IOB1":
        _fail("--scheme takes IOB2 or BIOES")
    if not data_path.exists():  # before the slow part: loading the pipeline
        _fail(f"{data_path}: no such file")
    nlp = _load_pipeline(model)
    from .pipeline.ner_plus import stale_calibrations

    for message in stale_calibrations(nlp):
        msg.warn(message)
    gold = _load_gold(nlp, data_path, doc_mode)
    examples = predict_examples(nlp, gold, batch_size=batch_size)
    from .pipeline.ner_plus import ner_plus_pipe_names

    names = ner_plus_pipe_names(nlp)
    spans_key = nlp.get_pipe(names[0]).spans_key if names else None
    metrics = evaluate_examples(examples, scheme, output, spans_key=spans_key)
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
    from .evaluation.calibration_report import write_report
    from .evaluation.calibrate import calibrate_pipeline

    if not dev_path.exists():
        _fail(f"{dev_path}: no such file")
    _check_output(model, output_model, "pipeline")
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
    rows = [(label, r.calibrator.method, r.policy, f"{r.threshold:.3f}", len(r.raw), r.n_gold) for label, r in results.items()]
    msg.table(rows, header=("type", "method", "policy", "threshold", "predicted", "gold"), aligns=("l", "l", "l", "r", "r", "r"))
    if data is not None:
        o = data["overall"]
        msg.info(f"ECE {o['ece_before']:.4f} -> {o['ece_after']:.4f}, Brier {o['brier_before']:.4f} -> {o['brier_after']:.4f}")
        msg.good(f"Wrote {report}/calibration.md, calibration.json, reliability.png, thresholds.png")
    msg.good(f"Saved the calibrated pipeline to {output_model}")


@app.command()
def annotate(
    model: str = typer.Argument(..., help="pipeline name or path (with --engine ray: loadable on every node, e.g. an installed pipeline package)"),
    paths: List[str] = typer.Argument(..., metavar="INPUT... OUTPUT", help="input files or globs (plain text, one text a line, or JSONL; with --engine ray also Parquet, and URIs such as s3://bucket/a.jsonl), then the output file"),
    input_format: Optional[str] = typer.Option(None, "--input-format", help="text, jsonl or parquet (--engine ray) (default: from each INPUT's extension, .jsonl/.json -> jsonl, .parquet -> parquet)"),
    output_format: str = typer.Option("jsonl", "--format", help="output: jsonl, or parquet (--engine ray)"),
    text_key: str = typer.Option("text", "--text-key", help="JSONL key holding the text"),
    on_error: str = typer.Option("skip", "--on-error", help="skip: report bad lines and go on; fail: stop at the first, writing nothing"),
    batch_size: int = typer.Option(64, "--batch-size", help="texts per batch (per actor call with --engine ray)"),
    resume: bool = typer.Option(False, "--resume", help="continue the partial output (OUTPUT.part) of an interrupted run"),
    restart: bool = typer.Option(False, "--restart", help="discard the partial output of an interrupted run and start over"),
    engine: str = typer.Option("local", "--engine", help="local: this process; ray: an actor pool on Ray Data (pip install 'spacy-ner-plus[ray]')"),
    address: Optional[str] = typer.Option(None, "--address", help="ray: auto, HOST:PORT or ray://HOST:PORT (default: RAY_ADDRESS, else a new local instance)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="ray: actors (default: as many as the cluster's CPUs or GPUs hold)"),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", help="ray: CPUs per actor, also its torch threads"),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", help="ray: GPUs per actor"),
    preserve_order: bool = typer.Option(False, "--preserve-order", help="ray: write records in input order (the local engine always does)"),
) -> None:
    """Annotate files in constant memory: JSONL (or Parquet) out with each entity's offsets, label and confidence."""
    from .annotate.local import AnnotateError, BadLineError, annotate_files, expand_inputs, input_format_of, partial_paths

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
    formats = {input_format or ("parquet" if str(path).endswith(".parquet") else input_format_of(Path(str(path)))) for path in inputs}
    if len(formats) > 1:
        _fail("the inputs mix .jsonl and plain text files: give --input-format, or annotate them in two runs")
    fmt = formats.pop()
    if fmt == "parquet" and engine != "ray":
        _fail("Parquet inputs need --engine ray; the local engine reads text and JSONL")
    if output_path.resolve() in {path.resolve() for path in inputs if isinstance(path, Path)}:
        _fail(f"{output_path} is also an INPUT")
    try:
        if engine == "ray":
            if resume or restart:
                _fail("--resume and --restart work with --engine local only")
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
                batch_size=batch_size, resume=resume, restart=restart,
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


@app.command()
def render(
    model: str = typer.Argument(..., help="pipeline name or path"),
    input_path: Path = typer.Argument(..., help="plain text, one text a line"),
    output_path: Path = typer.Argument(..., help="HTML page to write"),
) -> None:
    """Render the entities of each line with their confidences (displaCy) into one HTML page."""
    from .annotate.atomic_output import atomic_file
    from .evaluation.visualize import render_entities

    if not input_path.is_file():
        _fail(f"{input_path}: no such file")
    _check_output(model, output_path, "file")
    nlp = _load_pipeline(model)
    try:
        texts = input_path.read_text(encoding="utf8").splitlines()
    except UnicodeDecodeError as err:
        _fail(f"{input_path}: bytes are not UTF-8 at byte {err.start}")
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


@app.command()
def serve(
    model: str = typer.Argument(..., help="pipeline name or path with one ner_plus component"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (0.0.0.0: every interface)"),
    port: int = typer.Option(8080, "--port"),
    workers: int = typer.Option(1, "--workers", help="worker processes; each loads the model"),
    audit_log: Optional[Path] = typer.Option(None, "--audit-log", help="JSON-lines audit log, one line per /v1 request (never text)"),
    audit_max_bytes: int = typer.Option(10_000_000, "--audit-max-bytes", help="rotate the audit log at this size"),
    audit_backups: int = typer.Option(5, "--audit-backups", help="rotated audit logs kept"),
    min_threshold: List[str] = typer.Option([], "--min-threshold", help="lowest threshold a request may set: VALUE or TYPE=VALUE, repeatable (default 0)"),
    max_threshold: List[str] = typer.Option([], "--max-threshold", help="highest threshold a request may set: VALUE or TYPE=VALUE, repeatable (default: the pipeline's threshold)"),
    hash_key_file: Optional[Path] = typer.Option(None, "--hash-key-file", help="HMAC key of the hash operator (else $NER_PLUS_HASH_KEY)"),
    max_body_bytes: int = typer.Option(1_000_000, "--max-body-bytes", help="larger bodies get 413"),
    max_texts: int = typer.Option(64, "--max-texts", help="more texts per request get 413"),
    batch_tokens: int = typer.Option(4096, "--batch-tokens", help="token budget of one micro-batch"),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="how long a text waits for others to share its batch"),
    queue_texts: int = typer.Option(1024, "--queue-texts", help="most texts waiting for prediction; beyond: 503"),
    drain_timeout: float = typer.Option(30.0, "--drain-timeout", help="seconds requests in flight get to finish at shutdown"),
    code: Optional[Path] = typer.Option(None, "--code", help="Python file to import first (custom components)"),
    torch_threads: Optional[int] = typer.Option(None, "--torch-threads", help="torch threads per worker (default: torch's, one per core; 1 on a machine shared with other busy processes)"),
    policy: Optional[Path] = typer.Option(None, "--policy", help="operator policy file, TOML or YAML (docs/service-policy.md); default: every type redacted, keep off"),
) -> None:
    """Serve the PII service (analyze, redact, metrics, audit log) with FastAPI on uvicorn."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        _fail(f"serve needs the 'serve' extra: pip install 'spacy-ner-plus[serve]' ({err.name} is missing)")
    import spacy

    from .service.app import ServeSettings, load_hash_key, run

    if not (spacy.util.is_package(model) or (Path(model) / "config.cfg").is_file()):
        _fail(f"'{model}' is neither an installed pipeline package nor a directory with a config.cfg")
    for name, value in (("--workers", workers), ("--max-body-bytes", max_body_bytes), ("--max-texts", max_texts), ("--batch-tokens", batch_tokens), ("--queue-texts", queue_texts), ("--audit-max-bytes", audit_max_bytes)):
        if value < 1:
            _fail(f"{name} must be >= 1, not {value}")
    if torch_threads is not None and torch_threads < 1:
        _fail(f"--torch-threads must be >= 1, not {torch_threads}")
    if batch_wait_ms < 0 or drain_timeout < 0 or audit_backups < 0:
        _fail("--batch-wait-ms, --drain-timeout and --audit-backups must be >= 0")
    if code is not None and not code.is_file():
        _fail(f"--code {code}: no such file")
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
        batch_tokens=batch_tokens,
        batch_wait_ms=batch_wait_ms,
        queue_texts=queue_texts,
        workers=workers,
        code=str(code) if code else None,
        torch_threads=torch_threads,
        policy=str(policy) if policy else None,
    )
    from .service.policy import load_policy

    try:
        key = load_hash_key(settings)
        load_policy(settings.policy)  # checked here too, so a bad file stops the command with its reason
    except ValueError as err:
        _fail(str(err))
    msg.info(f"hash operator {'on' if key else 'off (no key: set $NER_PLUS_HASH_KEY or --hash-key-file)'}")
    run(settings, host, port, drain_timeout)
