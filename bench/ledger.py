"""Reading the ledger, and importing the history of ``bench/results`` into it.

``python -m bench import-history`` walks ``git log --follow`` of every file under
``bench/results/`` (the ledger excepted) and writes one record per committed version of it, marked
``"source": "git history"`` with the commit that added that version (``history_commit``), so a
number the docs cite from a file that a later run replaced still has a record. It is idempotent:
a version whose record exists is skipped (so is a version a run wrote through the ledger, whose
record says ``"source": "run"``); a record that exists with other content is an error.

Legacy records keep what the result file held: its own ``commit`` field (the code it was measured
at) becomes the record's ``commit``; the load average, the config hash and the machine details
were not recorded then and are ``null`` (the machine string the file recorded, if any, is kept).
"""
import datetime
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import bench
from bench import provenance

LEDGER = provenance.LEDGER
RESULTS = provenance.RESULTS
ROOT = provenance.ROOT


class LedgerError(Exception):
    pass


def load(ledger: Path = LEDGER) -> List[Dict[str, Any]]:
    """Every record of the ledger, oldest first (by timestamp, then file name)."""
    records = []
    for path in sorted(ledger.glob("*/*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf8"))
        except ValueError as e:
            raise LedgerError(f"{path}: not JSON ({e})") from None
        for key in ("experiment", "name", "timestamp", "numbers"):
            if key not in record:
                raise LedgerError(f"{path}: ledger record without {key!r}")
        record["_path"] = str(path.relative_to(ledger))
        records.append(record)
    records.sort(key=lambda r: (r["timestamp"], r["_path"]))
    return records


