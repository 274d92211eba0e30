"""Limits of the executors, their error, and the one-line notices they print."""


from __future__ import annotations

import sys
from dataclasses import dataclass

from ..config import ConfigError

MAX_SHARDS = 10_000
"""Most shards a run is split into (``--shards``, ``execution.shards``): Slurm's default
``MaxArraySize`` is 1001, and each shard is a process with its own store."""

LOCAL_TIMEOUT_MIN = 60 * 24 * 365
"""Time limit (minutes) given to local submitit jobs: in effect none."""


class ExecutorError(RuntimeError):
    """A shard job failed or could not start; ``str(e)`` is one line naming the shard and its log."""


def check_shards(n: int, option: str = "--shards") -> int:
    """``n`` when ``1 <= n <= MAX_SHARDS``, else :class:`ConfigError` naming ``option``."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SHARDS:
        raise ConfigError(f"{option}: must be between 1 and {MAX_SHARDS} (the most shards a run is split into), "
                          f"got {n}")
    return n


@dataclass
class _ShardResult:
    shard: int
    rows: int
    counts: dict


def _notice(line: str) -> None:
    """One ``invbench: ...`` line on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(f"invbench: {line}", file=sys.stderr)
