"""A one-node Slurm cluster on 127.0.0.1 for the cluster tests (and for trying ``--executor
slurm`` on a laptop: ``python -m tests.cluster.slurm`` starts one and prints how to use it).

:class:`LocalSlurm` writes a ``slurm.conf`` into a fresh temporary folder (its ports are free
ports on 127.0.0.1, its state, spool, pid and log files all inside that folder), starts
``munged`` with its own key and socket, then ``slurmctld`` and ``slurmd`` in the foreground as
child processes, and waits until ``sinfo`` shows the node idle. :meth:`LocalSlurm.stop` cancels
every job left, waits until ``squeue`` is empty and the jobs' processes are gone, then stops the
three daemons it started, by PID, and removes the folder.

Client commands (``sbatch``, ``squeue``, ``scontrol``, submitit) find this cluster through
``SLURM_CONF`` (:attr:`LocalSlurm.env`). Accounting is off (``accounting_storage/none``), as on
a cluster without ``slurmdbd``: ``sacct`` fails there, which is what the executor must survive.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
NODE_CPUS = 2
NODE_MEMORY_MB = 2000


def missing_binaries() -> list[str]:
    """The Slurm / munge programs this cluster needs that are not installed."""
    found = {n: shutil.which(n) or next((p for p in (f"/usr/sbin/{n}", f"/sbin/{n}") if os.access(p, os.X_OK)), None)
             for n in DAEMONS + CLIENTS}
    return [n for n, p in found.items() if p is None]


def _binary(name: str) -> str:
    path = shutil.which(name) or f"/usr/sbin/{name}"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{name}: not installed (Debian: apt-get install slurm-wlm munge)")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    """The one-node cluster did not come up; the message holds the tail of the daemons' logs."""


