"""The one layering rule (docs/ARCHITECTURE.md), checked on every import of every project module.

    common <- datamodules <- lightning_modules <- callbacks <- evaluation <- reporting <- study
        <- scripts, benchmarks, train.py
    common <- tiny_world <- scripts, benchmarks

A package may import from its own package and from the packages to its left, never to its right: the
import graph then has no cycles and each layer can be read, tested and replaced knowing only what lies
below it. ``tiny_world`` (the synthetic suite and the tiny base) is a side branch: it needs only ``common``,
and only entry points (and tests) use it. Entry points (``scripts/``, ``benchmarks/``, ``train.py``) are
imported by nothing. Every import is read from the source with ``ast``, lazy imports inside functions
included, so a violation is named by file, line and statement before anything runs.

Inside a package the modules import one another freely, but never in a circle: the modules of one package,
with an edge for each import of another (lazy ones included), form a graph without cycles, so each module
can be read knowing only the ones it imports, and a circle is named by its files and lines.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS: tuple[str, ...] = (
    "common", "datamodules", "lightning_modules", "callbacks", "evaluation", "reporting", "study",
)  # fmt: skip
"""The library packages, lowest first: each may import only the ones before it."""
SIDE_PACKAGES: dict[str, tuple[str, ...]] = {
    "tiny_world": ("common",),
    "planner": ("common", "lightning_modules"),  # the loss registry: which losses need a reference
}
"""Packages beside the chain, with what each may import; only entry points import them."""
ENTRY_POINTS: tuple[str, ...] = ("scripts", "benchmarks", "train")
"""Folders of entry points (and ``train.py``): they may import every package above; nothing imports them."""
INSTALL_CHECK = "installed"
"""``scripts/installed.py``, the one module entry points import from beside them (``import installed``, or
``from scripts import installed`` in train.py): it uses the standard library only, and says in one line how to run
a script whose interpreter lacks the project's install."""
INSTALL_CHECK_IMPORTS = (f"import {INSTALL_CHECK}", f"from scripts import {INSTALL_CHECK}")
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}
"""Imports that break the rule on purpose, each with the reason and what removes it."""


@dataclass(frozen=True)
class Violation:
    """One import that goes against the rule."""

    path: str
    line: int
    statement: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: `{self.statement}`: {self.reason}"


def allowed_imports(package: str) -> tuple[str, ...] | None:
    """The project packages ``package`` may import (besides itself); ``None``: a package the rule does not place."""
    if package in LAYERS:
        return LAYERS[: LAYERS.index(package)]
    if package in SIDE_PACKAGES:
        return SIDE_PACKAGES[package]
    if package in ENTRY_POINTS:
        return LAYERS + tuple(SIDE_PACKAGES)
    return None


def script_modules(repo: Path) -> set[str]:
    """Module names that live in the entry-point folders (``scripts/build_tiny_model.py`` -> ``build_tiny_model``):
    an ``import build_tiny_model`` through ``sys.path`` is an import of an entry point."""
    folders = [repo / folder for folder in ENTRY_POINTS if (repo / folder).is_dir()]
    return {path.stem for folder in folders for path in folder.glob("*.py")} - {INSTALL_CHECK}


