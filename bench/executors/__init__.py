"""Execution backends: local (one device, in this process) and submitit (job arrays of grid shards).

submitit backend
  The cheapest-first cell list is split round-robin into ``n`` shards (shard ``k`` runs cells
  ``k, k+n, ...``), grouped by the solver's ``resources`` table (a job array per distinct
  resource set). Each array task re-loads the experiment from its TOML text, validates it, and
  runs its shard into ``RUN_DIR/shards/<k>/results.sqlite`` (images go to RUN_DIR directly; their
  paths are unique per row). When every task has finished, the shard stores are merged into
  ``RUN_DIR/results.sqlite`` and the set metrics are computed. Rows already finished in the run
  store are skipped by the shards, so ``--resume`` works the same way as locally.

  ``cluster``: ``"slurm"`` (or None; Slurm's client commands must be on PATH, else a
  ConfigError: submitit would quietly run the shards locally), ``"local"`` runs the tasks as
  local subprocesses (submitit's LocalExecutor), ``"debug"`` runs them in this process
  (DebugExecutor) — both are used by the tests. A progress bar of the local form shows rows done
  and ``shards D done, R running, P pending (reason)``; each array's log files are named once.

Slurm (docs/cluster.md)
  Job states come from one ``squeue`` call per poll (every 1 s at first, then a twentieth of the
  time waited, at most 30 s), ``sacct`` only for a job that left the queue: a cluster without
  accounting gets one notice, not submitit's warning per poll. A refused array (unknown
  partition, more memory than any node) is a ConfigError naming the resources, and a new run's
  folder is taken back. Arrays are split at ``MaxArraySize``; an unset ``timeout_min`` asks for
  the partition's default time limit (submitit's default would be 5 minutes). A shard that
  fails is announced at once and the others go on; then the run ends with one line for the
  failed shards (nothing is merged into the run store). The array ids are kept in meta
  ``slurm_jobs``: a ``--resume`` refuses while jobs of an earlier submission are still queued or
  running (a submitting process killed with SIGKILL, a rebooted login node).

Signals and limits
  SIGTERM, SIGINT and SIGHUP (unless ignored, as under nohup) of the submitting process cancel
  its jobs: Slurm arrays with one ``scancel``, then a wait (at most :data:`CANCEL_WAIT_S`) until
  the queue lists none of their tasks, so nothing writes into the run folder afterwards. In a
  Slurm task, SIGTERM (scancel, requeue, preemption, the time limit) ends the worker at once
  (submitit's handler would keep it running until SIGKILL); the warning before the time limit is
  SIGURG (``submit.WARNING_SIGNAL``, ignored by default) instead of submitit's USR2, which is
  ignored too; a requeued task starts its shard again and skips the rows it committed.
  Local shard workers watch the process that submitted them (pid and start time) twice a second
  and exit when it is gone, however it ended (SIGTERM, SIGINT, SIGKILL). Rows a shard committed
  stay in its store and are merged by the next ``--resume`` (every existing
  ``shards/*/results.sqlite`` is merged before new jobs start).
  Local jobs have no time limit (submitit's default of a few minutes would kill long shards);
  Slurm jobs use ``execution.resources.timeout_min`` (or the solver's ``resources``) — set it to
  fit the work, a line says so when it is missing. A failed shard is reported as one line
  (:class:`ExecutorError`) naming the shard, its cause and its log file: the last exception of
  the worker's traceback (e.g. ``StorageFault: ...: No space left on device``), or, for a worker
  that ended without a result (killed, out of memory, cancelled), "worker exited without a
  result" with the signal when submitit knows it, the job state with what it means (Slurm:
  ``TIMEOUT``: the limit in minutes, ``OUT_OF_MEMORY``: ``mem_gb``, ``CANCELLED``, ...) and the
  last error line of its log.

Shard count
  At most :data:`MAX_SHARDS` shards (``--shards`` / ``execution.shards``; more is refused with a
  ConfigError). Shards beyond the number of cells would be empty and are not submitted.

Calibration
  The submitting process calibrates the device at the start (meta ``calibration``, as a local
  run does: :mod:`invbench.bench.cost.calibration`); each worker calibrates its own device
  too, and
  after the merge the run's meta ``calibration_shards`` holds them as ``{shard: calibration}``.

Modules: ``common`` (limits, the error, notices), ``local`` (local runs and the shard worker's
body), ``submit`` (``run_submitit``: grouping, submission, waiting, merging), ``shards`` (what the
submitting process knows of each shard, the waiting loop), ``slurm`` (Slurm's client commands,
states and resources), ``signals`` (cancelling on SIGTERM/SIGINT/SIGHUP), ``causes`` (why a shard
ended without a result).
"""

from .common import LOCAL_TIMEOUT_MIN, MAX_SHARDS, ExecutorError, check_shards
from .local import run_local, shard_job
from .submit import run_submitit

__all__ = ["LOCAL_TIMEOUT_MIN", "MAX_SHARDS", "ExecutorError", "check_shards", "run_local", "run_submitit",
           "shard_job"]
