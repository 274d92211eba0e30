"""Reports: the numbers in leaderboard.md/.tex/.csv agree with an independent recomputation from
``bench.load_results``; unavailable metrics never show numbers; failed cells keep their reason;
user strings are escaped in every format; figures and index.html are written."""

from __future__ import annotations

import csv
import io
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from invbench.bench.report.escape import _LATEX
from PIL import Image
from scipy import stats

from invbench import bench
from tests.helpers.report_fixture import HOSTILE

KEYS = ["solver", "preset", "task", "dataset", "prior"]
CHECKED = {"psnr": "PSNR", "ssim": "SSIM", "mse": "MSE", "consistency": "consistency",
           "dist_to_map": "dist. to MAP", "seconds": "s/image"}
NONNEG = {"mse", "dist_to_map", "seconds"}   # bootstrap intervals: two independent resamplings agree
BOOT_TOL = 0.35                               # to this fraction of the interval's length (n = 3..8)


# ---------------------------------------------------------------- independent recomputation
def _timed_batches(ok: pd.DataFrame) -> tuple:
    """s/image of a cell from its rows: one sample per timed batch (the rows of a batch share
    their seed, timings and seconds), weighted by its images; a paired percentile bootstrap over
    the batches from 5 of them on, else the mean and the number of batches."""
    batch = ok["timings"].astype(str) if "timings" in ok else pd.Series(range(len(ok)), index=ok.index)
    rows = pd.DataFrame({"seed": ok["seed"].astype(str), "batch": batch,   # no timings: a row each
                         "s": pd.to_numeric(ok["seconds"], errors="coerce")}).dropna()
    g = rows.groupby(["seed", "batch", "s"]).size().reset_index(name="w")
    v, w = g["s"].to_numpy(float), g["w"].to_numpy(float)
    mean = float(np.sum(w * v) / np.sum(w)) if len(v) else math.nan
    if len(v) < 5 or np.ptp(v) == 0:
        return (mean, mean, mean, len(v))
    b = stats.bootstrap((v, w), lambda v, w, axis=-1: np.sum(w * v, axis=axis) / np.sum(w, axis=axis),
                        paired=True, vectorized=True, confidence_level=0.95, n_resamples=4000,
                        method="percentile", rng=np.random.default_rng(1))
    return (mean, *b.confidence_interval, len(v))


def expected(run_dir: Path) -> dict[tuple, dict]:
    """Per cell: {metric: (mean, lo, hi, n)} from ok rows, t-interval via scipy; plus nfe, rank."""
    df = bench.load_results(run_dir)
    out = {}
    for key, g in df.groupby(KEYS):
        ok = g[g["status"] == "ok"]
        e = {"n_ok": len(ok), "n_rows": len(g)}
        for m in CHECKED:
            if m == "seconds":
                if pd.to_numeric(ok[m], errors="coerce").notna().sum() >= 2:   # as every metric: >= 2 values
                    e[m] = _timed_batches(ok)
                continue
            vals = pd.DataFrame({"image": ok["image_id"], "v": pd.to_numeric(ok[m], errors="coerce")}).dropna()
            # the image is the unit: seeds averaged per image
            v = vals.groupby("image")["v"].mean().to_numpy(float)
            if len(v) >= 2 and m in NONNEG:  # non-negative: percentile bootstrap of the mean
                if np.ptp(v) > 0:
                    b = stats.bootstrap((v,), np.mean, confidence_level=0.95, n_resamples=4000,
                                        method="percentile", rng=np.random.default_rng(1))
                    lo, hi = b.confidence_interval
                else:
                    lo = hi = v.mean()
                e[m] = (v.mean(), lo, hi, len(v))
            elif len(v) >= 2:  # scipy returns NaN for a zero-width interval (equal values)
                sem = stats.sem(v)
                lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=sem) if sem > 0 else (v.mean(),) * 2
                e[m] = (v.mean(), lo, hi, len(v))
        e["nfe"] = float(ok["nfe"].mean()) if len(ok) else math.nan
        out[tuple(map(str, key))] = e
    # ranks by psnr (higher better) within (dataset, task)
    for (ds, task) in {(k[3], k[2]) for k in out}:   # oracles are references: never ranked
        ks = [k for k in out if k[3] == ds and k[2] == task and "psnr" in out[k] and not k[0].startswith("oracle")]
        for i, k in enumerate(sorted(ks, key=lambda k: -out[k]["psnr"][0]), 1):
            out[k]["rank"] = i
    return out


