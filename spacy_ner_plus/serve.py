"""The PII service: ``python -m spacy_ner_plus serve MODEL`` (FastAPI on uvicorn).

Endpoints (README, "PII redaction service"): ``POST /v1/analyze``,
``POST /v1/redact``, ``GET /v1/entities``, ``GET /v1/config``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` and ``GET /``, a page to try them (serve_page.py).

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
import hashlib
import json
import logging
import logging.handlers
import math
import os
import re
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from .pipeline_component import ner_plus_pipe_names
from .redact import Entity, Operator, OperatorError, operator_for, parse_operators, redact

SETTINGS_ENV = "NER_PLUS_SERVE_SETTINGS"
HASH_KEY_ENV = "NER_PLUS_HASH_KEY"
MIN_HASH_KEY_BYTES = 16
NEAR_THRESHOLD = 0.1
CLIENT_ID_HEADER = "X-Client-ID"
CLIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
SCORE_DIGITS = 6
WARMUP_TEXT = "Anna Keller from Helios Bank wrote to anna.keller@example.com about the office in Berlin on 3 May 2021 ."

log = logging.getLogger("spacy_ner_plus.serve")


# --- settings -------------------------------------------------------------------
@dataclass
class ServeSettings:
    """Everything a worker process needs to build the app (travels as JSON in an env variable).

    model (str): pipeline name or path.
    audit_log (Optional[str]): path of the JSON-lines audit log; None: no audit log.
    audit_max_bytes (int): rotate the audit log when it would exceed this size.
    audit_backups (int): rotated files kept (PATH.1 ... PATH.N).
    min_thresholds / max_thresholds (Dict[str, float]): lowest / highest threshold a
        request may set, per type; the key "" holds the bound of every other type.
        Default lowest 0.0; default highest: the pipeline's own threshold, so by
        default a request can make detection more sensitive but never less.
    hash_key_file (Optional[str]): file holding the HMAC key of the hash operator
        (else the NER_PLUS_HASH_KEY environment variable; neither: no hash operator).
    max_body_bytes (int): larger request bodies get 413.
    max_texts (int): more texts in one request get 413.
    batch_tokens (int): a micro-batch stops taking texts once it holds this many tokens.
    batch_wait_ms (float): how long the oldest queued text waits for others to share its batch.
    queue_texts (int): most texts waiting for prediction; beyond: 503.
    workers (int): uvicorn worker processes (each loads the model).
    code (Optional[str]): a Python file to import first (custom components, as `spacy train --code`).
    torch_threads (Optional[int]): torch's intra-op threads per worker (None: torch's default, one per
        core). On a machine whose cores are shared with other busy processes, 1 avoids threads waiting
        on each other (docs/BENCHMARKS.md: p95 182 ms instead of 1,856 ms for 480 characters).
    """

    model: str
    audit_log: Optional[str] = None
    audit_max_bytes: int = 10_000_000
    audit_backups: int = 5
    min_thresholds: Dict[str, float] = field(default_factory=dict)
    max_thresholds: Dict[str, float] = field(default_factory=dict)
    hash_key_file: Optional[str] = None
    max_body_bytes: int = 1_000_000
    max_texts: int = 64
    batch_tokens: int = 4096
    batch_wait_ms: float = 5.0
    queue_texts: int = 1024
    workers: int = 1
    code: Optional[str] = None
    torch_threads: Optional[int] = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `python -m spacy_ner_plus serve MODEL`")
        return cls(**json.loads(raw))


def load_hash_key(settings: ServeSettings) -> Optional[bytes]:
    """The HMAC key of the hash operator: the key file, else $NER_PLUS_HASH_KEY, else None.

    RAISES (ValueError): a key shorter than 16 bytes or an unreadable file (the key is never in the message).
    """
    if settings.hash_key_file:
        try:
            key = Path(settings.hash_key_file).read_bytes().rstrip(b"\r\n")
        except OSError as err:
            raise ValueError(f"cannot read the hash key file {settings.hash_key_file}: {err.strerror}") from None
        where = settings.hash_key_file
    elif os.environ.get(HASH_KEY_ENV):
        key = os.environ[HASH_KEY_ENV].encode("utf8")
        where = f"${HASH_KEY_ENV}"
    else:
        return None
    if len(key) < MIN_HASH_KEY_BYTES:
        raise ValueError(f"the hash key in {where} has {len(key)} bytes; use at least {MIN_HASH_KEY_BYTES} (e.g. `openssl rand -hex 32`)")
    return key


def _short_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode("utf8")).hexdigest()[:16]


# --- the model as the service sees it --------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One entity candidate of a text: code-point offsets, calibrated score (None: a rule without one)."""

    start: int
    end: int
    label: str
    score: Optional[float]
    source: str  # "model" | "pattern" (pii_patterns) | "other" (another component before ner_plus)


