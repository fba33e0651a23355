"""One worker process's service: the served model (loaded before the port is bound, or in
the background with --wait-for-model), the micro-batcher, metrics, the audit log, the API keys,
the operator policy and hash keys, and the checks and decisions of every request."""
import asyncio
import json
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

from .analysis import AD_HOC_LABEL, FEATURE_NAMES, policy_deny_recognizers
from .auth import ApiKeys, default_allowed_hosts, is_loopback
from .batcher import DeadlineExceeded, Lanes, MicroBatcher, QueueFull
from .decision import Candidate, Decision, ServedModel, short_hash
from .keys import HashKeyError
from .observability import Metrics, make_audit_logger
from .operators import _PARAMS, DEFAULT_KEY, OPERATOR_NAMES, Entity, Operator, OperatorError, OutputTooLarge, RedactionRefused, parse_operators, redact
from .policy import Policy, PolicyViolation, load_policy
from .requests import ApiError, first_surrogate, operator_error_path, safe_path, strings_in, json_too_deep
from .schemas import request_models
from .settings import HASH_KEY_ENV, ServeSettings, load_hash_key, worker_threads

SCORE_DIGITS = 6
WARMUP_TEXT = "Anna Keller from Helios Bank wrote to anna.keller@example.com about the office in Berlin on 3 May 2021 ."

log = logging.getLogger("spacy_ner_plus.serve")


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
        self.deny_recognizers = policy_deny_recognizers(self.policy)
        self.metrics = Metrics(multiprocess="PROMETHEUS_MULTIPROC_DIR" in os.environ)
        registry = self.metrics.registry
        self.errors = Counter("ner_plus_errors_total", "Error answers by kind (401, 413, 503 deadline_exceeded, ...)", ["kind"], registry=registry)
        self.expired = Counter("ner_plus_expired_texts_total", "Queued texts dropped because their request's deadline passed", registry=registry)
        self.audit: Optional[logging.Logger] = None
        if settings.audit_log:
            path = settings.audit_log if settings.workers <= 1 else f"{settings.audit_log}.{os.getpid()}"
            self.audit = make_audit_logger(path, settings.audit_max_bytes, settings.audit_backups)
        self.model: Optional[ServedModel] = None
        self.batcher: Optional[Lanes] = None
        self.ready = threading.Event()
        self.load_error: Optional[str] = None  # why the model cannot serve (no file paths: it is answered)
        self.AnalyzeRequest, self.RedactRequest = request_models()
        # field names of request bodies other routes read (presidio_api.py): errors may name them
        self.public_names: Set[str] = set()

    # lifecycle
    def load(self) -> None:
        """Load the model and warm it up.

        RAISES (ModelUnavailable): it cannot serve; the message says why, without file paths.
        """
        started = time.perf_counter()
        try:
            model = load_served_model(self.settings, self.policy, self.keyring is not None)
            batcher = Lanes(
                lambda name: MicroBatcher(
                    model.nlp, model.candidates, self.settings.batch_tokens, self.settings.batch_wait_ms / 1000.0, self.settings.queue_chars,
                    on_batch=self._observe_batch, on_expired=self.expired.inc, name=name,
                ),
                self.settings.long_text_chars,
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
        return fields | FEATURE_NAMES | set(model.labels) | {DEFAULT_KEY, "type"} | set(OPERATOR_NAMES) | params | self.public_names

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
        request.state.foreign = sorted({s for s in strings_in(data) if s not in vocabulary and len(s) >= 3}, key=len, reverse=True)
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_field", f"the body must be a JSON object, not {type(data).__name__}", "body")
        bad = first_surrogate(data, [])
        if bad is not None:
            where = safe_path(bad, data, vocabulary)
            raise ApiError(400, "invalid_unicode", f"{where} holds a lone surrogate (\\ud800-\\udfff escape without its pair): not a Unicode character", where)
        try:
            return schema.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_input=False, include_url=False, include_context=False)[0]
            where = safe_path(first["loc"], data, vocabulary)
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
    def check_types(model: ServedModel, types: Optional[List[str]], ad_hoc_types: Sequence[str] = ()) -> Optional[List[str]]:
        """``entities``: types of the model or of the request's ad-hoc recognisers."""
        if types is None:
            return None
        known = model.labels + [t for t in ad_hoc_types if t not in model.labels]
        for i, label in enumerate(types):
            if label not in known:
                raise ApiError(400, "unknown_entity_type", f"unknown entity type at entities.{i}; known: {known}", f"entities.{i}")
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

    def parse_ops(self, model: ServedModel, spec: Optional[Dict[str, Any]], labels: Optional[Sequence[str]] = None) -> Dict[str, Operator]:
        """A request's operators checked and resolved under the policy, one per type of ``labels``
        (default: the model's types; /anonymize adds the types of the client's own results)."""
        spec = spec or {}
        labels = model.labels if labels is None else labels
        try:
            operators = parse_operators(spec, labels)
        except OperatorError as err:
            status = 422 if err.kind == "invalid" else 400
            kind = err.kind if err.kind != "unknown_type" else "unknown_entity_type"
            where = operator_error_path(err.field, spec, self.vocabulary(model))
            if err.kind == "unknown_type":
                message = f"unknown entity type at {where}; known: {list(labels)} and {DEFAULT_KEY}"
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
            return self.policy.resolve_operators(operators, labels)
        except PolicyViolation as err:
            raise ApiError(403, "policy_violation", str(err), err.field) from None

    def check_redact_types(self, model: ServedModel, types: Optional[List[str]], ad_hoc_types: Sequence[str] = ()) -> Optional[List[str]]:
        """``entities`` of /v1/redact: known types, and none left out that the policy keeps in
        (a request may leave out its own ad-hoc types)."""
        types = self.check_types(model, types, ad_hoc_types)
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
        known = set(self.model.labels) if self.model else set()
        for decision in decisions:
            for label, count in decision.counts.items():
                # a request's own types are counted together: neither the audit log nor the metrics take names from requests
                label = label if label in known else AD_HOC_LABEL
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


def load_served_model(settings: ServeSettings, policy: Optional[Policy] = None, hashing: bool = False) -> ServedModel:
    """Load the pipeline of ``settings`` as the service sees it, its threshold bounds tightened by
    ``policy``'s floor and ceiling (``hashing``: whether the server has a hash key).

    RAISES (Exception): whatever stops it from serving (no pipeline, bounds around a threshold,
        a policy that names types the model does not know).
    """
    import spacy

    import torch

    torch.set_num_threads(worker_threads(settings.threads, settings.workers))
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


def public_info(model: ServedModel) -> Dict[str, Any]:
    """The model's name and version: never its path on the server."""
    return {k: v for k, v in model.info.items() if k != "path"}
