"""Where a benchmark result comes from, and the one function every bench script writes it through.

``write_result`` appends a record to the ledger, ``bench/results/ledger/<experiment>/``: a NEW
file per run (opened with ``O_EXCL``, so an existing record is never overwritten), holding the
experiment, the result's name, the commit and whether the tree was dirty, the seed, the sha256 of
the config files used, the machine (cpu count and model, torch threads), the load average at the
start and at the end of the run, the timestamps, the command and the numbers. It also writes the
latest-run view ``bench/results/<name>.json`` that the scripts have always written (their
``--summary`` modes and ``bench/report.py`` read it); that view is replaced by the next run of the
same name, the ledger keeps every run. Tables are generated from the ledger (``bench/tables.py``).

The start of a run is this module's import: every script imports it first thing, so ``START``
holds the commit, the load average and the time before any work.
"""
import datetime
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Union

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LEDGER = RESULTS / "ledger"


def git(*args: str) -> str:
    """git's output, or "" where there is no git or no repository (the GPU machine's copy)."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def commit() -> str:
    """HEAD's short hash, with "+dirty" when tracked files of the package,
    configs or bench scripts differ from it (results excepted). Read it before
    a long run starts: the tree may change while it runs. ``BENCH_COMMIT``,
    when set, names the commit instead (the GPU machine's copy of the tree has
    no git history)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "spacy_ner_plus", "configs", "bench", ":(exclude)bench/results")
    return git("rev-parse", "--short=7", "HEAD") + ("+dirty" if dirty else "")


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def load_average() -> Optional[list]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # not on every platform
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> Dict[str, Any]:
    """The machine a run ends on. torch's thread count only where the run imported torch
    (importing it here would cost seconds and change nothing the run did)."""
    info: Dict[str, Any] = {
        "node": platform.node(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch_threads": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        info["torch_threads"] = torch.get_num_threads()
        info["torch"] = getattr(torch, "__version__", None)
        if getattr(torch, "cuda", None) is not None and torch.cuda.is_initialized():
            info["gpu"] = torch.cuda.get_device_name(torch.cuda.current_device())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    return info


def _start() -> Dict[str, Any]:
    head = commit()
    return {"timestamp": utc_now(), "load_average": load_average(), "commit": head.replace("+dirty", ""), "dirty": head.endswith("+dirty")}


START = _start()


def config_hashes(paths: Iterable[Union[str, Path]]) -> Dict[str, str]:
    """sha256 of each config file, keyed by its path relative to the repository where it is inside it."""
    out = {}
    for p in paths:
        p = Path(p)
        key = str(p.resolve().relative_to(ROOT)) if p.resolve().is_relative_to(ROOT) else str(p)
        out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def combined_hash(hashes: Dict[str, str]) -> Optional[str]:
    """One sha256 over the configs' hashes (sorted by path); None when no config was used."""
    if not hashes:
        return None
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()


_SAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def record_path(experiment: str, name: str, timestamp: str, commit7: str, ledger: Path = LEDGER) -> Path:
    """``<ledger>/<experiment>/<UTC timestamp>_<commit7>_<name>.json`` (characters a file name
    should not hold become ``-``)."""
    stamp = timestamp.replace(":", "").replace("-", "")
    return ledger / _SAFE.sub("-", experiment) / f"{stamp}_{_SAFE.sub('-', commit7[:7] or 'nocommit')}_{_SAFE.sub('-', name)}.json"


def write_new(path: Path, data: Dict[str, Any]) -> Path:
    """Write ``data`` as JSON to a file that must not exist yet (``O_EXCL``): a ledger record is
    never overwritten. Raises FileExistsError naming the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise FileExistsError(f"{path}: a ledger record with this name exists; records are never overwritten") from None
    with os.fdopen(fd, "w", encoding="utf8") as f:
        f.write(text)
    return path


def write_result(
    experiment: str,
    numbers: Dict[str, Any],
    latest: Optional[Union[str, Path]] = None,
    *,
    name: Optional[str] = None,
    seed: Optional[int] = None,
    configs: Iterable[Union[str, Path]] = (),
    ledger: Path = LEDGER,
    indent: int = 2,
    ensure_ascii: bool = True,
) -> Path:
    """Record one run: a new ledger record, and the latest-run view at ``latest`` when given.

    ``experiment`` is the name in ``bench.EXPERIMENTS``; ``numbers`` the script's record (written
    unchanged to ``latest``, as before); ``name`` defaults to ``latest``'s stem; ``seed`` to
    ``numbers["seed"]``; ``configs`` are the config files the run used (hashed). Returns the
    ledger record's path.
    """
    if latest is None and name is None:
        raise ValueError("write_result needs the result's name or its latest-run path")
    name = name or Path(latest).stem
    if seed is None and isinstance(numbers.get("seed"), int):
        seed = numbers["seed"]
    hashes = config_hashes(configs)
    end = utc_now()
    record = {
        "experiment": experiment,
        "name": name,
        "source": "run",
        "timestamp": end,
        "started": START["timestamp"],
        "commit": START["commit"],
        "dirty": START["dirty"],
        "seed": seed,
        "config_hash": combined_hash(hashes),
        "configs": hashes,
        "machine": machine(),
        "load_average": {"start": START["load_average"], "end": load_average()},
        "command": " ".join(["python -m bench", experiment, *sys.argv[1:]]),
        "numbers": numbers,
    }
    path = write_new(record_path(experiment, name, end, START["commit"], ledger), record)
    if latest is not None:
        latest = Path(latest)
        latest.parent.mkdir(parents=True, exist_ok=True)
        latest.write_text(json.dumps(numbers, indent=indent, ensure_ascii=ensure_ascii) + "\n", encoding="utf8")
    print(f"ledger: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", file=sys.stderr)
    return path
