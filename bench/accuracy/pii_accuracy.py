"""PII accuracy on the generated test split: our service against Presidio (issue 13, part 5).

Three systems, scored on ``corpus/pii/test.spacy`` (held-out templates; exact text
and line breaks, written by ``scripts/make_pii_corpus.py docbin``):

(a) ``ours``: the calibrated pipeline as the service decides. Every candidate
    of a text goes through ``spacy_ner_plus.service.decision.ServedModel.candidates`` and
    ``serve.decide`` at the pipeline's per-type thresholds (pattern entities
    always, model entities at their calibrated thresholds). The thresholds come
    from ``calibrate ... --policy fbeta:2`` on the dev split only. The script also
    counts the texts whose ``doc.ents`` differ from those decisions (expected: 0).
(b) ``presidio_ours_ner``: Presidio's ``AnalyzerEngine`` with its default
    predefined recognisers and our trained pipeline (``--presidio-model``, the
    uncalibrated ``training/pii/model-best``) as its spaCy NLP engine, loaded
    from a local path (``SpacyNlpEngine._download_spacy_model_if_needed`` skips
    a path that exists, so nothing is downloaded). ``pii_patterns`` is excluded
    from that pipeline: Presidio brings its own pattern recognisers. Presidio's
    ``SpacyRecognizer`` is given our five NER types (PERSON, LOCATION,
    ORGANIZATION, DATE_TIME, STREET_ADDRESS; identity mapping in
    ``NerModelConfiguration``, Presidio's other defaults kept: constant NER
    score 0.85, ORGANIZATION x 0.4). Its ONE global score threshold is chosen
    on dev (grid 0.00..1.00 step 0.01, maximising type-agnostic exact-span F2)
    and then applied to test. Filtering results by score after ``analyze(...,
    score_threshold=0)`` equals passing the threshold: Presidio removes
    duplicates before it drops low scores.
(c) ``presidio_patterns``: the same registry without any NER recogniser
    (``SpacyRecognizer`` removed; a blank English spaCy pipeline for tokens and
    lemmas, which the context enhancer uses); its global threshold is tuned on
    dev the same way.

Scoring (same for all systems): predictions of a type outside the corpus's 12
types (Presidio's NRP, US_DRIVER_LICENSE, MEDICAL_LICENSE, ...) are dropped
before scoring, for every system (the corpus does not annotate them, so neither
a hit nor a miss can be judged). Spans are character offsets. Two criteria:
``exact`` (same start and end) and ``overlap`` (|intersection| / |union| of the
two character spans >= 0.9). Predictions and gold entities are matched one to
one, greedily by overlap. Per type: a match needs the same type. Type-agnostic:
a match ignores the type (predictions with the same span but different types
count once). P, R, F1 and F2 (beta = 2) are micro-averaged over all texts.

Presidio is a bench-only peer, not a dependency of the package:
    .venv/bin/pip install 'presidio-analyzer==2.2.364'
(2.2.364: newer releases pin ``preshed<3.0.14`` and would downgrade the
venv's preshed 3.0.15; 2.2.364 installs with no version change.)
Presidio's email recogniser calls ``tldextract``, whose default extractor
fetches the public suffix list over HTTP; the script replaces it with one that
uses only the snapshot bundled with tldextract (this machine has no network).

    .venv/bin/python -m spacy_ner_plus calibrate training/pii/model-best corpus/pii/dev.spacy /tmp/pii-calibrated --policy fbeta:2 --bootstrap 0
    .venv/bin/python -m bench pii_accuracy /tmp/pii-calibrated training/pii/model-best
"""
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Set, Tuple

import spacy
import typer
from spacy.tokens import DocBin

import tldextract
import tldextract.tldextract

# Offline: the bundled public-suffix snapshot only (module docstring).
tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # noqa: E402
from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine  # noqa: E402
from presidio_analyzer.predefined_recognizers import SpacyRecognizer  # noqa: E402

import spacy_ner_plus  # noqa: E402,F401  (registers the factories)
from bench import provenance
from spacy_ner_plus.service.decision import ServedModel, decide  # noqa: E402

TYPES = [
    "PERSON", "ORGANIZATION", "LOCATION", "STREET_ADDRESS", "DATE_TIME", "EMAIL_ADDRESS",
    "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "URL", "US_SSN",
]
NER_TYPES = ["PERSON", "LOCATION", "ORGANIZATION", "DATE_TIME", "STREET_ADDRESS"]
TARGET_RECALL_TYPES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN"]
OVERLAP = 0.9
BETA = 2.0
Span = Tuple[int, int, str]


