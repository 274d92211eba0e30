"""The layers of the package, read from the import statements of the tree (docs/design.md §1).

``assets`` (weights table) < ``operators`` < ``priors`` < ``solvers`` < ``bench`` (the harness).
Every ``.py`` file of the five folders is parsed (imports inside functions count too); relative
imports and ``invbench.*`` names are resolved to packages. Asserted: nothing below the harness
imports it; ``assets`` imports neither priors nor the harness; the packages form no cycle; no
solver module (a file that registers a solver) imports another one — solvers share code only
through the helper modules (``base``, ``params``, ``schedules``, ``ddpm``, ``svd_tools``, …).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assets", "operators", "priors", "solvers", "bench")
LOWER = ("assets", "operators", "priors", "solvers")


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["invbench", *parts])


def _imported(module: str, is_package: bool, tree: ast.AST) -> set[str]:
    """Dotted ``invbench.*`` names imported anywhere in ``tree`` (for ``from X import a``: both
    ``X`` and ``X.a``, since ``a`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{a.name}" for a in node.names)
    return {n for n in out if n == "invbench" or n.startswith("invbench.")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module name -> the ``invbench.*`` names it imports, for every ``.py`` of the packages."""
    graph = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            name = _module_name(root, path)
            graph[name] = _imported(name, path.name == "__init__.py", ast.parse(path.read_text()))
    return graph


def _package(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PACKAGES else None


def package_edges(graph: dict[str, set[str]]) -> set[tuple[str, str, str]]:
    """``(from_package, to_package, module)`` for every import across packages."""
    edges = set()
    for mod, names in graph.items():
        src = _package(mod)
        for n in names:
            dst = _package(n)
            if src and dst and dst != src:
                edges.add((src, dst, mod))
    return edges


def layer_violations(root: Path) -> list[str]:
    """Every broken layer rule of the tree at ``root`` (empty when the layers hold)."""
    graph = import_graph(root)
    edges = package_edges(graph)
    bad = [f"{mod} ({src}) imports the harness" for src, dst, mod in edges
           if src in LOWER and dst == "bench"]
    bad += [f"{mod} (assets) imports {dst}" for src, dst, mod in edges
            if src == "assets" and dst in ("priors", "bench")]
    bad += [f"package cycle: {' -> '.join(c)}" for c in _cycles({(s, d) for s, d, _ in edges})]
    bad += _solver_cross_imports(root, graph)
    return sorted(bad)


def _cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    nxt: dict[str, set[str]] = {}
    for s, d in edges:
        nxt.setdefault(s, set()).add(d)
    found = []

    def walk(node: str, path: list[str]) -> None:
        for d in sorted(nxt.get(node, ())):
            if d == path[0]:
                found.append([*path, d])
            elif d not in path and d > path[0]:   # each cycle once, from its smallest package
                walk(d, [*path, d])

    for start in sorted(nxt):
        walk(start, [start])
    return found


def _registers_a_solver(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ClassDef):
            for dec in node.decorator_list:
                if (isinstance(dec, ast.Name) and dec.id == "register") or (
                        isinstance(dec, ast.Attribute) and dec.attr == "register"):
                    return True
    return False


def _solver_cross_imports(root: Path, graph: dict[str, set[str]]) -> list[str]:
    solver_mods = {_module_name(root, p) for p in (root / "solvers").glob("*.py")
                   if p.name != "__init__.py" and _registers_a_solver(p)}
    return [f"solver module {mod} imports solver module {n}"
            for mod in sorted(solver_mods) for n in sorted(graph.get(mod, ()))
            if n in solver_mods and n != mod]


def test_the_tree_keeps_its_layers():
    graph = import_graph(ROOT)
    assert len(graph) > 50, "the scan found too few modules to be meaningful"
    assert any(_registers_a_solver(p) for p in (ROOT / "solvers").glob("*.py"))
    assert layer_violations(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    ({"operators/blur.py": "from invbench.bench import runner\n"}, "imports the harness"),
    ({"priors/adm.py": "def f():\n    from ..bench.weights import TABLE\n"}, "imports the harness"),
    ({"solvers/base.py": "from invbench import bench\n"}, "imports the harness"),
    ({"assets/table.py": "from invbench.priors import gmm\n"}, "(assets) imports priors"),
    ({"operators/a.py": "from ..priors import base\n",
      "priors/b.py": "from invbench.solvers import base\n",
      "solvers/c.py": "import invbench.operators.a\n"}, "package cycle: operators -> priors"),
    ({"solvers/dps.py": "@register\nclass DPS: ...\n",
      "solvers/lmaps.py": "from .dps import DPS\n@register\nclass LMAPS: ...\n"},
     "solver module invbench.solvers.lmaps imports solver module invbench.solvers.dps"),
])
def test_a_forbidden_import_is_found(tmp_path, files, expected):
    """Each rule fails on a tree that breaks it (also from inside a function, relatively)."""
    found = layer_violations(_tree(tmp_path, files))
    assert any(expected in v for v in found), found


def test_allowed_imports_pass(tmp_path):
    files = {"bench/runner.py": "from invbench import operators, priors, solvers\n",
             "priors/adm.py": "from invbench.assets import weights\n",
             "solvers/schedules.py": "import numpy\n",
             "solvers/dps.py": ("from . import schedules\nfrom .base import Solver\n"
                                "@register\nclass D: ...\n"),
             "solvers/base.py": "from invbench.operators import family\n"}
    assert layer_violations(_tree(tmp_path, files)) == []
