"""What the service tells its operator: Prometheus metrics (labels never hold request text)
and the JSON-lines audit log (one line per /v1 request, no input or entity text)."""
import logging
import logging.handlers
import sys
import traceback
from pathlib import Path


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
            "ner_plus_entities_total", "Entity candidates by type and decision (detected, below_threshold, near_threshold; on /v1/redact: redacted, partly_redacted, left_visible)",
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


class AuditWriteError(OSError):
    """An audit record that could not be written (the service answers 503 unless told to go on)."""


class _FailLoudHandler(logging.handlers.RotatingFileHandler):
    """A rotating file handler whose write errors reach the caller.

    logging's handlers print a failed write to stderr and carry on, so a full
    disk would silently lose the audit trail; a service that must fail closed
    needs to know that this record is not on disk."""

    def handleError(self, record: logging.LogRecord) -> None:
        cause = sys.exc_info()[1]
        if isinstance(cause, AuditWriteError):  # RotatingFileHandler.emit passes the inner one on
            raise cause
        # drop the stream with what it buffered: the record was refused, it must not appear later;
        # the next record opens the file again
        stream, self.stream = self.stream, None
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
        raise AuditWriteError("the audit record could not be written") from cause


def make_audit_logger(path: str, max_bytes: int, backups: int) -> logging.Logger:
    """A logger writing bare JSON lines to ``path`` with size-based rotation.

    Its ``info`` RAISES (AuditWriteError) when the line cannot be written
    (disk full, file removed from a read-only directory, rotation refused).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"spacy_ner_plus.audit.{id(path)}.{path}")
    logger.setLevel(logging.INFO)
    logger.propagate = False  # never into the server's own log
    handler = _FailLoudHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers = [handler]
    return logger


def frames_only(err: BaseException) -> str:
    """The stack of ``err`` without its message (it may quote the input)."""
    frames = traceback.extract_tb(err.__traceback__)
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
