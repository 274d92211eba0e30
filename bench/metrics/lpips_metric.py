"""LPIPS (Zhang et al. 2018) through the ``lpips`` package, offline only.

The linear heads (``lpips/weights/v0.1/<net>.pth``) ship inside the wheel. The trunk is the
torchvision ImageNet checkpoint, read from a local file and never downloaded:
``weights=<path>``, or else the first present of the invbench weights folder
(``invbench.assets.weights.cache_dir()``, filled by ``invbench fetch lpips``) and
``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``), each holding the official file name. The model is built
with ``pnet_rand=True`` (no torchvision download is attempted) and the trunk parameters are then loaded from that file.

Verification: torchvision names its checkpoints ``<arch>-<first 8 hex of sha256>.pth`` and
checks that prefix on download (``check_hash``). We apply the same check to the local file:
if its sha256 does not start with the official prefix the metric is unavailable, unless
``allow_unverified=True`` (tests only), in which case it runs with ``verified = False`` and its
numbers must not be reported.

Inputs: pixel images clipped to [0, 1] (``normalize=True`` maps them to [-1, 1] as LPIPS
expects); one channel is repeated to three. Images smaller than the trunk's minimum side
(alex 31, vgg 16, squeeze 17 px) give NaN.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from . import Metric, MetricContext

# net -> ``invbench fetch`` name (invbench.assets.weights.TABLE)
FETCH_NAMES = {"alex": "lpips", "vgg": "lpips-vgg", "squeeze": "lpips-squeeze"}
# net -> (official torchvision file, torchvision constructor name)
TRUNK_FILES = {
    "alex": ("alexnet-owt-7be5be79.pth", "alexnet"),
    "vgg": ("vgg16-397923af.pth", "vgg16"),
    "squeeze": ("squeezenet1_1-b8a52dc0.pth", "squeezenet1_1"),
}
MIN_SIDE = {"alex": 31, "vgg": 16, "squeeze": 17}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def official_prefix(filename: str) -> str:
    """The sha256 prefix torchvision puts in a checkpoint name (``alexnet-owt-7be5be79.pth`` -> ``7be5be79``)."""
    return Path(filename).stem.rsplit("-", 1)[-1]


def default_trunk_path(net: str) -> Path:
    """Where torchvision would cache the trunk: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TRUNK_FILES[net][0]


def trunk_search_path(net: str) -> list[Path]:
    """Where the trunk is looked for without ``weights=``: the invbench weights folder, then
    the torch hub cache (first present wins)."""
    from invbench.assets.weights import cache_dir

    return [cache_dir() / TRUNK_FILES[net][0], default_trunk_path(net)]


def lpips_version() -> str:
    try:
        from importlib.metadata import version

        return version("lpips")
    except Exception:  # pragma: no cover  # noqa: BLE001 - reported as one readable line
        return "unknown"


def _load_trunk(model, net: str, path: Path) -> None:
    """Copy torchvision ``features.<i>.*`` parameters into the lpips slices that hold layer ``i``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise TypeError("not a state dict")
    where = {}  # layer index -> slice attribute name
    for sname, sl in model.net.named_children():
        for child in sl._modules:
            where[int(child)] = sname
    mapped = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] != "features":
            continue
        i = int(parts[1])
        if i in where:
            mapped[".".join([where[i], str(i), *parts[2:]])] = v
    model.net.load_state_dict(mapped, strict=True)


class LPIPSMetric(Metric):
    """Per-image LPIPS distance (column ``lpips``; lower is better).

    Options: ``net`` (``"alex"`` default, ``"vgg"``, ``"squeeze"``), ``weights`` (path of the
    torchvision trunk checkpoint; default: the torch hub cache), ``allow_unverified`` (tests
    only), ``device``.
    """

    name = "lpips"
    columns = ("lpips",)

    def __init__(self, net: str = "alex", weights: str | None = None, allow_unverified: bool = False,
                 device: str = "cpu"):
        if net not in TRUNK_FILES:
            raise ValueError(f"lpips net must be one of {sorted(TRUNK_FILES)}, got {net!r}")
        self.net = net
        self.device = torch.device(device)
        self.model = None
        self.verified = True
        fname = TRUNK_FILES[net][0]
        fix = f"run `invbench fetch {FETCH_NAMES[net]}`"
        if weights:
            path = Path(weights).expanduser()
            where = str(path)
        else:
            candidates = trunk_search_path(net)
            path = next((c for c in candidates if c.is_file()), candidates[0])
            where = " or ".join(str(c.parent) for c in candidates)
        self.path = path
        self.backbone = f"lpips {lpips_version()} net={net} v0.1; trunk {path}"
        if not path.is_file():
            self.unavailable = (
                f"unavailable: LPIPS-{net} needs the torchvision file {fname}, not found in {where} "
                f"(or set metrics.lpips.weights); {fix} (nothing is downloaded during a run)"
            )
            return
        digest = sha256_file(path)
        self.sha256 = digest
        prefix = official_prefix(fname)
        self.backbone += f" sha256 {digest[:16]}"
        if not digest.startswith(prefix):
            self.verified = False
            self.backbone += " UNVERIFIED"
            if not allow_unverified:
                self.unavailable = (
                    f"unavailable: trunk weights {path} do not match the official torchvision file "
                    f"{fname} (sha256 prefix {digest[:8]} != {prefix}); {fix} to replace it"
                )
                return
        try:
            import warnings

            import lpips

            with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" notices
                warnings.simplefilter("ignore", UserWarning)
                model = lpips.LPIPS(pretrained=True, net=net, version="0.1", pnet_rand=True, verbose=False)
            _load_trunk(model, net, path)
        except Exception as e:  # corrupt / wrong file  # noqa: BLE001 - reported as one readable line
            self.unavailable = (f"unavailable: could not load LPIPS-{net} trunk from {path} ({type(e).__name__}: {e}); "
                                f"{fix} to replace it")
            return
        self.model = model.eval().to(self.device)
        self.unavailable = None

    def distance(self, x_hat: Tensor, x_true: Tensor) -> Tensor:
        """LPIPS between two pixel-space NCHW batches (clipped to [0, 1]), ``(B,)`` float64."""
        if self.model is None:
            raise RuntimeError(self.unavailable or "LPIPS model not loaded")
        B, C, H, W = x_hat.shape
        if min(H, W) < MIN_SIDE[self.net]:
            return torch.full((B,), math.nan, dtype=torch.float64)
        a = x_hat.detach().to(self.device, torch.float32).clamp(0, 1)
        b = x_true.detach().to(self.device, torch.float32).clamp(0, 1)
        if C == 1:
            a, b = a.expand(B, 3, H, W), b.expand(B, 3, H, W)
        with torch.no_grad():
            d = self.model(a, b, normalize=True)
        return d.reshape(B).to("cpu", torch.float64)

    def compute(self, ctx: MetricContext) -> dict[str, Tensor]:
        return {"lpips": self.distance(ctx.x_hat, ctx.x_true)}
