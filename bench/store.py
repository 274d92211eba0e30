"""Results store: ``RUN_DIR/results.sqlite`` (SQLite, WAL); a run's image files are written by
:mod:`.runfiles`.

Schema (docs/harness.md): table ``results`` (one row per cell × image
× seed, primary key ``row_id``), ``set_metrics``, ``metric_status``, ``meta``. A row is
committed only after its files (PNG, optional .npy) are on disk under their final names; each
file is written to a temporary name in the same folder and moved with ``os.replace``, so an
interrupted run leaves no half-written file under a final name and no row pointing at a missing
file.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

from .fsafety import StorageFault, atomic_write_bytes, storage_fault

__all__ = [
    "METRIC_COLUMNS",
    "RESULT_COLUMNS",
    "STORE_NAME",
    "Store",
    "StoreError",
    "atomic_write_bytes",
    "existing_meta",
    "file_keys",
    "load_meta",
    "load_metric_status",
    "load_results",
    "load_set_metrics",
    "row_id",
]

STORE_NAME = "results.sqlite"
LOCK_WAIT_S = 5.0
"""Seconds a store operation waits for another SQLite writer before it is reported as locked."""
SCHEMA_VERSION = "1"

METRIC_COLUMNS: tuple[str, ...] = (
    "psnr", "ssim", "lpips", "mse", "consistency",
    "dist_to_map", "rel_dist_to_map", "logpost_gap", "err_post_mean",
)

RESULT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("row_id", "TEXT PRIMARY KEY"),
    ("experiment", "TEXT"), ("solver", "TEXT"), ("preset", "TEXT"), ("task", "TEXT"),
    ("operator", "TEXT"), ("noise_sigma", "REAL"), ("sigma_y", "REAL"), ("dataset", "TEXT"),
    ("prior", "TEXT"), ("image_id", "TEXT"), ("seed", "INTEGER"), ("status", "TEXT"),
    ("message", "TEXT"), ("seconds", "REAL"), ("peak_mem_bytes", "INTEGER"),
    ("peak_rss_bytes", "INTEGER"), ("nfe", "INTEGER"), ("vjp", "INTEGER"), ("device", "TEXT"),
    ("torch_version", "TEXT"), ("batch_size", "INTEGER"), ("config_hash", "TEXT"),
    ("code_version", "TEXT"), ("recon_path", "TEXT"), ("created", "REAL"),
    ("operator_seed", "INTEGER"), ("noise_seed", "INTEGER"), ("solver_seed", "INTEGER"),
    ("net_seconds", "REAL"), ("timings", "TEXT"), ("preset_provenance", "TEXT"),
) + tuple((m, "REAL") for m in METRIC_COLUMNS)
#: columns added after stores were first written: an older store lacking them is still read, and
#: a writable one gains them (``ALTER TABLE ... ADD COLUMN``, values NULL for the old rows)
OPTIONAL_COLUMNS: frozenset[str] = frozenset({"preset_provenance"})
"""Columns of ``results``: the contract's columns, the three derived generator seeds (operator,
measurement noise, solver; see :func:`invbench.bench.problem.derive_seed`), the network's share
of the solve time (``net_seconds``) and the JSON of the timed solves (``timings``; see
:mod:`invbench.bench.run.execute`), and one REAL per metric."""

STATUSES = ("ok", "skipped", "diverged", "oom", "error")


class StoreError(RuntimeError):
    """The store cannot be opened/written (corrupt, locked, read-only); one readable line."""


def row_id(config_hash: str, solver: str, preset: str, task: str, dataset: str, prior: str,
           image_id: str, seed: int) -> str:
    """sha256 (hex) of the row's identity (contract: config_hash, solver, preset, task, dataset,
    prior, image_id, seed), joined with an ASCII unit separator."""
    key = "\x1f".join([config_hash, solver, preset, task, dataset, prior, str(image_id), str(int(seed))])
    return hashlib.sha256(key.encode()).hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    """Read-write connection (WAL); waits at most :data:`LOCK_WAIT_S` for another writer."""
    try:
        con = sqlite3.connect(str(path), timeout=LOCK_WAIT_S, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute(f"PRAGMA busy_timeout={int(LOCK_WAIT_S * 1000)}")
    except sqlite3.DatabaseError as e:
        fault = storage_fault(e, path)
        if fault is not None:
            raise fault from None
        raise StoreError(f"{path}: cannot open results store ({e})") from None
    return con


def _faults_named(fn):
    """Method decorator: SQLite storage errors (disk full, I/O error, locked) become a
    :class:`StorageFault` naming the store and what to do."""
    @functools.wraps(fn)
    def wrapper(self, *a, **kw):
        try:
            return fn(self, *a, **kw)
        except sqlite3.OperationalError as e:
            fault = storage_fault(e, self.path)
            if fault is not None:
                raise fault from None
            raise
    return wrapper


def _check_existing(path: Path) -> None:
    """StoreError unless the existing file at ``path`` is an SQLite database whose ``results``
    table (if any) has every column of :data:`RESULT_COLUMNS`; opened read-only, so a refused
    file is left byte-for-byte unchanged."""
    con = _connect_readonly(path)
    try:
        have = {r[1] for r in con.execute("PRAGMA table_info(results)")}
        problems = [r[0] for r in con.execute("PRAGMA quick_check(3)")]   # a corrupt index or page
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a usable results store ({e})") from None
    finally:
        con.close()
    if problems != ["ok"]:
        raise StoreError(f"{path}: the results store is damaged (SQLite integrity check: {'; '.join(problems)}); "
                         "restore it from a copy or start a new run in another --out")
    missing = [n for n, _ in RESULT_COLUMNS if n not in have and n not in OPTIONAL_COLUMNS]
    if have and missing:
        raise StoreError(f"{path}: results table lacks columns {', '.join(missing)} (older schema?)")


class Store:
    """Read/write access to one ``results.sqlite`` (run store or shard store)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_file() and self.path.stat().st_size > 0:
            _check_existing(self.path)   # refuse a corrupt/foreign file before writing anything to it
        side = [Path(f"{self.path}{x}") for x in ("", "-wal", "-shm", "-journal")]
        new = [f for f in side if not f.exists()]
        self.con = None
        try:
            self.con = _connect(self.path)
            self._create()
        except (StoreError, StorageFault):
            if self.con is not None:
                self.con.close()
            if self.path in new:   # a store that could not be created leaves nothing behind
                for f in new:
                    with contextlib.suppress(FileNotFoundError):
                        f.unlink()
            raise

    def _create(self) -> None:
        cols = ", ".join(f"{n} {t}" for n, t in RESULT_COLUMNS)
        try:
            with self.con:
                self.con.execute("BEGIN")
                self.con.execute(f"CREATE TABLE IF NOT EXISTS results ({cols})")
                self.con.execute(
                    "CREATE TABLE IF NOT EXISTS set_metrics (experiment TEXT, solver TEXT, preset TEXT, task TEXT,"
                    " dataset TEXT, prior TEXT, metric TEXT, value REAL, n INTEGER, note TEXT,"
                    " PRIMARY KEY (experiment, solver, preset, task, dataset, prior, metric))"
                )
                self.con.execute(
                    "CREATE TABLE IF NOT EXISTS metric_status (metric TEXT PRIMARY KEY, available INTEGER,"
                    " note TEXT, backbone TEXT)"
                )
                self.con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        except sqlite3.DatabaseError as e:
            fault = storage_fault(e, self.path)
            if fault is not None:
                raise fault from None
            raise StoreError(f"{self.path}: not a usable results store ({e})") from None
        have = {r[1] for r in self.con.execute("PRAGMA table_info(results)")}
        missing = [n for n, _ in RESULT_COLUMNS if n not in have and n not in OPTIONAL_COLUMNS]
        if missing:
            raise StoreError(f"{self.path}: results table lacks columns {', '.join(missing)} (older schema?)")
        added = [(n, t) for n, t in RESULT_COLUMNS if n not in have and n in OPTIONAL_COLUMNS]
        if added:
            with self.con:
                for n, t in added:
                    self.con.execute(f"ALTER TABLE results ADD COLUMN {n} {t}")

    def close(self) -> None:
        if self.con is not None:
            self.con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ meta
    @_faults_named
    def set_meta(self, items: dict[str, Any]) -> None:
        with self.con:
            self.con.execute("BEGIN")
            for k, v in items.items():
                self.con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (k, str(v)))

    def meta(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM meta"))

    @_faults_named
    def set_metric_status(self, rows: Iterable[tuple[str, bool, str, str]]) -> None:
        with self.con:
            self.con.execute("BEGIN")
            for metric, available, note, backbone in rows:
                self.con.execute(
                    "INSERT OR REPLACE INTO metric_status(metric, available, note, backbone) VALUES (?, ?, ?, ?)",
                    (metric, int(bool(available)), note, backbone),
                )

    # ------------------------------------------------------------------ results
    @_faults_named
    def write_rows(self, rows: list[dict]) -> None:
        """Insert (or replace, for redone rows) ``rows`` in one transaction."""
        if not rows:
            return
        names = [n for n, _ in RESULT_COLUMNS]
        for r in rows:
            unknown = set(r) - set(names)
            if unknown:
                raise StoreError(f"unknown result column(s) {', '.join(sorted(unknown))}")
            if r.get("status") not in STATUSES:
                raise StoreError(f"bad status {r.get('status')!r}")
        sql = f"INSERT OR REPLACE INTO results ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.executemany(sql, [tuple(r.get(n) for n in names) for r in rows])

    def status_by_id(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT row_id, status FROM results"))

    def done(self) -> dict[str, str | None]:
        """``row_id -> recon_path`` of every finished row (status ``ok`` or ``skipped``; a skipped
        row has no file, ``None``): what ``--resume`` does not redo when its files are there."""
        q = "SELECT row_id, recon_path FROM results WHERE status IN ('ok', 'skipped')"
        return dict(self.con.execute(q))

    def count_done(self, config_hash: str) -> int:
        """Number of finished (``ok``/``skipped``) rows of the run with ``config_hash``."""
        q = "SELECT COUNT(*) FROM results WHERE config_hash=? AND status IN ('ok', 'skipped')"
        return int(self.con.execute(q, (config_hash,)).fetchone()[0])

    def cell_rows(self, config_hash: str, solver: str, preset: str, task: str, dataset: str,
                  prior: str, status: str = "ok") -> list[dict]:
        """Rows of one cell of the run with ``config_hash`` that have ``status``, ordered by image
        id and seed."""
        return self.rows("WHERE solver=? AND preset=? AND task=? AND dataset=? AND prior=? "
                         "AND config_hash=? AND status=? ORDER BY image_id, seed",
                         (solver, preset, task, dataset, prior, config_hash, status))

    def rows(self, where: str = "", params: tuple = ()) -> list[dict]:
        """Rows of ``results`` as dicts; ``where`` is an SQL tail with ``?`` placeholders."""
        cur = self.con.execute(f"SELECT * FROM results {where}", params)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    @_faults_named
    def write_set_metric(self, key: dict, metric: str, value: float | None, n: int, note: str) -> None:
        with self.con:
            self.con.execute("BEGIN IMMEDIATE")
            self.con.execute(
                "INSERT OR REPLACE INTO set_metrics(experiment, solver, preset, task, dataset, prior, metric, "
                "value, n, note) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key["experiment"], key["solver"], key["preset"], key["task"], key["dataset"], key["prior"],
                 metric, value, int(n), note),
            )

    @_faults_named
    def merge_from(self, other: str | Path) -> int:
        """Copy every ``results`` row of store ``other`` into this one (replacing rows with the
        same ``row_id``, except that a finished ``ok``/``skipped`` row here is never replaced by an
        unfinished one); returns the number of rows copied."""
        other = Path(other)
        names = [n for n, _ in RESULT_COLUMNS]
        src = _connect(other)
        try:
            cur = src.execute(f"SELECT {', '.join(names)} FROM results")
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{other}: cannot read shard store ({e})") from None
        finally:
            src.close()
        have = self.status_by_id()
        keep = [r for r in rows
                if not (have.get(r["row_id"]) in ("ok", "skipped") and r["status"] not in ("ok", "skipped"))]
        self.write_rows(keep)
        return len(keep)


# ------------------------------------------------------------------ readers (public API)


def _store_path(run_dir: str | Path) -> Path:
    p = Path(run_dir)
    if p.is_file():
        return p
    sp = p / STORE_NAME
    if not sp.exists():
        raise FileNotFoundError(f"{sp}: no results store (not a run directory?)")
    return sp


def _live_writer(path: Path) -> bool:
    """True when a run holds the flock on the ``.lock`` next to the store (see :func:`lock_held`)."""
    return lock_held(path.parent)


def lock_held(folder: str | os.PathLike) -> bool:
    """True when a process holds the flock on ``folder/.lock`` (a run or shard writing there), or
    when that cannot be told; False when there is no lock file or its lock is free. Opens the file
    read-only and takes no lock that stays."""
    try:
        fd = os.open(Path(folder) / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)   # releases the probe lock


class _ReadOnlyConnection(sqlite3.Connection):
    """A read-only connection that, on close, removes the ``-wal``/``-shm`` files SQLite created
    for it (only while no run writes the store)."""

    created: tuple[Path, ...] = ()
    store: Path | None = None

    def close(self) -> None:
        super().close()
        if self.created and self.store is not None and not _live_writer(self.store):
            for f in self.created:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
        self.created = ()


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Open a store for reading without writing anything into the run directory.

    With no run writing the store (its ``.lock`` free) and no committed pages waiting in a
    ``-wal`` file, the file is opened ``immutable=1`` (an exact snapshot; SQLite creates no
    ``-wal``/``-shm``). Otherwise ``mode=ro`` (reads the WAL; any ``-wal``/``-shm`` it had to
    create are removed on close unless a writer started meanwhile).
    """
    path = Path(path)
    uri = path.resolve().as_uri()
    side = (Path(f"{path}-wal"), Path(f"{path}-shm"))
    before = {f for f in side if f.exists()}
    wal_pending = side[0].exists() and side[0].stat().st_size > 0
    order = ("mode=ro", "immutable=1") if (wal_pending or _live_writer(path)) else ("immutable=1",)
    for flags in order:
        try:
            con = sqlite3.connect(f"{uri}?{flags}", uri=True, timeout=LOCK_WAIT_S, factory=_ReadOnlyConnection)
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: cannot open results store ({e})") from None
        con.store = path
        con.created = tuple(f for f in side if f not in before)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            con.created = tuple(f for f in side if f not in before and f.exists())
            return con
        except sqlite3.OperationalError:
            con.close()
            continue
        except sqlite3.DatabaseError as e:
            con.close()
            raise StoreError(f"{path}: cannot open results store ({e})") from None
    raise StoreError(f"{path}: cannot open results store read-only")


def existing_meta(path: str | Path) -> dict[str, str]:
    """The ``meta`` table of the existing store file ``path``, read without writing anything
    (``{}`` when the store was stopped before its tables existed). StoreError when the file is
    not a usable store (corrupt, foreign, older schema)."""
    path = Path(path)
    _check_existing(path)
    try:
        con = _connect_readonly(path)
        try:
            q = "SELECT name FROM sqlite_master WHERE type='table'"
            tables = {r[0] for r in con.execute(q)}
            return dict(con.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a usable results store ({e})") from None


def file_keys(path: str | Path) -> list[tuple[str | None, str, str, str, int]]:
    """``(recon_path, task, dataset, image_id, seed)`` of every row of the store file ``path``
    (read-only): what names the files the run wrote."""
    con = _connect_readonly(Path(path))
    try:
        q = "SELECT recon_path, task, dataset, image_id, seed FROM results"
        return con.execute(q).fetchall()
    finally:
        con.close()


def _read_sql(run_dir, sql: str):
    import pandas as pd

    con = _connect_readonly(_store_path(run_dir))
    try:
        return pd.read_sql_query(sql, con)
    finally:
        con.close()


def _as_float(df, cols):
    import pandas as pd

    for c in cols:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


def load_results(run_dir: str | Path):
    """Table ``results`` of ``RUN_DIR/results.sqlite`` as a pandas DataFrame (one row per cell ×
    image × seed; REAL columns are float64, NULL -> NaN when not computed/unavailable)."""
    df = _read_sql(run_dir, "SELECT * FROM results ORDER BY solver, preset, task, dataset, prior, image_id, seed")
    return _as_float(df, [n for n, t in RESULT_COLUMNS if t == "REAL"])


def load_set_metrics(run_dir: str | Path):
    """Table ``set_metrics`` (FID, sliced Wasserstein, ...; value NaN + note when unavailable)."""
    df = _read_sql(run_dir, "SELECT * FROM set_metrics ORDER BY solver, preset, task, dataset, prior, metric")
    return _as_float(df, ["value"])


def load_metric_status(run_dir: str | Path):
    """Table ``metric_status``: which metrics were available, why not, and their backbone."""
    return _read_sql(run_dir, "SELECT * FROM metric_status ORDER BY metric")


def load_meta(run_dir: str | Path) -> dict[str, str]:
    """Table ``meta`` as a dict (experiment, resolved config TOML, config_hash, code version, ...)."""
    con = _connect_readonly(_store_path(run_dir))
    try:
        return dict(con.execute("SELECT key, value FROM meta"))
    finally:
        con.close()