def close_to_printed(printed: str, value: float) -> bool:
    """``printed`` (fixed decimals) is ``value`` rounded to its number of decimals."""
    dec = len(printed.split(".")[1]) if "." in printed else 0
    return abs(float(printed) - value) <= 0.5 * 10 ** -dec + 1e-12


# ---------------------------------------------------------------- Markdown / LaTeX parsing
MD_UNESC = re.compile(r"\\([!-/:-@\[-`{-~])")


def md_tables(text: str) -> dict[tuple[str, str], tuple[list[str], list[list[str]]]]:
    out, key, rows = {}, None, []
    for line in text.splitlines():
        if line.startswith("## At matched cost"):   # the per-budget tables that follow (tests/bench/test_matched.py)
            break
        h = re.match(r"## dataset (\S+) · task (\S+)$", MD_UNESC.sub(r"\1", line))
        if h:
            key, rows = (h.group(1), h.group(2)), []
            out[key] = rows
        elif line.startswith("|") and key:
            rows.append([MD_UNESC.sub(r"\1", c.strip().removeprefix("**").removesuffix("**")
                                      .removeprefix("<ins>").removesuffix("</ins>"))
                         for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return {k: (v[0], [r for r in v[2:]]) for k, v in out.items()}


TEX_TOKENS = {"backslash": "\\", "less": "<", "greater": ">", "bar": "|", "asciitilde": "~",
              "asciicircum": "^", "quotedbl": '"'}


GREEK = {k: v for k, v in _LATEX.items() if k.isalpha()}   # "Π" -> "$\\Pi$", ...


def tex_unescape(s: str) -> str:
    m = re.fullmatch(r"\\begin\{tabular\}\[t\]\{@\{\}r@\{\}\}(.*)\\\\ \{\\scriptsize (.*)\}\\end\{tabular\}",
                     s.strip())   # interval under the mean
    if m:
        s = re.sub(r"^\\(?:textbf|underline)\{(.*)\}$", r"\1", m.group(1)) + " " + m.group(2)
    s = re.sub(r"^\\shortstack\{(.*)\\\\(.*)\}$", r"\1 \2", s.strip())              # a header on two lines
    s = re.sub(r"^\\(?:textbf|underline)\{(.*)\}$", r"\1", s.strip())
    s = s.replace("$-$", "-")
    s = s.replace(r"$\pm$", "±").replace(r"$\cdot$", "·").replace("---", "—")
    for greek, tex in GREEK.items():   # the escaper's math-mode Greek letters ("ΠGDM")
        s = s.replace(tex, greek)
    s = re.sub(r"\$\\(uparrow|downarrow)\$", lambda m: {"uparrow": "↑", "downarrow": "↓"}[m.group(1)], s)
    return re.sub(r"\\text(backslash|less|greater|bar|asciitilde|asciicircum|quotedbl)\{\}|\\([&%$#_{}])",
                  lambda m: TEX_TOKENS[m.group(1)] if m.group(1) else m.group(2), s)


def tex_tables(text: str) -> dict[tuple[str, str], tuple[list[str], list[list[str]]]]:
    """The appendix longtables: header after ``\\toprule``, rows from ``\\endhead`` to
    ``\\bottomrule`` (a ``\\midrule`` separates the oracles)."""
    out: dict = {}
    for block in text.split(r"\begin{longtable}")[1:]:
        cap = tex_unescape(re.search(r"\\caption\{(.*)\}\n", block).group(1))
        ds, task, part = re.search(r"dataset (\S+) · task (\S+?)( \(part \d+ of \d+\))?\.", cap).groups()
        lines = block.split("\n")
        i0 = lines.index(r"\toprule")
        head = [tex_unescape(c.strip()) for c in re.split(r"(?<!\\)&", lines[i0 + 1].removesuffix(r" \\"))]
        i1, i2 = lines.index(r"\endhead"), lines.index(r"\bottomrule")
        rows = [[tex_unescape(c.strip()) for c in re.split(r"(?<!\\)&", ln.removesuffix(r" \\"))]
                for ln in lines[i1 + 1:i2] if ln != r"\midrule"]
        if part and (ds, task) in out:   # a later part of a split table: its own columns join the rows
            new = [j for j, h in enumerate(head) if h not in ("rank", "solver", "preset")]
            h0, r0 = out[(ds, task)]
            out[(ds, task)] = (h0 + [head[j] for j in new], [a + [b[j] for j in new] for a, b in zip(r0, rows)])
        else:
            out[(ds, task)] = (head, rows)
    return out


CODE_NAMES = {v: k for k, v in {**__import__("invbench.bench.report.names", fromlist=["x"]).SOLVER_NAMES,
                                **__import__("invbench.bench.report.names", fromlist=["x"]).ORACLE_NAMES}.items()}


def col(head: list[str], name: str) -> int:
    clean = [re.sub(r"\s*[↑↓]|\s*\[.*\]", "", h).strip() for h in head]
    return clean.index(name)


def check_table(head, rows, exp, ds, task):
    names = [re.sub(r"\s*[↑↓]|\s*\[.*\]", "", h).strip() for h in head]
    ci = {k: col(head, k) for k in ("solver", "preset", "prior", "rank", "NFE", "status") if k in names}
    priors = {k[4] for k in exp if k[2] == task and k[3] == ds}
    seen = set()
    for r in rows:
        assert len(r) == len(head), r
        prior = r[ci["prior"]] if "prior" in ci else priors.pop() if len(priors) == 1 else None
        priors.add(prior)
        solver = CODE_NAMES.get(r[ci["solver"]], r[ci["solver"]])   # display names ("VML-MAP") back to codes
        key = (solver, r[ci["preset"]], task, ds, prior)
        assert key in exp, f"row {key} is not a cell of the run (escaping lost or mangled a name)"
        seen.add(key)
        e = exp[key]
        for m, name in CHECKED.items():
            j = col(head, name) if name in [re.sub(r"\s*[↑↓]|\s*\[.*\]", "", h).strip() for h in head] else None
            if m not in e:
                assert j is None or r[j] in ("—", ""), (m, r[j])
                continue
            mean, lo, hi, n = e[m]
            if m == "seconds" and n < 5:
                # fewer than 5 timed batches: the value and its n, no interval
                pv, pn = re.fullmatch(r"(\S+) \(n = (\d+)\)", r[j]).groups()
                assert close_to_printed(pv, mean) and int(pn) == n, (key, m, r[j], mean)
                continue
            if m in NONNEG:   # "mean [low, high]", never below zero
                pm, plo, phi = re.fullmatch(r"(\S+) \[(\S+), (\S+)\]", r[j]).groups()
                assert close_to_printed(pm, mean), (key, m, r[j], mean)
                assert 0 <= float(plo) <= float(pm) <= float(phi), (key, m, r[j])
                slack = BOOT_TOL * (hi - lo) + 10 ** -(len(plo.split(".")[1]) if "." in plo else 0)
                assert abs(float(plo) - lo) <= slack and abs(float(phi) - hi) <= slack, (key, m, r[j], lo, hi)
                continue
            pm, hw = r[j].split(" ± ")
            assert close_to_printed(pm, mean), (key, m, r[j], mean)
            assert close_to_printed(hw, (hi - lo) / 2), (key, m, r[j], (hi - lo) / 2)
        assert r[ci["rank"]] == str(e.get("rank", "—"))
        if e["n_ok"]:
            assert close_to_printed(r[ci["NFE"]], e["nfe"])
        elif "status" in ci:
            assert r[ci["status"]].startswith("skipped: ddrm requires svd")
    assert seen == {k for k in exp if k[2] == task and k[3] == ds}


# ---------------------------------------------------------------- tests
def test_report_files(fixture_report):
    _, out = fixture_report
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "index.html"):
        assert (out / name).stat().st_size > 0
    figs = out / "figures"
    kinds = {p.stem.split("__")[0] for p in figs.glob("*.png")}
    assert kinds == {"delta", "pareto", "bars", "grid", "nfe", "memory", "dist_to_map"}
    for png in figs.glob("*.png"):
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        a = np.asarray(Image.open(png).convert("L"), float)
        assert a.std() > 5, f"{png.name} looks blank"
    # one sample grid and one Pareto plot per dataset x task, at each of the two column widths
    for kind in ("grid", "pareto"):
        assert len([p for p in figs.glob(f"{kind}__*.png") if not p.stem.endswith("__col1")]) == 3
        assert len(list(figs.glob(f"{kind}__*__col1.png"))) == 3


def test_markdown_numbers_match_recomputation(fixture_report):
    run_dir, out = fixture_report
    exp = expected(run_dir)
    tables = md_tables((out / "leaderboard.md").read_text())
    assert set(tables) == {(k[3], k[2]) for k in exp}
    for (ds, task), (head, rows) in tables.items():
        check_table(head, rows, exp, ds, task)


def test_latex_numbers_match_recomputation(fixture_report):
    run_dir, out = fixture_report
    exp = expected(run_dir)
    text = (out / "leaderboard.tex").read_text()
    assert text.count(r"\toprule") == text.count(r"\bottomrule") >= 3 and r"\resizebox" not in text
    tables = tex_tables(text)
    assert set(tables) == {(k[3], k[2]) for k in exp}
    for (ds, task), (head, rows) in tables.items():
        check_table(head, rows, exp, ds, task)


def test_csv_full_precision_matches_recomputation(fixture_report):
    run_dir, out = fixture_report
    exp = expected(run_dir)
    recs = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {tuple(r[k] for k in KEYS) for r in recs} == set(exp)
    for r in recs:
        e = exp[tuple(r[k] for k in KEYS)]
        for m in CHECKED:
            if m in e:
                mean, lo, hi, n = e[m]
                assert np.isclose(float(r[f"{m}_mean"]), mean, rtol=1e-12, atol=0)
                if m == "seconds" and n < 5:   # too few timed batches for an interval
                    assert r[f"{m}_ci_low"] == r[f"{m}_ci_high"] == "" and int(r[f"{m}_n"]) == n
                    continue
                if m in NONNEG:
                    clo, chi = float(r[f"{m}_ci_low"]), float(r[f"{m}_ci_high"])
                    assert 0 <= clo <= mean <= chi
                    assert (abs(clo - lo) <= BOOT_TOL * (hi - lo) + 1e-15
                            and abs(chi - hi) <= BOOT_TOL * (hi - lo) + 1e-15)
                else:
                    assert np.isclose(float(r[f"{m}_ci_low"]), lo, rtol=1e-9, atol=1e-15)
                    assert np.isclose(float(r[f"{m}_ci_high"]), hi, rtol=1e-9, atol=1e-15)
                assert int(r[f"{m}_n"]) == n
            elif f"{m}_mean" in r:
                assert r[f"{m}_mean"] == ""


def test_unavailable_metric_is_never_a_number(fixture_report):
    """LPIPS has numbers in the rows but metric_status says unavailable: only the note shows."""
    run_dir, out = fixture_report
    assert pd.to_numeric(bench.load_results(run_dir)["lpips"]).notna().any()  # the trap is set
    note = "unavailable: alexnet weights not found at /nonexistent/alex.pth"
    md = (out / "leaderboard.md").read_text()
    public = "unavailable: alexnet weights not found at alex.pth"   # no machine path in the tables
    tables = md_tables(md)
    for (head, _rows) in tables.values():  # Markdown: no column, the reason once under each table
        assert "LPIPS" not in [re.sub(r"\s*[↑↓]|\s*\[.*\]", "", h).strip() for h in head]
    assert md.count("LPIPS: " + public) == len(tables) and "/nonexistent" not in md
    tex = (out / "leaderboard.tex").read_text()
    for (head, _rows) in tex_tables(tex).values():
        assert "LPIPS" not in [re.sub(r"\s*[↑↓]|\s*\[.*\]", "", h).strip() for h in head]
    assert tex.count("{LPIPS: " + public + "}") == 3 and "/nonexistent" not in tex
    for r in csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())):
        assert r["lpips_mean"] == "" and r["lpips_ci_low"] == "" and r["lpips_note"] == note
        assert r["fid_value"] == "" and r["fid_note"].startswith("unavailable: inception weights")


