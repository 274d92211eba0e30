"""Per-cell summaries and leaderboards (one per dataset × task) computed from a run.

A *cell* is solver × preset × task × dataset × prior; its rows are images × seeds. Metric
summaries use the ok rows only (mean ± 95% Student-t CI, see :mod:`invbench.bench.report.stats`); cells
whose rows are not all ok carry a status text with counts and messages. Metrics marked
unavailable in ``metric_status`` are carried as their note and never as numbers. When the run's
grid is known (:mod:`invbench.bench.report.completeness`), counts are out of the rows the grid
expects: a cell with 4 of its 12 rows reads ``ok 4/12; not run 8/12``, and a cell without any
row is listed with status ``not run``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data import CELL_KEYS, RunData
from .stats import DEFAULT_PRIMARY, PER_IMAGE_METRICS, MeanCI, ci_for, direction
from .verdicts import image_means, is_oracle, non_monotone, one_vs_best, seed_spread

MIB = float(1 << 20)


def cell_label(solver: str, preset: str) -> str:
    """Display label of a cell in figures: the solver, plus the preset when not ``default``."""
    return str(solver) if str(preset) == "default" else f"{solver} ({preset})"


def _provenance(v) -> str:
    """The stored ``preset_provenance`` as text ("" when absent)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


@dataclass
class CellSummary:
    solver: str
    preset: str
    task: str
    dataset: str
    prior: str
    n_rows: int
    n_ok: int
    status: str                      # "ok" or e.g. "skipped: <why>" / "diverged 2/6: <why>; ok 4/6"
    metrics: dict[str, MeanCI]       # per-image metrics with at least one value
    set_metrics: dict[str, tuple[float | None, int | None, str]]   # value, n, note
    seconds: MeanCI
    seconds_median: float
    nfe: float                       # mean over ok rows (NaN when none)
    vjp: float
    peak_mem_mib: float              # max over ok rows; NaN when not recorded (CPU)
    peak_rss_mib: float
    batch_sizes: str = "1"           # distinct batch sizes of the ok rows, e.g. "4,2"
    rank: int | None = None           # by mean among the board's solver cells (oracles: None)
    delta_best: MeanCI | None = None  # cell − best on image means, Bonferroni-adjusted interval (verdicts.py)
    delta_level: float = math.nan     # confidence level of that interval (1 − 0.05/m)
    is_best: bool | None = None       # None: not ranked (oracle, no value)
    tied_with_best: bool | None = None   # not significantly worse than the best (interval reaches 0)
    seed_sd: float = math.nan         # primary metric: mean over images of the SD across seeds
    provenance: str = ""             # preset_provenance of the rows ("" for stores written before it existed)
    delta_ref: MeanCI | None = None   # paired difference to the reference solver's cell
    n_expected: int | None = None     # rows the run's grid expects (None: grid unknown)

    @property
    def label(self) -> str:
        return cell_label(self.solver, self.preset)

    @property
    def key(self) -> tuple[str, ...]:
        return (self.solver, self.preset, self.task, self.dataset, self.prior)

    @property
    def is_oracle(self) -> bool:
        return is_oracle(self.solver)


@dataclass
class Leaderboard:
    dataset: str
    task: str
    primary: str
    metrics: list[str]               # per-image metric columns shown (values or unavailable)
    set_metrics: list[str]           # set-metric columns shown
    unavailable: dict[str, str]      # metric -> "unavailable: <why>" (whole column)
    cells: list[CellSummary]
    notes: list[str] = field(default_factory=list)
    reference: str | None = None     # solver of the Δ ref column (None: no such column)
    footnotes: list[str] = field(default_factory=list)   # marks that are not monotone in the mean, explained
    image_means: dict[tuple, pd.Series] = field(default_factory=dict, repr=False)   # primary, per ranked cell


def _num(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)


