"""The service's settings, validated in one place: ``ServeSettings`` travels to every
worker process as JSON in an environment variable; the CLI takes its defaults from it.
``worker_threads`` turns ``--threads auto`` into a number from the cores the process may use."""
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from .keys import HASH_KEY_ENV, Keyring, load_keyring  # noqa: F401 (HASH_KEY_ENV: where app.py and the CLI read it)

SETTINGS_ENV = "NER_PLUS_SERVE_SETTINGS"


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
    hash_key_file (Optional[str]): file holding the HMAC key of the hash operator, or a .toml
        keyring (keys.py; else the NER_PLUS_HASH_KEY environment variable; neither: no hash operator).
    max_body_bytes (int): larger request bodies get 413.
    max_texts (int): more texts in one request get 413.
    max_json_strings (int): more strings to analyze in one request's ``json`` get 413 (they are
        queued as texts; ``queue_chars`` bounds their characters as it does any text's).
    batch_tokens (int): a micro-batch stops taking texts once it holds this many tokens.
    batch_wait_ms (float): how long the oldest queued text waits for others to share its batch. 0 (the
        default): a batch starts as soon as the batcher is free, with every text queued by then; the
        texts that arrive while it is predicted share the next one.
    queue_chars (int): most characters (the unit of work: the pipeline's time grows with them) waiting
        for prediction in each lane, all requests together; a request that would exceed it gets 503
        overloaded.
    long_text_chars (int): texts longer than this are predicted in the long lane, a batcher thread
        of their own, so they never hold up the short texts of other requests by more than one
        short batch (they share the cores meanwhile).
    request_timeout (float): seconds a /v1 request may take, queueing included; beyond: 503
        deadline_exceeded, and its texts still queued are dropped from the batcher's queue.
    stall_timeout (float): /readyz answers 503 when texts are queued and the batcher has finished no
        batch for this many seconds.
    max_json_depth (int): deeper nesting of arrays and objects in a body gets 400 (checked on the raw
        bytes, before the JSON parser).
    host (str): the address the server binds: authentication is required unless it is loopback.
    api_keys_file (Optional[str]): file of ``client_id:sha256:HEX`` lines (service/auth.py); None: no
        authentication (refused unless ``host`` is loopback).
    allowed_hosts (List[str]): Host header names accepted (others: 421); empty: auth.default_allowed_hosts.
    wait_for_model (bool): start serving before the model is loaded, and stay up if it cannot be
        (/readyz and /v1 then answer 503 with the reason); default: load first, exit non-zero on failure.
    workers (int): uvicorn worker processes (each loads the model).
    code (Optional[str]): a Python file to import first (custom components, as `spacy train --code`).
    threads (Union[str, int]): torch's intra-op threads per worker: "auto" (``worker_threads``: the
        cores this process may use, its CPU affinity and cgroup quota, divided among ``workers``, less
        one per worker for its event loop) or a
        number. On a machine whose cores other busy processes also use, 1 avoids threads waiting on each
        other (docs/BENCHMARKS.md: p95 182 ms instead of 1,856 ms for 480 characters).
    policy (Optional[str]): the operator policy file (policy.py, docs/service-policy.md); None: the
        built-in default (every type redacted, keep off).
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
    max_json_strings: int = 1_024
    batch_tokens: int = 4096
    batch_wait_ms: float = 0.0
    queue_chars: int = 4_000_000
    long_text_chars: int = 2_000
    request_timeout: float = 30.0
    stall_timeout: float = 60.0
    max_json_depth: int = 8
    host: str = "127.0.0.1"
    api_keys_file: Optional[str] = None
    allowed_hosts: List[str] = field(default_factory=list)
    wait_for_model: bool = False
    workers: int = 1
    code: Optional[str] = None
    threads: Union[str, int] = "auto"
    policy: Optional[str] = None

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> "ServeSettings":
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set: start the service with `python -m spacy_ner_plus serve MODEL`")
        return cls(**json.loads(raw))


def load_hash_key(settings: ServeSettings) -> Optional[Keyring]:
    """The keys of the hash operator (keys.load_keyring): the key file or keyring, else
    $NER_PLUS_HASH_KEY (read once and removed from the environment), else None.

    RAISES (ValueError): a key shorter than 32 bytes, an unreadable or invalid file (no key in the message).
    """
    return load_keyring(settings.hash_key_file, workers=settings.workers)


# --- threads ---------------------------------------------------------------------
CGROUP_ROOT = Path("/sys/fs/cgroup")


def parse_threads(value: Union[str, int]) -> Union[str, int]:
    """``--threads``: "auto" or a whole number >= 1.

    RAISES (ValueError): anything else, saying what was given.
    """
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--threads takes auto or a whole number >= 1, not {value!r}")
    return int(text)


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> Optional[float]:
    """The CPUs the cgroup quota of this process allows (quota / period), or None when it has none.

    Reads cgroup v2 (``cpu.max``: "QUOTA PERIOD" or "max PERIOD") in the process's own cgroup, then at
    ``root``; else cgroup v1 (``cpu/cpu.cfs_quota_us``, -1 for none, and ``cpu.cfs_period_us``)."""
    candidates: List[Path] = []
    try:
        for line in proc_cgroup.read_text().splitlines():
            hierarchy, _, path = line.partition(":")[2].partition(":")
            if line.startswith("0::"):
                candidates.append(root / path.lstrip("/") / "cpu.max")
            elif "cpu" in hierarchy.split(","):
                candidates.append(root / "cpu" / path.lstrip("/"))
    except OSError:
        pass
    candidates += [root / "cpu.max", root / "cpu", root / "cpu,cpuacct"]
    for candidate in candidates:
        try:
            if candidate.name == "cpu.max":
                quota, _, period = candidate.read_text().strip().partition(" ")
                if quota == "max":
                    return None
                return int(quota) / int(period or 100_000)
            quota_v1 = int((candidate / "cpu.cfs_quota_us").read_text().strip())
            if quota_v1 <= 0:
                return None
            return quota_v1 / int((candidate / "cpu.cfs_period_us").read_text().strip())
        except (OSError, ValueError):
            continue
    return None


def usable_cores(affinity: Optional[int] = None, cpu_limit: Optional[float] = None) -> int:
    """Cores this process may keep busy: its CPU affinity (``os.sched_getaffinity``; ``os.cpu_count``
    where the platform has none), capped by the cgroup quota rounded down (1.5 CPUs allow 1 thread
    that is never throttled), at least 1. The arguments replace what is read (tests)."""
    if affinity is None:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cpu_limit is None:
        cpu_limit = cgroup_cpu_limit()
    cores = affinity if cpu_limit is None else min(affinity, math.floor(cpu_limit + 1e-9))
    return max(1, cores)


def worker_threads(threads: Union[str, int], workers: int, cores: Optional[int] = None) -> int:
    """Torch's intra-op threads in one worker process: ``threads`` when it is a number, else
    (``auto``) the usable cores divided among the ``workers``, less one core per worker for its
    event loop (HTTP parsing, checks, JSON answers of the requests that arrive during a forward)
    when it has more than one; at least 1. So a worker's busy threads never outnumber its cores:
    torch's threads waiting at a barrier for one that the event loop descheduled is how one 400-character
    request took 1,856 ms at p95 with two threads on two busy cores, 182 ms with one (docs/BENCHMARKS.md)."""
    if threads != "auto":
        return int(threads)
    per_worker = (usable_cores() if cores is None else cores) // max(1, workers)
    return max(1, per_worker - 1) if per_worker > 1 else 1