def test_failed_cells_keep_reason(fixture_report):
    _, out = fixture_report
    md = md_tables((out / "leaderboard.md").read_text())
    head, rows = md[("tiny", "inpaint_box")]
    st = {r[col(head, "solver")]: r[col(head, "status")] for r in rows}
    assert st[HOSTILE["pigdm"]] == "diverged 2/6: non-finite values in x at step 3; ok 4/6"
    assert st["VML-MAP"] == "ok"


def test_escaping_markdown(fixture_report):
    _, out = fixture_report
    text = (out / "leaderboard.md").read_text()
    assert "<script>" not in text and r"\<script\>alert(1)\</script\>" in text
    assert r"a\|b" in text and " a|b " not in text
    for head, rows in md_tables(text).values():
        assert all(len(r) == len(head) for r in rows)
        assert {HOSTILE["dps"]} <= {r[col(head, "solver")] for r in rows}


def test_escaping_latex(fixture_report):
    _, out = fixture_report
    text = (out / "leaderboard.tex").read_text()
    assert r"\input" not in text and "<script" not in text
    assert r"\textbackslash{}input\{/etc/passwd\}" in text
    assert r"\textless{}script\textgreater{}" in text
    body = re.sub(r"\\[{}]", "", text)  # escaped braces are text
    assert body.count("{") == body.count("}")
    for block in text.split(r"\toprule")[1:]:  # every row has as many column separators as the header
        rows = block.split(r"\bottomrule")[0].replace(r"\midrule", "").replace(r"\endhead", "").strip().splitlines()
        counts = {len(re.findall(r"(?<!\\)&", ln)) for ln in rows if ln.strip()}
        assert len(counts) == 1 and counts.pop() >= 3   # rank, solver, preset and at least one metric


