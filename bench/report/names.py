"""Display names, one map: what a paper prints instead of the code's names.

``solver_name("pigdm") == "ΠGDM"``; ``task_name("inpaint_random", {"ratio": 0.5}) ==
"Inpainting (50 % missing)"``. Names not in the maps are shown as they are (a user's own solver or
operator), so the maps never hide a cell.
"""

from __future__ import annotations

import math
from typing import Any

import tomllib

__all__ = ["ORACLE_NAMES", "SOLVER_NAMES", "solver_name", "task_name", "task_names_of_run"]

SOLVER_NAMES: dict[str, str] = {
    "dps": "DPS", "ddrm": "DDRM", "pigdm": "ΠGDM", "vml_map": "VML-MAP", "daps": "DAPS",
    "diffpir": "DiffPIR", "reddiff": "RED-diff", "lmaps": "LMAPS",
}
ORACLE_NAMES: dict[str, str] = {
    "oracle_map": "Exact MAP", "oracle_mean": "Posterior mean", "oracle_sample": "Posterior sample",
}

_OPERATORS: dict[str, str] = {
    "inpaint_random": "Inpainting", "inpaint_box": "Box inpainting", "inpaint_half": "Half inpainting",
    "sr4_avgpool": "SR ×4", "sr4_bicubic": "SR ×4 (bicubic)", "deblur_uniform": "Uniform deblur",
    "deblur_gauss": "Gaussian deblur", "deblur_motion": "Motion deblur", "denoise": "Denoising",
    "colorize": "Colorization", "phase_retrieval": "Phase retrieval",
}


def solver_name(solver: str) -> str:
    """The printed name of a solver (or oracle); unknown names unchanged."""
    return SOLVER_NAMES.get(str(solver), ORACLE_NAMES.get(str(solver), str(solver)))


def task_name(operator: str, params: dict[str, Any] | None = None) -> str:
    """The printed name of a task from its operator preset and parameters; ``inpaint_random``'s
    ``ratio`` is the fraction of pixels dropped (docs/operators.md), printed as "(50 % missing)"."""
    base = _OPERATORS.get(str(operator), str(operator))
    ratio = (params or {}).get("ratio")
    if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and math.isfinite(ratio):
        return f"{base} ({ratio * 100:g} % missing)"
    return base


def task_names_of_run(config_text: str | None) -> dict[str, str]:
    """``{task label: printed name}`` from a run's stored config (``{}`` when unreadable); two
    tasks that would print alike keep their labels in parentheses."""
    try:
        tasks = tomllib.loads(config_text or "").get("tasks", [])
    except tomllib.TOMLDecodeError:
        return {}
    out = {str(t.get("name")): task_name(t.get("operator", ""), t.get("params")) for t in tasks if isinstance(t, dict)}
    seen: dict[str, int] = {}
    for v in out.values():
        seen[v] = seen.get(v, 0) + 1
    return {k: (v if seen[v] == 1 else f"{v} [{k}]") for k, v in out.items()}