def load_gold(path: Path) -> Tuple[List[str], List[List[Span]]]:
    """Texts and gold character spans of a DocBin."""
    nlp = spacy.blank("en")
    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    return [d.text for d in docs], [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]


def iou(a: Span, b: Span) -> float:
    inter = min(a[1], b[1]) - max(a[0], b[0])
    if inter <= 0:
        return 0.0
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


def match(pred: Sequence[Span], gold: Sequence[Span], exact: bool, typed: bool) -> Tuple[List[bool], List[bool]]:
    """One-to-one greedy matching (best overlap first). RETURNS (matched per pred, matched per gold)."""
    pairs = []
    for i, p in enumerate(pred):
        for j, g in enumerate(gold):
            if typed and p[2] != g[2]:
                continue
            if exact:
                ok = p[0] == g[0] and p[1] == g[1]
                o = 1.0 if ok else 0.0
            else:
                o = iou(p, g)
                ok = o >= OVERLAP
            if ok:
                pairs.append((o, i, j))
    pairs.sort(key=lambda x: -x[0])
    pm, gm = [False] * len(pred), [False] * len(gold)
    for _, i, j in pairs:
        if not pm[i] and not gm[j]:
            pm[i] = gm[j] = True
    return pm, gm


def prf(tp_p: int, n_p: int, tp_g: int, n_g: int) -> Dict[str, float]:
    p = tp_p / n_p if n_p else 0.0
    r = tp_g / n_g if n_g else 0.0

    def f(beta: float) -> float:
        return (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0

    return {"p": p, "r": r, "f1": f(1.0), "f2": f(BETA), "pred": n_p, "gold": n_g}


def score(preds: Sequence[Sequence[Span]], golds: Sequence[Sequence[Span]]) -> Dict[str, Dict]:
    """Per-type and type-agnostic scores for both criteria."""
    out: Dict[str, Dict] = {}
    for crit, exact in (("exact", True), ("overlap", False)):
        per = {t: [0, 0, 0, 0] for t in TYPES}
        ag = [0, 0, 0, 0]
        for pred, gold in zip(preds, golds):
            pred = [p for p in pred if p[2] in TYPES]
            pm, gm = match(pred, gold, exact, typed=True)
            for p, m in zip(pred, pm):
                per[p[2]][0] += m
                per[p[2]][1] += 1
            for g, m in zip(gold, gm):
                per[g[2]][2] += m
                per[g[2]][3] += 1
            spans = sorted({(p[0], p[1], "") for p in pred})
            pm, gm = match(spans, [(g[0], g[1], "") for g in gold], exact, typed=False)
            ag[0] += sum(pm)
            ag[1] += len(spans)
            ag[2] += sum(gm)
            ag[3] += len(gold)
        out[crit] = {"agnostic": prf(*ag), "per_type": {t: prf(*v) for t, v in per.items()}}
    return out


def run_ours(path: str, texts: List[str]) -> Tuple[List[List[Span]], int]:
    """Decisions of the service's own code; also the number of texts whose doc.ents differ."""
    nlp = spacy.load(path)
    served = ServedModel(nlp, path, {}, {})
    preds, differ = [], 0
    for doc in nlp.pipe(texts, batch_size=32):
        d = decide(served.candidates(doc), served.thresholds, None)
        spans = sorted((c.start, c.end, c.label) for c, _ in d.entities)
        ents = sorted((e.start_char, e.end_char, e.label_) for e in doc.ents)
        differ += spans != ents
        preds.append(spans)
    return preds, differ


def presidio_engine(model_path: str, with_ner: bool) -> AnalyzerEngine:
    """An AnalyzerEngine on a local pipeline path (with_ner) or a blank English one."""
    conf = NerModelConfiguration(model_to_presidio_entity_mapping={t: t for t in NER_TYPES})
    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model_path}], ner_model_configuration=conf)
    if with_ner:
        engine.load()  # spacy.load(path): no download, the path exists
        engine.nlp["en"].remove_pipe("pii_patterns")  # Presidio's pattern recognisers do this job
    else:
        engine.nlp = {"en": spacy.blank("en")}
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    registry.remove_recognizer("SpacyRecognizer")
    if with_ner:
        registry.add_recognizer(SpacyRecognizer(supported_language="en", supported_entities=list(NER_TYPES)))
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def run_presidio(engine: AnalyzerEngine, texts: List[str]) -> List[List[Tuple[int, int, str, float]]]:
    out = []
    for text in texts:
        res = engine.analyze(text=text, language="en", score_threshold=0.0)
        out.append([(r.start, r.end, r.entity_type, float(r.score)) for r in res])
    return out


