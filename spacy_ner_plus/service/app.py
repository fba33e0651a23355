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
its message (messages can quote the input).
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
from typing import Any, Callable, Dict, List, Optional, Sequence

from .batcher import MicroBatcher, QueueFull
from .decision import NEAR_THRESHOLD, Candidate, Decision, ServedModel, short_hash, decide
from .keys import HashKeyError
from .observability import AuditWriteError, Metrics, frames_only, make_audit_logger
from .operators import Entity, Operator, OperatorError, OutputTooLarge, RedactionRefused, parse_operators, redact
from .policy import PolicyViolation, audit_counts, load_policy
from .settings import HASH_KEY_ENV, SETTINGS_ENV, ServeSettings, load_hash_key

CLIENT_ID_HEADER = "X-Client-ID"
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
SCORE_DIGITS = 6
WARMUP_TEXT = "Anna Keller from Helios Bank wrote to anna.keller@example.com about the office in Berlin on 3 May 2021 ."

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


# --- request bodies -----------------------------------------------------------------
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


# --- the service ----------------------------------------------------------------------
class Service:
    """State of one worker process: the model (loaded in the background), the batcher,
    metrics, the audit log and the request checks."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.keyring = load_hash_key(settings)
        self.policy = load_policy(settings.policy)
        self.metrics = Metrics(multiprocess="PROMETHEUS_MULTIPROC_DIR" in os.environ)
        self.audit: Optional[logging.Logger] = None
        if settings.audit_log:
            path = settings.audit_log if settings.workers <= 1 else f"{settings.audit_log}.{os.getpid()}"
            self.audit = make_audit_logger(path, settings.audit_max_bytes, settings.audit_backups)
        self.model: Optional[ServedModel] = None
        self.batcher: Optional[MicroBatcher] = None
        self.ready = threading.Event()
        self.load_error: Optional[str] = None
        self.AnalyzeRequest, self.RedactRequest = _request_models()

    # lifecycle
    def load(self) -> None:
        """Load the model and warm it up (runs in a background thread)."""
        import spacy

        try:
            started = time.perf_counter()
            if self.settings.torch_threads:
                import torch

                torch.set_num_threads(self.settings.torch_threads)
            if self.settings.code:
                spacy.util.import_file("serve_code", self.settings.code)
            nlp = spacy.load(self.settings.model)
            model = ServedModel(nlp, self.settings.model, self.settings.min_thresholds, self.settings.max_thresholds)
            # the policy's threshold floor and ceiling tighten the command line's: rebuild with both
            lows, highs = self.policy.bind(
                model.model_labels, model.pattern_labels, model.thresholds, self.settings.min_thresholds, self.settings.max_thresholds, self.keyring is not None
            )
            model = ServedModel(nlp, self.settings.model, lows, highs)
            batcher = MicroBatcher(
                nlp, model.candidates, self.settings.batch_tokens, self.settings.batch_wait_ms / 1000.0, self.settings.queue_texts,
                on_batch=self._observe_batch,
            )
            batcher.start()
            self.model, self.batcher = model, batcher
            batcher.submit([WARMUP_TEXT, WARMUP_TEXT * 4])[1].result()
            self.metrics.model_info.labels(model.info["name"], model.info["version"], model.config_hash).set(1)
            self.ready.set()
            log.info("ready: %s %s (config %s), types %s, in %.1f s", model.info["name"], model.info["version"], model.config_hash, model.labels, time.perf_counter() - started)
        except Exception as err:
            self.load_error = f"{type(err).__name__}: {err}"
            log.error("cannot serve %s: %s", self.settings.model, self.load_error)

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close(timeout=60.0)

    def _observe_batch(self, n_texts: int, n_tokens: int) -> None:
        self.metrics.batch_texts.observe(n_texts)
        self.metrics.batch_tokens.observe(n_tokens)

    def require_model(self) -> ServedModel:
        if self.model is None or not self.ready.is_set():
            raise ApiError(503, "not_ready", "the model is not loaded yet; retry when GET /readyz answers 200", headers={"Retry-After": "1"})
        return self.model

    # request checks
    async def read_json(self, request, schema):
        """The request body, size-checked, parsed and validated against ``schema``."""
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
        try:
            data = json.loads(b"".join(chunks).decode("utf8"))
        except UnicodeDecodeError as err:
            raise ApiError(422, "invalid_json", f"the body is not UTF-8 (byte {err.start})", "body") from None
        except json.JSONDecodeError as err:
            raise ApiError(422, "invalid_json", f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", "body") from None
        if not isinstance(data, dict):
            raise ApiError(422, "invalid_field", f"the body must be a JSON object, not {type(data).__name__}", "body")
        try:
            return schema.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise ApiError(422, "invalid_field", f"{where}: {first['msg']}", where) from None

    def check_texts(self, model: ServedModel, texts: List[str], field_name: str) -> None:
        if len(texts) > self.settings.max_texts:
            raise ApiError(413, "too_many_texts", f"{len(texts)} texts; the limit is {self.settings.max_texts}", field_name)
        for i, text in enumerate(texts):
            if len(text) > model.nlp.max_length:
                where = field_name if field_name == "text" else f"{field_name}.{i}"
                raise ApiError(413, "text_too_long", f"{where} has {len(text)} characters; the limit is {model.nlp.max_length}", where)

    @staticmethod
    def check_types(model: ServedModel, types: Optional[List[str]]) -> Optional[List[str]]:
        if types is None:
            return None
        for i, label in enumerate(types):
            if label not in model.labels:
                raise ApiError(400, "unknown_entity_type", f"unknown entity type '{_clip(label)}' at entities.{i}; known: {model.labels}", f"entities.{i}")
        return types

    @staticmethod
    def effective_thresholds(model: ServedModel, overrides: Optional[Dict[str, float]]) -> Dict[str, float]:
        thresholds = dict(model.thresholds)
        for label, value in (overrides or {}).items():
            where = f"thresholds.{label}"
            if label not in model.thresholds:
                kind_of = "a pattern type: rule matches are always reported" if label in model.pattern_labels else f"known: {model.model_labels}"
                raise ApiError(400, "unknown_entity_type", f"unknown entity type '{_clip(label)}' in thresholds ({kind_of})", where)
            lo, hi = model.bounds[label]
            if not (math.isfinite(value) and lo <= value <= hi):
                raise ApiError(422, "threshold_out_of_bounds", f"{where} must lie in [{lo}, {hi}] (the bounds this server allows)", where)
            thresholds[label] = float(value)
        return thresholds

    def parse_ops(self, model: ServedModel, spec: Optional[Dict[str, Any]]) -> Dict[str, Operator]:
        try:
            operators = parse_operators(spec or {}, model.labels)
        except OperatorError as err:
            status = 422 if err.kind == "invalid" else 400
            raise ApiError(status, err.kind if err.kind != "unknown_type" else "unknown_entity_type", str(err), err.field) from None
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

    async def predict(self, texts: List[str]) -> List[List[Candidate]]:
        assert self.batcher is not None
        try:
            futures = self.batcher.submit(texts)
        except QueueFull as err:
            raise ApiError(503, "overloaded", f"server busy: {err}; retry later", headers={"Retry-After": "1"}) from None
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

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


def create_app(settings: ServeSettings):
    """The FastAPI app of one worker process.

    settings (ServeSettings): how to serve.
    RETURNS (FastAPI): the app; it loads the model in a background thread at start-up.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app):
        threading.Thread(target=service.load, name="ner-plus-loader", daemon=True).start()
        yield
        # uvicorn has drained the requests in flight; predict what is still queued and stop
        service.close()

    app = FastAPI(title="spacy-ner-plus PII service", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    audited = ("/v1/",)

    def error_response(request: Request, err: ApiError) -> JSONResponse:
        request.state.audit["error"] = err.kind
        body = {"error": {"kind": err.kind, "message": err.message, "field": err.field}, "request_id": request.state.request_id}
        return JSONResponse(body, status_code=err.status, headers=err.headers)

    @app.middleware("http")
    async def around(request: Request, call_next):
        request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        request.state.audit = {}
        path = request.url.path
        is_v1 = path.startswith(audited)
        started = time.perf_counter()
        if is_v1:
            service.metrics.in_flight.inc()
        client_id = request.headers.get(CLIENT_ID_HEADER)
        request.state.client_id = client_id if client_id is not None and CLIENT_ID_PATTERN.match(client_id) else None
        try:
            if client_id is not None and not CLIENT_ID_PATTERN.match(client_id):
                client_id = None
                response = error_response(
                    request, ApiError(400, "invalid_client_id", f"{CLIENT_ID_HEADER} must match {CLIENT_ID_PATTERN.pattern}", CLIENT_ID_HEADER)
                )
            else:
                response = await call_next(request)
        except Exception as err:  # an internal error: request id, nothing of the input
            log.error("request %s: internal error %s at %s", request_id, type(err).__name__, frames_only(err))
            request.state.audit["error"] = "internal"
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
                "client_id": client_id,
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

    @app.post("/v1/analyze")
    async def analyze(request: Request):
        """Entities of ``text`` (results: a list) or ``texts`` (results: one list per text)."""
        model = service.require_model()
        req = await service.read_json(request, service.AnalyzeRequest)
        if (req.text is None) == (req.texts is None):
            raise ApiError(422, "invalid_field", "give exactly one of text (a string) and texts (a list of strings)", "text")
        texts = [req.text] if req.text is not None else req.texts
        audit = request.state.audit
        audit.update({"n_texts": len(texts), "input_chars": sum(len(t) for t in texts)})
        service.check_texts(model, texts, "text" if req.text is not None else "texts")
        types = service.check_types(model, req.entities)
        thresholds = service.effective_thresholds(model, req.thresholds)
        decisions = [decide(c, thresholds, types) for c in await service.predict(texts)]
        service.record(audit, decisions, thresholds)
        results = [[_entity_json(c, t, text if req.return_text else None) for c, t in d.entities] for d, text in zip(decisions, texts)]
        return {
            "request_id": request.state.request_id,
            "model": {**model.info, "calibration": model.calibration, "config_hash": model.config_hash},
            "results": results[0] if req.text is not None else results,
        }

    @app.post("/v1/redact")
    async def redact_text(request: Request):
        """``text`` with each detected entity replaced by its type's operator."""
        model = service.require_model()
        req = await service.read_json(request, service.RedactRequest)
        audit = request.state.audit
        audit.update({"n_texts": 1, "input_chars": len(req.text)})
        service.check_texts(model, [req.text], "text")
        types = service.check_redact_types(model, req.entities)
        thresholds = service.effective_thresholds(model, req.thresholds)
        operators = service.parse_ops(model, req.operators)
        audit["operators"] = {key: op.name for key, op in sorted(operators.items())}
        hasher = service.hasher_for(operators, request.state.client_id)
        (candidates,) = await service.predict([req.text])
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

    @app.get("/v1/entities")
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

    @app.get("/v1/config")
    async def config():
        model = service.require_model()
        return {
            "model": model.info,
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
                "max_texts": settings.max_texts,
                "max_text_chars": model.nlp.max_length,
                "batch_tokens": settings.batch_tokens,
                "batch_wait_ms": settings.batch_wait_ms,
                "queue_texts": settings.queue_texts,
            },
        }

    @app.get("/")
    async def page():
        """A page to try the service (page.py); it loads nothing from elsewhere."""
        from fastapi.responses import HTMLResponse

        from .page import PAGE

        csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": csp})

    @app.get("/healthz")
    async def healthz():
        if service.load_error is not None:
            return JSONResponse({"status": "failed", "error": service.load_error}, status_code=503)
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if service.ready.is_set():
            return {"status": "ready", "config_hash": service.model.config_hash}
        status = "failed" if service.load_error is not None else "loading"
        return JSONResponse({"status": status}, status_code=503)

    @app.get("/metrics")
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


def run(settings: ServeSettings, host: str, port: int, drain_timeout: float) -> None:
    """Serve with uvicorn until SIGINT/SIGTERM; requests in flight get ``drain_timeout`` seconds to finish.

    settings (ServeSettings): how to serve.
    host (str): address to bind.
    port (int): port to bind.
    drain_timeout (float): seconds uvicorn waits for requests in flight at shutdown.
    """
    import tempfile

    import uvicorn

    import shutil

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
            host=host,
            port=port,
            workers=settings.workers,
            access_log=False,  # the audit log records every /v1 request
            timeout_graceful_shutdown=drain_timeout,
            log_level="info",
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
