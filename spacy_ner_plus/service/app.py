"""The PII service: ``python -m spacy_ner_plus serve MODEL`` (FastAPI on uvicorn).

Endpoints (README, "PII redaction service"): ``POST /v1/analyze``,
``POST /v1/redact``, ``GET /v1/entities``, ``GET /v1/config``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` and ``GET /``, a page to try them (page.py).

How a request becomes entities:
- One thread, the :class:`MicroBatcher`, owns every call into the pipeline
  (tokenizer included). Request handlers queue their texts; the batcher
  takes what arrived within ``batch_wait_ms`` of the oldest text (up to
  ``batch_tokens`` tokens) and predicts it with one ``nlp.pipe`` call, so
  concurrent requests share forward passes. A text whose batch fails is
  predicted again on its own, so one bad text fails only its own request.
- Decisions come from the ner_plus span group, which holds every decoded
  candidate with its calibrated score, not from ``doc.ents``: a request may
  move a type's threshold within the operator's bounds and the service
  filters the candidates itself. Per type: *detected* (score >= threshold),
  *below_threshold* (decoded but not reported), *near_threshold* (|score -
  threshold| < 0.1, on either side; also counted in one of the other two).
- Entities another component put in ``doc.ents`` before ner_plus (the
  ``pii_patterns`` component: ``source`` "pattern"; an entity ruler:
  "other") are rule decisions: they are always reported, with their rule
  score if they have one; thresholds apply to the model's calibrated scores
  only.

Privacy: the audit log (one JSON line per ``/v1`` request), the metrics and
the server's own log never hold an input, an entity's text or an output.
Error responses name the offending field but log only the error's kind; an
internal error is logged as its exception class and stack frames, without
its message (messages can quote the input). Error bodies never quote the
request either: a key the server does not know is named by its position
(``thresholds.#0``), and no response carries the server's file paths.

Edges (docs/service-deploy.md): the Host header must be an allowed name (421
otherwise: DNS rebinding); ``/v1``, ``/metrics`` and ``/openapi.json`` need
``Authorization: Bearer KEY`` when the server has API keys (service/auth.py;
required unless it binds loopback); a POST must say ``Content-Type:
application/json`` (415: a cross-site form POST never reaches a handler); the
raw body is checked for size, nesting depth and UTF-8 before it is parsed,
and for lone surrogates before any model work; every request has a deadline.
"""
import asyncio
import json
import logging
import math
import os
import re
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set

from .auth import ApiKeys, default_allowed_hosts, host_name, is_loopback
from .batcher import DeadlineExceeded, MicroBatcher, QueueFull
from .decision import NEAR_THRESHOLD, Candidate, Decision, ServedModel, short_hash, decide
from .keys import HashKeyError
from .observability import AuditWriteError, Metrics, frames_only, make_audit_logger
from .operators import _PARAMS, DEFAULT_KEY, OPERATOR_NAMES, Entity, Operator, OperatorError, OutputTooLarge, RedactionRefused, parse_operators, redact
from .policy import Policy, PolicyViolation, audit_counts, load_policy
from .settings import HASH_KEY_ENV, SETTINGS_ENV, ServeSettings, load_hash_key

CLIENT_ID_HEADER = "X-Client-ID"
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
SCORE_DIGITS = 6
WARMUP_TEXT = "Anna Keller from Helios Bank wrote to anna.keller@example.com about the office in Berlin on 3 May 2021 ."
# paths that need an API key when the server has keys (the page, /healthz and /readyz do not)
PROTECTED_PREFIXES = ("/v1/", "/metrics", "/openapi.json", "/docs", "/redoc")
_STRUCTURAL = b"[]{}"
_DELETE_NON_STRUCTURAL = bytes(b for b in range(256) if b not in _STRUCTURAL)
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')

log = logging.getLogger("spacy_ner_plus.serve")


