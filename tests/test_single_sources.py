"""Escaping of user-controlled text is declared once: ``bench/report/escape.py``.

Markdown table cells, LaTeX, HTML and terminal lines each have one escaper there
(``markdown``, ``latex``, ``html_text``, ``terminal``; ``slug`` for file names). A second,
hand-rolled copy elsewhere drifts from it (compare once escaped Markdown without ``&``, three
modules had their own terminal loop), so this scan fails when escaping code appears in any other
module of the package folders or ``scripts/``. Unit conversion has its own guard in
``tests/test_conventions.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("bench", "solvers", "operators", "priors", "assets", "scripts")
ESCAPE_MODULE = ROOT / "bench" / "report" / "escape.py"

# characters whose replacement by a backslashed or entity form is Markdown/LaTeX/HTML escaping
_SPECIAL = set("|_&<>$#%{}~^\\`*[]")
_LATEX_WORDS = ("\\textbackslash", "\\textasciitilde", "\\textasciicircum", "\\textbar")


def _const(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _is_escape_replace(node: ast.Call) -> bool:
    """``s.replace("|", "\\|")``, ``s.replace("<", "&lt;")``: a special character replaced by an
    escaped form."""
    if not (
        isinstance(node.func, ast.Attribute) and node.func.attr == "replace" and len(node.args) >= 2
    ):
        return False
    old, new = _const(node.args[0]), _const(node.args[1])
    if old is None or new is None or not old or not set(old) <= _SPECIAL:
        return False
    return new.startswith("\\") or (new.startswith("&") and new.endswith(";"))


def _is_printable_filter(node: ast.Call) -> bool:
    """``"".join(c if c.isprintable() else ... for c in s)``: a terminal escaper."""
    if not (isinstance(node.func, ast.Attribute) and node.func.attr == "join" and node.args):
        return False
    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr == "isprintable"
        for n in ast.walk(node.args[0])
    )


def escaping_sites(source: str) -> list[tuple[int, str]]:
    """(line, what) of every piece of escaping code in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            f = node.func
            if (
                isinstance(f, ast.Attribute)
                and f.attr == "escape"
                and isinstance(f.value, ast.Name)
                and f.value.id == "html"
            ):
                found.append((node.lineno, "html.escape"))
            elif _is_escape_replace(node):
                found.append((node.lineno, "a special character replaced by its escaped form"))
            elif _is_printable_filter(node):
                found.append((node.lineno, "a terminal escaper (isprintable filter)"))
        s = _const(node)
        if s is not None and any(w in s for w in _LATEX_WORDS):
            found.append((node.lineno, "a LaTeX escape table"))
    return found


def test_the_scanner_finds_each_kind_of_escaping():
    snippets = {
        "import html\nx = html.escape(s)": "html.escape",
        'x = s.replace("|", "\\\\|")': "replaced",
        'x = s.replace("_", r"\\_")': "replaced",
        'x = s.replace("<", "&lt;")': "replaced",
        'x = "".join(c if c.isprintable() else "?" for c in s)': "terminal",
        'T = {"\\\\": r"\\textbackslash{}"}': "LaTeX",
    }
    for src, what in snippets.items():
        sites = escaping_sites(src)
        assert sites and what in sites[0][1], (src, sites)
    # look-alikes that are not escaping
    for src in (
        'x = s.replace("-", "_")',
        'x = p.replace(".py", "")',
        "ok = all(c.isprintable() for c in s)",
        'x = s.replace("|", " ")',
    ):
        assert not escaping_sites(src), src


def test_the_escape_module_holds_every_escaper():
    assert {line[1] for line in escaping_sites(ESCAPE_MODULE.read_text(encoding="utf-8"))}, (
        "the scan no longer recognises the escape module's own code"
    )
    files = [p for d in FOLDERS for p in sorted((ROOT / d).rglob("*.py")) if p != ESCAPE_MODULE]
    assert len(files) > 50, "the scan found too few files to be meaningful"
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {what}"
        for p in files
        for line, what in escaping_sites(p.read_text(encoding="utf-8"))
    ]
    assert not bad, (
        "escaping outside bench/report/escape.py (use its markdown, latex, html_text, "
        "terminal or slug):\n" + "\n".join(bad)
    )
