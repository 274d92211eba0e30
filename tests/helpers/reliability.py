"""Shared helpers of the reliability campaign (docs/reliability.md).

* ``GMM_TEXT``: a small all-analytic experiment (gmm-digits prior on 8x8 digits, real solvers)
  used by the kill soak, the concurrency and the determinism tests.
* ``cli(capsys, argv)``: ``invbench.bench.cli.main`` in process, returning ``(rc, stdout, stderr)``.
* ``tree_digest(path)``: sha256 of every file (name + bytes) under a folder, to prove that a
  refused command left an existing run directory unchanged.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
from tests.helpers import parts

parts.register()


def gmm_text(name: str = "rel-gmm", *, limit: int = 6, seeds: str = "[0, 1]", batch_size: int = 1,
             dps_steps: int = 20, extra: str = "") -> str:
    """A small GMM-only experiment: gmm-digits on 8x8 digits, random inpainting (per-image masks,
    not batchable) and 4x SR (batchable), DPS / DDRM / VML-MAP / exact posterior sampling."""
    return textwrap.dedent(f"""\
        name = "{name}"
        seeds = {seeds}
        batch_size = {batch_size}
        save_npy = true
        {extra}

        [[datasets]]
        name = "digits"
        type = "digits"
        split = "test"
        limit = {limit}

        [[priors]]
        name = "gmm-digits"

        [[tasks]]
        name = "inpaint"
        operator = "inpaint_random"
        noise_sigma = 0.05
        params = {{ ratio = 0.5 }}

        [[tasks]]
        name = "sr"
        operator = "sr4_avgpool"
        noise_sigma = 0.02

        [[solvers]]
        name = "dps"
        overrides = {{ steps = {dps_steps} }}

        [[solvers]]
        name = "ddrm"
        overrides = {{ steps = 10 }}

        [[solvers]]
        name = "vml_map"
        overrides = {{ n_levels = 6, inner_steps = 2 }}

        [[solvers]]
        name = "oracle_sample"

        [metrics]
        image = ["psnr", "mse", "consistency", "posterior"]
        """)


GMM_TEXT = gmm_text()


def cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    """Run ``invbench ARGV`` in process; ``(exit code, stdout, stderr)``."""
    from invbench.bench.cli import main

    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tree_digest(path: Path) -> str:
    """sha256 over (relative path, bytes) of every file under ``path`` ('' if it does not exist)."""
    path = Path(path)
    if not path.exists():
        return ""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()
