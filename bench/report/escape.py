"""Escaping of user-controlled strings (solver/preset/dataset/prior names, messages, meta) for
every output format. Nothing user-supplied reaches an output file without one of these."""

from __future__ import annotations

import html
import re

_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    # symbols of the report's own text that pdflatex's default input encoding does not know
    "Δ": r"$\Delta$", "≈": r"$\approx$", "≤": r"$\le$", "≥": r"$\ge$", "−": r"$-$", "√": r"$\surd$",
    "σ": r"$\sigma$", "Π": r"$\Pi$", "ζ": r"$\zeta$", "η": r"$\eta$", "γ": r"$\gamma$",
    "λ": r"$\lambda$", "α": r"$\alpha$", "†": r"$^{\dagger}$", "…": r"\ldots{}",
    "|": r"\textbar{}",
    '"': r"\textquotedbl{}",
    # non-ASCII symbols used in our own headers/notes (no extra packages needed)
    "±": r"$\pm$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "²": r"\textsuperscript{2}",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "—": "---",
    "–": "--",
}

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that change
# rendering inside a GitHub table cell (| splits cells, < starts raw HTML, & starts entities).
_MD_SPECIAL = set("\\`*_[]<>|&~#!")


def _one_line(s: object) -> str:
    return re.sub(r"[\r\n\t\f\v]+", " ", str(s))


def terminal(s: object) -> str:
    """``s`` as one printable line for a terminal: whitespace runs become one space and any other
    non-printable character is shown escaped (``\\x1b``), so hostile names, keys and file names
    cannot inject control codes."""
    line = " ".join(str(s).split())
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in line)


def latex(s: object) -> str:
    """Escape ``s`` for LaTeX text mode (no command or math survives)."""
    return "".join(_LATEX.get(ch, ch) for ch in _one_line(s))


def markdown(s: object) -> str:
    """Escape ``s`` for one GitHub-Markdown table cell."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in _one_line(s))


def html_text(s: object) -> str:
    """Escape ``s`` for HTML text and attribute values (``html.escape`` with quotes)."""
    return html.escape(str(s), quote=True)


def mpl(s: object) -> str:
    """Escape ``s`` for matplotlib text (``$`` would start mathtext; newlines break layout)."""
    return _one_line(s).replace("$", r"\$")


def slug(s: object, maxlen: int = 40) -> str:
    """A filename-safe token (``[A-Za-z0-9._-]``, no leading dot) for user strings in paths.

    Distinct inputs that map to the same token get a short hash suffix so files never collide.
    """
    import hashlib

    raw = str(s)
    t = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip(".-")[:maxlen] or "x"
    if t != raw:
        t = f"{t}-{hashlib.sha1(raw.encode()).hexdigest()[:6]}"
    return t
