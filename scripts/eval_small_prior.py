"""Denoising table of the ``small-cpu`` prior vs a tuned Gaussian-smoothing baseline.

Protocol (pixel space [0, 1] for data and PSNR; model space for the prior):

* Test crops: ``invbench.bench.bundled.heldout_crops(N, 32, seed=0)`` (HELDOUT images only).
* Noise: pixel-unit std ``s`` in ``PIXEL_SIGMAS``; crop ``i`` at level index ``j`` gets
  ``torch.randn`` from ``Generator().manual_seed(1000 * j + i)``; ``y = x + s n`` (no clipping).
* Prior: ``model_to_pixel(D(pixel_to_model(y), 2 s))`` (model sigma = 2 s).
* Baseline: ``scipy.ndimage.gaussian_filter`` per channel (mode "reflect", truncate 4) with the
  blur std (pixels) in ``BLUR_GRID`` maximising mean PSNR on 256 TRAIN crops
  (``train_crops(256, 32, seed=1)``, same noise rule) at that noise level; std 0 = identity.
* PSNR per crop after clipping estimates to [0, 1], ``10 log10(1 / MSE)``; table = mean (and
  standard error) over crops.

Writes the per-crop PSNRs and summary to ``priors/data/small_cpu_table.json`` and the Markdown
table between the markers in ``docs/priors-small-cpu.md``.

    python scripts/eval_small_prior.py [--n 64] [--weights priors/data/small_cpu.pt]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from invbench.bench import bundled
from invbench.operators.conventions import model_to_pixel, pixel_to_model
from scipy.ndimage import gaussian_filter

PIXEL_SIGMAS = (0.05, 0.1, 0.2)
BLUR_GRID = tuple(round(0.1 * k, 1) for k in range(31))  # 0.0 .. 3.0 pixels
ROOT = Path(__file__).resolve().parents[1]
TABLE_JSON = ROOT / "priors" / "data" / "small_cpu_table.json"
DOC = ROOT / "docs" / "priors-small-cpu.md"
BEGIN, END = "<!-- BEGIN denoising-table -->", "<!-- END denoising-table -->"
REC_BEGIN, REC_END = "<!-- BEGIN training-record -->", "<!-- END training-record -->"


def noisy(x: torch.Tensor, sigma_index: int, pixel_sigma: float) -> torch.Tensor:
    """Per-crop seeded noisy copies of pixel-space crops ``x`` (N, 3, H, W)."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        g = torch.Generator().manual_seed(1000 * sigma_index + i)
        out[i] = x[i] + pixel_sigma * torch.randn(x.shape[1:], generator=g, dtype=x.dtype)
    return out


