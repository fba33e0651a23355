"""Entity-filter rules from the mentions a label subset dropped.

A model trained on some types only (``convert --labels PER,ORG``) has never
seen the other types' mentions as anything but ``O``, and predicts some of
them as a kept type (the mini workflow's error analysis: place names as ORG).
The annotation of the same training sentences still names them. This writes,
for every mention text that the given DocBin (the same sentences, all types)
annotates only with dropped types (or only with ``--from-types``), one
``ner_plus_entity_filter`` rule per kept type that removes a prediction of
exactly that text.

    python scripts/dropped_type_rules.py corpus/mini/train_all_types.spacy --keep PER,ORG --output corpus/mini/rules.json
"""
from pathlib import Path

import srsly
import typer
from spacy.tokens import DocBin
from spacy.vocab import Vocab
from wasabi import msg

from spacy_ner_plus.pipeline.entity_filter import rules_from_dropped_types


def main(
    data: Path = typer.Argument(..., help="DocBin with every type annotated (the training sentences)"),
    keep: str = typer.Option(..., "--keep", help="comma-separated types the model predicts"),
    output: Path = typer.Option(..., "--output", help="JSON list of rules for [initialize.components.NAME.rules]"),
    from_types: str = typer.Option("", "--from-types", help="comma-separated dropped types whose mentions make rules (default: every type not kept)"),
) -> None:
    if not data.is_file():
        msg.fail(f"{data}: no such file", exits=1)
    kept = [label.strip() for label in keep.split(",") if label.strip()]
    sources = [label.strip() for label in from_types.split(",") if label.strip()]
    try:
        rules, n_texts, n_total = rules_from_dropped_types(DocBin().from_disk(data).get_docs(Vocab()), kept, sources)
    except ValueError as err:
        msg.fail(f"{data}: {err}", exits=1)
    output.parent.mkdir(parents=True, exist_ok=True)
    srsly.write_json(output, rules)
    which = ", ".join(sources) if sources else "types outside " + ", ".join(kept)
    msg.good(f"{n_texts} of {n_total} mention texts are annotated only with {which}: {len(rules)} rules in {output}")


if __name__ == "__main__":
    typer.run(main)
