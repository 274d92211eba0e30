"""A compact ε-prediction UNet for 32x32 RGB (docs/design.md §4.3), ~1.5 M parameters at ``base=32``.

Architecture (DDPM-style): channels ``(c, 2c, 2c)`` at resolutions 32, 16, 8; ``n_res`` residual
blocks per level on the way down and ``n_res + 1`` on the way up (skip concatenation); GroupNorm +
SiLU; sinusoidal timestep embedding through a 2-layer MLP added inside every residual block;
single-head self-attention at the lowest resolution (8x8) and in the middle block; output
convolution initialised to zero.

``forward(x_vp, t)``: ``x_vp`` is the VP-scaled noisy image ``sqrt(ᾱ_t) x0 + sqrt(1-ᾱ_t) ε`` in
model space, ``t`` a ``(B,)`` (or 0-d) float tensor of timesteps in ``[0, T-1]`` (continuous
values allowed); the output is the ε prediction with 3 channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of float timesteps ``t`` (B,) -> (B, dim): [cos(t f_k), sin(t f_k)]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + time embedding, GN-SiLU-conv, residual (1x1 conv when channels change)."""

    def __init__(self, cin: int, cout: int, tdim: int):
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(tdim, cout)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Single-head self-attention over spatial positions, residual."""

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None], v.transpose(1, 2)[:, None]
        )[:, 0]
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class SmallUNet(nn.Module):
    """ε-prediction UNet for ``(B, 3, 32, 32)`` inputs (any H, W divisible by 4 works)."""

    def __init__(
        self,
        in_channels: int = 3,
        base: int = 32,
        mult: tuple[int, ...] = (1, 2, 2),
        n_res: int = 2,
        attn_lowest: bool = True,
    ):
        super().__init__()
        self.base = base
        tdim = 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(in_channels, base, 3, padding=1)
        chans = [base * m for m in mult]
        nlev = len(chans)

        self.down = nn.ModuleList()
        skips = [base]
        ch = base
        for i, co in enumerate(chans):
            for _ in range(n_res):
                blk = nn.ModuleList([ResBlock(ch, co, tdim)])
                ch = co
                if attn_lowest and i == nlev - 1:
                    blk.append(Attention(ch))
                self.down.append(blk)
                skips.append(ch)
            if i < nlev - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)

        self.mid1 = ResBlock(ch, ch, tdim)
        self.mid_attn = Attention(ch) if attn_lowest else nn.Identity()
        self.mid2 = ResBlock(ch, ch, tdim)

        self.up = nn.ModuleList()
        for i, co in reversed(list(enumerate(chans))):
            for _ in range(n_res + 1):
                blk = nn.ModuleList([ResBlock(ch + skips.pop(), co, tdim)])
                ch = co
                if attn_lowest and i == nlev - 1:
                    blk.append(Attention(ch))
                self.up.append(blk)
            if i > 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """ε prediction for VP input ``x`` (B, 3, H, W) at float timesteps ``t`` (B,) or 0-d."""
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        emb = self.time_mlp(timestep_embedding(t, self.base).to(x.dtype))
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            if isinstance(blk[0], ResBlock):
                h = blk[0](h, emb)
                for m in blk[1:]:
                    h = m(h)
            else:
                h = blk[0](h)
            hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for blk in self.up:
            if isinstance(blk[0], ResBlock):
                h = blk[0](torch.cat([h, hs.pop()], dim=1), emb)
                for m in blk[1:]:
                    h = m(h)
            else:
                for m in blk:
                    h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def build_small_unet() -> SmallUNet:
    """The configuration of the committed ``small-cpu`` weights (base 32, mult (1,2,2), 2 res)."""
    return SmallUNet(in_channels=3, base=32, mult=(1, 2, 2), n_res=2, attn_lowest=True)