def _entity_source() -> Optional[Callable[..., str]]:
    try:
        from .pii_patterns import entity_source
    except ImportError:  # the pii_patterns component is optional
        return None
    return entity_source


class ServedModel:
    """A loaded pipeline with its one ner_plus pipe, thresholds and their bounds.

    nlp (Language): the pipeline.
    min_thresholds / max_thresholds (Dict[str, float]): see ServeSettings.
    RAISES (ValueError): no or several ner_plus pipes, bounds outside [0, 1] or not
        around the pipeline's threshold, a bound for an unknown type.
    """

    def __init__(self, nlp, name: str, min_thresholds: Dict[str, float], max_thresholds: Dict[str, float]) -> None:
        self.nlp = nlp
        pipes = ner_plus_pipe_names(nlp)
        if len(pipes) != 1:
            raise ValueError(f"'{name}' has {len(pipes)} ner_plus components ({pipes}); the service needs exactly one")
        self.pipe = nlp.get_pipe(pipes[0])
        self.spans_key: str = self.pipe.spans_key
        self.model_labels: List[str] = list(self.pipe.labels)
        patterns = [nlp.get_pipe(n) for n in nlp.pipe_names if nlp.get_pipe_meta(n).factory == "pii_patterns"]
        if len(patterns) > 1:
            raise ValueError(f"'{name}' has {len(patterns)} pii_patterns components; the service handles one")
        self.pattern_labels: List[str] = sorted(patterns[0].labels) if patterns else []
        self.pattern_key: Optional[str] = patterns[0].spans_key if patterns else None
        self.labels: List[str] = sorted(set(self.model_labels) | set(self.pattern_labels))
        self.entity_source = _entity_source()
        pipeline_thresholds = self.pipe.cfg.get("thresholds", {})
        self.thresholds: Dict[str, float] = {label: float(pipeline_thresholds.get(label, 0.0)) for label in self.model_labels}
        self.bounds: Dict[str, Tuple[float, float]] = {}
        for option, given in (("--min-threshold", min_thresholds), ("--max-threshold", max_thresholds)):
            unknown = sorted(set(given) - set(self.model_labels) - {""})
            if unknown:
                raise ValueError(f"{option} names {unknown}, not types of the model {self.model_labels}")
        for label, t in self.thresholds.items():
            lo = float(min_thresholds.get(label, min_thresholds.get("", 0.0)))
            hi = float(max_thresholds.get(label, max_thresholds.get("", t)))
            if not 0.0 <= lo <= t <= hi <= 1.0:
                raise ValueError(
                    f"threshold bounds of {label}: need 0 <= min ({lo}) <= the pipeline's threshold ({t:.4f}) <= max ({hi}) <= 1"
                )
            self.bounds[label] = (lo, hi)
        calibration = self.pipe.cfg.get("calibration", {})
        self.calibration: Dict[str, str] = {label: calibration.get(label, {}).get("method", "none") for label in self.model_labels}
        meta = nlp.meta
        self.info = {
            "name": f"{meta.get('lang', 'xx')}_{meta.get('name', 'pipeline')}",
            "version": str(meta.get("version", "0.0.0")),
            "path": name,
        }
        self.config_hash = _short_hash(
            {
                "model": self.info,
                "pipeline": nlp.pipe_names,
                "labels": self.labels,
                "thresholds": self.thresholds,
                "calibration": calibration,
                "bounds": self.bounds,
            }
        )

    def candidates(self, doc) -> List[Candidate]:
        """Every candidate of ``doc``: the ner_plus span group (all decoded entities,
        calibrated scores) and the entities a component before it preset."""
        group = doc.spans.get(self.spans_key)
        out: List[Candidate] = []
        seen = set()
        if group is not None:
            for span, score in zip(group, group.attrs.get("scores", [])):
                out.append(Candidate(span.start_char, span.end_char, span.label_, float(score), "model"))
                seen.add((span.start, span.end, span.label_))
        for ent in doc.ents:
            if (ent.start, ent.end, ent.label_) in seen:
                continue
            if self.entity_source is not None and self.pattern_key is not None:
                source = self.entity_source(ent, pattern_key=self.pattern_key, model_key=self.spans_key)
            else:
                source = "other"  # preset by a component that is not pii_patterns (an entity_ruler)
            score = ent._.confidence if ent.has_extension("confidence") else None
            out.append(Candidate(ent.start_char, ent.end_char, ent.label_, None if score is None else float(score), source))
        out.sort(key=lambda c: (c.start, c.end, c.label))
        return out


@dataclass
class Decision:
    """The reported entities of one text and the per-type counts behind them."""

    entities: List[Tuple[Candidate, Optional[float]]]  # (candidate, threshold applied; None for a rule decision)
    counts: Dict[str, Dict[str, int]]
    scores: List[Tuple[str, float]]  # (type, calibrated score) of every model candidate considered