def imported_modules(tree: ast.AST) -> list[tuple[int, str, str]]:
    """``(line, top-level module, statement)`` of every absolute import in ``tree``, nested ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0], f"import {alias.name}") for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = ", ".join(alias.name for alias in node.names)
            found.append((node.lineno, node.module.split(".")[0], f"from {node.module} import {names}"))
    return found


def check_source(path: str, source: str, packages: set[str], scripts: set[str] = frozenset()) -> list[Violation]:
    """The violations of the rule in one module's source.

    Args:
        path: the module's path relative to the repository (its first part names its package or folder).
        source: the module's text.
        packages: the top-level project packages; any other import is a third-party one and is ignored.
        scripts: module names of the entry points (never to be imported).
    """
    package = Path(path).parts[0] if len(Path(path).parts) > 1 else Path(path).stem
    allowed = allowed_imports(package)
    if allowed is None:
        reason = f"package {package!r} is not placed in the layering rule (LAYERS in tests/test_layering.py)"
        return [Violation(path, 1, "", reason)]
    violations = []
    for line, module, statement in imported_modules(ast.parse(source, filename=path)):
        if (path, module) in KNOWN_EXCEPTIONS or statement in INSTALL_CHECK_IMPORTS:
            continue
        if module in scripts:
            violations.append(Violation(path, line, statement, f"{module} is an entry point; nothing imports one"))
        elif module in packages and module != package and module not in allowed:
            may = ", ".join(allowed) or "no other project package"
            violations.append(Violation(path, line, statement, f"{package} may import only {may}"))
    return violations


@dataclass(frozen=True)
class Cycle:
    """A circle of imports between the modules of one package: each module imports the next, the last the first.

    Attributes:
        steps: ``(path, line)`` of each module and of the import in it that leads to the next module.
    """

    steps: tuple[tuple[str, int], ...]

    def __str__(self) -> str:
        return " -> ".join(f"{path}:{line}" for path, line in self.steps) + f" -> {self.steps[0][0]}"


def module_name(path: str) -> str:
    """The dotted name a file is imported by: ``evaluation/findings.py`` -> ``evaluation.findings``, a package's
    ``__init__.py`` -> the package."""
    parts = list(Path(path).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imported_targets(path: str, tree: ast.AST) -> list[tuple[int, list[str]]]:
    """``(line, names)`` of every import in ``tree`` (nested ones included), ``names`` the dotted modules it may
    load, most specific first: ``from a.b import c`` is module ``a.b.c`` if there is one, else ``a.b``; a
    relative import is resolved against the package of ``path``."""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, [alias.name]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module.split(".") if node.module else []
            if node.level:
                base = package[: len(package) - node.level + 1] + base
            found += [(node.lineno, [".".join([*base, alias.name]), ".".join(base)]) for alias in node.names]
    return found


def import_cycles(sources: Mapping[str, str]) -> list[Cycle]:
    """The import circles between modules of the same top-level package, one per strongly connected group.

    Args:
        sources: each module's text by its path relative to the repository (``evaluation/engine.py``).

    Returns:
        For every group of two or more modules that reach one another through imports, one shortest circle
        through the group's first module (by path), with the line of each import on it.
    """
    modules = {module_name(path): path for path in sources}
    edges: dict[str, dict[str, int]] = {path: {} for path in sources}
    for path, source in sources.items():
        top = Path(path).parts[0]
        for line, names in imported_targets(path, ast.parse(source, filename=path)):
            target = next((modules[name] for name in names if name in modules), None)
            if target is not None and target != path and Path(target).parts[0] == top:
                edges[path].setdefault(target, line)
    cycles = []
    for group in strongly_connected(edges):
        circle = shortest_circle(min(group), edges, group)
        steps = [(path, edges[path][circle[(i + 1) % len(circle)]]) for i, path in enumerate(circle)]
        cycles.append(Cycle(tuple(steps)))
    return cycles


def shortest_circle(start: str, edges: Mapping[str, Mapping[str, int]], group: set[str]) -> list[str]:
    """``[start, ..., the module that imports start]``: a shortest circle through ``start`` inside ``group``
    (breadth first, so a two-module circle is never reported as a longer one)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while start not in previous:
        reached = []
        for node in frontier:
            for target in sorted(edges[node]):
                if target in group and target not in previous:
                    previous[target] = node
                    reached.append(target)
        frontier = reached
    circle = [previous[start]]
    while circle[-1] != start:
        circle.append(previous[circle[-1]])
    return circle[::-1]


