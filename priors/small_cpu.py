"""``priors.build("small-cpu")``: the committed small UNet (docs/design.md §4.3) under the VP adapter.

Weights: ``priors/data/small_cpu.pt`` (EMA state dict, float32) produced by
``scripts/train_small_prior.py`` (command, seed, data manifest and the denoising table in
docs/priors-small-cpu.md). ``image_shape = (3, 32, 32)``; linear betas 1e-4..0.02, T=1000.
"""

from __future__ import annotations

from pathlib import Path

from .base import PriorError
from .checkpoint import check_state_dict, load_state_dict_file
from .registry import register
from .small_unet import build_small_unet
from .vp import VPPrior

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "data" / "small_cpu.pt"


def load_small_cpu(checkpoint: str | Path | None = None, sha256: str | None = None) -> VPPrior:
    """Load the small CPU prior (default: the committed weights)."""
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise PriorError(f"small-cpu weights not found at {path}; train with "
                         f"scripts/train_small_prior.py (see docs/priors-small-cpu.md)")
    expected = "small-cpu: invbench.priors.small_unet.build_small_unet() EMA state dict"
    sd = load_state_dict_file(path, expected, sha256=sha256)
    net = build_small_unet()
    check_state_dict(net, sd, path, expected)
    net.load_state_dict(sd, strict=True)
    net.eval().requires_grad_(False)
    return VPPrior(net, image_shape=(3, 32, 32))


@register("small-cpu")
def _small_cpu(checkpoint: str | Path | None = None, sha256: str | None = None) -> VPPrior:
    return load_small_cpu(checkpoint, sha256)