def decide(candidates: Sequence[Candidate], thresholds: Dict[str, float], types: Optional[Sequence[str]]) -> Decision:
    """Apply the thresholds to the model's candidates (module docstring).

    candidates (Sequence[Candidate]): ServedModel.candidates of one text.
    thresholds (Dict[str, float]): the effective threshold per model type.
    types (Optional[Sequence[str]]): report only these types (None: all).
    RETURNS (Decision): reported entities in text order, counts per type.
    """
    wanted = None if types is None else set(types)
    entities: List[Tuple[Candidate, Optional[float]]] = []
    counts: Dict[str, Dict[str, int]] = {}
    scores: List[Tuple[str, float]] = []
    for c in candidates:
        if wanted is not None and c.label not in wanted:
            continue
        count = counts.setdefault(c.label, {"detected": 0, "below_threshold": 0, "near_threshold": 0})
        if c.source != "model" or c.score is None:
            entities.append((c, None))
            count["detected"] += 1
            continue
        t = thresholds.get(c.label, 0.0)
        scores.append((c.label, c.score))
        if abs(c.score - t) < NEAR_THRESHOLD:
            count["near_threshold"] += 1
        if c.score >= t:
            entities.append((c, t))
            count["detected"] += 1
        else:
            count["below_threshold"] += 1
    return Decision(entities, counts, scores)


# --- the micro-batcher ------------------------------------------------------------
class QueueFull(RuntimeError):
    """More texts are waiting than the service queues."""


class MicroBatcher:
    """The one thread that calls the pipeline: texts queued by any request within
    ``max_wait_s`` of the oldest are predicted together in one ``nlp.pipe`` call.

    nlp (Language): the pipeline (only this thread touches it).
    extract (Callable[[Doc], Any]): turns a predicted Doc into plain data, in this thread.
    batch_tokens (int): a batch stops taking texts once it holds this many tokens.
    max_wait_s (float): the longest the oldest text of a batch waits for company.
    max_queue (int): most texts waiting; ``submit`` raises QueueFull beyond.
    on_batch (Optional[Callable[[int, int], None]]): called with (texts, tokens) per batch (metrics).
    """

    def __init__(self, nlp, extract: Callable[[Any], Any], batch_tokens: int, max_wait_s: float, max_queue: int, on_batch: Optional[Callable[[int, int], None]] = None) -> None:
        self.nlp = nlp
        self.extract = extract
        self.batch_tokens = batch_tokens
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._cond = threading.Condition()
        self._pending: Deque[Tuple[str, Future, float]] = deque()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="ner-plus-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, texts: Sequence[str]) -> List[Future]:
        """Queue ``texts``; each Future gets the ``extract`` result of its text.

        RAISES (QueueFull): the queue cannot take all of them (none is queued).
        """
        now = time.monotonic()
        futures: List[Future] = [Future() for _ in texts]
        with self._cond:
            if self._closing:
                raise QueueFull("the service is shutting down")
            if len(self._pending) + len(texts) > self.max_queue:
                raise QueueFull(f"{len(self._pending)} texts are waiting (at most {self.max_queue})")
            self._pending.extend((text, fut, now) for text, fut in zip(texts, futures))
            self._cond.notify()
        return futures

    def close(self, timeout: float) -> None:
        """Predict what is queued, then stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _next_batch(self) -> Optional[List[Tuple[Any, Future]]]:
        """Texts for one nlp.pipe call as (Doc, Future); None once closed and empty.

        Everything already queued joins the batch up to the token budget; the
        wait for more ends ``max_wait_s`` after the oldest text arrived."""
        batch: List[Tuple[Any, Future]] = []
        tokens = 0
        deadline = 0.0
        while True:
            with self._cond:
                if not batch:
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._pending:
                        return None
                else:
                    while not self._pending and not self._closing:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                    if not self._pending:
                        return batch
                text, fut, arrived = self._pending.popleft()
            if not batch:
                deadline = arrived + self.max_wait_s
            if not fut.set_running_or_notify_cancel():
                continue  # its request is gone
            try:
                doc = self.nlp.make_doc(text)
            except Exception as err:  # e.g. longer than nlp.max_length: this text's own failure
                fut.set_exception(err)
                continue
            batch.append((doc, fut))
            tokens += len(doc)
            if tokens >= self.batch_tokens:
                return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if self.on_batch is not None:
                self.on_batch(len(batch), sum(len(doc) for doc, _ in batch))
            try:
                results = [self.extract(doc) for doc in self.nlp.pipe([doc for doc, _ in batch], batch_size=len(batch))]
            except Exception:
                # One text broke the batch: predict each on its own (fresh Docs, since a
                # half-annotated Doc would carry entities into the next run), so only
                # the request that sent it fails.
                for doc, fut in batch:
                    try:
                        fresh = self.nlp.make_doc(doc.text)
                        fut.set_result(self.extract(next(iter(self.nlp.pipe([fresh])))))
                    except Exception as err:
                        fut.set_exception(err)
                continue
            for (_, fut), result in zip(batch, results):
                fut.set_result(result)


# --- errors, metrics, audit --------------------------------------------------------
class ApiError(Exception):
    """An error answered to the client: status, a kind for the audit log, the field it names."""

    def __init__(self, status: int, kind: str, message: str, field: Optional[str] = None, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.field = field
        self.headers = headers or {}


class Metrics:
    """The service's Prometheus metrics. Labels are endpoint templates, status codes,
    entity types the model knows and decision names: never text from a request."""

    def __init__(self, multiprocess: bool) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = multiprocess
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.latency = Histogram(
            "ner_plus_request_duration_seconds", "Request latency by endpoint and status", ["endpoint", "status"], registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.entities = Counter(
            "ner_plus_entities_total", "Entity candidates by type and decision (detected, redacted, below_threshold, near_threshold)",
            ["entity_type", "decision"], registry=reg,
        )
        self.scores = Histogram(
            "ner_plus_entity_score", "Calibrated score of every model candidate, per type (watch for drift)", ["entity_type"], registry=reg,
            buckets=tuple(round(0.05 * i, 2) for i in range(1, 21)),
        )
        self.in_flight = Gauge("ner_plus_requests_in_flight", "/v1 requests being served", registry=reg, multiprocess_mode="livesum")
        self.batch_texts = Histogram(
            "ner_plus_batch_texts", "Texts per nlp.pipe call of the micro-batcher", registry=reg, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
        )
        self.batch_tokens = Histogram(
            "ner_plus_batch_tokens", "Tokens per nlp.pipe call of the micro-batcher", registry=reg,
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536),
        )
        self.model_info = Gauge(
            "ner_plus_model_info", "The served model (value 1)", ["name", "version", "config_hash"], registry=reg, multiprocess_mode="max"
        )

    def render(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)


def make_audit_logger(path: str, max_bytes: int, backups: int) -> logging.Logger:
    """A logger writing bare JSON lines to ``path`` with size-based rotation."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"spacy_ner_plus.audit.{id(path)}.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # never into the server's own log
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    return logger


