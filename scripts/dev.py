"""The two quick-start commands, with nothing but Python needed:

    python3 scripts/dev.py all    # .venv + install + `spacy project run all`
    python3 scripts/dev.py test   # .venv + install + pytest (extra arguments go to pytest)
    python3 scripts/dev.py test -m "not slow"   # the fast tests only

The virtual environment lives in .venv at the repo root and is (re)installed
only when setup.cfg or this script change. Torch is installed first and pinned
(NER_PLUS_TORCH, default torch==2.13.0) so that no open range pulls a
multi-GB CUDA build. Extra arguments go to spacy project run / pytest.

Tests run in one pytest-xdist worker per core (at most 4), each file on one worker
(--dist loadfile: a module's trained fixtures are built once), with the cores shared
out as torch threads (OMP_NUM_THREADS). `-n 0` runs them in one process; `-n N` chooses.
"""
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".spacy-ner-plus-installed"


def run(*args: str, env=None) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True, env=env)


def pytest_command(args: list) -> tuple:
    """pytest with its arguments, and the environment that shares the cores out among the workers."""
    env = dict(os.environ)
    cores = os.cpu_count() or 1
    if any(a.startswith(("-n", "--numprocesses")) for a in args):  # the caller chose
        return [str(PYTHON), "-m", "pytest", "-q", *args], env
    workers = min(4, cores)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // workers)))
    return [str(PYTHON), "-m", "pytest", "-q", "-n", str(workers), "--dist", "loadfile", *args], env


def ensure_env() -> None:
    torch_spec = os.environ.get("NER_PLUS_TORCH", "torch==2.13.0")
    digest = hashlib.sha256(
        (ROOT / "setup.cfg").read_bytes() + Path(__file__).read_bytes() + torch_spec.encode()
    ).hexdigest()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run(*pip, "--upgrade", "pip", "setuptools>=61", "wheel")
    run(*pip, torch_spec)
    # every extra: the test suite exercises the Ray engine, the PII service, the corpus generator
    # and builds the documentation site
    run(*pip, "-e", ".[backbone,test,ray,pii,serve,dev,lora,docs,presidio,onnx]")
    STAMP.write_text(digest)


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in ("all", "test"):
        print(__doc__)
        return 2
    try:
        ensure_env()
        if sys.argv[1] == "all":
            run(str(PYTHON), "-m", "spacy", "project", "run", "all", ".", *sys.argv[2:])
        else:
            command, env = pytest_command(sys.argv[2:])
            run(*command, env=env)
    except subprocess.CalledProcessError as err:
        print(f"failed ({err.returncode}): {' '.join(map(str, err.cmd))}", file=sys.stderr)
        return err.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