class Ledger:
    """The records, with the selections the tables make."""

    def __init__(self, records: List[Dict[str, Any]]):
        self.records = records

    @classmethod
    def read(cls, ledger: Path = LEDGER) -> "Ledger":
        return cls(load(ledger))

    def select(self, name: str, experiment: Optional[str] = None, **fields: Any) -> List[Dict[str, Any]]:
        """Records of result ``name`` (oldest first) whose fields match: ``commit="7e0747e"``
        (the commit the result was measured at; a prefix matches), ``history_commit=...``,
        ``source="run"``, or ``where=callable(record)``."""
        where: Optional[Callable[[Dict[str, Any]], bool]] = fields.pop("where", None)
        out = []
        for r in self.records:
            if r["name"] != name or (experiment and r["experiment"] != experiment):
                continue
            ok = True
            for key, want in fields.items():
                have = r.get(key)
                if key in ("commit", "history_commit"):
                    ok = ok and bool(have) and str(have).startswith(str(want)[:7])
                else:
                    ok = ok and have == want
            if ok and (where is None or where(r)):
                out.append(r)
        return out

    def latest(self, name: str, experiment: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
        """The newest record of ``name`` matching ``fields`` (see ``select``)."""
        found = self.select(name, experiment, **fields)
        if not found:
            said = ", ".join(f"{k}={v!r}" for k, v in fields.items() if k != "where")
            raise LedgerError(f"no ledger record of {name!r}{' with ' + said if said else ''} in {LEDGER.relative_to(ROOT)}")
        return found[-1]

    def one(self, name: str, experiment: Optional[str] = None, **fields: Any) -> Dict[str, Any]:
        """The record of ``name`` matching ``fields``, which must pick exactly one, or (the same
        version imported twice is impossible, so) the newest when several agree on every number."""
        found = self.select(name, experiment, **fields)
        if not found:
            return self.latest(name, experiment, **fields)  # raises, naming what was asked
        if len({json.dumps(r["numbers"], sort_keys=True) for r in found}) > 1:
            said = ", ".join(f"{k}={v!r}" for k, v in fields.items() if k != "where")
            raise LedgerError(f"{len(found)} different ledger records of {name!r} with {said or 'no filter'}: "
                              + ", ".join(r["_path"] for r in found) + "; say which (commit=, history_commit=)")
        return found[-1]


# ---------------------------------------------------------------------------------------------
# import-history


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        raise LedgerError(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def result_files() -> List[str]:
    """Every path under bench/results that git has ever held (the ledger excepted)."""
    names = _git("log", "--all", "--format=", "--name-only", "--", "bench/results").split()
    names += _git("ls-files", "bench/results").split()
    return sorted({n for n in names if n and not n.startswith("bench/results/ledger/")})


def versions(path: str) -> List[Dict[str, str]]:
    """The committed versions of ``path``, oldest first: the commit that added each (following
    renames) and its UTC date; deletions skipped."""
    out = _git("log", "--follow", "--format=%H %ct", "--name-status", "--", path)
    found, head = [], None
    for line in out.splitlines():
        if not line.strip():
            continue
        if re.fullmatch(r"[0-9a-f]{40} \d+", line):
            head = line.split()
            continue
        status, *paths = line.split("\t")
        if status.startswith("D") or head is None:
            continue
        found.append({"commit": head[0], "time": int(head[1]), "path": paths[-1]})
    return found[::-1]


def legacy_record(path: str, version: Dict[str, str]) -> Dict[str, Any]:
    text = _git("show", f"{version['commit']}:{version['path']}")
    name = Path(path).stem
    try:
        numbers = json.loads(text)
    except ValueError:
        # a log (the GPU runs): its JSON lines are the numbers, the text is kept as it was
        lines = [json.loads(l) for l in text.splitlines() if l.startswith("{") and _is_json(l)]
        numbers = {"log": text, "json_lines": lines}
    seed = numbers.get("seed") if isinstance(numbers.get("seed"), int) else None
    if seed is None:
        m = re.search(r"_seed(\d+)$", name)
        seed = int(m.group(1)) if m else None
    when = datetime.datetime.fromtimestamp(version["time"], datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    measured_at = numbers.get("commit") if isinstance(numbers.get("commit"), str) else None
    return {
        "experiment": bench.experiment_of_result(name),
        "name": name,
        "source": "git history",
        "timestamp": when,
        "started": None,
        "commit": (measured_at or version["commit"][:7]).replace("+dirty", ""),
        "dirty": bool(measured_at and measured_at.endswith("+dirty")),
        "history_commit": version["commit"][:7],
        "history_path": version["path"],
        "seed": seed,
        "config_hash": None,
        "configs": {},
        "machine": numbers.get("machine") if isinstance(numbers.get("machine"), str) else None,
        "load_average": None,
        "command": numbers.get("command") if isinstance(numbers.get("command"), str) else None,
        "numbers": numbers,
    }


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def import_history(ledger: Path = LEDGER, paths: Optional[Iterable[str]] = None) -> Dict[str, int]:
    """Write the legacy records (see the module's docstring). Returns counts: written, present."""
    counts = {"written": 0, "present": 0}
    # versions written by a run through the ledger (and committed since) already have their record
    ran = {(r["name"], json.dumps(r["numbers"], sort_keys=True)) for r in load(ledger) if r.get("source") == "run"} if ledger.is_dir() else set()
    for path in paths or result_files():
        for version in versions(path):
            record = legacy_record(path, version)
            if (record["name"], json.dumps(record["numbers"], sort_keys=True)) in ran:
                counts["present"] += 1
                continue
            target = provenance.record_path(record["experiment"], record["name"], record["timestamp"], record["history_commit"], ledger)
            if target.exists():
                if json.loads(target.read_text(encoding="utf8")) != record:
                    raise LedgerError(f"{target}: a record of {path} at {version['commit'][:7]} exists with other content")
                counts["present"] += 1
                continue
            provenance.write_new(target, record)
            counts["written"] += 1
    return counts


def cli(argv) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench import-history", description=__doc__.split("\n\n")[1])
    parser.add_argument("paths", nargs="*", help="only these bench/results files (default: every one git has held)")
    args = parser.parse_args(argv)
    counts = import_history(paths=args.paths or None)
    print(f"import-history: {counts['written']} records written, {counts['present']} already in {LEDGER.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
