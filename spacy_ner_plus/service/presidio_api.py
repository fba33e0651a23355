"""Presidio-compatible REST endpoints (docs/service-presidio.md): ``POST /analyze``,
``POST /anonymize``, ``GET /supportedentities``, ``GET /recognizers`` and ``GET /health``
answer the request and response shapes of Presidio's analyzer and anonymizer services,
so a client written for Presidio works against this server unchanged.

They are served by the same process as ``/v1`` and go through the same edges: Host
check, API key, ``Content-Type``, body limits, deadlines and the audit log (requests.py
lists their paths in ``API_PREFIXES``), and every body is read by ``Service.read_json``.

Where the semantics differ from Presidio's (the docs page says so to users):
- scores are our calibrated per-type scores, and each model type has its own threshold;
  ``score_threshold`` can only raise a type's threshold, and never above the bound the
  server and its policy allow (``--max-threshold``, ``max_threshold``): it cannot switch
  detection off. Rule matches (``pii_patterns``) are always reported, as on ``/v1``.
- ``entities: []`` means every type, as in Presidio's engine (an empty list is no filter);
  an unknown type is a 400 naming its position, not silently ignored.
- ``/anonymize`` applies the operator policy to every type, the client's own types
  included (they follow the policy's ``[default]``); and for every type the policy does
  not let a client exclude (``client_may_exclude = false``, the built-in default), the
  server adds its own detections of that type to the client's ``analyzer_results``, so
  sending no or partial results does not leave such a type visible.
- ``allow_list`` may clear only the types whose policy sets ``client_allow_list`` (a 403
  otherwise); ``allow_list_match: "regex"`` needs a full match of the entity's text (Presidio
  searches), and its expressions are checked for catastrophic backtracking and run with a time
  bound (adhoc.py, regex_safety.py). The policy's own allow and deny lists always apply.
- ``ad_hoc_recognizers`` (patterns, deny lists, ``context``) run with a time bound; the
  request's ``context`` words boost the ad-hoc recognisers' matches only: model scores are
  calibrated and never context-boosted. ``score_threshold`` drops the ad-hoc matches below it
  (they are the client's own rules), never the policy's deny-list or pattern matches.
- ``hash`` is the service's keyed token (keys.py), whatever ``hash_type`` says: a bare
  SHA-256 of a name can be reversed by hashing guesses.

Size: over 500 lines because it is one whole API surface: Presidio's request and response
models (about 130 lines of pydantic, needed for the OpenAPI schema), their mapping onto the
service's checks, and the five routes; split, the routes would import every other piece back.
"""
import asyncio
import re
import time
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

from .adhoc import apply_allow_list, compile_allow_list, compile_recognizers, word_spans
from .analysis import apply_policy_allow_lists
from .decision import Candidate, Decision, decide
from .operators import DEFAULT_KEY, Entity
from .policy import PolicyViolation, audit_counts
from .requests import ApiError
from .schemas import error_responses

HEALTH_TEXT = "spacy-ner-plus PII service is up"
# a client's own entity type (analyzer_results, anonymizers keys): Presidio's names are upper case
CLIENT_TYPE_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
CORRELATION_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
HASH_TYPES = ("sha256", "sha512")
SCORE_DIGITS = 6