# --- errors ------------------------------------------------------------------------
class ApiError(Exception):
    """An error answered to the client: status, a kind for the audit log, the field it names."""

    def __init__(self, status: int, kind: str, message: str, field: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        self.headers = headers or {}


def json_too_deep(raw: bytes, limit: int) -> bool:
    """Whether arrays/objects in ``raw`` nest deeper than ``limit``, read from the bytes
    (string contents skipped) so a 200,000-deep body never reaches the recursive parser.
    Linear in the body."""
    structural = _JSON_STRING.sub(b"", raw).translate(None, _DELETE_NON_STRUCTURAL)
    if structural.count(b"[") + structural.count(b"{") <= limit:
        return False
    depth = 0
    for byte in structural:
        if byte == 91 or byte == 123:  # [ {
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def _safe_path(parts: Sequence[Any], body: Any, vocabulary: Set[str]) -> str:
    """A dotted path into ``body`` that quotes no request content: list indices and names the
    server knows (field names, entity types, operator names) as they are, any other object key
    as ``#N``, its position among its object's keys."""
    out: List[str] = []
    node = body
    for part in parts:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            out.append(part if part in vocabulary else f"#{list(node).index(part)}")
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(str(part))
            node = node[part]
        elif isinstance(part, int):
            out.append(str(part))
            node = None
        else:  # not a key of the body (pydantic's own location tags): only known names pass
            if isinstance(part, str) and part in vocabulary:
                out.append(part)
            node = None
    return ".".join(out) or "body"


def _strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings_in(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings_in(v)


def _first_surrogate(value: Any, parts: List[Any]) -> Optional[List[Any]]:
    """The path of the first string (key or value) holding a lone surrogate, else None."""
    if isinstance(value, str):
        try:
            value.encode("utf8")
        except UnicodeEncodeError:
            return parts
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            try:
                k.encode("utf8")
            except UnicodeEncodeError:
                return parts + [k]
            found = _first_surrogate(v, parts + [k])
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _first_surrogate(v, parts + [i])
            if found is not None:
                return found
    return None


# --- request and response bodies ---------------------------------------------------------
def _request_models():
    from pydantic import BaseModel, ConfigDict

    class AnalyzeRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        text: Optional[str] = None
        texts: Optional[List[str]] = None
        entities: Optional[List[str]] = None
        thresholds: Optional[Dict[str, float]] = None
        return_text: bool = False

    class RedactRequest(BaseModel):
        model_config = ConfigDict(strict=True, extra="forbid")
        text: str
        operators: Optional[Dict[str, Any]] = None
        entities: Optional[List[str]] = None
        thresholds: Optional[Dict[str, float]] = None

    return AnalyzeRequest, RedactRequest


def _response_models() -> Dict[str, Any]:
    """The answers as pydantic models: they only document the OpenAPI schema (the
    handlers build plain dicts), so a schema-driven client or fuzzer can check them."""
    from pydantic import BaseModel

    class ErrorDetail(BaseModel):
        kind: str
        message: str
        field: Optional[str]

    class ErrorResponse(BaseModel):
        error: ErrorDetail
        request_id: str

    class EntityOut(BaseModel):
        entity_type: str
        start: int
        end: int
        score: Optional[float]
        threshold: Optional[float]
        source: str
        text: Optional[str] = None

    class ModelOut(BaseModel):
        name: str
        version: str
        calibration: Dict[str, str]
        config_hash: str

    class AnalyzeResponse(BaseModel):
        request_id: str
        model: ModelOut
        results: Any  # a list of EntityOut for "text", one such list per text for "texts"

    class RedactedItemOut(BaseModel):
        entity_type: str
        start: int
        end: int
        operator: str

    class RedactResponse(BaseModel):
        request_id: str
        text: str
        items: List[RedactedItemOut]

    class EntityTypeOut(BaseModel):
        entity_type: str
        sources: List[str]
        threshold: Optional[float] = None
        min_threshold: Optional[float] = None
        max_threshold: Optional[float] = None

    class EntitiesResponse(BaseModel):
        entities: List[EntityTypeOut]

    class Probe(BaseModel):
        status: str
        reason: Optional[str] = None
        config_hash: Optional[str] = None

    return {k: v for k, v in locals().items() if isinstance(v, type)}


def _error_responses(models: Dict[str, Any], *statuses: int) -> Dict[int, Any]:
    described = {
        400: "bad request: unknown entity type or operator, invalid Unicode, nesting too deep, bad X-Client-ID",
        401: "no or unknown API key",
        403: "the operator policy refuses the request (docs/service-policy.md)",
        413: "body, text or request over a limit",
        415: "the body is not Content-Type: application/json",
        421: "Host header not allowed",
        422: "invalid JSON or a field of the wrong type",
        503: "not ready, overloaded, or the request deadline passed",
    }
    return {s: {"model": models["ErrorResponse"], "description": described[s]} for s in statuses}


# --- the service ----------------------------------------------------------------------
class ModelUnavailable(RuntimeError):
    """The model or the settings cannot serve: the message says why."""


class Service:
    """State of one worker process: the model, the batcher, metrics, the audit log,
    the API keys and the request checks.

    RAISES (ValueError): settings that cannot serve (a non-loopback address without API keys,
        a wildcard address without allowed hosts, an unreadable key file).
    """

    def __init__(self, settings: ServeSettings) -> None:
        from prometheus_client import Counter

        self.settings = settings
        self.api_keys: Optional[ApiKeys] = ApiKeys.from_file(settings.api_keys_file) if settings.api_keys_file else None
        if self.api_keys is None and not is_loopback(settings.host):
            raise ValueError(f"binding {settings.host} (not loopback) needs API keys: --api-keys PATH (docs/service-deploy.md)")
        self.allowed_hosts = {h.lower() for h in (settings.allowed_hosts or default_allowed_hosts(settings.host))}
        if not self.allowed_hosts:
            raise ValueError(f"binding {settings.host} needs --allowed-hosts: the names clients use to reach it (DNS rebinding)")
        self.keyring = load_hash_key(settings)
        self.policy = load_policy(settings.policy)
        self.metrics = Metrics(multiprocess="PROMETHEUS_MULTIPROC_DIR" in os.environ)
        registry = self.metrics.registry
        self.errors = Counter("ner_plus_errors_total", "Error answers by kind (401, 413, 503 deadline_exceeded, ...)", ["kind"], registry=registry)
        self.expired = Counter("ner_plus_expired_texts_total", "Queued texts dropped because their request's deadline passed", registry=registry)
        self.audit: Optional[logging.Logger] = None
        if settings.audit_log:
            path = settings.audit_log if settings.workers <= 1 else f"{settings.audit_log}.{os.getpid()}"
            self.audit = make_audit_logger(path, settings.audit_max_bytes, settings.audit_backups)
        self.model: Optional[ServedModel] = None
        self.batcher: Optional[MicroBatcher] = None
        self.ready = threading.Event()
        self.load_error: Optional[str] = None  # why the model cannot serve (no file paths: it is answered)
        self.AnalyzeRequest, self.RedactRequest = _request_models()

    # lifecycle
    def load(self) -> None:
        """Load the model and warm it up.

        RAISES (ModelUnavailable): it cannot serve; the message says why, without file paths.
        """
        started = time.perf_counter()
        try:
            model = load_served_model(self.settings, self.policy, self.keyring is not None)
            batcher = MicroBatcher(
                model.nlp, model.candidates, self.settings.batch_tokens, self.settings.batch_wait_ms / 1000.0, self.settings.queue_chars,
                on_batch=self._observe_batch, on_expired=self.expired.inc,
            )
            batcher.start()
            self.model, self.batcher = model, batcher
            batcher.submit([WARMUP_TEXT, WARMUP_TEXT * 4])[1].result()
        except Exception as err:
            reason = self.public_reason(err)
            self.load_error = reason
            raise ModelUnavailable(reason) from None
        warning = uncalibrated_warning(model)
        if warning:
            log.warning(warning)
        self.metrics.model_info.labels(model.info["name"], model.info["version"], model.config_hash).set(1)
        self.ready.set()
        log.info("ready: %s %s (config %s), types %s, in %.1f s", model.info["name"], model.info["version"], model.config_hash, model.labels, time.perf_counter() - started)

    def load_in_background(self) -> None:
        try:
            self.load()
        except ModelUnavailable as err:
            log.error("cannot serve %s: %s", self.settings.model, err)

    def public_reason(self, err: BaseException) -> str:
        """``err`` as a sentence for /readyz and /v1 answers: the model's path becomes MODEL."""
        reason = f"{type(err).__name__}: {err}" if not isinstance(err, ModelUnavailable) else str(err)
        for path in sorted({self.settings.model, os.path.abspath(self.settings.model), os.path.realpath(self.settings.model)}, key=len, reverse=True):
            reason = reason.replace(path, "MODEL")
        if self.settings.code:
            reason = reason.replace(self.settings.code, "CODE")
        return reason

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close(timeout=60.0)

    def _observe_batch(self, n_texts: int, n_tokens: int) -> None:
        self.metrics.batch_texts.observe(n_texts)
        self.metrics.batch_tokens.observe(n_tokens)

    def require_model(self) -> ServedModel:
        if self.load_error is not None:  # no retry hint: retrying cannot help
            raise ApiError(503, "model_unavailable", f"the model cannot be served: {self.load_error}")
        if self.model is None or not self.ready.is_set():
            raise ApiError(503, "not_ready", "the model is loading; retry when GET /readyz answers 200", headers={"Retry-After": "1"})
        return self.model

    def vocabulary(self, model: ServedModel) -> Set[str]:
        """Names the server itself publishes: echoing them quotes nothing of a request."""
        fields = set(self.AnalyzeRequest.model_fields) | set(self.RedactRequest.model_fields)
        params = {p for ps in _PARAMS.values() for p in ps}
        return fields | set(model.labels) | {DEFAULT_KEY, "type"} | set(OPERATOR_NAMES) | params

    # request checks
    async def read_json(self, request, schema, model: ServedModel):
        """The request body: size, nesting depth and UTF-8 checked on the bytes, then parsed,
        checked for lone surrogates and validated against ``schema``."""
        from pydantic import ValidationError

        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body_too_large", f"the body has {declared} bytes; the limit is {limit}", "body")
        chunks: List[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"the body exceeds the limit of {limit} bytes", "body")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if json_too_deep(raw, self.settings.max_json_depth):
            raise ApiError(400, "too_deep", f"arrays and objects nest deeper than {self.settings.max_json_depth} levels", "body")
        try:
            body = raw.decode("utf8")
        except UnicodeDecodeError as err:
            raise ApiError(400, "invalid_encoding", f"the body is not UTF-8 (byte {err.start})", "body") from None
        try:
            data = json.loads(body)
        except json.JSONDecodeError as err:
            raise ApiError(422, "invalid_json", f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", "body") from None
        except RecursionError:  # json_too_deep counts brackets; this is the parser's own limit
            raise ApiError(400, "too_deep", "arrays and objects nest too deep", "body") from None
        vocabulary = self.vocabulary(model)
        request.state.foreign = sorted({s for s in _strings_in(data) if s not in vocabulary and len(s) >= 3}, key=len, reverse=True)
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_field", f"the body must be a JSON object, not {type(data).__name__}", "body")
        bad = _first_surrogate(data, [])
        if bad is not None:
            where = _safe_path(bad, data, vocabulary)
            raise ApiError(400, "invalid_unicode", f"{where} holds a lone surrogate (\\ud800-\\udfff escape without its pair): not a Unicode character", where)
        try:
            return schema.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_input=False, include_url=False, include_context=False)[0]
            where = _safe_path(first["loc"], data, vocabulary)
            raise ApiError(422, "invalid_field", f"{where}: {first['msg']}", where) from None

    def check_texts(self, model: ServedModel, texts: List[str], field_name: str) -> None:
        if len(texts) > self.settings.max_texts:
            raise ApiError(413, "too_many_texts", f"{len(texts)} texts; the limit is {self.settings.max_texts}", field_name)
        for i, text in enumerate(texts):
            if len(text) > model.nlp.max_length:
                where = field_name if field_name == "text" else f"{field_name}.{i}"
                raise ApiError(413, "text_too_long", f"{where} has {len(text)} characters; the limit is {model.nlp.max_length}", where)
        total = sum(len(t) for t in texts)
        if total > self.settings.queue_chars:
            raise ApiError(413, "request_too_large", f"the request holds {total} characters; the server queues at most {self.settings.queue_chars}", field_name)

    @staticmethod
    def check_types(model: ServedModel, types: Optional[List[str]]) -> Optional[List[str]]:
        if types is None:
            return None
        for i, label in enumerate(types):
            if label not in model.labels:
                raise ApiError(400, "unknown_entity_type", f"unknown entity type at entities.{i}; known: {model.labels}", f"entities.{i}")
        return types

    @staticmethod
    def effective_thresholds(model: ServedModel, overrides: Optional[Dict[str, float]]) -> Dict[str, float]:
        thresholds = dict(model.thresholds)
        for i, (label, value) in enumerate((overrides or {}).items()):
            if label not in model.thresholds:
                if label in model.pattern_labels:
                    where = f"thresholds.{label}"
                    raise ApiError(400, "unknown_entity_type", f"{label} in thresholds is a pattern type: rule matches are always reported", where)
                where = f"thresholds.#{i}"
                raise ApiError(400, "unknown_entity_type", f"unknown entity type at {where} (the key at position {i}); known: {model.model_labels}", where)
            where = f"thresholds.{label}"
            lo, hi = model.bounds[label]
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ApiError(422, "threshold_out_of_bounds", f"{where} must lie in [{lo}, {hi}] (the bounds this server allows)", where)
            thresholds[label] = float(value)
        return thresholds

    def parse_ops(self, model: ServedModel, spec: Optional[Dict[str, Any]]) -> Dict[str, Operator]:
        spec = spec or {}
        try:
            operators = parse_operators(spec, model.labels)
        except OperatorError as err:
            status = 422 if err.kind == "invalid" else 400
            kind = err.kind if err.kind != "unknown_type" else "unknown_entity_type"
            where = _operator_error_path(err.field, spec, self.vocabulary(model))
            if err.kind == "unknown_type":
                message = f"unknown entity type at {where}; known: {model.labels} and {DEFAULT_KEY}"
            elif err.kind == "unknown_operator":
                message = f"unknown operator at {where}; use one of {list(OPERATOR_NAMES)}"
            elif where.rpartition(".")[2].startswith("#"):  # a parameter name the client made up
                message = str(err)
                message = f"{where}: the operator has no such parameter {message[message.rfind('(parameters:'):]}"
            else:
                message = str(err).replace(err.field, where)
            raise ApiError(status, kind, message, where) from None
        if self.keyring is None:
            for key, op in operators.items():
                if op.name == "hash":
                    raise ApiError(
                        400, "hash_unavailable", f"operators.{key}: the hash operator is off: the server has no key ({HASH_KEY_ENV} or --hash-key-file)",
                        f"operators.{key}.type",
                    )
        try:
            return self.policy.resolve_operators(operators, model.labels)
        except PolicyViolation as err:
            raise ApiError(403, "policy_violation", str(err), err.field) from None

    def check_redact_types(self, model: ServedModel, types: Optional[List[str]]) -> Optional[List[str]]:
        """``entities`` of /v1/redact: known types, and none left out that the policy keeps in."""
        types = self.check_types(model, types)
        try:
            self.policy.check_entities(types, model.labels)
        except PolicyViolation as err:
            raise ApiError(403, "policy_violation", str(err), err.field) from None
        return types

    def hasher_for(self, operators: Dict[str, Operator], client_id: Optional[str]) -> Optional[Callable[[str, str], str]]:
        """The hash operator's token function in the client's token space (None: no type is hashed)."""
        hashed = sorted(label for label, op in operators.items() if op.name == "hash")
        if not hashed or self.keyring is None:
            return None
        try:
            return self.keyring.hasher(client_id)
        except HashKeyError as err:
            raise ApiError(400, "hash_unavailable", f"the hash operator is off for this request: {err}", f"operators.{hashed[0]}") from None

    def apply_redaction(self, text: str, entities: List[Entity], operators: Dict[str, Operator], hasher: Optional[Callable[[str, str], str]]) -> tuple:
        """operators.redact under the policy's output bound, its refusals answered 403."""
        try:
            return redact(text, entities, operators, hasher, self.policy.max_output_chars)
        except RedactionRefused as err:
            raise ApiError(403, "policy_violation", str(err), f"{err.where}.new_value") from None
        except OutputTooLarge as err:
            rule = self.policy.rule("max_output_chars")
            raise ApiError(403, "policy_violation", f"{err} (rule {rule}); send a shorter text or a shorter new_value", "text") from None

    async def predict(self, texts: List[str], deadline: float) -> List[List[Candidate]]:
        """Candidates per text, or 503 when the queue is full or ``deadline`` (monotonic) passes."""
        assert self.batcher is not None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.deadline_error()
        try:
            futures = self.batcher.submit(texts, deadline=deadline)
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from None
        try:
            return list(await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), remaining))
        except (asyncio.TimeoutError, DeadlineExceeded):
            for f in futures:
                f.cancel()  # still queued: the batcher skips it
            raise self.deadline_error() from None

    def deadline_error(self) -> ApiError:
        return ApiError(503, "deadline_exceeded", f"the request took longer than the server's limit of {self.settings.request_timeout} s (--request-timeout)")

    def record(self, audit: Dict[str, Any], decisions: Sequence[Decision], thresholds: Dict[str, float]) -> None:
        """Counts into the audit record and the metrics."""
        totals: Dict[str, Dict[str, int]] = {}
        for decision in decisions:
            for label, count in decision.counts.items():
                into = totals.setdefault(label, {"detected": 0, "redacted": 0, "below_threshold": 0, "near_threshold": 0})
                for k, v in count.items():
                    into[k] += v
            for label, score in decision.scores:
                self.metrics.scores.labels(label).observe(score)
        for label, count in totals.items():
            for k in ("detected", "below_threshold", "near_threshold"):
                if count[k]:
                    self.metrics.entities.labels(label, k).inc(count[k])
        audit["entities"] = totals
        audit["thresholds_hash"] = short_hash(thresholds)
        audit["thresholds_overridden"] = sorted(k for k, v in thresholds.items() if v != self.model.thresholds.get(k)) if self.model else []


