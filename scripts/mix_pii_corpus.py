"""Mix real sentences into the PII training corpus: CoNLL-2003 beside the generated texts.

The generated corpus (assets/pii, scripts/make_pii_corpus.py) has our own
templates only; its PERSON, ORGANIZATION and LOCATION mentions sit in a few
dozen phrasings. CoNLL-2003 (Reuters news, 1996-97; not shipped: its licence
does not allow it, project.yml's ``pii_conll`` names your copy) adds real
sentences with those three types. The mapping:

    PER  -> PERSON
    ORG  -> ORGANIZATION
    LOC  -> LOCATION
    MISC -> O   (nationalities, events, products: not a PII type; its tokens
                 stay, tagged outside, counted as "dropped MISC")

A CoNLL sentence never holds the structured types (PHONE_NUMBER, ...), so the
mixed corpus keeps them from the generated texts only. CoNLL has no whitespace:
a CoNLL sentence becomes one Doc with a space after every token (spaCy's default).

    python scripts/mix_pii_corpus.py mix corpus/pii/train.spacy ../shared/data/conll2003/train.iob \\
        corpus/pii/mix/train.spacy --sentences 1000 --seed 0
    python scripts/mix_pii_corpus.py conll ../shared/data/conll2003/dev.iob corpus/pii/conll_dev.spacy

``mix`` draws ``--sentences`` CoNLL sentences uniformly without replacement
with ``random.Random(seed)`` (every sentence, those without an entity too:
they teach what is not PII), maps them, puts them after the PII Docs and
shuffles the whole with the same seed (spaCy reshuffles every epoch, so the
order matters only for reproducibility). ``--sentences 0`` writes the PII
corpus alone. ``conll`` maps a whole CoNLL file (for the mapped dev set).
"""
import random
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import spacy
import typer
from spacy.tokens import Doc, DocBin
from spacy.vocab import Vocab

MAPPING: Dict[str, Optional[str]] = {"PER": "PERSON", "ORG": "ORGANIZATION", "LOC": "LOCATION", "MISC": None}
CONLL_VARIABLE = "pii_conll"


class MixError(ValueError):
    """A problem with an input of the mix, with what and where."""


def check_conll_path(path: Path, variable: str = CONLL_VARIABLE) -> None:
    """RAISES (MixError): naming the file and the project variable that sets it."""
    if not path.is_file():
        raise MixError(
            f"{path}: no CoNLL-2003 file there ({'a directory' if path.is_dir() else 'missing'}); "
            f"set the project variable {variable} to the folder of your copy "
            f"(spacy project run pii-mix . --vars.{variable} PATH/conll2003; it holds train.iob and dev.iob)"
        )


def read_mapped_conll(path: Path, vocab: Vocab, sentences: Optional[int] = None, seed: int = 0) -> Tuple[List[Doc], Dict[str, int]]:
    """The sentences of a CoNLL-2003 file as Docs with PII labels (MAPPING).

    path (Path): a CoNLL-2003 column file (IOB2, NER tag last).
    sentences (Optional[int]): draw that many sentences (None: all).
    seed (int): seed of the draw.
    RETURNS: the Docs (one per sentence) and a report ({"dropped MISC": n,
        "sentences left out": n}).
    RAISES (MixError): a missing file, a format error (FILE:LINE), a label
        the mapping does not know, a sample larger than the file.
    """
    from spacy_ner_plus.training.corpus import ConllFormatError, read_conll, result_to_docs, select

    check_conll_path(path)
    result = read_conll(path, scheme="IOB2")
    if result.errors:
        raise MixError(str(ConllFormatError(result.errors)))
    present = set(result.counts()["per_type"])
    unknown = sorted(present - set(MAPPING))
    if unknown:
        raise MixError(f"{path}: type(s) {', '.join(unknown)} are not CoNLL-2003's (PER, ORG, LOC, MISC): no mapping to a PII type")
    try:
        # sample first, so the report counts the MISC mentions of the sample
        result, report = select(result, sample=sentences, seed=seed) if sentences is not None else (result, {})
        present = set(result.counts()["per_type"])
        keep = [label for label, target in MAPPING.items() if target and label in present]
        if present - set(keep):
            result, dropped = select(result, labels=keep) if keep else (_all_outside(result), {f"dropped {k}": v for k, v in result.counts()["per_type"].items()})
            report.update(dropped)
    except ValueError as err:
        raise MixError(str(err)) from err
    docs = []
    for doc in result_to_docs(result, vocab, doc_mode="sentence"):
        ents = [f"{t.ent_iob_}-{MAPPING[t.ent_type_]}" if t.ent_type_ else "O" for t in doc]
        docs.append(Doc(vocab, words=[t.text for t in doc], ents=ents))
    return docs, report


def _all_outside(result):
    """The sentences with every tag O (select() wants at least one type to keep)."""
    from dataclasses import replace

    documents = [[replace(s, tags=["O"] * len(s.words), spans=[]) for s in doc] for doc in result.documents]
    return replace(result, documents=documents)


def mix_docs(pii_docs: List[Doc], conll_docs: List[Doc], seed: int) -> List[Doc]:
    """The PII Docs and the CoNLL Docs together, shuffled with ``random.Random(seed)``."""
    docs = list(pii_docs) + list(conll_docs)
    random.Random(seed).shuffle(docs)
    return docs


def describe(docs: List[Doc]) -> str:
    labels = Counter(ent.label_ for doc in docs for ent in doc.ents)
    return f"{len(docs)} docs, {sum(len(d) for d in docs):,} tokens, entities {dict(sorted(labels.items()))}"


app = typer.Typer(add_completion=False, help=__doc__.split("\n")[0])


@app.command()
def mix(
    pii_path: Path = typer.Argument(..., exists=True, dir_okay=False, help="the PII training DocBin (pii-convert writes it)"),
    conll_path: Path = typer.Argument(..., help="CoNLL-2003 train.iob (the project variable pii_conll)"),
    output_path: Path = typer.Argument(..., help="the mixed .spacy file to write"),
    sentences: int = typer.Option(1000, "--sentences", min=0, help="CoNLL sentences to draw (0: the PII corpus alone)"),
    seed: int = typer.Option(0, help="seed of the draw and of the shuffle"),
) -> None:
    """Write the PII training corpus with SENTENCES mapped CoNLL-2003 sentences mixed in."""
    nlp = spacy.blank("en")
    pii_docs = list(DocBin().from_disk(pii_path).get_docs(nlp.vocab))
    try:
        conll_docs, report = read_mapped_conll(conll_path, nlp.vocab, sentences, seed) if sentences else ([], {})
    except MixError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    docs = mix_docs(pii_docs, conll_docs, seed)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs, store_user_data=False).to_disk(output_path)
    typer.echo(f"PII {pii_path}: {describe(pii_docs)}")
    typer.echo(f"CoNLL {conll_path}: {describe(conll_docs)}; {report}")
    typer.echo(f"{output_path}: {describe(docs)}")


@app.command()
def conll(
    conll_path: Path = typer.Argument(..., help="a CoNLL-2003 file (dev.iob for the mapped dev set)"),
    output_path: Path = typer.Argument(..., help="the .spacy file to write"),
) -> None:
    """Write a whole CoNLL-2003 file as a DocBin with PII labels (MISC dropped)."""
    nlp = spacy.blank("en")
    try:
        docs, report = read_mapped_conll(conll_path, nlp.vocab)
    except MixError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    DocBin(docs=docs, store_user_data=False).to_disk(output_path)
    typer.echo(f"{output_path}: {describe(docs)}; {report}")


if __name__ == "__main__":
    app()