def presidio_models() -> Dict[str, Any]:
    """The request and response bodies of the Presidio endpoints as pydantic models
    (requests are validated with them; all of them document the OpenAPI schema)."""
    from pydantic import BaseModel, ConfigDict, RootModel

    class PatternIn(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        name: str
        regex: str
        score: float

    class AdHocRecognizerIn(BaseModel):
        """Presidio's PatternRecognizer as a request sends it: regex patterns and/or a deny list."""

        model_config = ConfigDict(strict=True, extra="forbid")
        name: Optional[str] = None
        supported_language: str = "en"
        supported_entity: str
        patterns: Optional[List[PatternIn]] = None
        deny_list: Optional[List[str]] = None
        deny_list_score: Optional[float] = None
        context: Optional[List[str]] = None
        version: Optional[str] = None
        global_regex_flags: Optional[int] = None

    class PresidioAnalyzeRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        text: Union[str, List[str]]
        language: str
        entities: Optional[List[str]] = None
        score_threshold: Optional[float] = None
        correlation_id: Optional[str] = None
        return_decision_process: bool = False
        allow_list: Optional[List[str]] = None
        allow_list_match: Literal["exact", "regex"] = "exact"
        regex_flags: Optional[int] = None
        ad_hoc_recognizers: Optional[List[AdHocRecognizerIn]] = None
        context: Optional[List[str]] = None
        trace: Optional[bool] = None  # Presidio's tracing switch: accepted; the audit log is this server's trace

    class AnalyzerResultIn(BaseModel):
        """One entity of ``analyzer_results``: what /analyze answered, or the client's own."""

        model_config = ConfigDict(strict=True, extra="forbid")
        entity_type: str
        start: int
        end: int
        score: Optional[float] = None
        analysis_explanation: Optional[Dict[str, Any]] = None
        recognition_metadata: Optional[Dict[str, Any]] = None

    class AnonymizerIn(BaseModel):
        """An operator as Presidio's anonymizer names it and its parameters."""

        model_config = ConfigDict(strict=True, extra="forbid")
        type: str
        new_value: Optional[str] = None
        masking_char: Optional[str] = None
        chars_to_mask: Optional[int] = None
        from_end: Optional[bool] = None
        hash_type: Optional[str] = None

    class PresidioAnonymizeRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        text: str
        analyzer_results: List[AnalyzerResultIn]
        anonymizers: Optional[Dict[str, AnonymizerIn]] = None

    class AnalysisExplanationOut(BaseModel):
        recognizer: str
        pattern_name: Optional[str]
        pattern: Optional[str]
        original_score: Optional[float]
        score: Optional[float]
        textual_explanation: Optional[str]
        score_context_improvement: float
        supportive_context_word: str
        validation_result: Optional[bool]
        regex_flags: Optional[int]

    class RecognitionMetadataOut(BaseModel):
        recognizer_name: str
        recognizer_identifier: str
        source: str
        threshold: Optional[float]

    class RecognizerResultOut(BaseModel):
        entity_type: str
        start: int
        end: int
        score: float
        analysis_explanation: Optional[AnalysisExplanationOut]
        recognition_metadata: RecognitionMetadataOut

    class PresidioAnalyzeResponse(RootModel[Union[List[RecognizerResultOut], List[List[RecognizerResultOut]]]]):
        """A list of results for one text; one list per text when ``text`` is a list."""

    class OperatorResultOut(BaseModel):
        start: int
        end: int
        entity_type: str
        text: str
        operator: str

    class PresidioAnonymizeResponse(BaseModel):
        text: str
        items: List[OperatorResultOut]

    class NameList(RootModel[List[str]]):
        """Entity types (/supportedentities) or recognizer names (/recognizers)."""

    return {k: v for k, v in locals().items() if isinstance(v, type)}


def presidio_field_names() -> set:
    """The field names of the Presidio request bodies (nested ones included): names the server
    publishes, so an error may name them."""
    pm = presidio_models()
    return _field_names(pm["PresidioAnalyzeRequest"]) | _field_names(pm["PresidioAnonymizeRequest"])


def _field_names(model) -> set:
    """Every field name of a pydantic model and of the models nested in it."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for arg in _nested_types(info.annotation):
            if hasattr(arg, "model_fields"):
                names |= _field_names(arg)
    return names


def _nested_types(annotation) -> list:
    from typing import get_args

    out = [annotation]
    for arg in get_args(annotation):
        out.extend(_nested_types(arg))
    return out


def inlined_schema(model) -> Dict[str, Any]:
    """``model``'s JSON schema with its nested models written in place: the request body of an
    OpenAPI operation cannot refer to pydantic's own ``$defs``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node):
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(defs[ref[len("#/$defs/") :]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


def recognizer_names(model) -> Dict[str, str]:
    """The recognizer name per candidate source: the pipeline's component names."""
    from ..pipeline.ner_plus import ner_plus_pipe_names

    names = {"model": ner_plus_pipe_names(model.nlp)[0], "other": "preset_entities"}
    patterns = [n for n in model.nlp.pipe_names if model.nlp.get_pipe_meta(n).factory == "pii_patterns"]
    if patterns:
        names["pattern"] = patterns[0]
    return names


def check_language(model, language: Optional[str], field: str) -> None:
    """400 naming ``language`` unless it is the served pipeline's language."""
    if language is not None and language != model.nlp.lang:
        raise ApiError(400, "unsupported_language", f"{field} '{language}' is not supported; this server analyzes: ['{model.nlp.lang}']", field)


def raised_thresholds(service, model, score_threshold: Optional[float]) -> Dict[str, float]:
    """The thresholds of one /analyze request: ``score_threshold`` raises a model type's
    threshold up to the type's upper bound (server and policy), never lowers it.

    RAISES (ApiError): a score_threshold outside [0, 1] (422).
    """
    if score_threshold is None:
        return service.effective_thresholds(model, None)
    if not 0.0 <= score_threshold <= 1.0:
        raise ApiError(422, "invalid_field", "score_threshold must lie in [0, 1]", "score_threshold")
    raised = {label: max(t, min(score_threshold, model.bounds[label][1])) for label, t in model.thresholds.items()}
    return service.effective_thresholds(model, {k: v for k, v in raised.items() if v != model.thresholds[k]})


def analyzer_types(model, entities: Optional[List[str]], extra_types: Sequence[str]) -> Optional[List[str]]:
    """The ``entities`` filter: None or [] is every type; an unknown type is a 400 naming its position."""
    if not entities:
        return None
    known = set(model.labels) | set(extra_types)
    for i, label in enumerate(entities):
        if label not in known:
            raise ApiError(400, "unknown_entity_type", f"unknown entity type at entities.{i}; known: {sorted(known)}", f"entities.{i}")
    return list(entities)


def result_json(
    c: Candidate, threshold: Optional[float], names: Dict[str, str], thresholds_from: Dict[str, str], explain: bool
) -> Dict[str, Any]:
    """One entity in Presidio's RecognizerResult shape; a rule match without a score scores 1.0."""
    recognizer = c.recognizer or names.get(c.source, c.source)
    score = 1.0 if c.score is None else round(c.score, SCORE_DIGITS)
    explanation = None
    if explain:
        original = c.score if c.raw_score is None else c.raw_score
        lines = []
        if c.source == "model":
            lines.append(f"{c.label}: calibrated score {score:.4f} >= threshold {threshold:.4f} ({thresholds_from.get(c.label, 'pipeline')})")
            if c.raw_score is not None:
                lines.append(f"score before calibration {c.raw_score:.4f}")
            if c.windows is not None:
                lines.append(f"long text: {c.windows[1]} of the {c.windows[0]} windows covering it agree")
        elif c.source in ("ad_hoc", "deny_list"):
            how = f"pattern {c.pattern}" if c.pattern else "deny list"
            lines.append(f"{c.label}: {how} of the recognizer {recognizer}" + (" (the server's policy)" if recognizer.startswith("deny_list:") else " (this request's)"))
        else:
            lines.append(f"{c.label}: matched by the rule component {recognizer}: rule matches are always reported")
        explanation = {
            "recognizer": recognizer,
            "pattern_name": c.pattern,
            "pattern": None,  # a client's regex is not echoed back
            "original_score": None if original is None else round(original, SCORE_DIGITS),
            "score": score,
            "textual_explanation": "\n".join(lines),
            "score_context_improvement": 0.0 if original is None or c.context_word is None else round(score - original, SCORE_DIGITS),
            "supportive_context_word": c.context_word or "",
            "validation_result": None,
            "regex_flags": None,
        }
    return {
        "entity_type": c.label,
        "start": c.start,
        "end": c.end,
        "score": score,
        "analysis_explanation": explanation,
        "recognition_metadata": {
            "recognizer_name": recognizer,
            "recognizer_identifier": recognizer,
            "source": c.source,
            "threshold": None if threshold is None else round(threshold, SCORE_DIGITS),
        },
    }


def operator_spec(anonymizers: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Presidio's ``anonymizers`` as the service's ``operators`` spec (operators.parse_operators).

    RAISES (ApiError): a key that is no entity type name, an unknown ``hash_type``.
    """
    spec: Dict[str, Dict[str, Any]] = {}
    for i, (key, op) in enumerate((anonymizers or {}).items()):
        if key != DEFAULT_KEY and not CLIENT_TYPE_PATTERN.match(key):
            raise ApiError(400, "unknown_entity_type", f"anonymizers.#{i}: an entity type name is letters, digits and _ (at most 64)", f"anonymizers.#{i}")
        params = op.model_dump(exclude_none=True)
        hash_type = params.pop("hash_type", None)
        if hash_type is not None:
            if params["type"] != "hash":
                raise ApiError(422, "invalid_field", f"anonymizers.{key}.hash_type: only the hash operator has a hash_type", f"anonymizers.{key}.hash_type")
            if hash_type not in HASH_TYPES:
                raise ApiError(422, "invalid_field", f"anonymizers.{key}.hash_type must be one of {list(HASH_TYPES)}", f"anonymizers.{key}.hash_type")
        spec[key] = params
    return spec


def renamed(err: ApiError) -> ApiError:
    """An error of Service.parse_ops, whose fields say ``operators``, as /anonymize names them."""
    message = err.message.replace("operators.", "anonymizers.").replace("in operators", "in anonymizers")
    field = None if err.field is None else re.sub(r"^operators", "anonymizers", err.field)
    return ApiError(err.status, err.kind, message, field, err.headers)


def check_results(results: Sequence[Any], text: str) -> None:
    """``analyzer_results``: offsets inside ``text`` and a type name (422/400 naming the item)."""
    for i, r in enumerate(results):
        if not 0 <= r.start < r.end <= len(text):
            where = f"analyzer_results.{i}"
            raise ApiError(422, "invalid_field", f"{where}: need 0 <= start < end <= len(text) ({len(text)} characters)", f"{where}.start")
        if not CLIENT_TYPE_PATTERN.match(r.entity_type):
            where = f"analyzer_results.{i}.entity_type"
            raise ApiError(400, "unknown_entity_type", f"{where}: an entity type name is letters, digits and _ (at most 64)", where)


def add_presidio_routes(app, service, models: Dict[str, Any]) -> None:
    """Register the Presidio-compatible endpoints (module docstring) on ``app``.

    app (FastAPI): the app of service/app.py.
    service (Service): its state; every request goes through its checks.
    models (Dict[str, Any]): schemas.response_models(), for the error answers' schema.
    """
    from fastapi import Query, Request
    from fastapi.responses import PlainTextResponse

    pm = presidio_models()
    # the policy's deny lists, compiled once by the service (as /v1 uses them): every /analyze reports their words
    policy_deny = service.deny_recognizers
    service.public_names |= presidio_field_names()
    errors = error_responses(models, 400, 401, 403, 413, 415, 421, 422, 503)

    def body_doc(schema) -> Dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": inlined_schema(schema)}}}}

    @app.post(
        "/analyze", tags=["presidio"], openapi_extra=body_doc(pm["PresidioAnalyzeRequest"]),
        responses={200: {"model": pm["PresidioAnalyzeResponse"]}, **errors},
    )  # fmt: skip
    async def presidio_analyze(request: Request):
        """Presidio's analyze: the entities of ``text`` (a list), or one list per text of a list of texts."""
        model = service.require_model()
        req = await service.read_json(request, pm["PresidioAnalyzeRequest"], model)
        audit = request.state.audit
        check_language(model, req.language, "language")
        if req.correlation_id is not None:
            if not CORRELATION_ID_PATTERN.match(req.correlation_id):
                raise ApiError(422, "invalid_field", f"correlation_id must match {CORRELATION_ID_PATTERN.pattern}", "correlation_id")
            audit["correlation_id"] = req.correlation_id
        batch = isinstance(req.text, list)
        texts = req.text if batch else [req.text]
        audit.update({"n_texts": len(texts), "input_chars": sum(len(t) for t in texts)})
        service.check_texts(model, texts, "text")
        specs = [r.model_dump(exclude_none=True) for r in req.ad_hoc_recognizers or []]
        if req.regex_flags is not None:
            for spec in specs:  # Presidio's request-wide flags: a recogniser's own global_regex_flags win
                spec.setdefault("global_regex_flags", req.regex_flags)
        if req.context:
            for spec in specs:  # the request's context words serve every ad-hoc recogniser
                spec["context"] = list(dict.fromkeys(spec.get("context", []) + req.context))
        recognizers = compile_recognizers(specs or None) + policy_deny
        types = analyzer_types(model, req.entities, [r.entity for r in recognizers])
        # an empty list clears nothing (Presidio clients send [] by default): nothing for the policy to refuse
        allow = compile_allow_list(req.allow_list or None, req.allow_list_match)
        permitted = None
        if allow is not None:
            try:
                permitted = service.policy.check_allow_list(types or sorted(set(model.labels) | {r.entity for r in recognizers}), endpoint="/analyze")
            except PolicyViolation as err:
                raise ApiError(403, "policy_violation", str(err), err.field) from None
        thresholds = raised_thresholds(service, model, req.score_threshold)
        thresholds_from = {k: "request score_threshold" for k, v in thresholds.items() if v != model.thresholds[k]}
        names = recognizer_names(model)
        predicted = await service.predict(texts, request.state.deadline)
        if recognizers:
            try:
                found = await asyncio.wait_for(asyncio.to_thread(run_recognizers, recognizers, texts), max(0.0, request.state.deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise service.deadline_error() from None
            floor = req.score_threshold or 0.0
            predicted = [sorted(p + [c for c in f if c.source != "ad_hoc" or (c.score or 0.0) >= floor], key=lambda c: (c.start, c.end, c.label)) for p, f in zip(predicted, found)]
        removed = {"removed": 0, "kept_by_policy": 0, "policy_allow_list": 0}
        for i, text in enumerate(texts):
            kept, policy_removed = apply_policy_allow_lists(text, predicted[i], service.policy)
            removed["policy_allow_list"] += policy_removed
            if allow is not None:
                kept, counts = apply_allow_list(text, kept, allow, req.allow_list_match, permitted)
                removed["removed"] += counts["removed"]
                removed["kept_by_policy"] += counts["kept_by_policy"]
            predicted[i] = kept
        decisions = [decide(c, thresholds, types) for c in predicted]
        # the types of a request's own recognisers are the client's names: counted apart, so the
        # metrics' label values stay the server's types
        known = set(model.labels)
        service.record(audit, [Decision(d.entities, {k: v for k, v in d.counts.items() if k in known}, d.scores) for d in decisions], thresholds)
        audit["ad_hoc_recognizers"] = len(specs)
        audit["ad_hoc_entities"] = sum(1 for d in decisions for c, _ in d.entities if c.label not in known)
        audit["allow_list"] = {k: v for k, v in removed.items() if v}
        results = [[result_json(c, t, names, thresholds_from, req.return_decision_process) for c, t in d.entities] for d in decisions]
        return results if batch else results[0]

    @app.post(
        "/anonymize", tags=["presidio"], openapi_extra=body_doc(pm["PresidioAnonymizeRequest"]),
        responses={200: {"model": pm["PresidioAnonymizeResponse"]}, **errors},
    )  # fmt: skip
    async def presidio_anonymize(request: Request):
        """Presidio's anonymize: ``text`` with each of ``analyzer_results`` (plus the server's own
        detections of the types the policy keeps in) replaced by its type's operator."""
        model = service.require_model()
        req = await service.read_json(request, pm["PresidioAnonymizeRequest"], model)
        audit = request.state.audit
        audit.update({"n_texts": 1, "input_chars": len(req.text), "client_results": len(req.analyzer_results)})
        service.check_texts(model, [req.text], "text")
        check_results(req.analyzer_results, req.text)
        spec = operator_spec(req.anonymizers)
        labels = sorted(set(model.labels) | {r.entity_type for r in req.analyzer_results} | (set(spec) - {DEFAULT_KEY}))
        try:
            operators = service.parse_ops(model, spec, labels)
            hasher = service.hasher_for(operators, request.state.client_id)
        except ApiError as err:
            raise renamed(err) from None
        audit["operators"] = {key: op.name for key, op in sorted(operators.items()) if key in spec or key in model.labels}
        kept_in = [label for label in model.labels if not service.policy.for_type(label).client_may_exclude]
        thresholds = service.effective_thresholds(model, None)
        decision = Decision([], {}, [])
        if kept_in:
            (candidates,) = await service.predict([req.text], request.state.deadline)
            deny = [r for r in policy_deny if r.entity in kept_in]
            if deny:
                (denied,) = await asyncio.to_thread(run_recognizers, deny, [req.text])
                candidates = candidates + denied
            candidates, _ = apply_policy_allow_lists(req.text, candidates, service.policy)
            decision = decide(candidates, thresholds, kept_in)
        service.record(audit, [decision], thresholds)
        entities = [Entity(r.start, r.end, r.entity_type, r.score) for r in req.analyzer_results]
        entities += [Entity(c.start, c.end, c.label, c.score) for c, _ in decision.entities]
        audit["added_by_policy"] = len(decision.entities)
        output, items = service.apply_redaction(req.text, entities, operators, hasher)
        record_applied(service, audit, items, entities)
        return {
            "text": output,
            "items": [{"start": i.start, "end": i.end, "entity_type": i.entity_type, "text": output[i.start : i.end], "operator": i.operator} for i in items],
        }

    language_query = Query(None, description="ISO 639-1 code; this server analyzes its pipeline's language only")
    list_responses = {200: {"model": pm["NameList"]}, **error_responses(models, 400, 401, 421, 503)}

    @app.get("/supportedentities", tags=["presidio"], responses=list_responses)
    async def presidio_supported_entities(language: Optional[str] = language_query):
        """The entity types this server detects (Presidio's supportedentities)."""
        model = service.require_model()
        check_language(model, language, "language")
        return list(model.labels)

    @app.get("/recognizers", tags=["presidio"], responses=list_responses)
    async def presidio_recognizers(language: Optional[str] = language_query):
        """The recognizers whose names /analyze cites in recognition_metadata: the pipeline's components."""
        model = service.require_model()
        check_language(model, language, "language")
        names = recognizer_names(model)
        return [names[s] for s in ("model", "pattern") if s in names]

    @app.get(
        "/health", tags=["presidio"], response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, 503: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(models, 421)},
    )  # fmt: skip
    async def presidio_health():
        """Presidio's health probe: plain text, 200 while the process serves or loads (as /healthz)."""
        if service.load_error is not None:
            return PlainTextResponse("spacy-ner-plus PII service cannot serve its model", status_code=503)
        return PlainTextResponse(HEALTH_TEXT)


def run_recognizers(recognizers: Sequence[Any], texts: Sequence[str]) -> List[List[Candidate]]:
    """Every match of the ad-hoc and deny-list recognisers per text (a worker thread: each
    recogniser's regexes are time-bounded, adhoc.py), the words of a text scanned once."""
    out = []
    for text in texts:
        words = word_spans(text)
        out.append([c for r in recognizers for c in r.find(text, words)])
    return out


def record_applied(service, audit: Dict[str, Any], items: Sequence[Any], entities: Sequence[Entity]) -> None:
    """What was applied, per type, into the audit record and the metrics (as /v1/redact records it)."""
    applied: Dict[str, Dict[str, int]] = {}
    for label, op_name, outcome in audit_counts(items, entities):
        counts = audit["entities"].setdefault(label, {"detected": 0, "redacted": 0, "below_threshold": 0, "near_threshold": 0})
        counts[outcome] = counts.get(outcome, 0) + 1
        applied.setdefault(label, {}).setdefault(op_name, 0)
        applied[label][op_name] += 1
        # a client's own type names are unbounded: the metrics count them as one series
        service.metrics.entities.labels(label if label in service.model.labels else "CLIENT_TYPE", outcome).inc()
    audit["applied"] = applied