def _operator_error_path(field: str, spec: Dict[str, Any], vocabulary: Set[str]) -> str:
    """OperatorError's ``operators.KEY[.PARAM]`` as a path that quotes no request content."""
    rest = field[len("operators.") :] if field.startswith("operators.") else ""
    keys = [k for k in spec if rest == k or rest.startswith(k + ".")]
    if not keys:
        return "operators"
    key = max(keys, key=len)
    parts: List[Any] = ["operators", key]
    if len(rest) > len(key):
        parts.append(rest[len(key) + 1 :])
    return _safe_path(parts, {"operators": spec}, vocabulary)


def load_served_model(settings: ServeSettings, policy: Optional[Policy] = None, hashing: bool = False) -> ServedModel:
    """Load the pipeline of ``settings`` as the service sees it, its threshold bounds tightened by
    ``policy``'s floor and ceiling (``hashing``: whether the server has a hash key).

    RAISES (Exception): whatever stops it from serving (no pipeline, bounds around a threshold,
        a policy that names types the model does not know).
    """
    import spacy

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if settings.code:
        spacy.util.import_file("serve_code", settings.code)
    nlp = spacy.load(settings.model)
    model = ServedModel(nlp, settings.model, settings.min_thresholds, settings.max_thresholds)
    if policy is None:
        return model
    lows, highs = policy.bind(model.model_labels, model.pattern_labels, model.thresholds, settings.min_thresholds, settings.max_thresholds, hashing)
    return ServedModel(nlp, settings.model, lows, highs)


