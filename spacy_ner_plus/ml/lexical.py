"""Lexical features of each token of a window: hashed embeddings of spaCy
token attributes (by default SHAPE, PREFIX, SUFFIX). They give an uncased
backbone back what lowercasing took: capitalisation and word shape."""
from typing import Callable, Dict, List, Sequence, Tuple

from spacy.attrs import IDS
from spacy.tokens import Span
from thinc.api import HashEmbed, Model, chain, concatenate, with_array
from thinc.types import Floats2d, Ints2d


def LexicalFeatures(attrs: Sequence[str], width: int, rows: int) -> Model[List[Span], List[Floats2d]]:
    if not attrs:
        raise ValueError("LexicalFeatures needs at least one attribute")
    unknown = [a for a in attrs if a.upper() not in IDS]
    if unknown:
        raise ValueError(f"unknown token attribute(s) {unknown}; use spaCy attribute names such as SHAPE")
    embeds = [HashEmbed(nO=width, nV=rows, column=i, seed=7 + i) for i in range(len(attrs))]
    return chain(span_attrs([a.upper() for a in attrs]), with_array(concatenate(*embeds)))


def span_attrs(attrs: Sequence[str]) -> Model[List[Span], List[Ints2d]]:
    return Model("span_attrs", _span_attrs_forward, attrs={"columns": [IDS[a] for a in attrs]})


def _span_attrs_forward(model: Model, windows: List[Span], is_train: bool) -> Tuple[List[Ints2d], Callable]:
    columns = model.attrs["columns"]
    # One to_array per Doc per batch: windows of a long Doc share it.
    per_doc: Dict[int, Ints2d] = {}
    arrays = []
    for span in windows:
        key = id(span.doc)
        if key not in per_doc:
            per_doc[key] = span.doc.to_array(columns).reshape((len(span.doc), len(columns)))
        arrays.append(model.ops.asarray(per_doc[key][span.start : span.end], dtype="uint64"))
    return arrays, lambda d: windows
