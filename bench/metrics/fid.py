"""FID through clean-fid (Parmar et al. 2022), ``mode="clean"``, offline only.

Reference set: the ground-truth images of the same cell (same dataset split and images);
recorded in the note. Pipeline (identical to ``cleanfid.fid.compute_fid`` on PNG folders):
pixel images are clipped to [0, 1] and quantised to 8 bit like the stored PNGs
(``round(255 x)``), one channel is repeated to three, each image is resized to 299x299 by
clean-fid's own ``build_resizer("clean")`` (PIL bicubic on float channels), fed to the
TorchScript Inception-V3 wrapped by ``cleanfid.inception_torchscript.InceptionV3W(dir,
download=False)`` (its ``forward``; the TorchScript file itself is loaded from the bytes that
were hashed, see below), and the 2048-d features go to ``cleanfid.fid.fid_from_feats``.

Weights: ``inception-2015-12-05.pt`` (StyleGAN2-ADA's TorchScript translation of the TF
Inception) from ``inception_path`` (the file or its folder), else the invbench weights folder
(``invbench.assets.weights.cache_dir()``, filled by ``invbench fetch fid``) when the file is there,
else clean-fid's own cache location ``/tmp/inception-2015-12-05.pt``. Nothing is downloaded
during a run. No official sha256 of that file is published in clean-fid or StyleGAN2-ADA, so a
file is *verified* only when its sha256 equals ``inception_sha256`` (a hash the user pinned after
checking the file), one of ``KNOWN_INCEPTION_SHA256``, or the sha256 that ``invbench fetch fid``
recorded in its folder's manifest when it downloaded the file from the official address, or
when the user imported it with ``--from FILE --trust-unverified`` (then ``backbone`` says
"trusted by the user"); a pinned digest is not required. A ``--from`` import recorded without
that flag (older manifests) is not accepted. Otherwise FID is unavailable ("unverified") and
the file is never loaded, unless ``allow_unverified=True`` (tests only; then ``verified =
False`` and the value is not real). The file is read once: the sha256 is computed over those
bytes and ``torch.jit.load`` runs on the same bytes, so a file replaced on disk after the check
(a shared folder) is not what gets loaded. The file's sha256 and how it was checked are always
recorded in ``backbone``.
"""

from __future__ import annotations

import hashlib
import io
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import SetMetric

INCEPTION_FILE = "inception-2015-12-05.pt"
# sha256 digests of the official file that have been checked; none is published upstream.
KNOWN_INCEPTION_SHA256: frozenset[str] = frozenset()


def default_inception_dir() -> Path:
    """clean-fid's hard-coded cache folder (``/tmp`` on Linux/macOS, ``./`` on Windows)."""
    return Path("./" if platform.system() == "Windows" else "/tmp")


def _digest(data: bytes) -> str:
    """Hex sha256 of the Inception file's bytes (the bytes that are then loaded)."""
    return hashlib.sha256(data).hexdigest()


def _load_checked(data: bytes, device: torch.device) -> torch.nn.Module:
    """clean-fid's ``InceptionV3W`` around the TorchScript network in ``data`` (the checked bytes).

    ``InceptionV3W.__init__`` would ``torch.jit.load`` the file by its path a second time; this
    sets the same three attributes its ``__init__`` sets (clean-fid 0.1.x) from ``data`` instead,
    so its ``forward`` runs unchanged."""
    from cleanfid.inception_torchscript import InceptionV3W

    class _CheckedInceptionV3W(InceptionV3W):
        def __init__(self):
            torch.nn.Module.__init__(self)
            self.base = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
            self.layers = self.base.layers
            self.resize_inside = False

    return _CheckedInceptionV3W().to(device).eval()