def _frames_only(err: BaseException) -> str:
    """The stack of ``err`` without its message (it may quote the input)."""
    frames = traceback.extract_tb(err.__traceback__)
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))


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
        self.hash_key = load_hash_key(settings)
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
        if self.hash_key is None:
            for key, op in operators.items():
                if op.name == "hash":
                    raise ApiError(
                        400, "hash_unavailable", f"operators.{key}: the hash operator is off: the server has no key ({HASH_KEY_ENV} or --hash-key-file)",
                        f"operators.{key}.type",
                    )
        return operators

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
        audit["thresholds_hash"] = _short_hash(thresholds)
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
        try:
            if client_id is not None and not CLIENT_ID_PATTERN.match(client_id):
                client_id = None
                response = error_response(
                    request, ApiError(400, "invalid_client_id", f"{CLIENT_ID_HEADER} must match {CLIENT_ID_PATTERN.pattern}", CLIENT_ID_HEADER)
                )
            else:
                response = await call_next(request)
        except Exception as err:  # an internal error: request id, nothing of the input
            log.error("request %s: internal error %s at %s", request_id, type(err).__name__, _frames_only(err))
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
            service.audit.info(json.dumps(record, sort_keys=True))
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
        types = service.check_types(model, req.entities)
        thresholds = service.effective_thresholds(model, req.thresholds)
        operators = service.parse_ops(model, req.operators)
        audit["operators"] = {key: op.name for key, op in sorted(operators.items())}
        (candidates,) = await service.predict([req.text])
        decision = decide(candidates, thresholds, types)
        service.record(audit, [decision], thresholds)
        entities = [Entity(c.start, c.end, c.label, c.score) for c, _ in decision.entities]
        output, items = redact(req.text, entities, operators, service.hash_key)
        for e in entities:
            if operator_for(e.entity_type, operators).name != "keep":
                audit["entities"][e.entity_type]["redacted"] += 1
                service.metrics.entities.labels(e.entity_type, "redacted").inc()
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
            "operators": {"available": [n for n in ("replace", "mask", "redact", "hash", "keep") if n != "hash" or service.hash_key], "default": Operator("replace").to_dict()},
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
        """A page to try the service (serve_page.py); it loads nothing from elsewhere."""
        from fastapi.responses import HTMLResponse

        from .serve_page import PAGE

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
            "spacy_ner_plus.serve:app_from_env",
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