class LocalSlurm:
    """One Slurm node on 127.0.0.1, started in a temporary folder (see the module docstring)."""

    def __init__(self, *, cpus: int = NODE_CPUS, memory_mb: int = NODE_MEMORY_MB, kill_wait_s: int = 2,
                 cred_expire_s: int = 10):
        self.cpus = cpus
        self.memory_mb = memory_mb
        self.kill_wait_s = kill_wait_s
        self.cred_expire_s = cred_expire_s
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.node = socket.gethostname().split(".")[0]
        self.partition = "debug"
        self.user = pwd.getpwuid(os.getuid()).pw_name

    # ------------------------------------------------------------------ paths and environment

    @property
    def conf(self) -> Path:
        assert self.root is not None
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point client commands at this cluster."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a Slurm client command against this cluster; its stdout."""
        r = subprocess.run(list(argv), env={**os.environ, **self.env}, capture_output=True, text=True,
                           timeout=timeout, check=False)
        if check and r.returncode != 0:
            raise ClusterError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
        return r.stdout

    # ------------------------------------------------------------------ start

    def start(self, timeout_s: float = 60) -> LocalSlurm:
        """Write the configuration, start munged, slurmctld and slurmd, and wait for an idle node."""
        self.root = Path(tempfile.mkdtemp(prefix="invbench-slurm-"))
        try:
            os.chmod(self.root, 0o755)   # munged (as the munge user) reaches its own sub-folder
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", [_binary("slurmctld"), "-D", "-f", str(self.conf)])
            self._spawn("slurmd", [_binary("slurmd"), "-D", "-f", str(self.conf)])
            self.wait_idle(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        """munged with its own key, socket, pid, log and seed files (as ``munge`` when we are root)."""
        assert self.root is not None
        d = self.root / "munge"
        d.mkdir()
        d.chmod(0o755)   # munged: the socket's folder must be searchable by all, writable by its owner only
        key = d / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        user = None
        if os.getuid() == 0:
            with contextlib.suppress(KeyError):
                pw = pwd.getpwnam("munge")
                user = pw.pw_uid
                for p in (d, key):
                    os.chown(p, pw.pw_uid, pw.pw_gid)
        self.munge_socket = d / "munge.socket"
        argv = [_binary("munged"), "-F", "--socket", str(self.munge_socket), "--key-file", str(key),
                "--pid-file", str(d / "munged.pid"), "--log-file", str(d / "munged.log"),
                "--seed-file", str(d / "munged.seed")]
        if os.getuid() == 0 and user is None:
            argv.append("--force")
        self._spawn("munged", argv, user=user)
        deadline = time.time() + 20
        while not self.munge_socket.exists():
            self._check_alive()
            if time.time() > deadline:
                raise ClusterError("munged did not create its socket within 20 s" + self._log_tail())
            time.sleep(0.1)

    def _write_conf(self) -> None:
        assert self.root is not None
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir()
        r = self.root
        self.ctld_port, self.slurmd_port = _free_port(), _free_port()
        self.conf.write_text("\n".join([
            "ClusterName=invbench-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            f"SlurmUser={self.user}",
            f"SlurmdUser={self.user}" if os.getuid() != 0 else "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire_s}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            f"KillWait={self.kill_wait_s}",
            "MinJobAge=600",
            "InactiveLimit=0",
            "SlurmdTimeout=60",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            f"DefMemPerCPU={self.memory_mb // self.cpus}",   # else a job gets the whole node's memory
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def _spawn(self, name: str, argv: list[str], user: int | None = None) -> None:
        assert self.root is not None
        out = open(self.root / f"{name}.out", "ab")   # noqa: SIM115 - closed below; the child keeps its copy
        try:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env={**os.environ, **self.env}, user=user, start_new_session=True)
        finally:
            out.close()

    def _check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise ClusterError(f"{name} exited with status {p.returncode}" + self._log_tail())

    def _log_tail(self, lines: int = 8) -> str:
        if self.root is None:
            return ""
        out = []
        for f in sorted(list(self.root.glob("*.out")) + list((self.root / "log").glob("*.log"))
                        + list((self.root / "munge").glob("*.log"))):
            with contextlib.suppress(OSError):
                tail = f.read_text(errors="replace").splitlines()[-lines:]
                if tail:
                    out.append(f"\n--- {f.name}:\n" + "\n".join(tail))
        return "".join(out)

    def node_state(self) -> str:
        """The node's state as ``sinfo`` shows it (``idle``, ``mixed``, ``drained``, ...), '' if unknown."""
        r = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env={**os.environ, **self.env}, capture_output=True,
                           text=True, timeout=30, check=False)
        return r.stdout.strip() if r.returncode == 0 else ""

    def wait_idle(self, timeout_s: float = 60) -> None:
        """Wait until ``sinfo`` shows the node idle."""
        deadline = time.time() + timeout_s
        while self.node_state() != "idle":
            self._check_alive()
            if time.time() > deadline:
                raise ClusterError(f"the node is not idle after {timeout_s:.0f} s (sinfo: {self.node_state()!r})"
                                   + self._log_tail())
            time.sleep(0.3)

    # ------------------------------------------------------------------ jobs

    def jobs(self) -> list[str]:
        """``JOBID STATE`` of every job in the queue (one line per array task)."""
        return [ln for ln in self.run("squeue", "-h", "-r", "-o", "%i %T").splitlines() if ln.strip()]

    def job_pids(self) -> list[int]:
        """PIDs of the processes of every job step on the node (``scontrol listpids``)."""
        r = subprocess.run(["scontrol", "listpids"], env={**os.environ, **self.env}, capture_output=True, text=True,
                           timeout=30, check=False)
        pids = []
        for ln in r.stdout.splitlines()[1:]:
            with contextlib.suppress(ValueError, IndexError):
                pids.append(int(ln.split()[0]))
        return pids

    def worker_pids(self, array_id: str, task: int) -> list[int]:
        """PIDs of the submitit worker (``python -m submitit.core._submit``, not the ``srun`` that
        started it) of array task ``array_id_task``, found by the ``SLURM_ARRAY_*`` variables of
        its environment."""
        want = {b"SLURM_ARRAY_JOB_ID=" + array_id.encode(), b"SLURM_ARRAY_TASK_ID=" + str(task).encode()}
        pids = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                argv = (d / "cmdline").read_bytes().split(b"\0")
                if b"submitit.core._submit" in argv and Path(argv[0].decode()).name != "srun" \
                        and want <= set((d / "environ").read_bytes().split(b"\0")):
                    pids.append(int(d.name))
        return pids

    def cancel_all(self, timeout_s: float = 60) -> None:
        """Cancel every job, then wait until the queue is empty and no job process is left."""
        self.run("scancel", "--user", self.user, check=False)
        deadline = time.time() + timeout_s
        while self.jobs() or self.job_pids():
            if time.time() > deadline:
                raise ClusterError(f"jobs left after {timeout_s:.0f} s: {self.jobs()} pids {self.job_pids()}")
            time.sleep(0.3)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons this object started (by PID), remove the folder."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            with contextlib.suppress(Exception):
                self.cancel_all()
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs.clear()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> LocalSlurm:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:   # pragma: no cover - a manual tool
    """Start a cluster, print how to use it, and stop it at Ctrl-C or SIGTERM."""
    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with LocalSlurm() as c:
        print(f"one-node Slurm up: export SLURM_CONF={c.conf}\n(Ctrl-C or SIGTERM stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":   # pragma: no cover
    main()
