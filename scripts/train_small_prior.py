"""Train the ``small-cpu`` prior: DDPM ε-prediction on 32x32 crops of bundled TRAIN images.

Recipe: linear betas 1e-4..0.02, T = 1000, loss = MSE(ε̂(sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε, t), ε) with
t uniform on {0..T-1}; AdamW (lr 2e-4, weight decay 0, 200-step linear warm-up, grad-norm clip 1);
EMA of the weights with decay ``min(0.999, (1+k)/(10+k))`` at step k; data = random 32x32 crops of
``invbench.bench.bundled.train_images()`` (HELDOUT images excluded) with random horizontal flips, mapped to
model space [-1, 1]; bf16 autocast on CPU (the EMA and optimiser stay float32).

Outputs in ``--out`` (default runs/train_small): ``ckpt.pt`` (model, EMA, optimiser, step, RNG
states; written atomically every ``--ckpt-every`` steps), ``ema.pt`` (EMA state dict, float32),
``log.txt`` (one line per ``--log-every`` steps) and ``config.json``. ``--export PATH`` writes the
final EMA state dict there (e.g. priors/data/small_cpu.pt). ``--resume`` continues from ckpt.pt.

Example: ``python scripts/train_small_prior.py --steps 8000 --batch 32 --seed 0 --threads 1``
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from invbench.bench import bundled
from invbench.operators.conventions import pixel_to_model
from invbench.priors.small_unet import build_small_unet
from invbench.priors.vp import linear_betas


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _batch(images, batch: int, rng: np.random.Generator) -> torch.Tensor:
    x = bundled.random_crops(images, batch, 32, rng)
    flip = torch.from_numpy(rng.random(batch) < 0.5)
    x[flip] = x[flip].flip(-1)
    return pixel_to_model(x)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/train_small"))
    ap.add_argument("--ckpt-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--export", type=Path, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop (checkpoint + export) after this much wall time; the log records the "
                         "step reached, and `--steps <that step>` reproduces the run")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    bundled.verify_manifest()
    images = bundled.train_images()

    model = build_small_unet()
    ema = build_small_unet()
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    abar = torch.cumprod(1 - linear_betas(), 0).float()
    T = abar.numel()

    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / "ckpt.pt"
    step = 0
    if args.resume and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        rng.bit_generator.state = ck["np_rng"]
        torch.set_rng_state(ck["torch_rng"])
    (args.out / "config.json").write_text(json.dumps({**vars(args), "out": str(args.out),
                                                      "export": str(args.export)}, indent=1))
    log_path = args.out / "log.txt"

    def log(msg: str) -> None:
        with open(log_path, "a") as f:
            print(msg, file=f)

    n_params = sum(p.numel() for p in model.parameters())
    log(f"# start step {step}/{args.steps} params {n_params} batch {args.batch} "
        f"seed {args.seed} threads {args.threads} bf16 {not args.no_bf16}")

    t0 = time.time()
    run_loss, n_loss = 0.0, 0
    while step < args.steps:
        x0 = _batch(images, args.batch, rng)
        t = torch.randint(0, T, (args.batch,))
        eps = torch.randn_like(x0)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not args.no_bf16):
            pred = model(xt, t.float())
        loss = F.mse_loss(pred.float(), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 200)
        opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
            for be, bm in zip(ema.buffers(), model.buffers()):
                be.copy_(bm)
        run_loss += loss.item()
        n_loss += 1
        if step % args.log_every == 0 or step == args.steps:
            el = time.time() - t0
            log(f"step {step} loss {run_loss / n_loss:.5f} elapsed_s {el:.1f}")
            run_loss, n_loss = 0.0, 0
        out_of_time = args.max_minutes is not None and time.time() - t0 > 60 * args.max_minutes
        if step % args.ckpt_every == 0 or step == args.steps or out_of_time:
            _atomic_save({"model": model.state_dict(), "ema": ema.state_dict(),
                          "opt": opt.state_dict(), "step": step,
                          "np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()},
                         ckpt_path)
            _atomic_save({k: v.float().clone() for k, v in ema.state_dict().items()},
                         args.out / "ema.pt")
        if out_of_time:
            log(f"# time budget reached at step {step}")
            break
    wall = time.time() - t0
    log(f"# done step {step} wall_s {wall:.1f}")
    if args.export is not None:
        args.export.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save({k: v.float().clone() for k, v in ema.state_dict().items()}, args.export)


if __name__ == "__main__":
    main()
