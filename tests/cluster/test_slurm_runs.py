"""``--executor slurm`` on a real one-node Slurm: ``configs/smoke.toml`` gives the rows of a local
run, the resources of the config reach Slurm, resources Slurm refuses are a one-line error
before anything is written, and a cluster run's log is quiet (one line per array with its logs,
the progress in the form of a local run, no warning per poll without accounting).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.cluster.runs import SHARDS, Run, assert_same_rows, error_line, gmm_config, run
from tests.helpers.parts import REPO, reference_run

pytestmark = pytest.mark.cluster


def test_smoke_config_on_slurm_gives_the_rows_of_a_local_run(slurm, tmp_path):
    """configs/smoke.toml, two shards on Slurm and the local run at the same time (1 thread each)."""
    out = tmp_path / "slurm"
    r = Run(["run", REPO / "configs" / "smoke.toml", "--out", out, "--executor", "slurm", *SHARDS, "--no-progress"],
            tmp_path / "slurm.err")
    reference_run(REPO / "configs" / "smoke.toml", tmp_path / "local")
    rc, err = r.wait(600)
    assert rc == 0, err
    df = assert_same_rows(out, tmp_path / "local")
    assert len(df) == 66 and set(df.status) == {"ok"}


def test_cluster_run_log_is_quiet_and_shows_progress(slurm, tmp_path):
    """No accounting here (accounting_storage/none): no sacct warning at all, let alone one per
    poll; one line per array naming its logs; the progress bar of a local run, with the shards."""
    cfg = gmm_config(tmp_path)
    rc, err = run(["run", cfg, "--out", tmp_path / "run", "--executor", "slurm", *SHARDS], tmp_path / "run.err")
    assert rc == 0, err
    text = err.replace("\r", "\n")
    assert "Bypassing" not in text and "accounting storage is disabled" not in text
    assert text.count("accounting") <= 1
    logs = [ln for ln in text.splitlines() if "logs:" in ln]
    assert len(logs) == 1 and re.search(r"shard\(s\) 0-1: Slurm job \d+ \(.*\); logs: "
                                        r".*/submitit/\d+_<task>_0_log\.err",
                                        logs[0]), logs
    bars = [ln for ln in text.splitlines() if re.match(r"invbench: +\d+%\|", ln)]
    assert bars and re.search(r"16/16 .*shards 2 done, 0 running, 0 pending", bars[-1]), bars[-3:]
    assert any("running" in b and "/16" in b for b in bars)


def _job_fields(slurm, array: str) -> list[dict[str, str]]:
    """``scontrol show job -o`` of every task of an array, as dicts."""
    out = []
    for ln in slurm.run("scontrol", "show", "job", "-o", array).splitlines():
        out.append(dict(kv.split("=", 1) for kv in ln.split() if "=" in kv))
    return out


def test_resources_reach_slurm_as_configured(slurm, tmp_path):
    """execution.resources for every shard, a solver's own resources for its shards (a second
    array): CPUs per task, memory, time limit, partition, account, the array's throttle and the
    job name, as scontrol shows them."""
    extra = ('[execution.resources]\ntimeout_min = 7\ncpus_per_task = 1\nmem_gb = 1\npartition = "debug"\n'
             'account = "lab"\narray_parallelism = 1\n')
    cfg = gmm_config(tmp_path, extra="", limit=1)
    text = cfg.read_text().replace('[[solvers]]\nname = "ddrm"\n',
                                   '[[solvers]]\nname = "ddrm"\nresources = { cpus_per_task = 2, timeout_min = 9 }\n')
    cfg.write_text(text + "\n" + extra)
    rc, err = run(["run", cfg, "--out", tmp_path / "run", "--executor", "slurm", *SHARDS, "--no-progress"],
                  tmp_path / "run.err")
    assert rc == 0, err
    arrays = re.findall(r"Slurm job (\d+) ", err)
    assert len(arrays) == 2, err
    seen = {}
    for a in arrays:
        for f in _job_fields(slurm, a):
            assert f["JobName"] == "invbench-cluster-gmm" and f["Partition"] == "debug", f
            assert f["MinMemoryNode"] == "1G" and f["Account"] == "lab", f
            assert f["ArrayTaskThrottle"] == "1", f
            seen.setdefault((f["CPUs/Task"], f["TimeLimit"]), 0)
            seen[(f["CPUs/Task"], f["TimeLimit"])] += 1
    assert seen == {("1", "00:07:00"): 2, ("2", "00:09:00"): 2}, seen   # ddrm: 2 cells, its own 2 shards
    # the warning before the time limit is SIGURG (ignored by default), not submitit's USR2, which
    # killed a worker still importing when a short limit made Slurm send it at once
    scripts = list((tmp_path / "run" / "submitit").glob("*_submission.sh"))
    assert len(scripts) == 2 and all("#SBATCH --signal=URG@90\n" in s.read_text() for s in scripts), scripts


@pytest.mark.parametrize("resources, where, says", [
    ('[execution.resources]\npartition = "nope"', "execution.resources (partition=nope, ", "invalid partition"),
    ("[execution.resources]\nmem_gb = 64", "execution.resources (mem_gb=64, ",
     "requested node configuration is not available"),
    ("", "resources of solver(s) ddrm (partition=nope, ", "invalid partition"),   # the 2nd array of two refused
])
def test_resources_slurm_refuses_are_one_line_before_anything_is_written(slurm, tmp_path, resources, where, says):
    cfg = gmm_config(tmp_path, limit=1)
    text = cfg.read_text() + f"\n{resources}\n"
    if not resources:
        text = text.replace('name = "ddrm"\n', 'name = "ddrm"\nresources = { partition = "nope" }\n')
    cfg.write_text(text)
    out = tmp_path / "run"
    t0 = time.time()
    rc, err = run(["run", cfg, "--out", out, "--executor", "slurm", *SHARDS, "--no-progress"], tmp_path / "run.err")
    assert rc == 2, err
    line = error_line(err)
    assert where in line and "Slurm refuses them for shards" in line and says in line.lower(), line
    if not resources:   # the array submitted before the refused one is cancelled
        assert "cancelled Slurm job(s) " in err and "none is left in the queue" in err, err
    assert not out.exists() and slurm.jobs() == []
    assert time.time() - t0 < 120
