"""Test-only parts for the harness tests: a tiny Gaussian prior and solvers that diverge, run out
of memory or fail on purpose, plus helpers to write configs and run the CLI in a subprocess.

``register()`` adds them to the global registries under names starting with ``_test`` (never
used by shipped configs). Subprocess tests import ``tests.helpers.parts`` (``subprocess_env()`` puts
the repository root on ``PYTHONPATH``) and call ``register()``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PY = sys.executable



def register() -> None:
    from invbench.priors.base import Prior
    from invbench.solvers.base import Preset, Solver, SolverDiverged, generators_for, randn

    from invbench import priors, solvers

    if "_test-gauss" in priors.names():
        return

    class _Gauss(Prior):
        image_shape = (1, 8, 8)
        sigma_min = 0.002
        sigma_max = 80.0

        def __init__(self, s: float = 0.5):
            self.s = s

        def denoise(self, x, sigma):
            from invbench.priors.base import as_sigma

            sg = as_sigma(sigma, x).view(-1, 1, 1, 1)
            return self.s**2 / (self.s**2 + sg**2) * x

    priors.register("_test-gauss")(lambda **kw: _Gauss(**kw))

    @dataclass(frozen=True)
    class _P:
        steps: int = 3
        scale: float = 1.0

    class _Noisy(Solver):
        """Denoise ``pinv(y) + noise`` a few times with one VJP per step (exercises generators,
        NFE/VJP counts and batching)."""

        name = "_test_noisy"
        requires = frozenset({"linear"})
        Params = _P
        PRESETS: ClassVar[dict] = {"default": Preset({}, "test"),
                                   "nan": Preset({"scale": float("nan")}, "test: diverges")}

        def solve(self, y, operator, prior, *, sigma_y, generator=None, callback=None):
            self.check(operator, prior)
            gens = generators_for(generator, y.shape[0])
            x = operator.pinv(y) if operator.svd is not None else operator.adjoint(y)
            x = x + 0.1 * randn(x.shape[1:], gens, x)
            for _ in range(self.params.steps):
                x = x.detach().requires_grad_(True)
                d = prior.denoise(x, 0.5)
                r = operator.forward(d) - y
                (g,) = torch.autograd.grad(0.5 * (r**2).sum(), x)
                x = (d - 0.1 * self.params.scale * g).detach()
                if not torch.isfinite(x).all():
                    raise SolverDiverged("NaN in x")
            return x

    class _OOM(Solver):
        name = "_test_oom"
        Params = _P
        PRESETS: ClassVar[dict] = {"default": Preset({}, "test")}

        def solve(self, y, operator, prior, *, sigma_y, generator=None, callback=None):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test)")

    class _Err(Solver):
        name = "_test_error"
        Params = _P
        PRESETS: ClassVar[dict] = {"default": Preset({}, "test")}

        def solve(self, y, operator, prior, *, sigma_y, generator=None, callback=None):
            raise RuntimeError("boom\nsecond line")

    for cls in (_Noisy, _OOM, _Err):
        solvers.register(cls)


def toml_config(name: str = "t", *, solvers_: str | None = None, tasks: str | None = None, extra: str = "",
                limit: int = 3, seeds: str = "[0]", batch_size: int = 1) -> str:
    """A small experiment on 8x8 digits with the test prior."""
    solvers_ = solvers_ if solvers_ is not None else '[[solvers]]\nname = "_test_noisy"\n'
    tasks = tasks if tasks is not None else textwrap.dedent(
        """
        [[tasks]]
        name = "inpaint"
        operator = "inpaint_random"
        noise_sigma = 0.05
        params = { ratio = 0.5 }

        [[tasks]]
        name = "sr"
        operator = "sr4_avgpool"
        noise_sigma = 0.02
        """
    )
    return textwrap.dedent(
        f"""
        name = "{name}"
        seeds = {seeds}
        batch_size = {batch_size}
        {extra}

        [[datasets]]
        name = "digits"
        type = "digits"
        split = "test"
        limit = {limit}

        [[priors]]
        name = "_test-gauss"

        [metrics]
        image = ["psnr", "mse", "consistency"]
        """
    ) + tasks + "\n" + solvers_


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python that imports ``tests.helpers``: the repository root first
    on ``PYTHONPATH`` (as pytest's ``pythonpath`` setting does for the test process)."""
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + old if old else ""), **extra)


def cli_subprocess(args: list[str], cwd: Path | None = None, timeout: float = 300, **kw) -> subprocess.Popen:
    """Start ``invbench ARGS`` in a subprocess with the test parts registered (1 thread)."""
    code = (
        "import sys; from tests.helpers import parts; parts.register(); "
        f"from invbench.bench.cli import main; sys.exit(main({list(args)!r}))"
    )
    env = subprocess_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([PY, "-c", code], cwd=str(cwd or REPO), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def reference_run(cfg: Path, out: Path) -> None:
    """An uninterrupted run of ``cfg`` into ``out`` in this process, on 1 thread like
    :func:`cli_subprocess`'s children, so that its rows can be compared bitwise with theirs (some
    results, e.g. exact posterior samples through an eigenbasis, round differently on another
    thread count)."""
    from invbench.bench import config, run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run.run(run.prepare(config.load(cfg), out), out)
    finally:
        torch.set_num_threads(threads)


def cli_run(args: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    p = cli_subprocess(args, cwd=cwd)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def count_rows(db: Path) -> int:
    """Committed rows of a results store, or -1 while it does not exist / cannot be read yet
    (read-only connection, so polling never writes into the run directory)."""
    if not Path(db).exists():
        return -1
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1