def at(raw: Iterable[Iterable[Tuple[int, int, str, float]]], t: float) -> List[List[Span]]:
    return [[(s, e, l) for s, e, l, sc in doc if sc >= t] for doc in raw]


def tune(raw_dev, gold_dev) -> Tuple[float, List[Dict[str, float]]]:
    grid = []
    for k in range(101):
        t = k / 100
        grid.append({"threshold": t, "f2": score(at(raw_dev, t), gold_dev)["exact"]["agnostic"]["f2"]})
    best = max(grid, key=lambda g: (g["f2"], -g["threshold"]))
    return best["threshold"], grid


def main(
    ours_model: str = typer.Argument(..., help="Calibrated pipeline (calibrate --policy fbeta:2 on dev)"),
    presidio_model: str = typer.Argument(..., help="Trained pipeline for Presidio's NLP engine"),
    dev: Path = typer.Option(Path("corpus/pii/dev.spacy")),
    test: Path = typer.Option(Path("corpus/pii/test.spacy")),
    output: Path = typer.Option(Path("bench/results/pii_accuracy.json")),
) -> None:
    dev_texts, dev_gold = load_gold(dev)
    test_texts, test_gold = load_gold(test)
    results: Dict = {}
    t0 = time.time()
    ours_pred, differ = run_ours(ours_model, test_texts)
    results["ours"] = {"model": ours_model, "doc_ents_differ_from_decide": differ, "scores": score(ours_pred, test_gold)}
    print(f"ours done ({time.time() - t0:.0f}s), doc.ents differ from decide in {differ} texts", file=sys.stderr)
    for name, with_ner in (("presidio_ours_ner", True), ("presidio_patterns", False)):
        engine = presidio_engine(presidio_model, with_ner)
        raw_dev = run_presidio(engine, dev_texts)
        t, grid = tune(raw_dev, dev_gold)
        raw_test = run_presidio(engine, test_texts)
        outside: Dict[str, int] = {}
        for doc in raw_test:
            for s, e, l, sc in doc:
                if l not in TYPES and sc >= t:
                    outside[l] = outside.get(l, 0) + 1
        results[name] = {
            "model": presidio_model if with_ner else "spacy.blank('en')",
            "threshold": t,
            "dev_f2_at_threshold": max(g["f2"] for g in grid),
            "dropped_outside_types_test": outside,
            "recognizers": sorted(r.name for r in engine.registry.recognizers),
            "scores": score(at(raw_test, t), test_gold),
        }
        print(f"{name} done ({time.time() - t0:.0f}s), threshold {t}", file=sys.stderr)
    a = results["ours"]["scores"]
    b = results["presidio_ours_ner"]["scores"]
    targets = {}
    for crit in ("exact", "overlap"):
        fa, fb = 100 * a[crit]["agnostic"]["f2"], 100 * b[crit]["agnostic"]["f2"]
        targets[f"agnostic_f2_{crit}"] = {"ours": fa, "presidio": fb, "diff": fa - fb, "met": fa >= fb + 3.0}
        for t in TARGET_RECALL_TYPES:
            s = a[crit]["per_type"][t]
            targets[f"{t}_{crit}"] = {"recall": s["r"], "precision": s["p"], "met": s["r"] >= 0.95 and s["p"] >= 0.90}
    from importlib.metadata import version

    results["targets"] = targets
    results["meta"] = {
        "commit": provenance.commit(),
        "machine": f"{platform.machine()} {platform.processor() or ''} python {platform.python_version()}",
        "presidio_analyzer": version("presidio-analyzer"),
        "spacy": spacy.__version__,
        "test_texts": len(test_texts), "dev_texts": len(dev_texts),
        "overlap_definition": "intersection/union of character spans >= 0.9",
        "outside_types": "dropped before scoring, every system",
        "seconds": time.time() - t0,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    provenance.write_result("pii_accuracy", results, output)
    for crit in ("exact", "overlap"):
        print(f"== {crit}")
        for name in ("ours", "presidio_ours_ner", "presidio_patterns"):
            s = results[name]["scores"][crit]["agnostic"]
            print(f"{name:20s} P {s['p']:.3f} R {s['r']:.3f} F1 {s['f1']:.3f} F2 {s['f2']:.3f}")
    print(json.dumps(targets, indent=1))


if __name__ == "__main__":
    typer.run(main)
