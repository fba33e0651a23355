"""The PII service: ``python -m spacy_ner_plus serve MODEL`` (FastAPI on uvicorn).

Endpoints (README, "PII redaction service"): ``POST /v1/analyze``,
``POST /v1/redact``, ``GET /v1/entities``, ``GET /v1/config``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` and ``GET /``, a page to try them (page.py);
and Presidio's REST endpoints (``/analyze``, ``/anonymize``, ...: presidio_api.py,
docs/service-presidio.md), checked, limited and audited as ``/v1`` is.

How a request becomes entities:
- Two batcher threads (:class:`Lanes` of :class:`MicroBatcher`) make every call
  into the pipeline (tokenizer included): one for texts of at most
  ``long_text_chars`` characters, one for longer texts, so a long text never
  holds up the short texts of other requests by more than one short batch.
  Request handlers queue their texts; a batcher takes what arrived within
  ``batch_wait_ms`` of the oldest text (up to ``batch_tokens`` tokens) and
  predicts it with one ``nlp.pipe`` call, so concurrent requests share forward
  passes. A text whose batch fails is predicted again on its own, so one bad
  text fails only its own request.
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

Privacy: the audit log (one JSON line per ``/v1`` or Presidio API request), the metrics and
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
import os
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from .analysis import AD_HOC_LABEL, analyze_request, json_path, json_rebuild
from .auth import host_name
from .decision import NEAR_THRESHOLD
from .adhoc import limits as ad_hoc_limits
from .observability import AuditWriteError, frames_only
from .operators import Entity, Operator, clip
from .policy import audit_counts
from .presidio_api import add_presidio_routes
from .requests import API_PREFIXES, CLIENT_ID_HEADER, CLIENT_ID_PATTERN, PROTECTED_PREFIXES, ApiError, media_type_ok
from .schemas import error_responses, response_models
from .settings import SETTINGS_ENV, ServeSettings
from .offsets import convert_offsets
from .state import SCORE_DIGITS, ModelUnavailable, Service, public_info

log = logging.getLogger("spacy_ner_plus.serve")


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
    models = response_models()

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
    audited = API_PREFIXES

    def error_response(request: Request, err: ApiError) -> JSONResponse:
        request.state.audit["error"] = err.kind
        service.errors.labels(err.kind).inc()
        message = err.message
        for foreign in getattr(request.state, "foreign", ()):  # defence in depth: no request string comes back
            if foreign in message:
                message = message.replace(foreign, "(request content)")
            elif clip(foreign) in message:
                message = message.replace(clip(foreign), "(request content)")
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
        if request.method == "POST" and path.startswith(audited) and not media_type_ok(request.headers.get("content-type")):
            return ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json (UTF-8)", "Content-Type")
        return None

    async def around(app_stack, scope, receive, send):
        """Every HTTP request: the edge checks, metrics, the request id and the audit record.

        A plain ASGI middleware: Starlette's ``@app.middleware("http")`` runs the app in a task of
        its own and passes the response through a memory stream, a task group and their
        cancellation scopes per request; this one calls the app directly and holds its
        (single-message) answer until the audit record is written, so a failed write can still
        replace it with 503."""
        if scope["type"] != "http":
            await app_stack(scope, receive, send)
            return
        request = Request(scope, receive)
        request_id = uuid.uuid4().hex
        request.state.request_id = request_id
        request.state.audit = {}
        request.state.client_id = None
        request.state.deadline = time.monotonic() + settings.request_timeout
        path = scope["path"]
        is_v1 = path.startswith(audited)
        started = time.perf_counter()
        answer: Dict[str, Any] = {}
        body: list = []

        async def hold(message) -> None:
            if message["type"] == "http.response.start":
                answer.update(message)
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        if is_v1:
            service.metrics.in_flight.inc()
        try:
            refused = edge_check(request)
            if refused is not None:
                await error_response(request, refused)(scope, receive, hold)
            else:
                await app_stack(scope, receive, hold)
            if not answer:
                raise RuntimeError("the app sent no response")
        except Exception as err:  # an internal error: request id, nothing of the input
            log.error("request %s: internal error %s at %s", request_id, type(err).__name__, frames_only(err))
            request.state.audit["error"] = "internal"
            service.errors.labels("internal").inc()
            answer.clear()
            body.clear()
            response = JSONResponse(
                {"error": {"kind": "internal", "message": f"internal error; quote request id {request_id}", "field": None}, "request_id": request_id},
                status_code=500,
            )
            await response(scope, receive, hold)
        finally:
            if is_v1:
                service.metrics.in_flight.dec()
        latency = time.perf_counter() - started
        route = scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        status = answer["status"]
        service.metrics.latency.labels(endpoint, str(status)).observe(latency)
        if is_v1 and service.audit is not None:
            record = {
                "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                "request_id": request_id,
                "client_id": request.state.client_id,
                "method": scope["method"],
                "endpoint": endpoint,
                "status": status,
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
                    answer.clear()
                    body.clear()
                    response = JSONResponse(
                        {"error": {"kind": "audit_unavailable", "message": "the audit log cannot be written; nothing was returned; retry later", "field": None},
                         "request_id": request_id},
                        status_code=503,
                    )  # fmt: skip
                    await response(scope, receive, hold)
        headers = [(k, v) for k, v in answer.get("headers", []) if k.lower() != b"x-request-id"]
        headers.append((b"x-request-id", request_id.encode("latin-1")))
        await send({**answer, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(body)})

    class Edge:
        """``around`` as the ASGI middleware FastAPI wraps around its router (where
        ``@app.middleware("http")`` would put it)."""

        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope, receive, send) -> None:
            await around(self.app, scope, receive, send)

    app.add_middleware(Edge)

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
        responses={200: {"model": models["AnalyzeResponse"]}, **error_responses(models, *v1_errors)},
    )
    async def analyze(request: Request):
        """Entities of ``text`` (results: a list), ``texts`` (one list per text) or ``json`` (the input's shape)."""
        model = service.require_model()
        req = await service.read_json(request, service.AnalyzeRequest, model)
        audit = request.state.audit
        run = await analyze_request(service, model, req, request.state.deadline, redaction=False, audit=audit)
        service.record(audit, run.decisions, run.thresholds)
        overridden = sorted(req.thresholds or {})
        results = [run.entities_out(i, model, req.return_text, overridden, SCORE_DIGITS) for i in range(len(run.texts))]
        if run.kind == "json":
            shaped = json_rebuild(req.json_input, run.paths, results, lambda leaf: None)
        else:
            shaped = results[0] if run.kind == "text" else results
        body = {
            "request_id": request.state.request_id,
            "model": {**public_info(model), "calibration": model.calibration, "config_hash": model.config_hash},
            "results": shaped,
            "n_windows": run.per_text(run.n_windows),
        }
        if req.allow_list is not None:
            body["allow_list"] = {k: run.allow_counts[k] for k in ("removed", "kept_by_policy")}
        # plain JSON types already: a JSONResponse skips FastAPI's jsonable_encoder walk (one call per value)
        return JSONResponse(body)

    @app.post(
        "/v1/redact", openapi_extra=body_doc(service.RedactRequest),
        responses={200: {"model": models["RedactResponse"]}, **error_responses(models, *v1_errors)},
    )
    async def redact_text(request: Request):
        """``text``, each of ``texts`` or the strings of ``json`` with each detected entity replaced by its type's operator."""
        model = service.require_model()
        req = await service.read_json(request, service.RedactRequest, model)
        audit = request.state.audit
        run = await analyze_request(service, model, req, request.state.deadline, redaction=True, audit=audit)
        operators = service.parse_ops(model, req.operators, run.extras.labels)
        audit["operators"] = {key: op.name for key, op in sorted(operators.items()) if key in model.labels or key == "DEFAULT"}
        hasher = service.hasher_for(operators, request.state.client_id)
        service.record(audit, run.decisions, run.thresholds)
        overridden = sorted(req.thresholds or {})
        applied: Dict[str, Dict[str, int]] = {}
        outputs = []
        for i, (text, decision) in enumerate(zip(run.texts, run.decisions)):
            entities = [Entity(c.start, c.end, c.label, c.score) for c, _ in decision.entities]
            output, items = service.apply_redaction(text, entities, operators, hasher)
            # what was applied, per entity: only an entity of which nothing stays visible counts as redacted
            for label, op_name, outcome in audit_counts(items, entities):
                label = label if label in model.labels else AD_HOC_LABEL
                counts = audit["entities"][label]
                counts[outcome] = counts.get(outcome, 0) + 1
                applied.setdefault(label, {}).setdefault(op_name, 0)
                applied[label][op_name] += 1
                service.metrics.entities.labels(label, outcome).inc()
            spans = convert_offsets(output, [(it.start, it.end) for it in items], run.extras.offset_unit)
            result: Dict[str, Any] = {
                "text": output,
                "items": [{"entity_type": it.entity_type, "start": s, "end": e, "operator": it.operator} for it, (s, e) in zip(items, spans)],
                "n_windows": run.n_windows[i],
            }
            if run.extras.explain:
                result["entities"] = run.entities_out(i, model, False, overridden, SCORE_DIGITS)
            outputs.append(result)
        audit["applied"] = applied
        body: Dict[str, Any] = {"request_id": request.state.request_id}
        if run.kind == "text":
            body.update(outputs[0])
        elif run.kind == "texts":
            body["results"] = outputs
        else:
            body["json"] = json_rebuild(req.json_input, run.paths, [o["text"] for o in outputs], lambda leaf: leaf)
            body["items"] = [{"path": json_path(p), **item} for p, o in zip(run.paths, outputs) for item in o["items"]]
            body["n_windows"] = run.per_text(run.n_windows)
            if run.extras.explain:
                body["entities"] = [{"path": json_path(p), **e} for p, o in zip(run.paths, outputs) for e in o["entities"]]
        if req.allow_list is not None:
            body["allow_list"] = {k: run.allow_counts[k] for k in ("removed", "kept_by_policy")}
        # plain JSON types already: a JSONResponse skips FastAPI's jsonable_encoder walk (one call per value)
        return JSONResponse(body)

    get_errors = error_responses(models, 401, 421, 503)

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
            "model": public_info(model),
            "pipeline": model.nlp.pipe_names,
            "labels": model.labels,
            "thresholds": model.thresholds,
            "threshold_bounds": {k: {"min": lo, "max": hi} for k, (lo, hi) in model.bounds.items()},
            "calibration": model.pipe.cfg.get("calibration", {}),
            "decoding_bias": model.decoding_bias,
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
                "max_json_strings": settings.max_json_strings,
                "ad_hoc": ad_hoc_limits(),
                "max_text_chars": model.nlp.max_length,
                "queue_chars": settings.queue_chars,
                "long_text_chars": settings.long_text_chars,
                "request_timeout_s": settings.request_timeout,
                "batch_tokens": settings.batch_tokens,
                "batch_wait_ms": settings.batch_wait_ms,
            },
        }

    @app.get("/", responses={200: {"content": {"text/html": {}}}, **error_responses(models, 421)})
    async def page():
        """A page to try the service (page.py); it loads nothing from elsewhere."""
        from fastapi.responses import HTMLResponse

        from .page import PAGE

        csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"
        return HTMLResponse(PAGE, headers={"Content-Security-Policy": csp})

    probe_responses = {200: {"model": models["Probe"]}, 503: {"model": models["Probe"]}, **error_responses(models, 421)}

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

    @app.get("/metrics", responses={200: {"content": {"text/plain": {}}}, **error_responses(models, 401, 421)})
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    add_presidio_routes(app, service, models)
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