def _status_text(rows: pd.DataFrame, expected: int | None = None) -> str:
    """``"ok"``, or each status with its count and messages; counts are out of ``expected`` rows
    when the grid is known and the cell has fewer (the missing ones read ``not run k/n``)."""
    n = max(len(rows), expected or 0)
    st = rows["status"].astype(str)
    missing = n - len(rows)
    if (st == "ok").all() and not missing:
        return "ok"
    parts = []
    for status, grp in rows[st != "ok"].groupby(st[st != "ok"], sort=True):
        msgs = sorted({str(m) for m in grp["message"].fillna("") if str(m)})
        why = "; ".join(msgs) if msgs else "no message"
        count = "" if len(grp) == n else f" {len(grp)}/{n}"
        parts.append(f"{status}{count}: {why}")
    n_ok = int((st == "ok").sum())
    if n_ok:
        parts.append(f"ok {n_ok}/{n}")
    if missing:
        parts.append(f"not run {missing}/{n}")
    return "; ".join(parts)


def _nanmax(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else math.nan


def _nanmean(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def summarise_cell(rows: pd.DataFrame, set_rows: pd.DataFrame, unavailable: dict[str, str],
                   alpha: float = 0.05, expected: int | None = None) -> CellSummary:
    """Summary of one cell's rows (all statuses) and its set-metric rows; ``expected`` is the
    number of rows the run's grid expects of the cell (None: unknown)."""
    first = rows.iloc[0]
    ok = rows[rows["status"].astype(str) == "ok"]
    metrics: dict[str, MeanCI] = {}
    for m in PER_IMAGE_METRICS:   # the image is the unit: seeds are averaged per image first
        if m in unavailable or m not in ok:
            continue
        ci = ci_for(m, image_means(ok, m).to_numpy(float), alpha)
        if ci.n:
            metrics[m] = ci
    sm: dict[str, tuple[float | None, int | None, str]] = {}
    for _, r in set_rows.iterrows():
        v = r.get("value")
        v = None if v is None or pd.isna(v) else float(v)
        n = r.get("n")
        n = None if n is None or pd.isna(n) else int(n)
        note = "" if r.get("note") is None or pd.isna(r.get("note")) else str(r.get("note"))
        if v is None and not note:
            note = "unavailable: no value recorded"
        sm[str(r["metric"])] = (v, n, note)
    secs = _num(ok["seconds"]) if "seconds" in ok else np.array([])
    fin = secs[np.isfinite(secs)]
    sizes = "1"
    if "batch_size" in ok and len(ok) and (pd.to_numeric(ok["batch_size"], errors="coerce") > 1).any():
        sizes = ",".join(str(v) for v in sorted(set(pd.to_numeric(ok["batch_size"], errors="coerce")
                                                     .fillna(1).astype(int)), reverse=True))
    return CellSummary(
        solver=str(first["solver"]), preset=str(first["preset"]), task=str(first["task"]),
        provenance=_provenance(first.get("preset_provenance")),
        dataset=str(first["dataset"]), prior=str(first["prior"]),
        n_rows=len(rows), n_ok=len(ok), status=_status_text(rows, expected), metrics=metrics, set_metrics=sm,
        seconds=timing_ci(ok, alpha), seconds_median=float(np.median(fin)) if fin.size else math.nan,
        nfe=_nanmean(_num(ok["nfe"])) if "nfe" in ok else math.nan,
        vjp=_nanmean(_num(ok["vjp"])) if "vjp" in ok else math.nan,
        peak_mem_mib=_nanmax(_num(ok["peak_mem_bytes"])) / MIB if "peak_mem_bytes" in ok else math.nan,
        peak_rss_mib=_nanmax(_num(ok["peak_rss_bytes"])) / MIB if "peak_rss_bytes" in ok else math.nan,
        batch_sizes=sizes, n_expected=expected,
    )


MIN_TIMING_SAMPLES = 5
"""Fewest timed batches for an interval of s/image; with fewer the value is printed with its n."""


def timing_ci(ok: pd.DataFrame, alpha: float = 0.05) -> MeanCI:
    """s/image of a cell: the mean over images (a batch of ``b`` images timed once counts ``b``
    times, so batches of different sizes are weighted by their images), with a seeded bootstrap
    interval over the timed batches when there are at least :data:`MIN_TIMING_SAMPLES` of them
    (else the half-width is NaN and ``n`` is the number of timed batches)."""
    if "seconds" not in ok or not len(ok):
        return MeanCI(math.nan, math.nan, 0)
    s = _num(ok["seconds"])
    b = pd.to_numeric(ok["batch_size"], errors="coerce").fillna(1).to_numpy(float) if "batch_size" in ok \
        else np.ones(len(ok))
    rows = pd.DataFrame({"s": s, "b": b, "seed": ok["seed"].astype(str).to_numpy(),
                         "batch": ok["timings"].astype(str).to_numpy() if "timings" in ok else np.arange(len(ok))})
    rows = rows[np.isfinite(rows["s"])]
    if not len(rows):
        return MeanCI(math.nan, math.nan, 0)
    # one sample per timed batch: its per-image seconds and its number of images
    batches = rows.groupby(["seed", "batch", "s"], sort=False)["b"].size().reset_index(name="w")
    w, v = batches["w"].to_numpy(float), batches["s"].to_numpy(float)
    mean = float(np.sum(w * v) / np.sum(w))
    n = len(batches)
    if n < MIN_TIMING_SAMPLES:
        return MeanCI(mean, math.nan, n)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n, size=(4000, n))
    boots = np.sum(w[idx] * v[idx], axis=1) / np.sum(w[idx], axis=1)
    lo, hi = (float(q) for q in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    return MeanCI(mean, (hi - lo) / 2, n, lo, hi)


def not_run_cell(key: tuple[str, ...], expected: int) -> CellSummary:
    """The summary of a cell of the run's grid that has no row yet (status ``not run``)."""
    solver, preset, task, dataset, prior = key
    return CellSummary(solver=solver, preset=preset, task=task, dataset=dataset, prior=prior, n_rows=0, n_ok=0,
                       status="not run", metrics={}, set_metrics={}, seconds=ci_for("seconds", []),
                       seconds_median=math.nan, nfe=math.nan, vjp=math.nan, peak_mem_mib=math.nan,
                       peak_rss_mib=math.nan, n_expected=expected)


def summarise_cells(run: RunData, alpha: float = 0.05) -> list[CellSummary]:
    """All cells of the run, in (dataset, task, solver, preset, prior) order; with the run's grid
    known, also the cells that have no row yet (:func:`not_run_cell`)."""
    df = run.results
    expected = getattr(run.completeness, "expected", None) or {}
    out: list[CellSummary] = []
    unavailable = run.unavailable() if len(df) else {}
    sm = run.set_metrics
    for key, rows in (df.groupby(list(CELL_KEYS), sort=True, dropna=False) if len(df) else ()):
        if len(sm) and set(CELL_KEYS) <= set(sm.columns):
            mask = np.ones(len(sm), dtype=bool)
            for k, v in zip(CELL_KEYS, key):
                mask &= (sm[k].astype(str) == str(v)).to_numpy()
            set_rows = sm[mask]
        else:
            set_rows = pd.DataFrame(columns=["metric", "value", "n", "note"])
        out.append(summarise_cell(rows, set_rows, unavailable, alpha, expected.get(tuple(str(v) for v in key))))
    present = {c.key for c in out}
    out += [not_run_cell(k, n) for k, n in expected.items() if k not in present]
    out.sort(key=lambda c: (c.dataset, c.task, c.solver, c.preset, c.prior))
    return out


def _rank(cells: list[CellSummary], primary: str) -> None:
    """Rank the solver cells by the mean of their image means (oracles are references: unranked)."""
    d = direction(primary) or 1
    scored = [(c.metrics[primary].mean, c) for c in cells
              if not c.is_oracle and primary in c.metrics and math.isfinite(c.metrics[primary].mean)]
    scored.sort(key=lambda t: -d * t[0])
    prev, rank = None, 0
    for i, (v, c) in enumerate(scored, start=1):
        if v != prev:
            rank, prev = i, v
        c.rank = rank


def _clipping_notes(cells: list[CellSummary]) -> list[str]:
    """A note where unclipped MSE and clipped PSNR tell different stories: the MSE implied by the
    PSNR (``10^(−PSNR/10)``, clipped images) is more than twice smaller than the unclipped MSE,
    i.e. the reconstruction leaves [0, 1] by much (e.g. noise amplified by a pseudo-inverse)."""
    out = []
    for c in cells:
        p, m = c.metrics.get("psnr"), c.metrics.get("mse")
        if p is None or m is None or not (math.isfinite(p.mean) and math.isfinite(m.mean)) or m.mean <= 0:
            continue
        implied = 10 ** (-p.mean / 10)
        if m.mean > 2 * implied:
            out.append(f"{_shown(c)}: MSE {m.mean:.3g} is computed on the unclipped output, PSNR {p.mean:.2f} dB on "
                       f"the output clipped to [0, 1] (an MSE of about {implied:.2g}); the output leaves [0, 1] by "
                       "far, which clipping hides from PSNR and SSIM.")
    return out


def _cell_rows(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    mask = np.ones(len(df), dtype=bool)
    for k, v in zip(CELL_KEYS, key, strict=True):
        mask &= (df[k].astype(str) == str(v)).to_numpy()
    return df[mask]


def _shown(c: CellSummary) -> str:
    """A cell's printed name: the solver's display name, and its preset unless ``default``."""
    from .names import solver_name

    return solver_name(c.solver) + ("" if c.preset == "default" else f" ({c.preset})")


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _judge(run: RunData, cells: list[CellSummary], primary: str, alpha: float,
           reference: str | None = None) -> tuple[dict[tuple, pd.Series], list[str]]:
    """Fill the marks (``is_best``, ``tied_with_best``, ``delta_best``; verdicts.one_vs_best),
    ``seed_sd`` and ``delta_ref`` of the ranked cells; return their image means and the footnotes
    that explain marks not monotone in the mean."""
    ranked = sorted((c for c in cells if c.rank is not None), key=lambda c: (c.rank, c.key))
    rows = {c.key: _cell_rows(run.results, c.key) for c in ranked}
    means = {c.key: image_means(rows[c.key], primary) for c in ranked}
    verdicts = one_vs_best(means, primary, alpha)
    for c in ranked:
        v = verdicts.get(c.key)
        if v is not None:
            c.is_best, c.tied_with_best, c.delta_best, c.delta_level = v.is_best, v.tied_with_best, v.delta, v.level
        c.seed_sd = seed_spread(rows[c.key], primary)
    ref = next((c for c in ranked if c.solver == reference), None) if reference is not None else None
    if ref is not None:   # one comparison, not a family: an unadjusted 95 % interval on image means
        from .verdicts import paired_interval

        for c in ranked:
            if c is not ref:
                c.delta_ref = paired_interval(means[c.key], means[ref.key], 1 - alpha)
    by_key = {c.key: c for c in ranked}
    pairs = non_monotone(verdicts, {k: float(v.mean()) for k, v in means.items() if len(v)}, primary)
    notes = []
    for a in dict.fromkeys(p[0] for p in pairs):   # one footnote per tied cell, in rank order
        better = [b for x, b in pairs if x == a]
        va = verdicts[a]
        names = [_shown(by_key[b]) for b in better]
        sds = ", ".join(f"{verdicts[b].worse_sd:.3g}" for b in better)
        notes.append(f"{_shown(by_key[a])} is tied with the best although {_join(names)} "
                     f"{'has a better mean and is' if len(names) == 1 else 'have better means and are'} not: the "
                     f"differences of {_shown(by_key[a])} to the best vary more (SD {va.worse_sd:.3g} against {sds} "
                     f"over {va.delta.n if va.delta else 0} images), so its interval is wider.")
    return means, notes


def build_leaderboards(run: RunData, primary: dict[str, str] | None = None,
                       alpha: float = 0.05, reference: str | None = None) -> list[Leaderboard]:
    """One leaderboard per (dataset, task), cells sorted by rank (unranked last).

    ``reference`` names a solver: every ranked cell then also gets its paired difference to that
    solver's best-ranked cell of the leaderboard (``delta_ref``; none where the solver is absent).

    ``primary`` maps task -> ranking metric (default ``psnr`` for every task); its direction
    comes from :data:`invbench.bench.report.stats.DIRECTIONS`.
    """
    primary = primary or {}
    unavailable = run.unavailable()
    cells = summarise_cells(run, alpha)
    boards: dict[tuple[str, str], list[CellSummary]] = {}
    for c in cells:
        boards.setdefault((c.dataset, c.task), []).append(c)
    out = []
    for (ds, task), cs in sorted(boards.items()):
        prim = primary.get(task, DEFAULT_PRIMARY)
        notes: list[str] = []
        img_means: dict[tuple, pd.Series] = {}
        footnotes: list[str] = []
        if prim in unavailable:
            notes.append(f"Primary metric {prim} is {unavailable[prim]}; cells are not ranked.")
        else:
            _rank(cs, prim)
            if all(c.rank is None for c in cs):
                notes.append(f"No cell has a value of the primary metric {prim}; cells are not ranked.")
            else:
                img_means, footnotes = _judge(run, cs, prim, alpha, reference)
        notes += _clipping_notes(cs)
        metrics = [m for m in PER_IMAGE_METRICS if any(m in c.metrics for c in cs)]
        set_names = sorted({m for c in cs for m in c.set_metrics})
        for m in unavailable:  # kept in the lists so that tables state them (a line, never a number)
            if m not in metrics and m not in set_names:
                (set_names if m not in PER_IMAGE_METRICS else metrics).append(m)
        metrics = [m for m in PER_IMAGE_METRICS if m in metrics] + [m for m in metrics if m not in PER_IMAGE_METRICS]
        set_names = [m for m in set_names if m not in metrics]
        cs.sort(key=lambda c: (c.is_oracle, c.rank is None, c.rank or 0, c.solver, c.preset, c.prior))
        out.append(Leaderboard(ds, task, prim, metrics, set_names,
                               {m: unavailable[m] for m in unavailable if m in metrics or m in set_names},
                               cs, notes,
                               reference if any(c.solver == reference and c.rank is not None for c in cs) else None,
                               footnotes, img_means))
    return out


def solver_cells(b: Leaderboard) -> dict[str, CellSummary]:
    """One cell per solver of a board: its best-ranked one (solver cells only, ranked)."""
    out: dict[str, CellSummary] = {}
    for c in b.cells:
        if c.rank is None or c.is_oracle:
            continue
        if c.solver not in out or c.rank < (out[c.solver].rank or 10**9):
            out[c.solver] = c
    return out


def overall_ranking(boards: list[Leaderboard], alpha: float = 0.05):
    """Friedman over (board, image) blocks of the solvers common to all ranked boards, with the
    Wilcoxon–Holm comparison against the best-ranked (:func:`verdicts.friedman_blocks`); None
    when fewer than 3 solvers or 2 blocks."""
    from .verdicts import friedman_blocks

    blocks = []
    for b in boards:
        cells = solver_cells(b)
        if cells:
            blocks.append((b.primary, {s: b.image_means[c.key] for s, c in cells.items() if c.key in b.image_means}))
    return friedman_blocks(blocks, alpha) if blocks else None