def psnr(est: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    """Per-image PSNR (dB) of ``est`` clipped to [0, 1] against ``ref`` (pixel space)."""
    mse = ((est.clamp(0, 1) - ref) ** 2).flatten(1).mean(1).double()
    return (10 * torch.log10(1.0 / mse)).numpy()


def blur(y: torch.Tensor, std: float) -> torch.Tensor:
    """Gaussian smoothing of each channel (pixel units), scipy reflect boundary."""
    if std == 0:
        return y.clone()
    a = gaussian_filter(y.numpy().astype(np.float64), sigma=(0, 0, std, std), mode="reflect",
                        truncate=4.0)
    return torch.from_numpy(a).to(y.dtype)


def prior_denoise(prior, y: torch.Tensor, pixel_sigma: float) -> torch.Tensor:
    """Pixel-space estimate of the prior's posterior mean for pixel-space noisy ``y``."""
    with torch.no_grad():
        return model_to_pixel(prior.denoise(pixel_to_model(y), 2.0 * pixel_sigma))


def tune_blur(pixel_sigma: float, sigma_index: int, n_train: int = 256) -> tuple[float, float]:
    """Best blur std on TRAIN crops and its mean PSNR."""
    x = bundled.train_crops(n_train, 32, seed=1)
    y = noisy(x, sigma_index, pixel_sigma)
    scores = [(float(psnr(blur(y, b), x).mean()), b) for b in BLUR_GRID]
    best = max(scores)
    return best[1], best[0]


def evaluate(prior, n: int = 64) -> dict:
    x = bundled.heldout_crops(n, 32, seed=0)
    rows = []
    for j, s in enumerate(PIXEL_SIGMAS):
        b, train_psnr = tune_blur(s, j)
        y = noisy(x, j, s)
        p_noisy = psnr(y, x)
        p_blur = psnr(blur(y, b), x)
        p_prior = psnr(prior_denoise(prior, y, s), x)
        rows.append({"pixel_sigma": s, "model_sigma": 2 * s, "blur_std": b,
                     "blur_train_psnr": train_psnr, "psnr_noisy": p_noisy.tolist(),
                     "psnr_blur": p_blur.tolist(), "psnr_prior": p_prior.tolist()})
    return {"n": n, "heldout": list(bundled.HELDOUT), "crops": "heldout_crops(n, 32, seed=0)",
            "rows": rows}


def _mean_se(v) -> str:
    v = np.asarray(v)
    return f"{v.mean():.2f} ± {v.std(ddof=1) / np.sqrt(len(v)):.2f}"


def markdown(res: dict) -> str:
    lines = [f"PSNR (dB, mean ± s.e. over {res['n']} held-out 32×32 crops)", "",
             ("| noise σ (pixel) | σ (model) | noisy input | Gaussian blur (tuned std) | small-cpu D(x, σ) | gain "
              "over blur |"),
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        gain = np.mean(r["psnr_prior"]) - np.mean(r["psnr_blur"])
        lines.append(f"| {r['pixel_sigma']} | {r['model_sigma']} | {_mean_se(r['psnr_noisy'])} | "
                     f"{_mean_se(r['psnr_blur'])} (std {r['blur_std']}) | {_mean_se(r['psnr_prior'])} | "
                     f"{gain:+.2f} |")
    return "\n".join(lines)


def training_record(log_path: Path, weights: Path) -> str:
    """Summary of a training log (steps reached, wall time, last loss) + sha256 of the weights."""
    from invbench.priors.checkpoint import sha256_file

    lines = log_path.read_text().splitlines()
    start = next(ln for ln in lines if ln.startswith("# start"))
    steps = [ln.split() for ln in lines if ln.startswith("step ")]
    done = [ln for ln in lines if ln.startswith("# done")]
    last = steps[-1]
    wall = f"{done[-1].split('wall_s')[1].strip()} s" if done else "n/a (run not finished)"
    return (f"- log `{log_path.name}`: `{start[2:]}`\n"
            f"- steps reached: **{last[1]}**, wall time: **{wall}**, last logged loss "
            f"(mean of the last logging window): {last[3]}\n"
            f"- weights sha256: `{sha256_file(weights)}`\n"
            f"- reproduce exactly with `--steps {last[1]}` (no `--max-minutes`), same seed/batch/threads")


def _replace_between(doc: str, begin: str, end: str, body: str) -> str:
    if begin not in doc or end not in doc:
        return doc
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--weights", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--train-log", type=Path, default=None,
                    help="also write the training record (from this log.txt) into the doc")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from invbench import priors

    bundled.verify_manifest()
    prior = priors.build("small-cpu", checkpoint=args.weights)
    res = evaluate(prior, args.n)
    md = markdown(res)
    print(md)
    if args.no_write:
        return
    TABLE_JSON.write_text(json.dumps(res, indent=1))
    if DOC.exists():
        doc = _replace_between(DOC.read_text(), BEGIN, END, md)
        if args.train_log is not None:
            from invbench.priors.small_cpu import DEFAULT_WEIGHTS

            rec = training_record(args.train_log, args.weights or DEFAULT_WEIGHTS)
            doc = _replace_between(doc, REC_BEGIN, REC_END, rec)
        DOC.write_text(doc)


if __name__ == "__main__":
    main()
