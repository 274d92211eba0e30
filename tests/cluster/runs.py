"""Helpers of the cluster tests: the experiment they run, ``invbench run`` in a subprocess whose
stderr goes to a file (readable while it runs), waiting for rows, and comparing two runs' rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
from invbench.bench import store

from tests.helpers.parts import REPO, count_rows, subprocess_env
from tests.helpers.reliability import gmm_text

NAME = "cluster-gmm"
SHARDS = ["--shards", "2"]
VOLATILE = {"seconds", "peak_mem_bytes", "peak_rss_bytes", "created", "net_seconds", "timings", "code_version"}
"""Columns that differ between two runs of the same config (times, memory peaks; the commit, when
the checkout gets a commit between the two runs)."""


def gmm_config(tmp: Path, name: str = NAME, **kw) -> Path:
    """A small all-analytic experiment (8 cells, 16 rows: 2 digits, 1 seed, four real solvers,
    two tasks; each shard of two commits its rows one by one over several seconds)."""
    cfg = tmp / f"{name}.toml"
    kw = {"limit": 2, "seeds": "[0]", "dps_steps": 20, **kw}
    cfg.write_text(gmm_text(name, **kw))
    return cfg


class Run:
    """``invbench ARGS`` in a subprocess (1 thread, as the reference run), stderr to a file."""

    def __init__(self, args: list[str], log: Path, python: str | Path = sys.executable):
        self.log = log
        # SIGINT handled as in a terminal: a test session started in the background by a
        # non-interactive shell passes SIGINT on ignored, and invbench (like Python itself) leaves
        # an ignored SIGINT ignored, so the SIGINT case would wait for ever
        code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                f"from invbench.bench.cli import main; sys.exit(main({[str(a) for a in args]!r}))")
        # PYTHONFAULTHANDLER: a process that does not end in time is sent SIGABRT, and its threads'
        # stacks land in the log the failure shows
        env = subprocess_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
        self.err = open(log, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([str(python), "-c", code], cwd=str(REPO), env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)

    def wait(self, timeout: float = 300) -> tuple[int, str]:
        """Exit status and stderr."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)   # faulthandler writes every thread's stack
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.err.close()
            raise AssertionError(f"still running after {timeout:.0f} s; its log with the stacks:\n"
                                 f"{self.log.read_text()[-6000:]}") from None
        finally:
            self.err.close()
        return rc, self.log.read_text()

    def stderr(self) -> str:
        return self.log.read_text()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)


def venv_alias(folder: Path) -> Path:
    """A second path to this virtual environment's Python (``folder/bin/python``, with its own
    ``pyvenv.cfg`` and ``lib``): jobs submitted from it run it, and deleting it takes it away
    from the node as an environment missing on a compute node would."""
    prefix = Path(sys.prefix)
    (folder / "bin").mkdir(parents=True)
    (folder / "pyvenv.cfg").write_bytes((prefix / "pyvenv.cfg").read_bytes())
    (folder / "lib").symlink_to(prefix / "lib")
    (folder / "bin" / "python").symlink_to(Path(sys.executable))
    return folder / "bin" / "python"


def run(args: list[str], log: Path, timeout: float = 300) -> tuple[int, str]:
    return Run(args, log).wait(timeout)


def wait_rows(db: Path, n: int, proc: Run | None = None, timeout: float = 180) -> int:
    """Wait until the store ``db`` holds at least ``n`` rows; its row count."""
    t0 = time.time()
    while (k := count_rows(db)) < n:
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"the run ended before {db} had {n} rows:\n{proc.stderr()}")
        if time.time() - t0 > timeout:
            raise AssertionError(f"{db}: {k} rows after {timeout:.0f} s")
        time.sleep(0.2)
    return k


def freeze(pids: list[int]) -> None:
    """SIGSTOP a worker: it is then mid-run for as long as the test needs, without using the CPU."""
    assert pids, "no worker process found"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


class KeepFrozen:
    """Keep processes stopped: SIGSTOP again whenever one runs (Slurm sends SIGCONT with the
    signals it delivers to a step, e.g. submitit's USR2 before the time limit)."""

    def __init__(self, pids: list[int]):
        assert pids, "no worker process found"
        self.pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                    if state not in ("T", "t", "Z", "X"):
                        os.kill(pid, signal.SIGSTOP)
                except (OSError, IndexError):
                    continue
            time.sleep(0.01)

    def __enter__(self) -> KeepFrozen:  # noqa: PYI034
        freeze(self.pids)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def rows(run_dir: Path) -> pd.DataFrame:
    """The run's rows, sorted, without the columns that differ between runs."""
    df = store.load_results(run_dir).sort_values("row_id").reset_index(drop=True)
    return df[[c for c in df.columns if c not in VOLATILE]]


def assert_same_rows(a: Path, b: Path) -> pd.DataFrame:
    """Rows of runs ``a`` and ``b`` identical (every deterministic column, and the reconstruction
    files bitwise)."""
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb) and list(ra.row_id) == list(rb.row_id), (len(ra), len(rb))
    assert ra.equals(rb), ra.compare(rb)
    for rel in ra.recon_path.dropna():
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
        npy = a / (rel[:-4] + ".npy")
        if npy.exists():
            assert npy.read_bytes() == (b / (rel[:-4] + ".npy")).read_bytes(), rel
    return ra


def error_line(stderr: str) -> str:
    """The last line of a failed command's stderr; it must be its only ``invbench: error:`` line."""
    lines = [ln for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("invbench: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    return errors[0]


def tree_state(path: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime in ns) of every file under ``path``."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}