def test_escaping_html(fixture_report):
    _, out = fixture_report
    text = (out / "index.html").read_text()
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;not bold&lt;/b&gt;" in text  # meta (protocol) escaped too
    assert r"\input{/etc/passwd}" in text  # shown verbatim as text in HTML


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.tables, self.cells, self.links, self._td, self.meta = [], 0, [], [], False, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag == "table" and "leaderboard" in (a.get("class") or ""):
            self.tables += 1
        elif tag in ("td", "th"):
            self._td = True
            self.cells.append("")
        elif tag == "a":
            self.links.append(a.get("href", ""))
        elif tag == "meta":
            self.meta.append(a)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._td = False

    def handle_data(self, data):
        if self._td:
            self.cells[-1] += data


def test_html_links_its_own_figures_and_stays_small(fixture_report):
    """Every figure of the report is shown once, by a relative address inside the report folder;
    the page itself (tables and text) stays far below the 500 kB target."""
    _, out = fixture_report
    page = out / "index.html"
    p = _Collect()
    p.feed(page.read_text())
    assert p.tables == 3   # one leaderboard per (dataset, task)
    pngs = sorted(q for q in (out / "figures").glob("*.png") if not q.stem.endswith("__col1"))
    assert sorted(p.imgs) == sorted(f"figures/{q.name}" for q in pngs)
    for src in p.imgs:
        im = np.asarray(Image.open(out / src).convert("L"), float)
        assert im.std() > 5
    assert page.stat().st_size < 500_000
    assert all(not re.match(r"(https?:)?//", h) for h in p.links)
    for label in HOSTILE.values():
        assert label in p.cells  # rendered as cell text, not markup
    assert any(m.get("http-equiv") == "Content-Security-Policy" for m in p.meta)
    for key in ("code_version", "device", "units", "config_hash"):
        assert key in p.cells
    assert 'name = "fixture"' in (out / "index.html").read_text().replace("&quot;", '"')