def to_uint8_hwc(x: Tensor) -> np.ndarray:
    """Pixel NCHW batch -> uint8 NHWC with three channels (clip, ``round(255 x)``)."""
    x = x.detach().to("cpu", torch.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"FID expects (N, 1 or 3, H, W) pixel images, got {tuple(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return np.rint(x.clamp(0, 1).numpy() * 255.0).astype(np.uint8).transpose(0, 2, 3, 1)


def clean_features(images: Tensor, extractor: Callable[[Tensor], Tensor], batch_size: int = 32,
                   device="cpu") -> np.ndarray:
    """clean-fid "clean" features of a pixel batch: quantise, clean resize to 299, extract."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    u8 = to_uint8_hwc(images)
    feats = []
    for s in range(0, u8.shape[0], batch_size):
        batch = np.stack([resize(im) for im in u8[s : s + batch_size]])  # float32 (b, 299, 299, 3), 0..255
        t = torch.from_numpy(batch.transpose(0, 3, 1, 2).copy()).to(device)
        with torch.no_grad():
            feats.append(extractor(t).detach().cpu().numpy().astype(np.float64))
    return np.concatenate(feats)


class FIDMetric(SetMetric):
    """Set metric ``fid`` over one cell: reconstructions vs ground truth of the same images.

    Options: ``inception_path`` (file or folder), ``inception_sha256`` (trusted digest),
    ``allow_unverified`` (tests only), ``device``, ``batch_size``, ``extractor`` (a callable
    ``(B, 3, 299, 299) in [0, 255] -> (B, D)`` replacing Inception; always unverified).
    """

    name = "fid"

    def __init__(
        self,
        inception_path: str | None = None,
        inception_sha256: str | None = None,
        allow_unverified: bool = False,
        device: str = "cpu",
        batch_size: int = 32,
        extractor: Callable[[Tensor], Tensor] | None = None,
    ):
        import cleanfid

        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.extractor = None
        self.verified = False
        self.unavailable = None
        ver = getattr(cleanfid, "__version__", None) or _dist_version("clean-fid")
        if extractor is not None:
            self.extractor = extractor
            self.backbone = f"clean-fid {ver} mode=clean; custom extractor (UNVERIFIED)"
            if not allow_unverified:
                self.unavailable = "unavailable: custom feature extractor is not the official Inception"
            return
        self._open_inception(inception_path, inception_sha256, allow_unverified, ver)

    def _open_inception(self, inception_path: str | None, inception_sha256: str | None,
                        allow_unverified: bool, ver: str) -> None:
        """Find, read, check and load the Inception file; on any refusal set ``unavailable``
        (one line naming the file and the remedy) and load nothing."""
        file, where = _inception_file(inception_path)
        self.path = file
        self.backbone = f"clean-fid {ver} mode=clean; Inception {file}"
        if file.name != INCEPTION_FILE:
            self.unavailable = (f"unavailable: the Inception file must be named {INCEPTION_FILE} "
                                f"(got {file}); `invbench fetch fid` downloads it")
            return
        if not file.is_file():
            self.unavailable = (
                f"unavailable: {INCEPTION_FILE} (clean-fid's Inception) not found in {where}; run "
                "`invbench fetch fid` or set metrics.fid.inception_path (nothing is downloaded "
                "during a run)"
            )
            return
        try:
            data = file.read_bytes()
        except OSError as e:
            self.unavailable = f"unavailable: cannot read {file} ({e.strerror or e})"
            return
        digest = _digest(data)
        self.sha256 = digest
        self.verified, how = _verify(file, digest, inception_sha256)
        self.backbone += (f" sha256 {digest}" + (f" ({how})" if how else "")
                          + ("" if self.verified else " UNVERIFIED"))
        if not self.verified and not allow_unverified:
            self.unavailable = (
                f"unavailable: Inception weights {file} are unverified (sha256 {digest}); run "
                "`invbench fetch fid` to download the official file, or after checking this one "
                "pin it with metrics.fid.inception_sha256 or import it with "
                "`invbench fetch fid --from FILE --trust-unverified`"
            )
            return
        try:
            import warnings

            with warnings.catch_warnings():  # torch.jit deprecation notice
                warnings.simplefilter("ignore", FutureWarning)
                model = _load_checked(data, self.device)
        except Exception as e:  # noqa: BLE001 - reported as one readable line
            self.unavailable = (f"unavailable: could not load {file} ({type(e).__name__}: {e}); "
                                "run `invbench fetch fid` to replace it")
            return
        self.extractor = model

    def features(self, images: Tensor) -> np.ndarray:
        """clean-fid features ``(N, D)`` of a pixel-space batch."""
        if self.extractor is None:
            raise RuntimeError(self.unavailable or "FID extractor not loaded")
        return clean_features(images, self.extractor, self.batch_size, self.device)

    def compute(self, recon, truth, **_) -> tuple[float | None, str]:
        """FID of ``recon`` against ``truth`` (both pixel NCHW, same images); ``(value, note)``."""
        if self.unavailable:
            return None, self.unavailable
        from cleanfid.fid import fid_from_feats

        if isinstance(recon, (list, tuple)):
            recon = torch.cat(list(recon))
        if recon.shape[0] < 2 or truth.shape[0] < 2:
            return None, "unavailable: FID needs at least 2 images per set"
        value = float(fid_from_feats(self.features(recon), self.features(truth)))
        note = f"clean-fid mode=clean vs ground truth of the same split (n={recon.shape[0]} / {truth.shape[0]})"
        if not self.verified:
            note = "UNVERIFIED weights, not a real FID; " + note
        return value, note


def _inception_file(inception_path: str | None) -> tuple[Path, str]:
    """The Inception file to open (``inception_path``, its folder's file, the invbench weights
    folder's file when fetched, else clean-fid's cache) and where it was looked for (for the
    message when it is missing)."""
    from invbench.assets.weights import cache_dir

    fetched = cache_dir() / INCEPTION_FILE
    if inception_path:
        p = Path(inception_path).expanduser()
    else:
        p = cache_dir() if fetched.is_file() else default_inception_dir()
    where = str(p) if inception_path else f"{cache_dir()} or {default_inception_dir()}"
    return (p if p.suffix == ".pt" else p / INCEPTION_FILE), where


def _verify(file: Path, digest: str, inception_sha256: str | None) -> tuple[bool, str]:
    """Whether the file with sha256 ``digest`` may be loaded, and how that was decided: a
    pinned or known digest, else the weights table's check (fetched from the official address,
    or imported with ``--trust-unverified``)."""
    from invbench.assets.weights import TABLE, check_file

    trusted = set(KNOWN_INCEPTION_SHA256)
    if inception_sha256:
        trusted.add(inception_sha256.strip().lower())
    if digest in trusted:
        return True, "pinned"
    rec = check_file(TABLE["fid"], file, digest)
    return rec.usable, (rec.how if rec.usable else "")


def _dist_version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # pragma: no cover  # noqa: BLE001 - reported as one readable line
        return "unknown"
