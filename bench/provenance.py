"""The code a benchmark result comes from, for the bench scripts' records.

Run as ``python bench/SCRIPT.py``, a script finds this module beside it
(``sys.path[0]`` is bench/).
"""
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()


def commit() -> str:
    """HEAD's short hash, with "+dirty" when tracked files of the package,
    configs or bench scripts differ from it (results excepted). Read it before
    a long run starts: the tree may change while it runs. ``BENCH_COMMIT``,
    when set, names the commit instead (the GPU machine's copy of the tree has
    no git history)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "spacy_ner_plus", "configs", "bench", ":(exclude)bench/results")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