def test_default_out_dir_memory_note_and_report_settings(tmp_path, monkeypatch):
    from invbench.bench.report import write_report

    from tests.helpers.report_fixture import CellSpec, make_run

    cells = [CellSpec("dps", "default", "inpaint_box", "tiny", "small-cpu", 24.0, 2.0, 100, 100),
             CellSpec("ddrm", "default", "inpaint_box", "tiny", "small-cpu", 22.0, 0.2, 20, 0)]
    # the run's config names report settings: used where no argument is given, an argument wins
    cfg = '[report]\nreference = "ddrm"\nimages = ["img1"]\nzoom = [0.0, 0.5, 0.25]\n'
    run = make_run(tmp_path / "run", cells, experiment="exp/../x y", meta_extra={"config": cfg})
    monkeypatch.chdir(tmp_path)
    from invbench.bench.config import ConfigError

    with pytest.raises(ConfigError, match="image id 'nope'.*img0, img1, img2"):   # an id of no row: refused
        write_report(run, None, image_ids=["nope"])
    assert not (tmp_path / "run" / "report").exists()
    out = write_report(run, None, image_ids=["img2"])
    assert out.resolve() == (tmp_path / "run" / "report").resolve()  # default: RUN/report, whatever the name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]      # nothing written elsewhere
    figs = {p.stem.split("__")[0] for p in (out / "figures").glob("*.png")}
    assert "memory" not in figs and "grid" in figs  # no GPU memory; the argument wins over [report] images
    assert "Peak-memory bars skipped" in (out / "index.html").read_text()
    out2 = write_report(run, tmp_path / "o2")   # images, reference and zoom from [report]
    g = Image.open(next((out2 / "figures").glob("grid__*.png")))
    assert g.size[1] < g.size[0]  # one image row (3 rows would be taller than wide for 4 columns)
    assert "Insets: the marked region" in (out2 / "index.html").read_text()
    recs = list(csv.DictReader(io.StringIO((out2 / "leaderboard.csv").read_text())))
    assert [(r["solver"], r["reference"], r["delta_ref_mean"] != "") for r in recs] == [
        ("dps", "ddrm", True), ("ddrm", "ddrm", False)]