def strongly_connected(edges: Mapping[str, Mapping[str, int]]) -> list[set[str]]:
    """The groups of two or more nodes that all reach one another (Tarjan's algorithm), in order of discovery."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def project_packages(repo: Path) -> set[str]:
    """Top-level folders holding an ``__init__.py``, plus the entry points."""
    return {path.parent.name for path in repo.glob("*/__init__.py") if path.parent.name != "tests"} | set(ENTRY_POINTS)


def project_modules(repo: Path) -> list[Path]:
    """Every Python file of the project outside ``tests/``, ``.venv`` and other hidden folders."""
    modules = [repo / "train.py"]
    for package in sorted(project_packages(repo) - {"train"}):
        modules += sorted((repo / package).rglob("*.py"))
    return [path for path in modules if path.is_file()]


def test_no_module_imports_upwards():
    packages = project_packages(REPO)
    scripts = script_modules(REPO)
    violations = []
    for path in project_modules(REPO):
        relative = path.relative_to(REPO).as_posix()
        violations += check_source(relative, path.read_text(encoding="utf-8"), packages, scripts)
    assert not violations, "imports against the layering rule (docs/ARCHITECTURE.md):\n" + "\n".join(
        map(str, violations)
    )


def test_every_module_is_checked():
    """The scan reaches every package of the rule (a typo in a folder name would check nothing)."""
    checked = {path.relative_to(REPO).parts[0] for path in project_modules(REPO)}
    assert set(LAYERS) | set(SIDE_PACKAGES) | {"scripts", "benchmarks", "train.py"} <= checked
    assert len(project_modules(REPO)) > 60


def test_the_checker_catches_an_upward_import():
    """A synthetic module of each kind: the checker must name the file, the line and the import."""
    packages = {*LAYERS, *SIDE_PACKAGES, *ENTRY_POINTS}
    source = "import json\n\nfrom common.constants import IGNORE_INDEX\n\n\ndef f():\n"
    source += "    from lightning_modules import losses\n"  # a lazy import, line 7
    (violation,) = check_source("datamodules/example.py", source, packages)
    assert (violation.path, violation.line) == ("datamodules/example.py", 7)
    assert violation.statement == "from lightning_modules import losses"
    assert str(violation) == (
        "datamodules/example.py:7: `from lightning_modules import losses`: datamodules may import only common"
    )
    # `import a.b` counts by its top-level package; common imports nothing of the project.
    (upward,) = check_source("common/example.py", "import evaluation.metrics\n", packages)
    assert upward.line == 1 and "common may import only no other project package" in upward.reason
    # The side branch: the library does not use the tiny world, and entry points are never imported.
    assert check_source("evaluation/example.py", "from tiny_world.suite import generate_suite\n", packages)
    assert check_source("tiny_world/x.py", "import build_tiny_model\n", packages, {"build_tiny_model"})
    # A package the rule does not place fails too, rather than going unchecked.
    (unplaced,) = check_source("newpackage/x.py", "import json\n", packages)
    assert "not placed" in unplaced.reason


def test_the_checker_lets_downward_and_third_party_imports_pass():
    packages = {*LAYERS, *SIDE_PACKAGES, *ENTRY_POINTS}
    source = "import torch\nfrom common.errors import DataError\nfrom datamodules import collate\nfrom . import x\n"
    assert check_source("lightning_modules/example.py", source, packages) == []
    entry_point = "from evaluation.engine import evaluate\nimport tiny_world\n"
    assert check_source("scripts/example.py", entry_point, packages) == []
    assert check_source("train.py", "from callbacks.export import HFExportCallback\n", packages) == []


def test_no_import_cycle_inside_a_package():
    sources = {
        path.relative_to(REPO).as_posix(): path.read_text(encoding="utf-8")
        for path in project_modules(REPO)
        if len(path.relative_to(REPO).parts) > 1
    }
    cycles = import_cycles(sources)
    assert not cycles, "import circles inside a package (each file imports the next, at that line):\n" + "\n".join(
        map(str, cycles)
    )


def test_the_checker_catches_an_import_cycle_inside_a_package():
    """A synthetic package: a -> b (lazily, inside a function) -> a is a circle named by files and lines; c, which
    imports both, and d, imported by c through a relative import, are in none."""
    sources = {
        "pkg/__init__.py": "",
        "pkg/a.py": "import json\n\nfrom pkg.b import helper\n",
        "pkg/b.py": "def helper():\n    from pkg import a\n",  # the lazy import, line 2
        "pkg/c.py": "from pkg import a, b\nfrom .d import x\n",
        "pkg/d.py": "x = 1\n",
        "other/e.py": "from pkg.c import x\n",  # another package: the layering rule's business, not a circle
    }
    (cycle,) = import_cycles(sources)
    assert cycle.steps == (("pkg/a.py", 3), ("pkg/b.py", 2))
    assert str(cycle) == "pkg/a.py:3 -> pkg/b.py:2 -> pkg/a.py"
    # Three modules in a circle, through `import x.y` and a relative `from . import`: the whole circle, in order.
    three = {"pkg/x.py": "import pkg.y\n", "pkg/y.py": "from . import z\n", "pkg/z.py": "\n\nfrom pkg.x import f\n"}
    assert [str(found) for found in import_cycles(three)] == ["pkg/x.py:1 -> pkg/y.py:1 -> pkg/z.py:3 -> pkg/x.py"]
    assert import_cycles({"pkg/a.py": "from pkg.b import f\n", "pkg/b.py": "import json\n"}) == []


def sys_path_edits(source: str) -> list[int]:
    """Lines of ``source`` that call ``sys.path.insert`` / ``append`` / ``extend`` (read with ``ast``)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("insert", "append", "extend")
            and ast.unparse(node.func.value) == "sys.path"
        ):
            lines.append(node.lineno)
    return lines


def test_no_module_or_entry_point_edits_sys_path():
    """The packages come from the editable install (``make venv``); the tests' paths from pyproject's ``pythonpath``.
    An entry point that put the checkout on ``sys.path`` would hide a package left out of the install."""
    edits = [
        f"{path.relative_to(REPO)}:{line}"
        for path in [*project_modules(REPO), *REPO.glob("tests/**/*.py")]
        for line in sys_path_edits(path.read_text(encoding="utf-8"))
    ]
    assert not edits, "sys.path edited at: " + ", ".join(edits)


def test_the_sys_path_check_catches_an_edit():
    assert sys_path_edits("import sys\nx = 1\nsys.path.insert(0, 'here')\n") == [3]
    assert sys_path_edits("import sys\nsys.path.append('x')\npaths = [].append(1)\n") == [2]
    assert sys_path_edits("import sys\nprint(sys.path)\n") == []
