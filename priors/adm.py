"""ADM (guided-diffusion) UNet checkpoints under the VP adapter (docs/design.md §4.2).

* ``priors.build("adm-ffhq", checkpoint=path)``: DPS's ``ffhq_10m.pt`` (FFHQ 256; 128 channels,
  1 res block, attention at 16; 93.6 M parameters).
* ``priors.build("adm-imagenet", checkpoint=path)``: guided-diffusion's
  ``256x256_diffusion_uncond.pt`` (ImageNet 256, unconditional; 256 channels, 2 res blocks,
  attention at 32/16/8; 552.8 M parameters).

Both use deepinv's ``DiffUNet`` (``large_model=False`` / ``True``), whose key set and shapes match
the original files exactly (reference/offline-facts.md §3), built with ``pretrained=None``; the
file is read by :func:`invbench.priors.checkpoint.load_state_dict_file` (``weights_only=True``, key/shape
check, optional ``sha256=`` pinning). Without ``checkpoint`` the file is taken from the invbench
weights folder (``invbench.assets.weights.cache_dir()``, filled by ``invbench fetch adm-ffhq`` /
``invbench fetch adm-imagenet``). Nothing is downloaded. The network runs in
``type_t="timestep"`` mode, i.e. it returns the raw 6 channels (ε, model_var_values); the VP
adapter uses the linear schedule 1e-4..0.02, T=1000 and exposes the variance channels through
``denoise_with_variance``. ``image_shape = (3, 256, 256)``; DiffUNet circular-pads other sizes
to a multiple of 32 (useful for tests on small inputs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from .base import PriorError
from .checkpoint import check_state_dict, load_state_dict_file
from .registry import register
from .vp import VPPrior

_SPECS = {
    "adm-ffhq": {"large_model": False, "file": "ffhq_10m.pt (DPS, FFHQ 256)"},
    "adm-imagenet": {"large_model": True,
                     "file": "256x256_diffusion_uncond.pt (guided-diffusion, ImageNet 256)"},
}


# deepinv's DiffUNet registers these two noise-schedule buffers *after* loading its pretrained
# weights; they are not in the original checkpoints (362 / 566 keys), so they are excluded from
# the key check, dropped from a file that has them (a state dict saved from a deepinv DiffUNet)
# and recomputed. The prior itself never uses them (it runs in type_t="timestep" mode).
SCHEDULE_BUFFERS = ("sqrt_1m_alphas_cumprod", "sqrt_alphas_cumprod")


class DiffUNetEps(nn.Module):
    """``DiffUNet`` called as ``net(x_t, t)`` with float timesteps -> raw (B, 6, H, W) output."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x_t: Tensor, t: Tensor) -> Tensor:
        return self.unet(x_t, t.reshape(-1).expand(x_t.shape[0]), type_t="timestep")


def build_diffunet(large_model: bool, device: str | torch.device = "cpu") -> nn.Module:
    """Un-initialised deepinv ``DiffUNet`` (3 -> 3(+3) channels), never downloading."""
    from deepinv.models import DiffUNet

    with torch.device(device):
        return DiffUNet(in_channels=3, out_channels=3, large_model=large_model, pretrained=None)


def load_adm(name: str, checkpoint: str | Path | None = None, sha256: str | None = None) -> VPPrior:
    """Build the ADM prior ``name`` from a local checkpoint file (see module docstring)."""
    spec = _SPECS[name]
    expected = f"{name}: deepinv DiffUNet(large_model={spec['large_model']}) = {spec['file']}"
    from invbench.assets.weights import TABLE, cache_dir, fetch_hint

    if checkpoint is None:
        default = cache_dir() / TABLE[name].filename
        if not default.is_file():
            raise PriorError(f"{name} needs checkpoint=PATH to {spec['file']} (default {default}, not found; "
                             f"{fetch_hint(name)}); nothing is downloaded during a run")
        checkpoint = default
    elif not Path(checkpoint).expanduser().is_file():
        raise PriorError(f"{name}: checkpoint file not found: {checkpoint} (expected {spec['file']}; "
                         f"{fetch_hint(name)}, which puts it in {cache_dir()})")
    sd = load_state_dict_file(checkpoint, expected, sha256=sha256)
    sd = {k: v for k, v in sd.items() if k not in SCHEDULE_BUFFERS}
    # build on the meta device (no random init of 550 M parameters), then assign the tensors
    unet = build_diffunet(spec["large_model"], device="meta")
    reference = {k: v for k, v in unet.state_dict().items() if k not in SCHEDULE_BUFFERS}
    check_state_dict(reference, sd, checkpoint, expected)
    missing, unexpected = unet.load_state_dict(sd, strict=False, assign=True)
    assert set(missing) == set(SCHEDULE_BUFFERS) and not unexpected, (missing, unexpected)
    with torch.device("cpu"):
        sqrt_1m, sqrt_ab = unet.get_alpha_prod()[-2:]
    unet.sqrt_1m_alphas_cumprod, unet.sqrt_alphas_cumprod = sqrt_1m, sqrt_ab
    leftover = [n for n, t in list(unet.named_parameters()) + list(unet.named_buffers()) if t.is_meta]
    if leftover:
        raise PriorError(f"{name}: internal error, tensors left uninitialised after loading "
                         f"{checkpoint}: {leftover[:3]}")
    unet.eval().requires_grad_(False)
    return VPPrior(DiffUNetEps(unet).eval(), image_shape=(3, 256, 256), learned_variance=True)


@register("adm-ffhq")
def _adm_ffhq(checkpoint: str | Path | None = None, sha256: str | None = None) -> VPPrior:
    return load_adm("adm-ffhq", checkpoint, sha256)


@register("adm-imagenet")
def _adm_imagenet(checkpoint: str | Path | None = None, sha256: str | None = None) -> VPPrior:
    return load_adm("adm-imagenet", checkpoint, sha256)