def test_primary_metric_direction():
    """Ranking by a lower-is-better primary metric (mse) orders by increasing mean."""
    import tempfile

    from invbench.bench.report.data import load_run
    from invbench.bench.report.summary import build_leaderboards

    from tests.helpers.report_fixture import make_run

    with tempfile.TemporaryDirectory() as d:
        run = load_run(make_run(Path(d) / "r", write_images=False))
        boards = build_leaderboards(run, {"inpaint_box": "mse"})
    b = next(b for b in boards if b.task == "inpaint_box")
    ranked = [c for c in b.cells if c.rank is not None]
    means = [c.metrics["mse"].mean for c in ranked]
    assert means == sorted(means) and [c.rank for c in ranked] == list(range(1, len(ranked) + 1))
    other = next(b for b in boards if b.task == "sr4_avgpool")
    assert other.primary == "psnr"


def test_paths_cannot_leave_run_dir(tmp_path):
    from invbench.bench.report.figbase import inside_run as _inside

    (tmp_path / "run").mkdir()
    (tmp_path / "secret.png").write_bytes(b"x")
    (tmp_path / "run" / "ok.png").write_bytes(b"x")
    assert _inside(tmp_path / "run", "../secret.png") is None
    assert _inside(tmp_path / "run", str(tmp_path / "secret.png")) is None
    assert _inside(tmp_path / "run", "ok.png") is not None


