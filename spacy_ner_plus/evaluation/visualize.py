"""displaCy rendering of entities with their confidences, and the error page of evaluate."""
import html
from typing import Any, Dict, List, Sequence

from spacy import displacy
from spacy.displacy.render import DEFAULT_LABEL_COLORS
from spacy.tokens import Doc
from spacy.training import Example

# registers Span._.confidence, which a pipeline without ner_plus (gold docs, spaCy's own ner) lacks
from ..pipeline import scored_spans  # noqa: F401


def ents_with_confidence(doc: Doc) -> Dict[str, Any]:
    """displaCy "manual" data for ``doc.ents``, each label followed by its confidence."""
    ents = []
    for ent in doc.ents:
        score = ent._.confidence
        label = ent.label_ if score is None else f"{ent.label_} {score:.2f}"
        ents.append({"start": ent.start_char, "end": ent.end_char, "label": label})
    return {"text": doc.text, "ents": ents, "title": None}


def render_entities(docs: Sequence[Doc], page: bool = True) -> str:
    """HTML of the docs' entities with confidences (displaCy's entity style)."""
    data = [ents_with_confidence(doc) for doc in docs]
    # displaCy colours a label by its exact string: give "PER 0.97" the colour of PER
    colors = {d["label"]: DEFAULT_LABEL_COLORS.get(d["label"].split(" ")[0], "#ddd") for item in data for d in item["ents"]}
    return displacy.render(data, style="ent", manual=True, page=page, options={"colors": colors}, jupyter=False)


def errors_page(examples: Sequence[Example], samples: List[Dict[str, Any]], context: int = 8) -> str:
    """One HTML page with each example error: the context with gold and with predicted entities."""
    sections = ["<h1>Example errors</h1>"]
    for s in samples:
        eg = examples[s["doc"]]
        anchor = s["gold"] or s["pred"]
        left = max(0, anchor["start"] - context)
        right = min(len(eg.reference), anchor["end"] + context)
        rows = []
        for name, doc in (("gold", eg.reference), ("predicted", eg.predicted)):
            window = doc[left:right]
            ents = [
                {"start": e.start_char - window.start_char, "end": e.end_char - window.start_char,
                 "label": e.label_ if name == "gold" or e._.confidence is None else f"{e.label_} {e._.confidence:.2f}"}
                for e in doc.ents if e.start >= left and e.end <= right
            ]
            rendered = displacy.render({"text": window.text, "ents": ents, "title": None}, style="ent", manual=True, jupyter=False)
            rows.append(f"<h4>{name}</h4>{rendered}")
        sections.append(f"<h3>doc {s['doc']}: {html.escape(s['kind'])}</h3>" + "".join(rows))
    body = "\n".join(sections)
    return f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Example errors</title></head><body style='font-family: sans-serif'>{body}</body></html>"
