"""The README and docs/ as a user reads them: the site builds with ``mkdocs build --strict``
(a broken link or anchor fails it), and every ```bash and ```python example runs.

Each fenced block is taken from the markdown as written. A bash block runs in a fresh working
folder that holds small stand-ins at the paths the docs name (the tiny pipeline saved by 0.2.0 in
``tests/fixtures`` as ``training/sample/model-calibrated``, a few gold sentences as
``corpus/sample/*.spacy``, the sample corpus as it ships), with ``python`` the interpreter running the
tests. Every command of a block is either run for real (its first words are in ``RUN``) or stands
for what a test elsewhere runs (``COVERED``: a pattern and the test that runs that command, or the
same workflow on other data); a command that is neither fails ``test_every_documented_command_is_run_or_covered``.
Python blocks run in the same kind of folder; a ``# Output:`` comment at the end of a block is the
exact output the block must print. ```ini blocks must parse as spaCy config.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import pytest

from conftest import TRAIN, project_copy

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_PIPELINE = Path(__file__).resolve().parent / "fixtures" / "saved_pipeline_0_2_0"
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250
BLOCK_TIMEOUT_S = 420

# Commands that run for real on the stand-ins: (regex on the command, as written).
RUN = [
    r"python -m spacy_ner_plus (convert|evaluate|calibrate|annotate|quantize|export-onnx|render|serve) ",
    r"printf ",  # writes the input files an example reads
    r"export NER_PLUS_HASH_KEY=",
    r"openssl rand -hex 32 > ",  # a hash key file (docs/service-policy.md)
    r"python -m spacy_ner_plus\.service\.auth add ",  # an API key (docs/service-deploy.md)
    r"curl -sf --retry \d+ --retry-connrefused --retry-delay 1 localhost:8080/readyz$",
    r"curl -s localhost:8080/",
]
# A `serve` the docs start without `&` runs in a terminal of its own until stopped: here it runs in
# the background, and the block goes on once /readyz answers 200 (it fails when the server exits).
SERVE_FOREGROUND = re.compile(r"python -m spacy_ner_plus serve (?!.*&$)")
SERVE_READY_S = 300
# The deployment's folder (/etc/ner-plus/) is a folder of the working copy when a block runs.
DEPLOY_DIR = "/etc/ner-plus/"

# Commands that need the trained workflows, the big corpora, a cluster or a fresh environment:
# (regex on the command, the test that runs it). The covering test must exist.
WORKFLOW_TEST = "tests/test_workflow.py::test_the_workflow_runs_end_to_end_with_hyphenated_labels"
PACKAGING_TEST = "tests/test_packaging.py::test_packaged_wheel_in_fresh_venv"
COVERED = [
    # `dev.py all` is `spacy project run all .` (checked below); the test runs that workflow end to end
    (r"python3 scripts/dev\.py all$", WORKFLOW_TEST),
    (r"python -m spacy project run all \. --vars\.", WORKFLOW_TEST),
    # CI (.ci/run) is `python3 scripts/dev.py test`; the test checks the arguments reach pytest
    (r"python3 scripts/dev\.py test( |$)", "tests/test_docs.py::test_dev_script_runs_the_workflow_and_pytest_with_the_given_arguments"),
    (r"pip install torch==[\w.]+$", "tests/test_docs.py::test_documented_installs_are_what_the_dev_script_installs"),
    (r'pip install -e "\.\[[\w,]+\]"', "tests/test_docs.py::test_documented_installs_are_what_the_dev_script_installs"),
    (r"pip install torch==[\w.]+ /path/to/spacy-ner-plus packages/", PACKAGING_TEST),
    (r"python -c \"import spacy; nlp = spacy\.load\('en_ner_plus_sample'\)", PACKAGING_TEST),
    (r"python -m spacy project run pii( |$)", "tests/test_docs.py::test_the_pii_workflow_runs_end_to_end"),
    (r"python -m spacy project run pii-mix( |$)", "tests/test_docs.py::test_the_pii_mix_workflow_runs_end_to_end"),
    (r"python -m spacy project run mini \. --vars\.mini_data ", "tests/test_docs.py::test_the_mini_workflow_runs_end_to_end"),
    (r"python -m spacy project run healthcare \. --vars\.data ", "tests/test_corpus_scripts.py::test_healthcare_workflow_end_to_end_with_two_training_steps"),
    (r"python -m spacy_ner_plus annotate \S+ \S+ \S+\.parquet --engine ray --format parquet$",
     "tests/test_annotate_ray.py::test_ray_engine_parquet_holds_the_records_and_typed_entities"),
    # a client of the deployment behind its TLS proxy: a Bearer key on /v1, the audit log records its client
    (r"curl -s https://pii\.example\.com/v1/", "tests/test_service_edge.py::test_edge_the_audit_log_records_the_keys_client_not_a_header"),
]

# What a block must leave behind or print, beyond exiting 0: (file, section) -> checks.
FILES_WRITTEN = {
    ("commands.md", "`python -m spacy_ner_plus convert INPUT OUTPUT`"): ["corpus/sample/train.spacy"],
    ("commands.md", "`python -m spacy_ner_plus evaluate MODEL DATA [--output DIR]`"): ["metrics/sample/metrics.json", "metrics/sample/report.md"],
    ("commands.md", "`python -m spacy_ner_plus calibrate MODEL DEV OUTPUT_MODEL`"): ["training/sample/model-calibrated/config.cfg", "metrics/sample/calibration/calibration.json"],
    ("commands.md", "`python -m spacy_ner_plus quantize MODEL OUTPUT_MODEL`"): ["training/sample/model-int8/config.cfg"],
    ("commands.md", "`python -m spacy_ner_plus export-onnx PIPELINE_DIR [--int8]`"): ["training/sample/model-calibrated/ner_plus/encoder.onnx"],
    ("commands.md", "`python -m spacy_ner_plus render MODEL INPUT OUTPUT.html`"): ["entities.html"],
    ("batch.md", "`python -m spacy_ner_plus annotate MODEL INPUT... OUTPUT`"): ["out.jsonl"],
}
PRINTED = {
    ("README.md", "PII redaction service"): ["<EMAIL_ADDRESS>", '"items"'],
    ("service.md", "The PII service"): ['"results"', '"entity_type":"EMAIL_ADDRESS"', '"items"'],
    ("service-presidio.md", "The same edges as `/v1`"): ['"entity_type":"PER"', '"recognition_metadata"', '["LOC","ORG","PER"]'],
}
# The README's snippet runs on the stand-in, so its output is checked for the form its comment gives:
# TEXT LABEL CONFIDENCE per entity, then the span group and its scores.
README_ENTITY_LINE = re.compile(r"^\S.* (PER|ORG|LOC|DATE) (0|1)(\.\d{1,3})?$")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    section: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def key(self):
        return (self.path.name, self.section)


FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def doc_blocks(path: Path) -> List[Block]:
    text = path.read_text(encoding="utf8")
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()]
        headings = re.findall(r"^#+ (.+)$", before, re.M)
        indent = match.group("indent")
        body = "".join(line[len(indent):] if line.startswith(indent) else line for line in match.group("body").splitlines(True))
        blocks.append(Block(path, before.count("\n") + 1, match.group("lang"), headings[-1].strip() if headings else "", body))
    return blocks


ALL_BLOCKS = [block for path in DOC_FILES for block in doc_blocks(path)]


def shell_commands(script: str) -> List[str]:
    """The commands of a bash block: backslash-newlines joined, newlines inside quotes kept,
    comments and blank lines dropped. Enough shell for documentation, not a shell parser."""
    commands, current, quote, i = [], [], None, 0
    while i < len(script):
        char = script[i]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
        elif char == "\\" and script[i + 1 : i + 2] == "\n":
            current.append(" ")
            i += 1
        elif char in "'\"":
            quote = char
            current.append(char)
        elif char == "#" and (not current or current[-1] in " \t"):
            while i < len(script) and script[i] != "\n":
                i += 1
            continue
        elif char == "\n":
            commands.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    commands.append("".join(current))
    return [" ".join(c.split()) if "'" not in c and '"' not in c else c.strip() for c in commands if c.strip()]


def covering_test(command: str) -> Optional[str]:
    for pattern, test in COVERED:
        if re.match(pattern, command):
            return test
    return None


def is_run(command: str) -> bool:
    return any(re.match(pattern, command) for pattern in RUN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the stand-ins --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    """A working folder with small pipelines and data at the paths the docs name."""
    import spacy
    from spacy.tokens import DocBin
    from spacy.training import Example

    base = tmp_path_factory.mktemp("docs") / "project"
    shutil.copytree(ROOT / "assets" / "sample", base / "assets" / "sample")
    for name in ("model-best", "model-calibrated"):
        shutil.copytree(FIXTURE_PIPELINE, base / "training" / "sample" / name)
    nlp = spacy.load(FIXTURE_PIPELINE)
    gold = TRAIN + [("Paris met John in Acme Corp .", [(0, 5, "PER"), (10, 14, "PER"), (18, 27, "ORG")])]
    docs = [Example.from_dict(nlp.make_doc(text), {"entities": ents}).reference for text, ents in gold]
    (base / "corpus" / "sample").mkdir(parents=True)
    for split in ("dev", "test"):
        DocBin(docs=docs).to_disk(base / "corpus" / "sample" / f"{split}.spacy")
    # the PII pipeline: the tiny ner_plus behind the pattern recognisers, as configs/ner_plus_pii.cfg orders them
    if importlib.util.find_spec("phonenumbers") is None:
        return base  # without the `pii` extra the examples that serve it fail, saying they cannot load it
    nlp.add_pipe("pii_patterns", first=True)
    (base / "training" / "pii").mkdir(parents=True)
    nlp.to_disk(base / "training" / "pii" / "model-calibrated")
    return base


@pytest.fixture
def workdir(standins, tmp_path):
    path = tmp_path / "project"
    shutil.copytree(standins, path)
    return path


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    env.pop("NER_PLUS_HASH_KEY", None)
    env["NO_COLOR"] = "1"
    return env


def run_bash_block(block: Block, cwd: Path) -> str:
    """Run the block as written, each covered command replaced by a no-op that names its test;
    `python` is this interpreter, port 8080 a free port, and curl fails on an HTTP error. The block
    runs in a process group of its own, ended afterwards with whatever it left in the background
    (the server of a `serve`). A `serve` without `&` runs in the background until it is ready
    (SERVE_FOREGROUND); paths under DEPLOY_DIR lie in the working folder. RETURNS (str): what it printed."""
    port = str(_free_port())
    lines = ["set -euo pipefail", f"mkdir -p {DEPLOY_DIR.lstrip('/')}"]
    for command in shell_commands(block.text):
        test = covering_test(command)
        if test:
            lines.append(f": covered by {test}")
            continue
        assert is_run(command), f"{block.where}: {command!r} is neither run nor covered"
        command = command.replace("8080", port).replace("curl -s ", "curl -s --fail-with-body ").replace(DEPLOY_DIR, DEPLOY_DIR.lstrip("/"))
        if SERVE_FOREGROUND.match(command):
            assert f"--port {port}" in command, f"{block.where}: a serve example names its --port (8080)"
            lines.append(f"{command} &")
            lines.append(
                f'serve_pid=$!; for _ in $(seq {SERVE_READY_S}); do curl -sf localhost:{port}/readyz >/dev/null && break; '
                f'kill -0 "$serve_pid" 2>/dev/null || {{ echo "{block.where}: the server exited" >&2; exit 1; }}; sleep 1; done; '
                f"curl -sf localhost:{port}/readyz >/dev/null"
            )
            continue
        lines.append(command)
    out, err = cwd / ".block.stdout", cwd / ".block.stderr"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(["bash", "-c", "\n".join(lines)], cwd=cwd, env=_env(), stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            returncode = proc.wait(BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            returncode = "timeout"
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            proc.wait(30)
    printed = out.read_text(encoding="utf8", errors="replace")
    assert returncode == 0, f"{block.where} failed ({returncode}):\n{printed[-3000:]}\n{err.read_text(errors='replace')[-3000:]}"
    return printed


def _id(block: Block) -> str:
    return f"{block.path.name}:{block.line}"


BASH = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]
PYTHON = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]
INI = [b for b in ALL_BLOCKS if b.lang in ("ini", "cfg")]
RUNNABLE_BASH = [b for b in BASH if not all(covering_test(c) for c in shell_commands(b.text))]


# --- the site --------------------------------------------------------------------------------


def _mkdocs(cwd: Path, site: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.fail("mkdocs and mkdocs-material are not installed: pip install -e '.[docs]' (scripts/dev.py does)")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_the_docs_build_as_a_site_with_strict_links(tmp_path):
    proc = _mkdocs(ROOT, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()
    for page in ("commands", "component", "training", "service", "batch", "benchmarks", "BENCHMARKS", "changelog"):
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    changelog = (tmp_path / "site" / "changelog" / "index.html").read_text(encoding="utf8")
    assert "Run times measured on the way" in changelog  # CHANGELOG.md is included, not linked


def test_a_broken_link_fails_the_site_build(tmp_path):
    """The strictness the previous test relies on: an anchor that does not exist is an error."""
    for name in ("mkdocs.yml", "CHANGELOG.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    with open(tmp_path / "docs" / "index.md", "a", encoding="utf8") as f:
        f.write("\nSee [convert](commands.md#no-such-section).\n")
    proc = _mkdocs(tmp_path, tmp_path / "site")
    assert proc.returncode != 0
    assert "no-such-section" in proc.stdout + proc.stderr


def test_the_readme_is_short_and_holds_the_generated_results_table():
    readme = (ROOT / "README.md").read_text(encoding="utf8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    assert readme.count("<!-- bench-table: readme-summary -->") == 1
    assert readme.index("<!-- bench-table: readme-summary -->") < readme.index("<!-- /bench-table -->")
    # the quick start, and the snippet loads the calibrated pipeline that `all` packages (behind a sentencizer)
    for command in ("python3 scripts/dev.py all", "python3 scripts/dev.py test", 'python3 scripts/dev.py test -m "not slow"'):
        assert command in readme
    project = (ROOT / "project.yml").read_text(encoding="utf8")
    assert 'spacy.load("training/sample/model-calibrated")' in readme
    assert "spacy assemble configs/package_sentences.cfg training/${vars.name}/model-packaged --paths.model training/${vars.name}/model-calibrated" in project
    assert "spacy package training/${vars.name}/model-packaged" in project
    assert "training/${vars.name}/model-calibrated" in project and "name: \"sample\"" in project


# --- every command is run or covered ---------------------------------------------------------


def test_docs_have_examples_to_run():
    """The extraction finds the blocks (a fence change must not make the tests below vacuous)."""
    assert len(BASH) >= 8 and len(PYTHON) >= 4 and len(INI) >= 3
    assert any(b.path.name == "README.md" and "serve" in b.text for b in BASH)


def test_every_documented_command_is_run_or_covered():
    unknown = [
        f"{b.where}: {c}" for b in BASH for c in shell_commands(b.text) if not covering_test(c) and not is_run(c)
    ]
    assert not unknown, "commands neither run (RUN) nor covered by a test (COVERED):\n" + "\n".join(unknown)


@pytest.mark.parametrize("pattern,test", COVERED, ids=[p for p, _ in COVERED])
def test_each_covering_test_exists_and_covers_a_documented_command(pattern, test):
    path, name = test.split("::")
    source = (ROOT / path).read_text(encoding="utf8")
    assert re.search(rf"^def {re.escape(name)}\(", source, re.M), f"{test} does not exist"
    assert any(re.match(pattern, c) for b in BASH for c in shell_commands(b.text)), f"no documented command matches {pattern!r}: remove it"


def test_shell_commands_split_like_the_shell():
    script = "a x \\\n  y  # note\n# only a comment\nb -d '{\"t\": 1,\n  \"u\": 2}'\nprintf 'a#b\\n' > f\n"
    assert shell_commands(script) == ["a x y", "b -d '{\"t\": 1,\n  \"u\": 2}'", "printf 'a#b\\n' > f"]


def test_dev_script_runs_the_workflow_and_pytest_with_the_given_arguments(monkeypatch):
    assert "python3 scripts/dev.py test" in (ROOT / ".ci" / "run").read_text(encoding="utf8")
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "scripts" / "dev.py")
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    calls = []
    monkeypatch.setattr(dev, "ensure_env", lambda: None)
    monkeypatch.setattr(dev, "run", lambda *args, env=None: calls.append((list(args), env)))
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for argv in (["test", "-m", "not slow"], ["test", "-n", "0"], ["all"]):
        monkeypatch.setattr(sys, "argv", ["dev.py", *argv])
        assert dev.main() == 0
    # one worker per core, each file on one worker, one torch thread each
    assert calls[0][0][1:] == ["-m", "pytest", "-q", "-n", "2", "--dist", "loadfile", "-m", "not slow"]
    assert calls[0][1]["OMP_NUM_THREADS"] == "1"
    # the caller's -n is kept as given, and the cores are not shared out
    assert calls[1][0][1:] == ["-m", "pytest", "-q", "-n", "0"] and "OMP_NUM_THREADS" not in calls[1][1]
    assert calls[2][0][1:] == ["-m", "spacy", "project", "run", "all", "."]


def _extras(text: str) -> dict:
    section = text.split("[options.extras_require]", 1)[1].split("\n[", 1)[0]
    return dict.fromkeys(re.findall(r"^(\w+) =", section, re.M))


def test_documented_installs_are_what_the_dev_script_installs():
    dev = (ROOT / "scripts" / "dev.py").read_text(encoding="utf8")
    extras = set(_extras((ROOT / "setup.cfg").read_text(encoding="utf8")))
    installed = set(re.search(r'"-e", "\.\[([\w,]+)\]"', dev).group(1).split(","))
    # every extra but `bench` (locust and psutil for the load test, which is not part of CI; docs/index.md says so)
    assert installed == extras - {"bench"}, "scripts/dev.py installs every extra of setup.cfg but bench"
    torch_pin = re.search(r'"NER_PLUS_TORCH", "(torch==[\w.]+)"', dev).group(1)
    seen = 0
    for block in BASH:
        for command in shell_commands(block.text):
            for names in re.findall(r'pip install -e "\.\[([\w,]+)\]"', command):
                assert set(names.split(",")) <= extras, f"{block.where}: {command}"
                seen += 1
            for pin in re.findall(r"pip install (torch==[\w.]+)", command):
                assert pin == torch_pin, f"{block.where}: {pin}, but scripts/dev.py installs {torch_pin}"
                seen += 1
    assert seen >= 3


# --- the examples run -------------------------------------------------------------------------


@pytest.mark.parametrize("block", RUNNABLE_BASH, ids=[_id(b) for b in RUNNABLE_BASH])
def test_bash_example_runs(block, workdir):
    printed = run_bash_block(block, workdir)
    for path in FILES_WRITTEN.get(block.key, []):
        assert (workdir / path).exists(), f"{block.where}: {path} was not written"
    for text in PRINTED.get(block.key, []):
        assert text in printed, f"{block.where}: {text!r} not in the output:\n{printed[-2000:]}"


def test_examples_that_write_files_are_checked():
    """FILES_WRITTEN and PRINTED name sections that exist (a renamed heading must not skip a check)."""
    keys = {b.key for b in BASH}
    assert set(FILES_WRITTEN) <= keys and set(PRINTED) <= keys


@pytest.mark.parametrize("block", PYTHON, ids=[_id(b) for b in PYTHON])
def test_python_example_runs(block, workdir):
    proc = subprocess.run(
        [sys.executable, "-c", block.text], cwd=workdir, env=_env(), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
    )
    assert proc.returncode == 0, f"{block.where} failed:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.splitlines()
    if "# Output:\n" in block.text:
        expected = [l[2:] if l.startswith("# ") else l[1:] for l in block.text.split("# Output:\n", 1)[1].splitlines()]
        assert lines == expected, f"{block.where}: printed\n{proc.stdout}"
    if block.key == ("README.md", "Use it"):
        assert lines and lines[-1].startswith("["), proc.stdout
        assert all(README_ENTITY_LINE.match(line) for line in lines[:-1]), proc.stdout


def _with_parent_sections(fragment: str) -> str:
    """A config fragment (``[components.ner_plus.model.encoder.lora]``) with the empty parent
    sections that a whole config would have, so that it parses on its own."""
    seen, parents = set(re.findall(r"^\[([^\]]+)\]", fragment, re.M)), []
    for section in list(seen):
        parts = section.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                parents.append(parent)
    return "".join(f"[{p}]\n" for p in sorted(parents, key=lambda p: p.count("."))) + fragment


@pytest.mark.parametrize("block", INI, ids=[_id(b) for b in INI])
def test_config_example_parses_and_names_registered_functions(block):
    import importlib.metadata

    import spacy
    from thinc.api import Config

    config = Config().from_str(_with_parent_sections(block.text), interpolate=False)
    assert config, f"{block.where}: an empty config"
    names = re.findall(r'^@(\w+) = "([^"]+)"', block.text, re.M)
    for kind, name in names:
        assert getattr(spacy.registry, kind).get(name), f"{block.where}: {kind} {name!r} is not registered"
    factories = re.findall(r'^factory = "([^"]+)"', block.text, re.M)
    for factory in factories:
        # through the entry points, as spacy.load finds it (importing the package registers nothing: it is lazy)
        for entry_point in importlib.metadata.entry_points(group="spacy_factories"):
            if entry_point.name == factory:
                entry_point.load()
        assert spacy.language.Language.has_factory(factory), f"{block.where}: no factory {factory!r}"


# --- the workflows the docs show, on small data -----------------------------------------------


def _run_workflow(project: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "spacy", "project", "run", *args]
    proc = subprocess.run(cmd, cwd=project, env=_env(), capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


PII_TEXTS = [
    ("ticket", [("Anna", "B-PERSON"), ("Keller", "I-PERSON"), ("wrote", "O"), ("from", "O"), ("anna@example.com", "B-EMAIL_ADDRESS"), (".", "O")]),
    ("chat", [("Call", "O"), ("Peter", "B-PERSON"), ("Brown", "I-PERSON"), ("at", "O"), ("Acme", "B-ORGANIZATION"), ("Ltd", "I-ORGANIZATION"), ("today", "B-DATE_TIME"), (".", "O")]),
    ("form", [("SSN", "O"), ("234-45-6789", "B-US_SSN"), (",", "O"), ("Mary", "B-PERSON"), ("Smith", "I-PERSON"), ("in", "O"), ("Berlin", "B-LOCATION"), (".", "O")]),
    ("mail", [("Order", "O"), ("4411", "O"), ("shipped", "O"), ("to", "O"), ("John", "B-PERSON"), ("on", "O"), ("Monday", "B-DATE_TIME"), (".", "O")]),
]


def _write_pii(path: Path, texts) -> None:
    """The PII corpus format: -DOCSTART- REGISTER/TEMPLATE, then TOKEN SPACE TAG per token."""
    out = []
    for i, (register, tokens) in enumerate(texts):
        out.append(f"-DOCSTART-\t{register}/{i:02d}\tO")
        for j, (token, tag) in enumerate(tokens):
            space = "SpaceAfter=No" if j + 1 < len(tokens) and tokens[j + 1][0] in ".," else "_"
            out.append(f"{token}\t{space}\t{tag}")
        out.append("")
    path.write_text("\n".join(out) + "\n", encoding="utf8")


@pytest.mark.slow
def test_the_pii_workflow_runs_end_to_end(tmp_path):
    """`python -m spacy project run pii` (README, docs/service.md, docs/training.md) on four texts."""
    import spacy

    pytest.importorskip("phonenumbers")
    project = project_copy(tmp_path)
    (project / "assets" / "pii").mkdir(parents=True)
    _write_pii(project / "assets" / "pii" / "train.iob", PII_TEXTS * 4)
    _write_pii(project / "assets" / "pii" / "dev.iob", PII_TEXTS)
    _write_pii(project / "assets" / "pii" / "test.iob", PII_TEXTS)
    # 16 texts in batches of 16: one step per epoch; no CoNLL-2003 sentence mixed in, so no CoNLL copy read
    _run_workflow(
        project, "pii", ".", "--vars.pii_max_epochs", "3", "--vars.pii_mix_eval_frequency", "1",
        "--vars.pii_conll_sentences", "0", "--vars.pii_conll", str(tmp_path / "no_conll"),
    )  # fmt: skip
    metrics = json.loads((project / "metrics" / "pii" / "metrics.json").read_text())
    assert {"PERSON", "EMAIL_ADDRESS", "US_SSN"} <= set(metrics["per_type"])
    nlp = spacy.load(project / "training" / "pii" / "model-calibrated")
    assert nlp.pipe_names[:2] == ["pii_patterns", "ner_plus"]
    assert set(nlp.get_pipe("ner_plus").cfg["thresholds"]) == set(nlp.get_pipe("ner_plus").labels)
    doc = nlp("Write to anna@example.com .")
    assert [(e.text, e.label_) for e in doc.ents if e.label_ == "EMAIL_ADDRESS"] == [("anna@example.com", "EMAIL_ADDRESS")]
    assert len(list((project / "packages").glob("en_ner_plus_pii-*/dist/*.whl"))) == 1


@pytest.mark.slow
def test_the_pii_mix_workflow_runs_end_to_end(tmp_path):
    """`python -m spacy project run pii-mix` (docs/training.md) on four PII texts and a tiny CoNLL copy;
    without the copy, the mixing step stops with an error naming pii_conll."""
    import spacy

    pytest.importorskip("phonenumbers")
    project = project_copy(tmp_path)
    (project / "assets" / "pii").mkdir(parents=True)
    _write_pii(project / "assets" / "pii" / "train.iob", PII_TEXTS * 2)
    _write_pii(project / "assets" / "pii" / "dev.iob", PII_TEXTS)
    _write_pii(project / "assets" / "pii" / "test.iob", PII_TEXTS)
    data = tmp_path / "conll2003"
    proc = subprocess.run(
        [sys.executable, "-m", "spacy", "project", "run", "pii-mix", ".", "--vars.pii_conll", str(data)],
        cwd=project, env=_env(), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode != 0 and "set the project variable pii_conll" in proc.stdout + proc.stderr
    data.mkdir()
    for split, n in (("train", 2), ("dev", 1)):
        text = "-DOCSTART- -X- -X- O\n\n" + "\n\n".join("\n".join(f"{w} NNP B-NP {t}" for w, t in s) for s in CONLL * n) + "\n"
        (data / f"{split}.iob").write_text(text, encoding="utf8")
    # 8 PII texts + 8 CoNLL sentences in batches of 16: one step per epoch
    _run_workflow(
        project, "pii-mix", ".", "--vars.pii_conll", str(data), "--vars.pii_conll_sentences", "8",
        "--vars.pii_max_epochs", "3", "--vars.pii_mix_eval_frequency", "1", "--vars.pii_augment_level", "0.5",
    )  # fmt: skip
    mixed = list(spacy.tokens.DocBin().from_disk(project / "corpus" / "pii" / "mix" / "train.spacy").get_docs(spacy.blank("en").vocab))
    assert len(mixed) == 16 and "MISC" not in {e.label_ for d in mixed for e in d.ents}
    for split in ("pii_dev", "conll_dev"):
        metrics = json.loads((project / "metrics" / "pii-mix" / split / "metrics.json").read_text())
        assert metrics["support"] > 0, split
    conll = json.loads((project / "metrics" / "pii-mix" / "conll_dev" / "metrics.json").read_text())
    assert set(conll["per_type"]) <= {"PERSON", "ORGANIZATION", "LOCATION"}
    nlp = spacy.load(project / "training" / "pii-mix" / "model-calibrated")
    assert nlp.pipe_names[:2] == ["pii_patterns", "ner_plus"]
    assert nlp.config["corpora"]["train"]["augmenter"]["level"] == 0.5


CONLL = [
    [("EU", "B-ORG"), ("rejects", "O"), ("German", "B-MISC"), ("call", "O"), ("to", "O"), ("boycott", "O"), ("British", "B-MISC"), ("lamb", "O"), (".", "O")],
    [("Peter", "B-PER"), ("Blackburn", "I-PER"), ("visited", "O"), ("Brussels", "B-LOC"), (".", "O")],
    [("Reuters", "B-ORG"), ("says", "O"), ("John", "B-PER"), ("Smith", "I-PER"), ("joined", "O"), ("Acme", "B-ORG"), ("Corp", "I-ORG"), (".", "O")],
    [("Mary", "B-PER"), ("left", "O"), ("Paris", "B-LOC"), ("for", "O"), ("the", "O"), ("Olympics", "B-MISC"), (".", "O")],
]


@pytest.mark.slow
def test_the_mini_workflow_runs_end_to_end(tmp_path):
    """`python -m spacy project run mini . --vars.mini_data DIR` (docs/training.md) on a tiny CoNLL copy."""
    import spacy

    pytest.importorskip("peft")
    project = project_copy(tmp_path)
    data = tmp_path / "conll2003"
    data.mkdir()
    for split, n in (("train", 4), ("dev", 1), ("test", 1)):
        text = "-DOCSTART- -X- -X- O\n\n" + "\n\n".join("\n".join(f"{w} NNP B-NP {t}" for w, t in s) for s in CONLL * n) + "\n"
        (data / f"{split}.iob").write_text(text, encoding="utf8")
    _run_workflow(
        project, "mini", ".", "--vars.mini_data", str(data), "--vars.mini_sentences", "12",
        "--vars.mini_max_epochs", "2", "--vars.mini_eval_frequency", "1",
    )  # fmt: skip
    for split in ("dev", "test", "filtered_dev", "filtered_test"):
        metrics = json.loads((project / "metrics" / "mini" / split / "metrics.json").read_text())
        assert set(metrics["per_type"]) <= {"PER", "ORG"}, split
    rules = json.loads((project / "corpus" / "mini" / "rules.json").read_text())
    assert rules, "the MISC-only texts make rules"
    filtered = spacy.load(project / "training" / "mini" / "model-filtered")
    assert "ner_plus_entity_filter" in [filtered.get_pipe_meta(name).factory for name in filtered.pipe_names]


# --- names the docs cite exist ----------------------------------------------------------------

PROSE_FILES = [p for p in DOC_FILES if p.name != "BENCHMARKS.md"] + [ROOT / "CHANGELOG.md"]
REPO_PATH = re.compile(r"(?<![\w/.])((?:bench|configs|scripts|tests|spacy_ner_plus)/[\w/.-]*\w\.(?:py|sh|cfg|json))")
MODULE_NAME = re.compile(r"`(spacy_ner_plus(?:\.\w+)+)(?:\([^`]*\))?`")


def test_every_file_the_docs_name_exists():
    """A moved script or module makes its mention a failing test, not a stale page."""
    missing = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in PROSE_FILES
        for name in sorted(set(REPO_PATH.findall(path.read_text(encoding="utf8"))))
        if not (ROOT / name).exists()
    ]
    assert not missing, "\n".join(missing)


def test_every_python_name_the_docs_give_imports():
    import importlib

    names = {name for path in PROSE_FILES for name in MODULE_NAME.findall(path.read_text(encoding="utf8"))}
    assert len(names) >= 4
    for name in sorted(names):
        module, _, attr = name.rpartition(".")
        try:
            target = importlib.import_module(name)
        except ImportError:
            target = getattr(importlib.import_module(module), attr, None)
        assert target is not None, f"{name}, named in the docs, does not exist"


def test_the_readme_links_to_files_and_sections_that_exist():
    """mkdocs checks the links between docs/ pages; the README lies outside the site, so here."""
    from markdown.extensions.toc import slugify

    readme = (ROOT / "README.md").read_text(encoding="utf8")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert len(links) >= 8
    for link in links:
        if re.match(r"\w+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = ROOT / target
        assert path.exists(), f"README links to {link}: no such file"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf8"), re.M)
            assert anchor in {slugify(h.strip(), "-") for h in headings}, f"README links to {link}: no such section"
