"""A Presidio engine plug-in: a ner_plus pipeline inside Presidio's ``AnalyzerEngine``.

Three pieces (``pip install "spacy-ner-plus[presidio]"``; docs/presidio.md):

- ``NerPlusNlpEngine``: Presidio's ``NlpEngine`` (a ``SpacyNlpEngine``) serving an already loaded
  pipeline, so no ``en_core_web_*`` model is loaded or downloaded. It runs the pipeline once per
  text and hands Presidio an ``NlpArtifacts`` whose ``tokens`` is our Doc, whose ``entities`` are
  ``doc.ents`` under their Presidio names with our calibrated scores (not the constant 0.85 of
  Presidio's ``NerModelConfiguration.default_score``), and whose ``lemmas`` are the pipeline's
  lemmas when it has a lemmatizer, else each token's lowercased text (ner_plus pipelines have no
  lemmatizer; Presidio's context enhancer compares context words with these, so "Phone" and
  "phone" still match, "phones" and "phone" only through its substring mode).
- ``NerPlusRecognizer``: the ``EntityRecognizer`` that reports ``doc.ents`` to Presidio with an
  ``analysis_explanation`` (``NerPlusExplanation``) carrying our label, the raw score, the
  calibrated score, the threshold and the source (``model``, ``pattern`` for pii_patterns,
  ``other`` for another component such as an entity_ruler). It reads the Doc of the artifacts
  when they come from a ``NerPlusNlpEngine`` serving the same pipeline, and runs the pipeline
  itself only under another NlpEngine.
- ``analyzer_engine(nlp_or_path)``: both in an ``AnalyzerEngine`` with Presidio's predefined
  recognizers (or the caller's registry), its context enhancer and thresholds; Presidio's
  spaCy-based ``SpacyRecognizer`` is removed, since it would report the same entities again.

Thresholds: ``doc.ents`` already holds only the model entities whose calibrated score reaches
their type's threshold, so Presidio's ``score_threshold`` (per request, per recognizer or the
engine's default) can only drop more, never bring back an entity under our threshold.

Mapping: ``DEFAULT_MAPPING`` maps our labels (and CoNLL's and OntoNotes' short ones) to
Presidio's entity names; ``mapping`` overrides or extends it, ``None`` drops a label. Every label
the pipeline's components declare must be mapped (or dropped) when the engine is built, or a
ValueError names them; an entity with an undeclared label met at analysis is a ValueError too.

This module is an edge: nothing in the package imports it.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union

import spacy
from presidio_analyzer import AnalysisExplanation, AnalyzerEngine, LocalRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import SpacyRecognizer
from spacy.language import Language
from spacy.tokens import Doc, Span

from .pipeline.ner_plus import ner_plus_pipe_names
from .pipeline.scored_spans import SPAN_RAW_SCORES, SPAN_SCORES

# our label -> Presidio's entity name (None: not reported). PERSON ... US_SSN are the names the
# PII pipeline predicts and Presidio uses too; STREET_ADDRESS has no Presidio recognizer, so it
# keeps our name (anonymizer operators are keyed by any entity name).
DEFAULT_MAPPING: Dict[str, Optional[str]] = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "ORGANIZATION": "ORGANIZATION",
    "ORG": "ORGANIZATION",
    "LOCATION": "LOCATION",
    "LOC": "LOCATION",
    "GPE": "LOCATION",
    "FAC": "LOCATION",
    "NORP": "NRP",
    "NRP": "NRP",
    "DATE_TIME": "DATE_TIME",
    "DATE": "DATE_TIME",
    "TIME": "DATE_TIME",
    "STREET_ADDRESS": "STREET_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "URL": "URL",
    "IP_ADDRESS": "IP_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    # CoNLL's MISC mixes nationalities (Presidio's NRP) with events, works and products, which
    # Presidio's own spaCy configuration ignores: dropped unless mapped, e.g. {"MISC": "NRP"}
    "MISC": None,
}
# the score of an entity that a component other than ner_plus and pii_patterns put in doc.ents
# (an entity_ruler) without a confidence: a rule's decision, scored as Presidio scores deny lists
RULE_SCORE = 1.0
SOURCE_MODEL, SOURCE_PATTERN, SOURCE_OTHER = "model", "pattern", "other"


@dataclass(frozen=True)
class ScoredEntity:
    """One entity of ``doc.ents`` as Presidio receives it.

    span: the entity (our label).
    entity_type: its Presidio name.
    score: what Presidio gets: the calibrated score (model), the rule's score (pattern) or
        ``RULE_SCORE`` (other, without ``Span._.confidence``).
    raw_score: the model's score before calibration (model), the rule's score (pattern), None.
    calibrated_score: the calibrated score (model; the raw one when the type has no
        calibrator), else None.
    threshold: the threshold the entity passed (model), else None: a rule decides.
    source: "model", "pattern" or "other".
    """

    span: Span
    entity_type: str
    score: float
    raw_score: Optional[float]
    calibrated_score: Optional[float]
    threshold: Optional[float]
    source: str


class NerPlusExplanation(AnalysisExplanation):
    """Presidio's AnalysisExplanation with what decided an entity of ours; ``to_dict`` (and the
    REST answer's ``analysis_explanation``) carries these fields too.

    label (str): our label. raw_score, calibrated_score, threshold (Optional[float]), source (str):
        as in ``ScoredEntity``.
    """

    def __init__(self, recognizer: str, entity: ScoredEntity) -> None:
        super().__init__(recognizer=recognizer, original_score=entity.score, textual_explanation=_explain(entity))
        self.label = entity.span.label_
        self.raw_score = entity.raw_score
        self.calibrated_score = entity.calibrated_score
        self.threshold = entity.threshold
        self.source = entity.source


def _explain(entity: ScoredEntity) -> str:
    what = f"Identified as {entity.entity_type} ({entity.span.label_}) by spacy-ner-plus"
    if entity.source == SOURCE_MODEL:
        return f"{what} ner_plus: calibrated score {entity.calibrated_score:.4f} (raw {entity.raw_score:.4f}) >= threshold {entity.threshold:.4f}"
    if entity.source == SOURCE_PATTERN:
        return f"{what} pii_patterns: a validated pattern, rule score {entity.raw_score:.2f}"
    return f"{what}: set by another component of the pipeline, score {entity.score:.2f}"


class NerPlusPipeline:
    """What the plug-in needs to know of a loaded pipeline: its ner_plus pipe (thresholds, span
    group), its pii_patterns span groups, the labels its components declare, and the mapping.

    nlp (Language): a pipeline with exactly one ner_plus component.
    mapping (Optional[Mapping[str, Optional[str]]]): overrides and additions to DEFAULT_MAPPING.
    RAISES (ValueError): no or several ner_plus components, a mapping value that is not a
        non-empty string or None, or a declared label without a mapping.
    """

    def __init__(self, nlp: Language, mapping: Optional[Mapping[str, Optional[str]]] = None) -> None:
        pipes = ner_plus_pipe_names(nlp)
        if len(pipes) != 1:
            raise ValueError(f"the pipeline has {len(pipes)} ner_plus components ({pipes}); the Presidio plug-in needs exactly one")
        self.nlp = nlp
        self.pipe = nlp.get_pipe(pipes[0])
        self.model_key: str = self.pipe.spans_key
        self.pattern_keys: List[str] = [
            nlp.get_pipe(name).spans_key for name in nlp.pipe_names if nlp.get_pipe_meta(name).factory == "pii_patterns"
        ]
        for label, name in (mapping or {}).items():
            if name is not None and (not isinstance(name, str) or not name):
                raise ValueError(f"mapping[{label!r}] is {name!r}: give a Presidio entity name, or None to drop the label")
        self.mapping: Dict[str, Optional[str]] = {**DEFAULT_MAPPING, **(mapping or {})}
        self.labels: List[str] = sorted(
            {
                label
                for name in nlp.pipe_names
                if "doc.ents" in nlp.get_pipe_meta(name).assigns
                for label in getattr(nlp.get_pipe(name), "labels", ())
            }
        )
        unmapped = [label for label in self.labels if label not in self.mapping]
        if unmapped:
            raise ValueError(
                f"no Presidio entity for label(s) {unmapped} of the pipeline: pass mapping={{label: 'PRESIDIO_NAME'}} "
                f"(or None to drop the label); DEFAULT_MAPPING knows {sorted(DEFAULT_MAPPING)}"
            )
        self.entity_types: List[str] = sorted({self.mapping[label] for label in self.labels if self.mapping[label] is not None})
        # the Presidio names enter the StringStore now, not while threads annotate
        for name in self.entity_types:
            nlp.vocab.strings.add(name)

    def entities(self, doc: Doc) -> List[ScoredEntity]:
        """``doc.ents`` with their Presidio names, scores and decisions (mapped to None: left out).
        Linear in the entities: each span group is indexed once.

        RAISES (ValueError): an entity whose label has no mapping.
        """
        thresholds = self.pipe.cfg.get("thresholds", {})
        index: Dict[Tuple[int, int, int], Tuple[str, float, float]] = {}
        for key, source in [(self.model_key, SOURCE_MODEL)] + [(k, SOURCE_PATTERN) for k in self.pattern_keys]:
            group = doc.spans.get(key)
            if group is None or SPAN_SCORES not in group.attrs:
                continue
            scores = group.attrs[SPAN_SCORES]
            raws = group.attrs.get(SPAN_RAW_SCORES, scores)
            index.update(((s.start, s.end, s.label), (source, float(c), float(r))) for s, c, r in zip(group, scores, raws))
        out = []
        for ent in doc.ents:
            if ent.label_ not in self.mapping:
                raise ValueError(
                    f"entity {ent.text!r} at characters {ent.start_char}-{ent.end_char} has label {ent.label_!r}, "
                    f"which no component declared and the mapping does not name: add it to mapping"
                )
            entity_type = self.mapping[ent.label_]
            if entity_type is None:
                continue
            found = index.get((ent.start, ent.end, ent.label))
            if found is None:
                confidence = ent._.confidence if ent.has_extension("confidence") else None
                score = RULE_SCORE if confidence is None else float(confidence)
                out.append(ScoredEntity(ent, entity_type, score, None, None, None, SOURCE_OTHER))
            elif found[0] == SOURCE_MODEL:
                _, calibrated, raw = found
                threshold = float(thresholds.get(ent.label_, 0.0))
                out.append(ScoredEntity(ent, entity_type, calibrated, raw, calibrated, threshold, SOURCE_MODEL))
            else:
                out.append(ScoredEntity(ent, entity_type, found[1], found[2], None, None, SOURCE_PATTERN))
        return out


class NerPlusNlpEngine(SpacyNlpEngine):
    """Presidio's NlpEngine over a loaded ner_plus pipeline (module docstring).

    ``load`` loads nothing (the pipeline is given), so nothing is downloaded. ``process_text`` runs
    the pipeline once per text, ``process_batch`` through ``nlp.pipe`` (Presidio's
    BatchAnalyzerEngine); the stop word and punctuation checks are SpacyNlpEngine's, on its vocab.

    nlp (Language): the pipeline; its ``lang`` is the one language served.
    mapping (Optional[Mapping[str, Optional[str]]]): see NerPlusPipeline.
    """

    engine_name = "spacy-ner-plus"

    def __init__(self, nlp: Language, *, mapping: Optional[Mapping[str, Optional[str]]] = None) -> None:
        self.pipeline = NerPlusPipeline(nlp, mapping)
        super().__init__(
            models=[{"lang_code": nlp.lang, "model_name": f"spacy-ner-plus:{nlp.meta.get('name', 'pipeline')}"}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping={k: v for k, v in self.pipeline.mapping.items() if v is not None},
                labels_to_ignore=[k for k, v in self.pipeline.mapping.items() if v is None],
            ),
        )
        self.nlp = {nlp.lang: nlp}

    def load(self) -> None:
        """Nothing to load: the pipeline was given."""

    def get_supported_entities(self) -> List[str]:
        """The Presidio names of the labels the pipeline declares."""
        return list(self.pipeline.entity_types)

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        """Run the pipeline on ``text`` once: its NlpArtifacts (``artifacts``)."""
        return self.artifacts(self.get_nlp(language)(text), language)

    def process_batch(
        self,
        texts: Iterable[Union[str, Tuple[str, Any]]],
        language: str,
        batch_size: int = 1,
        n_process: int = 1,
        as_tuples: bool = False,
    ) -> Iterator[Union[Tuple[str, NlpArtifacts], Tuple[str, NlpArtifacts, Any]]]:
        """``nlp.pipe`` over ``texts`` (``(text, context)`` pairs with ``as_tuples``): (text,
        NlpArtifacts) or (text, NlpArtifacts, context) per text, in order, as SpacyNlpEngine."""
        nlp = self.get_nlp(language)
        if as_tuples:
            for doc, context in nlp.pipe(((str(t), c) for t, c in texts), as_tuples=True, batch_size=batch_size, n_process=n_process):
                yield doc.text, self.artifacts(doc, language), context
        else:
            for doc in nlp.pipe((str(t) for t in texts), batch_size=batch_size, n_process=n_process):
                yield doc.text, self.artifacts(doc, language)

    def artifacts(self, doc: Doc, language: str) -> NlpArtifacts:
        """Presidio's view of an annotated Doc: ``tokens`` is the Doc itself, ``entities`` its
        entities under their Presidio names with ``scores`` as NerPlusPipeline.entities gives
        them, ``lemmas`` the pipeline's lemmas if it sets any, else each token's lowercased text."""
        entities = self.pipeline.entities(doc)
        lemmas = [t.lemma_ for t in doc] if doc.has_annotation("LEMMA") else [t.lower_ for t in doc]
        return NlpArtifacts(
            entities=[Span(doc, e.span.start, e.span.end, label=e.entity_type) for e in entities],
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=lemmas,
            nlp_engine=self,
            language=language,
            scores=[e.score for e in entities],
        )


class NerPlusRecognizer(LocalRecognizer):
    """Presidio's EntityRecognizer for the entities of a ner_plus pipeline (module docstring).

    Each result has our offsets (``start_char``/``end_char``: code points), the score Presidio
    compares with its thresholds (``ScoredEntity.score``), a ``NerPlusExplanation`` and
    ``recognition_metadata`` with this recognizer's name and identifier.

    nlp (Language): the pipeline, the same object the NerPlusNlpEngine serves (if one does).
    mapping (Optional[Mapping[str, Optional[str]]]): see NerPlusPipeline.
    supported_language (Optional[str]): default ``nlp.lang``.
    context (Optional[List[str]]): context words for Presidio's context enhancer; none by
        default, so our calibrated scores stay as they are.
    name (str): the recognizer's name in Presidio (``recognizer_name`` of each result).
    """

    def __init__(
        self,
        nlp: Language,
        *,
        mapping: Optional[Mapping[str, Optional[str]]] = None,
        supported_language: Optional[str] = None,
        context: Optional[List[str]] = None,
        name: str = "NerPlusRecognizer",
    ) -> None:
        self.pipeline = NerPlusPipeline(nlp, mapping)
        super().__init__(
            supported_entities=list(self.pipeline.entity_types),
            name=name,
            supported_language=supported_language or nlp.lang,
            context=context,
        )

    def load(self) -> None:
        """Nothing to load: the pipeline was given."""

    def analyze(self, text: str, entities: List[str], nlp_artifacts: Optional[NlpArtifacts] = None) -> List[RecognizerResult]:
        """The entities of ``text`` whose Presidio names are in ``entities``.

        The Doc of ``nlp_artifacts`` is used when a NerPlusNlpEngine serving this pipeline made
        it for this text; otherwise (another NlpEngine, no artifacts) the pipeline runs here.
        """
        doc = self._doc(text, nlp_artifacts)
        wanted = set(entities) & set(self.supported_entities)
        results = []
        for entity in self.pipeline.entities(doc):
            if entity.entity_type not in wanted:
                continue
            results.append(
                RecognizerResult(
                    entity_type=entity.entity_type,
                    start=entity.span.start_char,
                    end=entity.span.end_char,
                    score=entity.score,
                    analysis_explanation=NerPlusExplanation(self.name, entity),
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                    },
                )
            )
        return results

    def _doc(self, text: str, nlp_artifacts: Optional[NlpArtifacts]) -> Doc:
        engine = getattr(nlp_artifacts, "nlp_engine", None)
        doc = getattr(nlp_artifacts, "tokens", None)
        if (
            isinstance(engine, NerPlusNlpEngine)
            and engine.pipeline.nlp is self.pipeline.nlp
            and isinstance(doc, Doc)
            and doc.text == text
        ):
            return doc
        return self.pipeline.nlp(text)


def analyzer_engine(
    nlp_or_path: Union[Language, str, Path],
    *,
    keep_default_recognizers: bool = True,
    mapping: Optional[Mapping[str, Optional[str]]] = None,
    registry: Optional[RecognizerRegistry] = None,
    context_aware_enhancer: Optional[ContextAwareEnhancer] = None,
    default_score_threshold: float = 0.0,
) -> AnalyzerEngine:
    """Presidio's AnalyzerEngine with a ner_plus pipeline as its NLP engine and NER recognizer.

    Replaced: the NLP engine (NerPlusNlpEngine instead of a SpacyNlpEngine over en_core_web_lg)
    and Presidio's SpacyRecognizer (and its Stanza/Transformers subclasses), removed from the
    registry, by NerPlusRecognizer. Kept: every other recognizer (Presidio's predefined pattern
    recognizers, or those of ``registry``), the context enhancer (Presidio's
    LemmaContextAwareEnhancer by default), allow lists, ad-hoc recognizers, score thresholds,
    and so AnonymizerEngine works on the results unchanged.

    nlp_or_path (Union[Language, str, Path]): a loaded pipeline, or a path for ``spacy.load``.
    keep_default_recognizers (bool): without ``registry``, load Presidio's predefined
        recognizers of the pipeline's language (False: ours alone).
    mapping (Optional[Mapping[str, Optional[str]]]): overrides and additions to DEFAULT_MAPPING.
    registry (Optional[RecognizerRegistry]): the caller's registry (its supported languages must
        be the pipeline's language); its spaCy recognizers are removed and ours added, in place.
    context_aware_enhancer (Optional[ContextAwareEnhancer]): passed to AnalyzerEngine.
    default_score_threshold (float): Presidio's engine-wide threshold, on top of ours.
    RETURNS (AnalyzerEngine): ``.analyze(text, language="en")`` reports our entities.
    """
    nlp = nlp_or_path if isinstance(nlp_or_path, Language) else spacy.load(nlp_or_path)
    engine = NerPlusNlpEngine(nlp, mapping=mapping)
    if registry is None:
        registry = RecognizerRegistry(supported_languages=[nlp.lang])
        if keep_default_recognizers:
            registry.load_predefined_recognizers(languages=[nlp.lang], nlp_engine=engine)
    replace_spacy_recognizers(registry, NerPlusRecognizer(nlp, mapping=mapping))
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=engine,
        supported_languages=[nlp.lang],
        context_aware_enhancer=context_aware_enhancer,
        default_score_threshold=default_score_threshold,
    )


def replace_spacy_recognizers(registry: RecognizerRegistry, recognizer: NerPlusRecognizer) -> List[str]:
    """Remove Presidio's NLP-engine recognizers (SpacyRecognizer and its subclasses) from
    ``registry`` and add ``recognizer``, in place.

    RETURNS (List[str]): the names of the recognizers removed.
    """
    removed = [r.name for r in registry.recognizers if isinstance(r, SpacyRecognizer)]
    registry.recognizers = [r for r in registry.recognizers if not isinstance(r, SpacyRecognizer)]
    registry.add_recognizer(recognizer)
    return removed


__all__ = [
    "DEFAULT_MAPPING",
    "NerPlusExplanation",
    "NerPlusNlpEngine",
    "NerPlusPipeline",
    "NerPlusRecognizer",
    "ScoredEntity",
    "analyzer_engine",
    "replace_spacy_recognizers",
]
