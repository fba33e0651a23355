"""The command-line app: ``python -m spacy_ner_plus COMMAND``. Thin: it parses
arguments, calls the modules and prints with wasabi; errors exit non-zero
without a traceback."""
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import typer
from wasabi import msg

app = typer.Typer(help="spacy-ner-plus: transformer NER for spaCy, production-ready.", no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str) -> None:
    msg.fail(message)
    raise typer.Exit(1)


@app.command()
def convert(
    input_path: Path = typer.Argument(..., help="CoNLL-style column file"),
    output_path: Path = typer.Argument(..., help="DocBin (.spacy) to write"),
    scheme: Optional[str] = typer.Option(None, "--scheme", help="IOB1, IOB2/BIO or BIOES/BILOU (default: detect)"),
    doc_mode: str = typer.Option("document", "--doc-mode", help="document: one Doc per -DOCSTART- document; sentence: one Doc per sentence"),
    on_error: str = typer.Option("fail", "--on-error", help="fail: report every problem and write nothing; repair: apply the documented repairs"),
    token_column: int = typer.Option(0, "--token-column", help="index of the token column"),
    tag_column: int = typer.Option(-1, "--tag-column", help="index of the tag column (-1: last)"),
) -> None:
    """Convert a BIO/IOB/BIOES column file into a spaCy DocBin."""
    from spacy.tokens import DocBin
    from spacy.vocab import Vocab

    from .corpus import read_conll, result_to_docs

    if not input_path.is_file():
        _fail(f"{input_path}: no such file")
    if on_error not in ("fail", "repair") or doc_mode not in ("document", "sentence"):
        _fail("--on-error takes fail|repair and --doc-mode document|sentence")
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
    if doc_mode == "document" and not result.has_doc_markers:
        msg.info(f"{input_path} has no {'-DOCSTART-'} lines: writing one Doc per sentence")
    docs = result_to_docs(result, Vocab(), doc_mode)
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
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="directory for metrics.json, report.md, confusion.png"),
    scheme: str = typer.Option("IOB2", "--scheme", help="IOB2 or BIOES: the strict seqeval scheme"),
    doc_mode: str = typer.Option("sentence", "--doc-mode", help="for a CoNLL file: document or sentence"),
    batch_size: int = typer.Option(64, "--batch-size"),
) -> None:
    """Strict entity-level evaluation (seqeval) with an error analysis."""
    import spacy

    from .corpus import ConllFormatError, read_docs
    from .evaluate import evaluate_examples, predict_examples
    from .schemes import normalize_scheme

    scheme = normalize_scheme(scheme)
    if scheme == "IOB1":
        _fail("--scheme takes IOB2 or BIOES")
    if not data_path.exists():
        _fail(f"{data_path}: no such file")
    try:
        nlp = spacy.load(model)
    except OSError as err:
        _fail(f"cannot load pipeline '{model}': {err}")
    try:
        gold = read_docs(data_path, nlp.vocab, doc_mode=doc_mode)
    except ConllFormatError as err:
        _fail(str(err))
    examples = predict_examples(nlp, gold, batch_size=batch_size)
    metrics = evaluate_examples(examples, scheme, output)
    rows = [(label, f"{d['precision']:.4f}", f"{d['recall']:.4f}", f"{d['f1']:.4f}", d["support"]) for label, d in metrics["per_type"].items()]
    rows.append(("micro", f"{metrics['precision']:.4f}", f"{metrics['recall']:.4f}", f"{metrics['f1']:.4f}", metrics["support"]))
    msg.table(rows, header=("type", "P", "R", "F1", "support"), aligns=("l", "r", "r", "r", "r"))
    msg.info("errors: " + json.dumps(metrics["errors"]))
    if output is not None:
        msg.good(f"Wrote {output}/metrics.json, report.md, confusion.png")
