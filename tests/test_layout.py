"""The package's layout rules, read from the source (issue 27):

- no import cycle between modules;
- the core (``pipeline/``, ``ml/`` and the pure algorithms ``schemes``, ``decoding``,
  ``windowing``, ``calibration``, ``metrics``) never imports the edges (``service/``,
  ``annotate/``, ``evaluation/``, ``cli``, ``presidio``);
- no module over 500 lines unless its docstring has a line starting with "Size:" giving the reason;
- private attributes of other libraries' objects are reached only in ``ml/_private.py``.

Imports are parsed with ``ast`` (relative imports resolved, imports inside functions and
``if TYPE_CHECKING`` blocks included: a cycle that only type hints close is still a cycle
for a reader). Importing a submodule counts as importing that module, not its package's
``__init__``. The checker is tested on small synthetic packages, so a rule that stopped
seeing violations would fail here too.
"""
import ast
from pathlib import Path
from typing import Dict, List, Optional, Set

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "spacy_ner_plus"
MAX_LINES = 500
CORE = ("pipeline", "ml", "schemes", "decoding", "windowing", "calibration", "metrics")
EDGES = ("service", "annotate", "evaluation", "cli", "presidio")
PRIVATE_ACCESS_MODULE = "ml._private"
# os._exit is the documented way to end a process without cleanup: public, despite its name
ALLOWED_PRIVATE = {"_exit"}


