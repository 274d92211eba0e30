"""The ``invbench`` command line (docs/design.md §9).

Subcommands: ``list [--json]``, ``run CONFIG [--out DIR] [--resume] [--executor local|slurm|submitit-local]
[--shards N] [--set KEY=VALUE]...``, ``check [--config CONFIG] [--json]``, ``demo [--out DIR]``,
``report RUN_DIR [--out DIR]``, ``compare BASE_RUN NEW_RUN [...]``, ``perf [...]`` (bench/studies/perf.py),
``fetch [NAME...] [--dir DIR] [--from FILE [--trust-unverified]] [--no-progress]`` (invbench.bench.fetch; its
own exit codes).

Errors go to stderr as one line ``invbench: error: ...``; bad input (config, names, files, data)
exits 2, a run failure 1; ``--debug`` (before or after the subcommand) shows the traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from .cli_check import cmd_check

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_BAD_INPUT = 0, 1, 2


def _one_printable_line(text: str) -> str:
    """``text`` on one printable line (:func:`invbench.bench.report.escape.terminal`, imported
    only when a message is printed, so a plain command does not load the report package)."""
    from .report.escape import terminal

    return terminal(text)


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"invbench: error: {_one_printable_line(message)}\n")
        raise SystemExit(EXIT_BAD_INPUT)


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- list


def cmd_list(args) -> int:
    from invbench import operators, priors, solvers

    info: dict = {"solvers": {}, "operators": list(operators.PRESETS), "priors": list(priors.names())}
    for n in solvers.names():
        cls = solvers.get(n)
        info["solvers"][n] = {
            "requires": sorted(cls.requires),
            "fidelity": cls.FIDELITY,
            "presets": {k: v.provenance for k, v in sorted(cls.PRESETS.items())},
        }
    try:
        from . import datasets

        info["dataset_types"] = list(getattr(datasets, "TYPES", ()))
    except ImportError:
        info["dataset_types"] = []
    try:
        from . import metrics

        info["metrics"] = list(metrics.names())
        info["set_metrics"] = list(metrics.set_names())
    except ImportError:
        pass
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return EXIT_OK
    print("solvers:")
    for n, d in info["solvers"].items():
        req = f" (requires {', '.join(d['requires'])})" if d["requires"] else ""
        fid = f" [{d['fidelity']}]" if d["fidelity"] else ""
        print(f"  {n}{req}{fid}")
        for pn, prov in d["presets"].items():
            print(f"    preset {pn}: {prov}")
    print("operators: " + ", ".join(info["operators"]))
    print("priors: " + ", ".join(info["priors"]))
    if info.get("dataset_types"):
        print("dataset types: " + ", ".join(info["dataset_types"]))
    if "metrics" in info:
        print("metrics: " + ", ".join(info["metrics"]) + "; set metrics: " + ", ".join(info["set_metrics"]))
    return EXIT_OK


# --------------------------------------------------------------------------- run


def _execute(exp, out: Path, resume: bool, executor: str, shards: int | None, progress: bool,
             allow_nonempty: bool = False, allow_large_cost: bool = False, replace=None) -> int:
    """Validate, then run. ``replace`` (a callable) removes an older run from ``out`` once the
    new config has been validated, so a refused config never costs the old results; the user's
    own entries next to the old run stay and the new run is written beside them."""
    from . import executors
    from .run import check_out_dir, prepare

    # everything validated before RUN_DIR exists (or before an older run in it is removed)
    p = prepare(exp, None if replace else out, resume, allow_nonempty=allow_nonempty,
                       allow_large_cost=allow_large_cost)
    if replace is not None:
        replace()
        allow_nonempty = True
        check_out_dir(out, resume, allow_nonempty)
    n_rows = sum(len(p.datasets[c.dataset].ids) for c in p.cells) * len(exp.seeds)
    print(f"invbench: {len(p.cells)} cells, {n_rows} rows; cost estimate about {p.nfe_estimate:.3g} network "
          "evaluations (NFE x images x seeds)", flush=True)
    if executor == "local":
        s = executors.run_local(exp, out, resume=resume, progress=progress, prepared=p, allow_nonempty=allow_nonempty)
    else:
        cluster = {"slurm": None, "submitit-local": "local", "submitit-debug": "debug"}[executor]
        s = executors.run_submitit(exp, out, resume=resume, shards=shards, cluster=cluster, prepared=p,
                                   allow_nonempty=allow_nonempty, progress=progress)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.counts.items())) or "nothing to do"
    print(f"invbench: {out}: {s.rows} rows ({counts}; {s.skipped_done} already done)")
    return EXIT_OK


def cmd_run(args) -> int:
    from . import config

    exp = config.load(args.config, args.set)
    out = Path(args.out) if args.out else Path("runs") / exp.name
    return _execute(exp, out, args.resume, args.executor, args.shards, not args.no_progress, args.allow_nonempty_out,
                    args.allow_large_cost)


def cmd_tune(args) -> int:
    from .tune import tune

    tune(args.config, args.solver, budget_trials=args.budget_trials, budget_nfe=args.budget_nfe,
         nfe_cap=args.nfe_cap, fe_cap=args.fe_cap, metric=args.metric, out=args.out, seed=args.seed,
         sets=args.set)
    return 0


def _metric_weights_changed(run_dir: Path, exp) -> bool:
    """True when a metric's availability or backbone (weights file, sha256) differs from the one
    stored in ``run_dir`` (e.g. ``invbench fetch lpips`` since the last demo): its rows are stale."""
    from . import metrics, store

    try:
        stored = {r.metric: (int(r.available), r.backbone) for r in store.load_metric_status(run_dir).itertuples()}
        opts = dict(exp.metrics.options)
        now = {}
        for m in metrics.build(list(exp.metrics.image), opts) + metrics.build_set(list(exp.metrics.set), opts):
            st = m.status()
            for c in getattr(m, "columns", ()) or (m.name,):
                now[c] = (int(st["available"]), st["backbone"])
    except Exception:  # noqa: BLE001 - an unreadable old demo is simply replaced
        return True
    return any(stored.get(k) != v for k, v in now.items())


def cmd_demo(args) -> int:
    """``configs/demo.toml`` (the headline: tuned presets) into ``--out``, then, where the source
    tree has it, ``configs/demo-released.toml`` (the released presets) into ``<out>-released``."""
    root = _repo_root() / "configs"
    cfg = root / "demo.toml"
    if not cfg.exists():
        raise FileNotFoundError(f"{cfg}: demo config not found (is the source tree installed?)")
    out = Path(args.out)
    runs = [(cfg, out)]
    if (root / "demo-released.toml").exists():
        runs.append((root / "demo-released.toml", out.with_name(out.name + "-released")))
    for path, run_dir in runs:
        rc = _demo_run(path, run_dir, args)
        if rc != EXIT_OK:
            return rc
    return EXIT_OK


def _demo_run(cfg: Path, out: Path, args) -> int:
    """One demo config into ``out`` (resumed when it holds the same demo, replaced when it holds an
    older one) and its report into ``out/report``."""
    from . import config, store

    exp = config.load(cfg, args.set)
    resume, replace = False, None
    if (out / store.STORE_NAME).exists():
        meta = store.load_meta(out)
        same_config = meta.get("config_hash") == exp.config_hash
        if same_config and not _metric_weights_changed(out, exp):
            resume = True            # same demo: finish/keep what is there
        elif meta.get("experiment") == exp.name:   # an older demo run, or metric weights fetched since
            why = ("metric weights changed since" if same_config else
                   f"config hash {meta.get('config_hash')}, now {exp.config_hash}")
            from .run import owned as run_owned

            run_owned.refuse_foreign(out, f"older demo run ({why})")   # refused before anything is built
            replace = functools.partial(run_owned.replace_older_run, out, f"older demo run ({why})")
        else:
            raise ValueError(f"--out {out}: holds another experiment ({meta.get('experiment')}); choose another --out")
    rc = _execute(exp, out, resume, "local", None, not args.no_progress, replace=replace)
    if rc != EXIT_OK:
        return rc
    from .report import write_report

    where = write_report(out, None)  # RUN/report/; `make demo-reference` refreshes reports/demo*/
    print(f"invbench: demo results in {out}; report at {where}")
    return EXIT_OK


# --------------------------------------------------------------------------- fetch


def cmd_fetch(args) -> int:
    from . import fetch

    return fetch.run(args.names, args.dir, args.src, progress=not args.no_progress and sys.stderr.isatty(),
                     trust_unverified=args.trust_unverified)


# --------------------------------------------------------------------------- report / compare


def _numbers(text: str, option: str) -> list[float]:
    """``"0,0.5,0.25"`` -> ``[0.0, 0.5, 0.25]``; :class:`ConfigError` naming ``option`` otherwise."""
    from .config import ConfigError

    try:
        return [float(t) for t in text.split(",")]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected numbers separated by commas") from None


def cmd_report(args) -> int:
    from .report import write_report

    run_dir = Path(args.run_dir)
    if not (run_dir / "results.sqlite").exists():
        raise FileNotFoundError(f"{run_dir}: no results.sqlite (not a run directory)")
    from .config import check_nfe_budgets, check_zoom

    zoom = None if args.zoom is None else check_zoom(_numbers(args.zoom, "--zoom"), "--zoom")
    matched = None if args.matched_nfe is None else \
        list(check_nfe_budgets(_numbers(args.matched_nfe, "--matched-nfe"), "--matched-nfe"))
    where = write_report(run_dir, Path(args.out) if args.out else None,  # default RUN_DIR/report/
                         reference=args.reference, zoom=zoom, matched_nfe=matched)
    print(f"invbench: report written to {where}")
    return EXIT_OK


def _own_parser(main_fn, rest: list[str]) -> int:
    """Run a subcommand that parses its own options; argparse's exits (``-h`` → 0, a usage error
    → 2) become return codes, so ``main`` returns instead of raising ``SystemExit``."""
    try:
        return int(main_fn(list(rest)))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)


def cmd_compare(args) -> int:
    from .gate import compare

    return _own_parser(compare.main, args.rest)


def cmd_perf(args) -> int:
    from .studies import perf  # lazy: heavy imports (deepinv) only for this subcommand

    return _own_parser(perf.main, args.rest)


# --------------------------------------------------------------------------- main


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (``--shards 0`` would otherwise submit no job at all)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _shard_count(text: str) -> int:
    """argparse type of ``--shards``: an integer from 1 to ``executors.MAX_SHARDS`` (a huge count
    would otherwise spend its time walking empty shard slots)."""
    from .executors import MAX_SHARDS

    v = _positive_int(text)
    if v > MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_SHARDS} (the most shards a run is split into), got {v}")
    return v


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    ap = _Parser(prog="invbench", description="Benchmark of diffusion-prior inverse-problem solvers.", parents=[common])
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    _run_commands(sub, common)
    _file_commands(sub, common)
    _report_commands(sub, common)
    return ap


def _run_commands(sub, common: argparse.ArgumentParser) -> None:
    """``list``, ``run`` and ``tune``."""
    p = sub.add_parser("list", help="solvers (with presets), operators, priors, metrics", parents=[common])
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("run", help="run an experiment file", parents=[common])
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue a run: skip rows already ok/skipped")
    p.add_argument("--executor", choices=("local", "slurm", "submitit-local", "submitit-debug"), default="local")
    p.add_argument("--shards", type=_shard_count, default=None,
                   help="grid shards for submitit, 1 to 10000 (default execution.shards)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--allow-nonempty-out", action="store_true",
                   help="write a new run into an existing folder that holds other files (refused by default)")
    p.add_argument("--allow-large-cost", action="store_true",
                   help="run a grid estimated above 1e9 network evaluations (refused by default)")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("tune", help="seeded Optuna search of one solver's hyperparameters on the validation split",
                       parents=[common])
    p.add_argument("config")
    p.add_argument("--solver", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-trials", type=int, default=None, help="number of trials (default 20)")
    g.add_argument("--budget-nfe", type=float, default=None, help="total network evaluations to spend (finite, > 0)")
    p.add_argument("--nfe-cap", type=float, default=None, help="trials whose NFE per solve exceeds this are pruned")
    p.add_argument("--fe-cap", type=float, default=None,
                   help="forward-equivalents per solve (NFE + VJP, measured per setting) above which a trial is pruned")
    p.add_argument("--metric", default="psnr")
    p.add_argument("--out", help="tune directory (default runs/tune-<name>-<solver>); holds study.sqlite3 and "
                                 "preset.toml; rerun to resume (same solver, config, --seed, --nfe-cap, --fe-cap)")
    p.add_argument("--seed", type=int, default=0, help="TPE sampler seed (>= 0)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.set_defaults(fn=cmd_tune)


def _file_commands(sub, common: argparse.ArgumentParser) -> None:
    """``check``, ``fetch`` and ``demo``."""
    p = sub.add_parser("check", help="which checkpoints and metric weights are present (sha256)", parents=[common])
    p.add_argument("--config", help="also check the files an experiment file names")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("fetch",
                       help="download metric weights and ADM checkpoints (checksums pinned; never during a run)",
                       parents=[common])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="lpips, lpips-vgg, lpips-squeeze, fid, adm-imagenet, adm-ffhq, or all; none: list them")
    p.add_argument("--dir", help="weights folder (default $INVBENCH_WEIGHTS or ~/.cache/invbench/weights)")
    p.add_argument("--from", dest="src", metavar="FILE", help="import a file downloaded by hand (one NAME)")
    p.add_argument("--trust-unverified", action="store_true",
                   help="with --from: import a file no published checksum can verify (recorded as trusted by you)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_fetch)

    p = sub.add_parser("demo", parents=[common],
                       help="run configs/demo.toml (tuned presets) into runs/demo and "
                            "configs/demo-released.toml into runs/demo-released, each with its report")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=cmd_demo)


def _report_commands(sub, common: argparse.ArgumentParser) -> None:
    """``report``, ``compare`` and ``perf`` (the last two parse their own options)."""
    p = sub.add_parser("report", help="write leaderboards, figures and index.html for a run", parents=[common])
    p.add_argument("run_dir")
    p.add_argument("--out")
    p.add_argument("--reference", metavar="SOLVER",
                   help="also show each cell's paired difference to this solver's best cell "
                        "(default: report.reference of the run's config)")
    p.add_argument("--zoom", metavar="X,Y,SIZE",
                   help="zoomed inset in every sample-grid image: the square region with top-left corner "
                        "(X, Y) and side SIZE, fractions of the image side (default: report.zoom of the config)")
    p.add_argument("--matched-nfe", metavar="N[,N...]",
                   help="budgets (network evaluations per image) of the 'At matched cost' tables "
                        "(default: report.matched_nfe of the config, else every NFE at which two solvers ran)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("compare", help="regression gate between two runs (exit 0 pass, 1 regression)",
                       parents=[common], add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser("perf", help="solver cost: floor ratio, ours vs deepinv, throughput, VML-MAP vs DPS, fast paths",
                       parents=[common], add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_perf)


_BAD_INPUT_TYPES = (("config", "ConfigError"), ("run", "RunError"), ("store", "StoreError"))


def _is_bad_input(e: BaseException) -> bool:
    """True for errors of bad input (exit 2). Imports nothing: an exception class whose module
    was never imported cannot have been raised (the error path must not fail itself, e.g. when
    memory is short)."""
    kinds: list[type] = [FileNotFoundError, PermissionError, ValueError]
    for mod, name in _BAD_INPUT_TYPES:
        cls = getattr(sys.modules.get(f"{__package__}.{mod}"), name, None)
        if isinstance(cls, type):
            kinds.append(cls)
    return isinstance(e, tuple(kinds))


def _is_named_failure(e: BaseException) -> bool:
    """Run failures whose one line names the path / shard and what to do (exit 1); imports nothing."""
    for mod, name in (("fsafety", "StorageFault"), ("executors", "ExecutorError")):
        cls = getattr(sys.modules.get(f"{__package__}.{mod}"), name, None)
        if isinstance(cls, type) and isinstance(e, cls):
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv and (argv.index("--debug") < argv.index("compare") if "compare" in argv else True)
    if debug:
        argv.remove("--debug")
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    own = {"perf": cmd_perf, "compare": cmd_compare}  # these parse their own options (and -h/--help)
    if first is not None and argv[first] in own:
        args = argparse.Namespace(fn=own[argv[first]], rest=argv[first + 1 :])
    else:
        try:
            args = _parser().parse_args(argv)
        except SystemExit as e:
            return int(e.code or 0)
    try:
        return int(args.fn(args))
    except KeyboardInterrupt:
        sys.stderr.write("invbench: interrupted (finished rows are kept; rerun with --resume)\n")
        return 130
    except MemoryError:
        if debug:
            raise
        sys.stderr.write("invbench: error: out of memory (rerun with --debug for the traceback)\n")
        return EXIT_FAIL
    except Exception as e:
        if debug:
            raise
        line = _one_printable_line(str(e)) or type(e).__name__
        if _is_bad_input(e):
            sys.stderr.write(f"invbench: error: {line}\n")
            return EXIT_BAD_INPUT
        if _is_named_failure(e):   # storage fault / executor failure: the message already says what and where
            sys.stderr.write(f"invbench: error: {line}\n")
            return EXIT_FAIL
        sys.stderr.write(f"invbench: error: {type(e).__name__}: {line} (rerun with --debug for the traceback)\n")
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