def uncalibrated_warning(model: ServedModel) -> Optional[str]:
    """A warning when the pipeline was never calibrated: every threshold 0, no calibration."""
    if model.pipe.cfg.get("calibration") or any(t != 0.0 for t in model.thresholds.values()):
        return None
    return (
        "serving an uncalibrated pipeline: every threshold is 0 and it has no calibration, so every entity the model "
        "decodes is reported, with an uncalibrated score; run `python -m spacy_ner_plus calibrate` on a dev set first"
    )


def _clip(name: Any, limit: int = 64) -> str:
    name = str(name)
    return name if len(name) <= limit else name[:limit] + "..."


def _entity_json(c: Candidate, threshold: Optional[float], text: Optional[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "entity_type": c.label,
        "start": c.start,
        "end": c.end,
        "score": None if c.score is None else round(c.score, SCORE_DIGITS),
        "threshold": None if threshold is None else round(threshold, SCORE_DIGITS),
        "source": c.source,
    }
    if text is not None:
        out["text"] = text[c.start : c.end]
    return out


def _public_info(model: ServedModel) -> Dict[str, Any]:
    """The model's name and version: never its path on the server."""
    return {k: v for k, v in model.info.items() if k != "path"}


def _media_type_ok(header: Optional[str]) -> bool:
    if not header:
        return False
    media, *params = [p.strip().lower() for p in header.split(";")]
    if media != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def create_app(settings: ServeSettings):
    """The FastAPI app of one worker process.

    settings (ServeSettings): how to serve.
    RETURNS (FastAPI): the app. At start-up it loads the model; when that fails the start-up
        fails (uvicorn exits non-zero) unless ``settings.wait_for_model``.
    RAISES (ValueError): settings that cannot serve (see Service).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    service = Service(settings)
    models = _response_models()

    @asynccontextmanager
    async def lifespan(app):
        if settings.wait_for_model:
            threading.Thread(target=service.load_in_background, name="ner-plus-loader", daemon=True).start()
        else:
            try:
                await asyncio.to_thread(service.load)
            except ModelUnavailable as err:
                log.error("cannot serve %s: %s", settings.model, err)
                service.close()
                raise
        yield
        # uvicorn has drained the requests in flight; predict what is still queued and stop
        service.close()

    app = FastAPI(title="spacy-ner-plus PII service", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    audited = ("/v1/",)

    def error_response(request: Request, err: ApiError) -> JSONResponse:
        request.state.audit["error"] = err.kind
        service.errors.labels(err.kind).inc()
        message = err.message
        for foreign in getattr(request.state, "foreign", ()):  # defence in depth: no request string comes back
            if foreign in message:
                message = message.replace(foreign, "(request content)")
            elif _clip(foreign) in message:
                message = message.replace(_clip(foreign), "(request content)")
        body = {"error": {"kind": err.kind, "message": message, "field": err.field}, "request_id": request.state.request_id}
        return JSONResponse(body, status_code=err.status, headers=err.headers)

    def edge_check(request: Request) -> Optional[ApiError]:
        """Host, API key, X-Client-ID and Content-Type, before any handler runs."""
        path = request.url.path
        if host_name(request.headers.get("host", "")) not in service.allowed_hosts:
            return ApiError(421, "host_not_allowed", "this server does not answer for that Host (see --allowed-hosts)", "Host")
        if service.api_keys is not None:
            if path.startswith(PROTECTED_PREFIXES):
                scheme, _, key = request.headers.get("authorization", "").partition(" ")
                client = service.api_keys.client_for(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
                if client is None:
                    return ApiError(401, "unauthorized", "send Authorization: Bearer KEY with a key this server knows", "Authorization", {"WWW-Authenticate": "Bearer"})
                request.state.client_id = client
        else:
            client_id = request.headers.get(CLIENT_ID_HEADER)
            if client_id is not None and not CLIENT_ID_PATTERN.match(client_id):
                return ApiError(400, "invalid_client_id", f"{CLIENT_ID_HEADER} must match {CLIENT_ID_PATTERN.pattern}", CLIENT_ID_HEADER)
            request.state.client_id = client_id
        if request.method == "POST" and path.startswith("/v1/") and not _media_type_ok(request.headers.get("content-type")):
            return ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json (UTF-8)", "Content-Type")
        return None

    @app.middleware("http")
    async def around(request: Request, call_next):
        request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        request.state.audit = {}
        request.state.client_id = None
        request.state.deadline = time.monotonic() + settings.request_timeout
        path = request.url.path
        is_v1 = path.startswith(audited)
        started = time.perf_counter()
        if is_v1:
            service.metrics.in_flight.inc()
        try:
            refused = edge_check(request)
            response = error_response(request, refused) if refused is not None else await call_next(request)
        except Exception as err:  # an internal error: request id, nothing of the input
            log.error("request %s: internal error %s at %s", request_id, type(err).__name__, frames_only(err))
            request.state.audit["error"] = "internal"
            service.errors.labels("internal").inc()
            response = JSONResponse(
                {"error": {"kind": "internal", "message": f"internal error; quote request id {request_id}", "field": None}, "request_id": request_id},
                status_code=500,
            )
        finally:
            if is_v1:
                service.metrics.in_flight.dec()
        latency = time.perf_counter() - started
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        service.metrics.latency.labels(endpoint, str(response.status_code)).observe(latency)
        response.headers["X-Request-ID"] = request_id
        if is_v1 and service.audit is not None:
            record = {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "client_id": request.state.client_id,
                "method": request.method,
                "endpoint": endpoint,
                "status": response.status_code,
                "config_hash": service.model.config_hash if service.model else None,
            }
            record.update(request.state.audit)
            record["latency_ms"] = round(latency * 1000, 2)
            try:
                service.audit.info(json.dumps(record, sort_keys=True))
            except AuditWriteError as err:
                log.error("request %s: audit record not written: %s", request_id, err.__cause__ or err)
                if service.policy.audit_failure == "fail":
                    # fail closed: no output leaves without its audit record
                    response = JSONResponse(
                        {"error": {"kind": "audit_unavailable", "message": "the audit log cannot be written; nothing was returned; retry later", "field": None},
                         "request_id": request_id},
                        status_code=503,
                        headers={"X-Request-ID": request_id},
                    )  # fmt: skip
        return response

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, err: ApiError):
        return error_response(request, err)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, err: StarletteHTTPException):
        kinds = {404: ("not_found", "no such endpoint (GET /openapi.json lists them)"), 405: ("method_not_allowed", "this endpoint does not take that method")}
        kind, message = kinds.get(err.status_code, ("http_error", f"HTTP {err.status_code}"))
        return error_response(request, ApiError(err.status_code, kind, message, None, dict(err.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, err: RequestValidationError):
        first = (err.errors() or [{"loc": (), "msg": "invalid request"}])[0]
        where = ".".join(str(p) for p in first["loc"] if isinstance(p, int) or p in ("body", "query", "path", "header")) or "body"
        return error_response(request, ApiError(422, "invalid_field", f"{where}: {first['msg']}", where))

    def body_doc(schema) -> Dict[str, Any]:
        return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema.model_json_schema()}}}}

    v1_errors = (400, 401, 403, 413, 415, 421, 422, 503)

    @app.post(
        "/v1/analyze", openapi_extra=body_doc(service.AnalyzeRequest),
        responses={200: {"model": models["AnalyzeResponse"]}, **_error_responses(models, *v1_errors)},
    )
    async def analyze(request: Request):
        """Entities of ``text`` (results: a list) or ``texts`` (results: one list per text)."""
        model = service.require_model()
        req = await service.read_json(request, service.AnalyzeRequest, model)
        if (req.text is None) == (req.texts is None):
            raise ApiError(422, "invalid_field", "give exactly one of text (a string) and texts (a list of strings)", "text")
        texts = [req.text] if req.text is not None else req.texts
        audit = request.state.audit
        audit.update({"n_texts": len(texts), "input_chars": sum(len(t) for t in texts)})
        service.check_texts(model, texts, "text" if req.text is not None else "texts")
        types = service.check_types(model, req.entities)
        thresholds = service.effective_thresholds(model, req.thresholds)
        decisions = [decide(c, thresholds, types) for c in await service.predict(texts, request.state.deadline)]
        service.record(audit, decisions, thresholds)
        results = [[_entity_json(c, t, text if req.return_text else None) for c, t in d.entities] for d, text in zip(decisions, texts)]
        return {
            "request_id": request.state.request_id,
            "model": {**_public_info(model), "calibration": model.calibration, "config_hash": model.config_hash},
            "results": results[0] if req.text is not None else results,
        }

    @app.post(
        "/v1/redact", openapi_extra=body_doc(service.RedactRequest),
        responses={200: {"model": models["RedactResponse"]}, **_error_responses(models, *v1_errors)},
    )
    async def redact_text(request: Request):
        """``text`` with each detected entity replaced by its type's operator."""
        model = service.require_model()
        req = await service.read_json(request, service.RedactRequest, model)
        audit = request.state.audit
        audit.update({"n_texts": 1, "input_chars": len(req.text)})
        service.check_texts(model, [req.text], "text")
        types = service.check_redact_types(model, req.entities)
        thresholds = service.effective_thresholds(model, req.thresholds)
        operators = service.parse_ops(model, req.operators)
        audit["operators"] = {key: op.name for key, op in sorted(operators.items())}
        hasher = service.hasher_for(operators, request.state.client_id)
        (candidates,) = await service.predict([req.text], request.state.deadline)
        decision = decide(candidates, thresholds, types)
        service.record(audit, [decision], thresholds)
        entities = [Entity(c.start, c.end, c.label, c.score) for c, _ in decision.entities]
        output, items = service.apply_redaction(req.text, entities, operators, hasher)
        # what was applied, per entity: only an entity of which nothing stays visible counts as redacted
        applied: Dict[str, Dict[str, int]] = {}
        for label, op_name, outcome in audit_counts(items, entities):
            counts = audit["entities"][label]
            counts[outcome] = counts.get(outcome, 0) + 1
            applied.setdefault(label, {}).setdefault(op_name, 0)
            applied[label][op_name] += 1
            service.metrics.entities.labels(label, outcome).inc()
        audit["applied"] = applied
        return {
            "request_id": request.state.request_id,
            "text": output,
            "items": [{"entity_type": i.entity_type, "start": i.start, "end": i.end, "operator": i.operator} for i in items],
        }

    get_errors = _error_responses(models, 401, 421, 503)

    @app.get("/v1/entities", responses={200: {"model": models["EntitiesResponse"]}, **get_errors})
    async def entities():
        model = service.require_model()
        rows = []
        for label in model.labels:
            row: Dict[str, Any] = {"entity_type": label, "sources": (["model"] if label in model.thresholds else []) + (["pattern"] if label in model.pattern_labels else [])}
            if label in model.thresholds:
                lo, hi = model.bounds[label]
                row.update({"threshold": model.thresholds[label], "min_threshold": lo, "max_threshold": hi})
            rows.append(row)
        return {"entities": rows}

    @app.get("/v1/config", responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}, **get_errors})
    async def config():
        model = service.require_model()
        return {
            "model": _public_info(model),
            "pipeline": model.nlp.pipe_names,
            "labels": model.labels,
            "thresholds": model.thresholds,
            "threshold_bounds": {k: {"min": lo, "max": hi} for k, (lo, hi) in model.bounds.items()},
            "calibration": model.pipe.cfg.get("calibration", {}),
            "config_hash": model.config_hash,
            "near_threshold": NEAR_THRESHOLD,
            "operators": {
                # what a request may choose for at least one type (the policy below says which for which)
                "available": [n for n in ("replace", "mask", "redact", "hash", "keep") if any(n in service.policy.for_type(t).operators for t in model.labels) and (n != "hash" or service.keyring)],
                "default": Operator("replace").to_dict(),
            },
            "policy": service.policy.describe(model.labels),
            "hash_keys": service.keyring.describe() if service.keyring is not None else None,
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_json_depth": settings.max_json_depth,
                "max_texts": settings.max_texts,
                "max_text_chars": model.nlp.max_length,
                "queue_chars": settings.queue_chars,
                "request_timeout_s": settings.request_timeout,
                "batch_tokens": settings.batch_tokens,
                "batch_wait_ms": settings.batch_wait_ms,
            },
        }

    @app.get("/", responses={200: {"content": {"text/html": {}}}, **_error_responses(models, 421)})
    async def page():
        """A page to try the service (page.py); it loads nothing from elsewhere."""
        from fastapi.responses import HTMLResponse

        from .page import PAGE

        csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": csp})

    probe_responses = {200: {"model": models["Probe"]}, 503: {"model": models["Probe"]}, **_error_responses(models, 421)}

    @app.get("/healthz", responses=probe_responses)
    async def healthz():
        """200 while the process serves or loads; 503 when the model cannot be served."""
        if service.load_error is not None:
            return JSONResponse({"status": "failed"}, status_code=503)
        return {"status": "ok"}

    @app.get("/readyz", responses=probe_responses)
    async def readyz():
        """200 when requests can be answered; else 503 with the status and the reason."""
        if service.load_error is not None:
            return JSONResponse({"status": "failed", "reason": f"the model cannot be served: {service.load_error}"}, status_code=503)
        if not service.ready.is_set():
            return JSONResponse({"status": "loading", "reason": "the model is loading"}, status_code=503, headers={"Retry-After": "1"})
        stalled = service.batcher.stalled_for() if service.batcher is not None else 0.0
        if stalled > settings.stall_timeout:
            reason = f"the batcher has finished no batch for {stalled:.0f} s while work is queued (--stall-timeout {settings.stall_timeout})"
            return JSONResponse({"status": "stalled", "reason": reason}, status_code=503)
        return {"status": "ready", "config_hash": service.model.config_hash}

    @app.get("/metrics", responses={200: {"content": {"text/plain": {}}}, **_error_responses(models, 401, 421)})
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env():
    """uvicorn's app factory: the settings come from $NER_PLUS_SERVE_SETTINGS (set by the CLI)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return create_app(ServeSettings.from_env())


def run(settings: ServeSettings, port: int, drain_timeout: float) -> int:
    """Serve with uvicorn until SIGINT/SIGTERM; requests in flight get ``drain_timeout`` seconds to finish.

    settings (ServeSettings): how to serve (``settings.host`` is the address bound).
    port (int): port to bind.
    drain_timeout (float): seconds uvicorn waits for requests in flight at shutdown.
    RETURNS (int): the exit status: 0 after a shutdown, non-zero when the start-up failed.
    """
    import shutil
    import tempfile

    import uvicorn

    os.environ[SETTINGS_ENV] = settings.to_env()
    metrics_dir = None
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # each worker writes its metric values to files there; /metrics sums them
        metrics_dir = tempfile.mkdtemp(prefix="ner_plus_metrics_")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "spacy_ner_plus.service.app:app_from_env",
            factory=True,
            host=settings.host,
            port=port,
            workers=settings.workers,
            access_log=False,  # the audit log records every /v1 request
            timeout_graceful_shutdown=drain_timeout,
            log_level="info",
        )
    except SystemExit as exit_:  # uvicorn exits 3 when the app's start-up failed
        return exit_.code if isinstance(exit_.code, int) else 1
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