def module_files(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for every module of the package under ``root``."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Set[str]) -> Optional[str]:
    """The package module ``name`` refers to: itself, or the longest module prefix
    (``pkg.mod.Class`` -> ``pkg.mod``); None outside the package."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: Set[str]) -> Set[str]:
    """The package modules that ``module`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = module.split(".") if is_package else module.split(".")[:-1]
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # `from pkg import sub` imports the module pkg.sub when there is one
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path, package: str) -> Dict[str, Set[str]]:
    files = module_files(root, package)
    names = set(files)
    return {module: imports_of(module, path, names) for module, path in files.items()}


def find_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected group of modules."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[List[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_path(group, graph) for group in groups]


def _cycle_path(group: List[str], graph: Dict[str, Set[str]]) -> List[str]:
    """A path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                frontier.append(nxt)
    return group  # unreachable for a strongly connected group


def _in(module: str, package: str, parts: tuple) -> bool:
    relative = module[len(package) + 1 :] if module.startswith(package + ".") else ""
    return any(relative == p or relative.startswith(p + ".") for p in parts)


def core_to_edge_imports(graph: Dict[str, Set[str]], package: str) -> List[str]:
    return [
        f"{module} imports {target}"
        for module in sorted(graph)
        if _in(module, package, CORE)
        for target in sorted(graph[module])
        if _in(target, package, EDGES)
    ]


def oversized_modules(root: Path, package: str, max_lines: int = MAX_LINES) -> List[str]:
    problems = []
    for module, path in module_files(root, package).items():
        text = path.read_text(encoding="utf8")
        n_lines = len(text.splitlines())
        if n_lines <= max_lines:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith("Size:") and line.strip() != "Size:" for line in docstring.splitlines()):
            problems.append(f"{module}: {n_lines} lines and no 'Size:' line in its docstring saying why")
    return problems


def private_accesses(root: Path, package: str, allowed_module: str = PRIVATE_ACCESS_MODULE) -> List[str]:
    """``x._name`` (and ``getattr(x, "_name")``) on anything but ``self``, ``cls`` or ``super()``,
    outside the one module allowed to reach into other libraries (``x._`` is spaCy's
    public namespace of custom attributes)."""
    problems = []
    for module, path in module_files(root, package).items():
        if module == f"{package}.{allowed_module}":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf8"), str(path))):
            owner, name = None, None
            if isinstance(node, ast.Attribute):
                owner, name = node.value, node.attr
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "setattr", "hasattr"):
                if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                    owner, name = node.args[0], node.args[1].value
            if name is None or not name.startswith("_") or name.startswith("__") or name in ALLOWED_PRIVATE or name == "_":
                continue
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and getattr(owner.func, "id", None) == "super":
                continue  # an override calling its base class's hook (subclassing API, e.g. Ray's datasources)
            problems.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    return problems


# --- the package ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph():
    return import_graph(ROOT, PACKAGE)


def test_the_parser_sees_the_package(graph):
    # a checker that parsed nothing would pass every rule
    assert len(graph) > 30
    assert f"{PACKAGE}.calibration" in graph[f"{PACKAGE}.pipeline.ner_plus"]  # from ..calibration import
    assert f"{PACKAGE}.decoding" in graph[f"{PACKAGE}.pipeline.ner_plus"]  # from .. import decoding
    # the CLI imports its heavy modules inside its commands: those edges must be seen
    assert any(target.startswith((f"{PACKAGE}.pipeline", f"{PACKAGE}.evaluation")) for target in graph[f"{PACKAGE}.cli"])


def test_no_import_cycle(graph):
    assert find_cycles(graph) == []


def test_the_core_never_imports_the_edges(graph):
    assert core_to_edge_imports(graph, PACKAGE) == []


def test_no_module_over_500_lines_without_a_reason():
    assert oversized_modules(ROOT, PACKAGE) == []


def test_private_attributes_of_other_libraries_only_in_the_accessor_module():
    assert private_accesses(ROOT, PACKAGE) == []


# --- the checker, on planted violations --------------------------------------------------


def write_package(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf8")


def clean_package() -> Dict[str, str]:
    return {
        "__init__.py": "from .pipeline import pipe\n",
        "pipeline/__init__.py": "",
        "pipeline/pipe.py": '"""The pipe."""\nfrom .. import decoding\nfrom ..calibration import fit\n',
        "decoding.py": "import numpy\n",
        "calibration.py": "from .decoding import decode\n",
        "service/__init__.py": "",
        "service/app.py": "from ..pipeline.pipe import Pipe\nimport pkg.calibration\n",
        "cli.py": "def main():\n    from .service import app\n",
    }


def test_checker_passes_a_clean_package(tmp_path):
    write_package(tmp_path, clean_package())
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.service.app"] == {"pkg.pipeline.pipe", "pkg.calibration"}
    assert graph["pkg.cli"] == {"pkg.service.app"}
    assert graph["pkg.pipeline.pipe"] == {"pkg.decoding", "pkg.calibration"}
    assert find_cycles(graph) == []
    assert core_to_edge_imports(graph, "pkg") == []
    assert oversized_modules(tmp_path, "pkg") == []
    assert private_accesses(tmp_path, "pkg") == []


def test_checker_finds_a_cycle_closed_inside_a_function(tmp_path):
    files = clean_package()
    files["decoding.py"] = "def f():\n    from .pipeline.pipe import Pipe\n"
    write_package(tmp_path, files)
    # pipe -> calibration -> decoding -> pipe, and pipe -> decoding -> pipe: one group
    assert find_cycles(import_graph(tmp_path, "pkg")) == [["pkg.calibration", "pkg.decoding", "pkg.pipeline.pipe", "pkg.calibration"]]


def test_checker_finds_a_cycle_through_relative_parent_imports(tmp_path):
    files = clean_package()
    files["calibration.py"] = "from .service.app import App\n"  # service.app imports calibration
    write_package(tmp_path, files)
    graph = import_graph(tmp_path, "pkg")
    assert ["pkg.calibration", "pkg.service.app", "pkg.calibration"] in find_cycles(graph)
    assert core_to_edge_imports(graph, "pkg") == ["pkg.calibration imports pkg.service.app"]


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("pipeline/pipe.py", "from ..cli import main\n", "pkg.pipeline.pipe imports pkg.cli"),
        ("decoding.py", "import pkg.service.app as a\n", "pkg.decoding imports pkg.service.app"),
        ("calibration.py", "def f():\n    from pkg.evaluation import report\n", "pkg.calibration imports pkg.evaluation.report"),
        ("ml/layer.py", "from ..annotate import engine\n", "pkg.ml.layer imports pkg.annotate.engine"),
    ],
)
def test_checker_finds_the_core_importing_an_edge(tmp_path, module, source, expected):
    files = clean_package()
    files.update({"evaluation/__init__.py": "", "evaluation/report.py": "", "annotate/__init__.py": "", "annotate/engine.py": ""})
    files["ml/__init__.py"] = ""
    files[module] = source
    write_package(tmp_path, files)
    assert core_to_edge_imports(import_graph(tmp_path, "pkg"), "pkg") == [expected]


def test_checker_finds_a_long_module_without_a_size_line(tmp_path):
    files = clean_package()
    body = "x = 1\n" * 500
    files["decoding.py"] = '"""Decoding."""\n' + body
    files["calibration.py"] = '"""Calibration.\n\nSize: one algorithm, kept whole.\n"""\n' + body
    files["schemes.py"] = "# Size: a comment is not the docstring\n" + body
    write_package(tmp_path, files)
    problems = oversized_modules(tmp_path, "pkg")
    assert [p.split(":")[0] for p in problems] == ["pkg.decoding", "pkg.schemes"]
    assert "501 lines" in problems[0]


def test_checker_finds_private_attributes_outside_the_accessor_module(tmp_path):
    files = clean_package()
    files["ml/__init__.py"] = ""
    files["ml/_private.py"] = "def hf(shim):\n    return shim._hfmodel\n"
    files["ml/layer.py"] = (
        "import os\n"
        "class Layer:\n"
        "    def f(self, shim):\n"
        "        self._cache = {}\n"  # own attribute: fine
        "        os._exit(1)\n"  # documented public API
        "        span._.confidence\n"  # spaCy's custom attributes
        "        return shim._model, getattr(shim, '_hfmodel', None), shim.__class__\n"
    )
    write_package(tmp_path, files)
    assert private_accesses(tmp_path, "pkg") == [
        "pkg.ml.layer:7: shim._model",
        "pkg.ml.layer:7: getattr(shim, '_hfmodel', None)",
    ]
