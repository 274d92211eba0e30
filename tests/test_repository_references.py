"""Every reference in the repository can be followed by a reader who has only the repository.

Code, docs, configs and generated reports may point at files of the repository (``docs/design.md
§5``, ``reports/perf/README.md``), never at documents it does not contain: a design note kept
elsewhere, a ticket number, or an absolute path of the machine that wrote them.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".py", ".md", ".toml", ".sh", ".json", ".html", ".tex", ".csv", ".txt", ".cfg", ".yml", ".yaml"}

# The patterns are assembled from pieces so that this file does not match itself.
FORBIDDEN = [
    (re.compile(r"\b" + "DESI" + r"GN\b"), "a design note outside the repository (use docs/design.md)"),
    (re.compile(r"\b[Ii]" + r"ssue[s]? #?[0-9]+"), "a ticket number (name the document it means)"),
    (re.compile(r"(?<![\w.])/" + r"work/"), "an absolute path of another machine"),
    (re.compile(r"\.\./" + r"shared\b|\b" + "shared/" + r"reference\b"), "a path outside the repository"),
]


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist): walk it
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()
                 and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    return [ROOT / n for n in names if Path(n).suffix in SUFFIXES or Path(n).name == "Makefile"]


def test_no_reference_the_repository_cannot_resolve():
    files = _tracked_files()
    assert len(files) > 50, "the scan found too few files to be meaningful"
    bad = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for rx, why in FORBIDDEN:
                if rx.search(line):
                    bad.append(f"{path.relative_to(ROOT)}:{lineno}: {why}: {line.strip()[:100]}")
    assert not bad, "unresolvable references:\n" + "\n".join(bad)


def test_docs_paths_that_look_like_repository_files_exist():
    """Backticked repository paths in docs/ and README.md (``docs/x.md``, ``bench/y.py``) exist.

    Only our own file kinds are checked: the docs also name files of the original DPS/DDRM code
    (``configs/*.yaml``), which are not ours."""
    rx = re.compile(r"`((?:docs|bench|operators|priors|solvers|scripts|configs|reports|tests|invbench)/[\w./-]*"
                    r"(?:\.py|\.md|\.toml|\.sh|/))`")
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for m in rx.finditer(doc.read_text(encoding="utf-8")):
            rel = m.group(1).rstrip(".")
            if any(ch in rel for ch in "*<{"):
                continue
            if not (ROOT / rel).exists():
                missing.append(f"{doc.relative_to(ROOT)}: {rel}")
    assert not missing, "docs name files that do not exist:\n" + "\n".join(missing)


def test_no_import_path_edits_in_tests_and_scripts():
    """Test helpers are imported as the package ``tests.helpers`` and scripts import the installed
    ``invbench``: nothing edits ``sys.path`` (a child process gets the repository root through
    ``PYTHONPATH``, see ``tests/helpers/parts.py``)."""
    rx = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=")
    files = [p for p in _tracked_files() if p.suffix == ".py"
             and p.relative_to(ROOT).parts[0] in {"tests", "scripts", "bench", "solvers", "priors", "operators"}]
    assert len(files) > 50
    bad = [f"{p.relative_to(ROOT)}:{i}: {ln.strip()[:100]}" for p in files
           for i, ln in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if rx.search(ln) and p.name != "test_repository_references.py"]
    assert not bad, "sys.path edits:\n" + "\n".join(bad)