def test_missing_run_dir(tmp_path):
    from invbench.bench.report import RunDirError, write_report

    with pytest.raises(RunDirError, match="not found"):
        write_report(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="results.sqlite"):
        write_report(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smoke_run_report_numbers(tmp_path):
    """Acceptance: `invbench run configs/smoke.toml` then `invbench report`; md/tex/csv agree with
    bench.load_results recomputed here."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    exe = [sys.executable, "-c", "import sys; from invbench.bench.cli import main; sys.exit(main())"]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([*exe, "run", str(repo / "configs" / "smoke.toml"), "--out", str(tmp_path / "run"),
                        "--no-progress"], capture_output=True, text=True, env=env, timeout=900, check=False)
    if r.returncode != 0 and "weights not found" in r.stderr:
        pytest.skip(f"smoke config needs a prior that is not on disk: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*exe, "report", str(tmp_path / "run"), "--out", str(tmp_path / "rep")],
                       capture_output=True, text=True, env=env, timeout=900, check=False)
    assert r.returncode == 0, r.stderr
    check_report_against_store(tmp_path / "run", tmp_path / "rep")


def check_report_against_store(run_dir: Path, out: Path) -> None:
    exp = expected(run_dir)
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "index.html"):
        assert (out / name).is_file()
    assert list((out / "figures").glob("pareto__*.pdf")) and list((out / "figures").glob("grid__*.png"))
    for tables in (md_tables((out / "leaderboard.md").read_text()),
                   tex_tables((out / "leaderboard.tex").read_text())):
        assert set(tables) == {(k[3], k[2]) for k in exp}
        for (ds, task), (head, rows) in tables.items():
            check_table(head, rows, exp, ds, task)
    recs = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert {tuple(r[k] for k in KEYS) for r in recs} == set(exp)


def _pdflatex(tmp_path: Path, name: str, body: str, options: str = "", packages: str = "booktabs") -> str:
    """Compile ``body`` in a plain ``article`` with pdflatex; the log's text (asserts success)."""
    import shutil
    import subprocess

    if not shutil.which("pdflatex") or not shutil.which("kpsewhich"):
        pytest.skip("pdflatex is not installed (e.g. apt-get install texlive-latex-recommended)")
    for sty in packages.split(","):
        if not subprocess.run(["kpsewhich", f"{sty}.sty"], capture_output=True, text=True, check=False).stdout.strip():
            pytest.skip(f"{sty}.sty is not installed (texlive-latex-recommended)")
    doc = tmp_path / f"{name}.tex"
    doc.write_text(f"\\documentclass[{options}]{{article}}\n\\usepackage{{{packages}}}\n\\begin{{document}}\n"
                   f"{body}\n\\end{{document}}\n")
    r = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", doc.name],
                       cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False)
    assert r.returncode == 0, "\n".join(ln for ln in r.stdout.splitlines() if ln.startswith("!"))[:2000]
    assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    return (tmp_path / f"{name}.log").read_text(errors="replace")


def test_latex_compiles_as_is(fixture_report, tmp_path):
    """leaderboard.tex (the appendix tables) compiles with pdflatex in a minimal one-column
    document (booktabs, longtable), hostile solver labels included, with no overfull box and no
    scaling; skipped where no TeX engine is installed."""
    _, out = fixture_report
    text = (out / "leaderboard.tex").read_text()
    log = _pdflatex(tmp_path, "appendix", f"\\input{{{(out / 'leaderboard.tex').as_posix()}}}",
                    packages="booktabs,longtable")
    assert "Overfull \\hbox" not in log
    assert "\\textbf{" in text and "\\resizebox" not in text


@pytest.mark.parametrize("options", ["", "twocolumn"])
def test_main_table_compiles_without_overfull_boxes(fixture_report, tmp_path, options):
    """main.tex goes into a plain article, one- or two-column, at its natural size: no
    \\resizebox, no overfull box."""
    _, out = fixture_report
    text = (out / "main.tex").read_text()
    assert "\\resizebox" not in text and "\\scalebox" not in text
    log = _pdflatex(tmp_path, "main", f"\\input{{{(out / 'main.tex').as_posix()}}}", options=options)
    assert "Overfull \\hbox" not in log, [ln for ln in log.splitlines() if "Overfull" in ln]
