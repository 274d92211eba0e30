"""Datasets of ground-truth images (docs/design.md §6; spec fields in docs/metrics.md#datasets).

Every dataset yields pixel-space images in [0, 1] as ``(C, H, W)`` float64 tensors in a fixed
order, with string ids (used in file names: no ``/``). ``build(spec, base_dir)`` accepts:

* ``{"type": "folder", "root", "manifest", "crop", "resize", "resize_filter", "channels", "to_rgb"}``:
  files listed in a manifest of ``<relative path> <sha256>`` lines (``#`` comments), in that
  order. Every listed file is checked when the dataset is built: it exists, stays inside
  ``root``, matches its sha256, decodes, has ``channels`` channels, and (``.npy`` files,
  float ``(C, H, W)`` pixel arrays) is finite and within [0, 1]. Any failure raises
  :class:`DatasetError` naming the file.
* ``{"type": "list", "list": "ffhq1k" | "imagenet1k" | <path>, "root", ...}``: a published
  list of image names (``bench/data/*.txt``) resolved under a user ``root``; optional
  ``manifest`` (from :func:`make_manifest`) to pin the files' sha256.
* ``{"type": "bundled", "n", "size", "seed", "split"}``: held-out crops of images bundled in
  installed packages (``invbench.bench.bundled.heldout_crops``); ``split`` = ``test`` (default; chelsea,
  coffee) or ``validation`` (grace_hopper, for tuning) or ``all``.
* ``{"type": "digits", "split"}``: scikit-learn's 8x8 digits scaled to [0, 1] (``/ 16``);
  ``split`` by index ``i``: ``train`` = 0..1499, ``validation`` = 1500..1599, ``test`` =
  1600..1796 (see :func:`digits_split_indices`).
* ``{"type": "gmm_samples", "prior", "n", "seed"}``: exact samples of a Gaussian-mixture prior
  mapped to pixel space, *unclipped* (declared synthetic: no range check).

Common fields: ``name`` (default: the type or list name), ``limit`` (first ``limit`` images).
Unknown fields raise :class:`DatasetError`.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import torch
from invbench.operators.conventions import model_to_pixel
from torch import Tensor

from .imagefile import DatasetError, load_image_file

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".npy")
DATA_DIR = Path(__file__).resolve().parent / "data"
NAMED_LISTS = {"ffhq1k": DATA_DIR / "ffhq1k.txt", "imagenet1k": DATA_DIR / "imagenet1k.txt"}
# Protocol preprocessing of the named lists (overridable in the spec), see the list headers.
LIST_DEFAULTS = {
    "ffhq1k": {"crop": None, "resize": 256, "resize_filter": "bicubic", "to_rgb": True},
    "imagenet1k": {"crop": "center", "resize": 256, "resize_filter": "bilinear", "to_rgb": True},
}
_FILTERS = {"bicubic", "bilinear", "lanczos", "box", "nearest"}
# --------------------------------------------------------------------------- helpers
def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def make_manifest(root: str | os.PathLike, exts: tuple[str, ...] = IMAGE_EXTS) -> str:
    """Manifest text for every image/``.npy`` file under ``root`` (recursive, sorted POSIX paths).

    One ``<relative path> <sha256>`` line per file after a ``#`` header; write it next to the
    images and point a ``folder`` dataset's ``manifest`` at it.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"manifest root {root} is not a directory")
    files = sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts
    )
    lines = ["# invbench manifest: <relative path> <sha256>; order = dataset order"]
    lines += [f"{rel} {sha256_file(root / rel)}" for rel in files]
    return "\n".join(lines) + "\n"


def parse_manifest(text: str, source: str = "manifest") -> list[tuple[str, str]]:
    """``[(relative path, sha256)]`` in file order; ``#`` comments and blank lines skipped."""
    out, seen = [], set()
    for lineno, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.rsplit(None, 1)
        if len(parts) != 2 or len(parts[1]) != 64 or any(c not in "0123456789abcdef" for c in parts[1].lower()):
            raise DatasetError(f"{source}:{lineno}: expected '<relative path> <sha256>', got {s!r}")
        rel, digest = parts[0], parts[1].lower()
        if rel in seen:
            raise DatasetError(f"{source}:{lineno}: duplicate entry {rel!r}")
        seen.add(rel)
        out.append((rel, digest))
    return out


def safe_path(root: Path, rel: str) -> Path:
    """``root / rel`` resolved; DatasetError if ``rel`` is absolute or escapes ``root`` (also via symlinks)."""
    if os.path.isabs(rel) or rel.startswith("~"):
        raise DatasetError(f"{rel}: absolute path in manifest (paths must be relative to {root})")
    full = (root / rel).resolve()
    try:
        full.relative_to(root.resolve())
    except ValueError:
        raise DatasetError(f"{rel}: path escapes the dataset root {root}") from None
    return full


def image_id(rel: str) -> str:
    """Id used in result rows and file names: relative path without extension, ``/`` -> ``__``."""
    p = Path(rel)
    return p.with_suffix("").as_posix().replace("/", "__")


def _check_keys(spec: dict, allowed: set[str]) -> None:
    unknown = sorted(set(spec) - allowed - {"type", "name", "limit"})
    if unknown:
        raise DatasetError(
            f"dataset {spec.get('name', spec.get('type'))!r}: unknown field(s) {', '.join(unknown)}; "
            f"valid for type {spec.get('type')!r}: {', '.join(sorted(allowed | {'type', 'name', 'limit'}))}"
        )


def _limit(spec: dict, n: int) -> int:
    lim = spec.get("limit")
    if lim is None:
        return n
    if not isinstance(lim, int) or isinstance(lim, bool) or lim < 1:
        raise DatasetError(f"dataset field 'limit' must be a positive integer, got {lim!r}")
    return min(n, lim)


def _prep_fields(spec: dict, defaults: dict | None = None) -> tuple:
    d = dict(defaults or {})
    crop = spec.get("crop", d.get("crop"))
    resize = spec.get("resize", d.get("resize"))
    filt = spec.get("resize_filter", d.get("resize_filter", "bicubic"))
    if crop is not None and crop != "center" and not (isinstance(crop, int) and crop > 0):
        raise DatasetError(f"dataset field 'crop' must be \"center\" or a positive integer, got {crop!r}")
    if resize is not None and not (isinstance(resize, int) and resize > 0):
        raise DatasetError(f"dataset field 'resize' must be a positive integer, got {resize!r}")
    if filt not in _FILTERS:
        raise DatasetError(f"dataset field 'resize_filter' must be one of {sorted(_FILTERS)}, got {filt!r}")
    return crop, resize, filt


# --------------------------------------------------------------------------- datasets
class Dataset:
    """Ordered ground-truth images: ``ids[i]`` names image ``get(i)`` (``(C, H, W)`` float64, pixel)."""

    name: str
    image_shape: tuple[int, int, int]
    ids: list[str]
    synthetic: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    def get(self, i: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def source(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self):
        for i in range(len(self)):
            yield self.ids[i], self.get(i)


class _FileDataset(Dataset):
    """Files checked at build time (existence, root, sha256, decode, channels, values)."""

    def __init__(self, name, files, ids, labels, hashes, channels, crop, resize, resize_filter, to_rgb, src):
        self.name = name
        self._files = files
        self.ids = ids
        self._labels = labels  # what error messages call each file (its manifest path / list name)
        self._hashes = hashes
        self._prep = {"channels": channels, "crop": crop, "resize": resize, "resize_filter": resize_filter,
                      "to_rgb": to_rgb}
        self._src = src
        shapes = [tuple(self._load(f, lab, h).shape) for f, lab, h in zip(files, labels, hashes)]
        counts = Counter(shapes)
        shape = max(counts, key=lambda s: (counts[s], -shapes.index(s)))   # the most common shape (ties: first)
        for lab, s in zip(labels, shapes):
            if s != shape:   # name the odd file, not the first one read
                raise DatasetError(f"{lab}: image shape {s} differs from {shape} ({counts[shape]} of {len(shapes)} "
                                   "images); declare crop/resize")
        self.image_shape = shape

    def _load(self, f: Path, name: str, digest: str | None) -> Tensor:
        if not f.is_file():
            raise DatasetError(f"{name}: file not found ({f})")
        if digest is not None:
            got = sha256_file(f)
            if got != digest:
                raise DatasetError(f"{name}: sha256 mismatch ({f}: got {got[:12]}..., manifest {digest[:12]}...)")
        return load_image_file(f, name, **self._prep)

    def get(self, i: int) -> Tensor:
        return self._load(self._files[i], self._labels[i], self._hashes[i])

    def source(self) -> dict:
        return dict(self._src, count=len(self), image_shape=list(self.image_shape), synthetic=False)


def _folder(spec: dict, base: Path) -> Dataset:
    _check_keys(spec, {"root", "manifest", "crop", "resize", "resize_filter", "channels", "to_rgb"})
    if "root" not in spec:
        raise DatasetError("folder dataset needs 'root'")
    root = (base / Path(spec["root"]).expanduser()).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    mpath = base / Path(spec.get("manifest", root / "MANIFEST.sha256")).expanduser()
    if not mpath.is_file():
        raise DatasetError(f"manifest {mpath} not found (build one with invbench.bench.datasets.make_manifest)")
    mtext = mpath.read_bytes()
    entries = parse_manifest(mtext.decode("utf-8"), str(mpath))
    if not entries:
        raise DatasetError(f"manifest {mpath} lists no files")
    entries = entries[: _limit(spec, len(entries))]
    files = [safe_path(root, rel) for rel, _ in entries]
    ids = [image_id(rel) for rel, _ in entries]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DatasetError(f"manifest {mpath}: two files map to image id {dup!r}")
    crop, resize, filt = _prep_fields(spec)
    channels = int(spec.get("channels", 3))
    to_rgb = bool(spec.get("to_rgb", False))
    name = spec.get("name", root.name)
    src = {
        "type": "folder", "name": name, "root": str(root), "manifest": str(mpath),
        "manifest_sha256": hashlib.sha256(mtext).hexdigest(), "crop": crop, "resize": resize,
        "resize_filter": filt, "channels": channels, "to_rgb": to_rgb, "limit": spec.get("limit"),
    }
    labels = [rel for rel, _ in entries]
    return _FileDataset(name, files, ids, labels, [h for _, h in entries], channels, crop, resize, filt, to_rgb, src)


def read_name_list(path: Path) -> list[str]:
    """Names from a list file: first whitespace-separated token of each non-comment line."""
    out = []
    for line in Path(path).read_text().splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            out.append(s.split()[0])
    return out


def _resolve_name(root: Path, name: str, subdirs: list[Path]) -> Path | None:
    """``root/name``; else ``root/<stem><ext>`` for common extensions; else ``root/<subdir>/name``."""
    cand = safe_path(root, name)
    if cand.is_file():
        return cand
    stem = Path(name).stem
    for ext in (".png", ".jpg", ".jpeg", ".JPEG", ".PNG"):
        c = root / (stem + ext)
        if c.is_file():
            return c
    for d in subdirs:
        c = d / name
        if c.is_file():
            return c
    return None


def _list(spec: dict, base: Path) -> Dataset:
    _check_keys(spec, {"list", "root", "manifest", "crop", "resize", "resize_filter", "channels", "to_rgb"})
    for k in ("list", "root"):
        if k not in spec:
            raise DatasetError(f"list dataset needs {k!r}")
    lname = spec["list"]
    lpath = NAMED_LISTS.get(lname) or (base / Path(lname).expanduser())
    if not lpath.is_file():
        raise DatasetError(f"name list {lname!r} not found ({lpath}); named lists: {', '.join(NAMED_LISTS)}")
    names = read_name_list(lpath)
    if not names:
        raise DatasetError(f"name list {lpath} is empty (not bundled?)")
    names = names[: _limit(spec, len(names))]
    root = (base / Path(spec["root"]).expanduser()).resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} for list {lname!r} is not a directory")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    files, missing = [], []
    for n in names:
        f = _resolve_name(root, n, subdirs)
        (files.append(f) if f is not None else missing.append(n))
    if missing:
        raise DatasetError(
            f"list {lname!r}: {len(missing)} of {len(names)} images missing under {root} (first: {missing[0]})"
        )
    hashes: list[str | None] = [None] * len(files)
    mpath = None
    if "manifest" in spec:
        mpath = base / Path(spec["manifest"]).expanduser()
        if not mpath.is_file():
            raise DatasetError(f"manifest {mpath} not found")
        table = {safe_path(root, rel): h for rel, h in parse_manifest(mpath.read_text(), str(mpath))}
        for i, f in enumerate(files):
            if f.resolve() not in table:
                raise DatasetError(f"{names[i]}: not listed in manifest {mpath}")
            hashes[i] = table[f.resolve()]
    crop, resize, filt = _prep_fields(spec, LIST_DEFAULTS.get(lname))
    channels = int(spec.get("channels", 3))
    to_rgb = bool(spec.get("to_rgb", LIST_DEFAULTS.get(lname, {}).get("to_rgb", False)))
    name = spec.get("name", lname if lname in NAMED_LISTS else lpath.stem)
    src = {
        "type": "list", "name": name, "list": str(lname), "list_sha256": sha256_file(lpath),
        "root": str(root), "manifest": str(mpath) if mpath else None,
        "manifest_sha256": sha256_file(mpath) if mpath else None,
        "crop": crop, "resize": resize, "resize_filter": filt, "channels": channels, "to_rgb": to_rgb,
        "limit": spec.get("limit"),
    }
    ids = [image_id(n) for n in names]
    return _FileDataset(name, files, ids, names, hashes, channels, crop, resize, filt, to_rgb, src)


class TensorDataset(Dataset):
    """In-memory images ``(N, C, H, W)`` pixel space with a recorded source."""

    def __init__(self, name: str, images: Tensor, ids: list[str], src: dict, synthetic: bool = False):
        images = images.detach().to("cpu", torch.float64)
        if not torch.isfinite(images).all():
            bad = int((~torch.isfinite(images)).flatten(1).any(1).nonzero()[0])
            raise DatasetError(f"{name}: image {ids[bad]} contains NaN or Inf")
        if not synthetic and (images.min() < 0 or images.max() > 1):
            raise DatasetError(f"{name}: values outside [0, 1]")
        self.name, self._x, self.ids, self._src, self.synthetic = name, images, ids, src, synthetic
        self.image_shape = tuple(images.shape[1:])

    def get(self, i: int) -> Tensor:
        return self._x[i].clone()

    def source(self) -> dict:
        return dict(self._src, count=len(self), image_shape=list(self.image_shape), synthetic=self.synthetic)


def digits_split_indices(split: str) -> list[int]:
    """Indices into ``sklearn.datasets.load_digits()`` of a split (1797 images).

    ``train``: images 0..1499 (the ``gmm-digits`` prior is fitted on these, see
    ``scripts/fit_gmm.py``); ``validation``: 1500..1599 (solver tuning); ``test``: 1600..1796
    (197 images). The GMM's K and ``reg_covar`` were chosen by log-likelihood on 1500..1796, so
    prior selection (not solver tuning) saw the test images' likelihood; solver hyperparameters
    are tuned on ``validation`` only.
    """
    from sklearn.datasets import load_digits

    n = load_digits().images.shape[0]
    rule = {"train": lambda i: i < 1500, "validation": lambda i: 1500 <= i < 1600, "test": lambda i: i >= 1600}
    if split not in rule:
        raise DatasetError(f"digits split must be one of {sorted(rule)}, got {split!r}")
    return [i for i in range(n) if rule[split](i)]


def _digits(spec: dict, base: Path) -> Dataset:
    _check_keys(spec, {"split"})
    from sklearn.datasets import load_digits

    split = spec.get("split", "test")
    idx = digits_split_indices(split)
    idx = idx[: _limit(spec, len(idx))]
    imgs = torch.from_numpy(load_digits().images[idx] / 16.0).unsqueeze(1)
    name = spec.get("name", "digits")
    src = {"type": "digits", "name": name, "split": split,
           "split_rule": "train 0..1499, validation 1500..1599, test 1600..1796",
           "scale": "pixel = value / 16", "source": "sklearn.datasets.load_digits", "limit": spec.get("limit")}
    return TensorDataset(name, imgs, [f"digits{i:04d}" for i in idx], src)


def _bundled(spec: dict, base: Path) -> Dataset:
    _check_keys(spec, {"n", "size", "seed", "split"})
    try:
        from invbench.bench import bundled
    except ImportError as e:  # pragma: no cover
        raise DatasetError(f"bundled images unavailable ({e})") from None
    n = int(spec.get("n", 16))
    size = int(spec.get("size", 32))
    seed = int(spec.get("seed", 0))
    n = _limit(spec, n)
    try:
        bundled.verify_manifest()
    except bundled.BundledDataError as e:
        raise DatasetError(f"bundled dataset: {e}") from None
    split = spec.get("split", "test")
    if split not in bundled.HELDOUT_SPLITS:
        raise DatasetError(f"bundled dataset: split must be one of {', '.join(bundled.HELDOUT_SPLITS)}, got {split!r}")
    x = torch.as_tensor(bundled.heldout_crops(n, size=size, seed=seed, split=split))
    name = spec.get("name", "bundled")
    src = {"type": "bundled", "name": name, "n": n, "size": size, "seed": seed, "split": split,
           "heldout_images": list(bundled.HELDOUT_SPLITS[split]), "source": "invbench.bench.bundled.heldout_crops",
           "limit": spec.get("limit")}
    return TensorDataset(name, x, [f"crop{i:04d}" for i in range(n)], src)


def _gmm_samples(spec: dict, base: Path) -> Dataset:
    _check_keys(spec, {"prior", "n", "seed"})
    from invbench import priors

    pname = spec.get("prior")
    if not pname:
        raise DatasetError("gmm_samples dataset needs 'prior'")
    try:
        prior = priors.build(pname)
    except Exception as e:  # noqa: BLE001 - reported as one readable line
        raise DatasetError(f"gmm_samples: cannot build prior {pname!r} ({e})") from None
    if "analytic" not in prior.capabilities:
        raise DatasetError(f"gmm_samples: prior {pname!r} is not an analytic Gaussian mixture")
    n = _limit(spec, int(spec.get("n", 16)))
    seed = int(spec.get("seed", 0))
    g = torch.Generator().manual_seed(seed)
    x = model_to_pixel(prior.sample(n, generator=g).to(torch.float64))
    name = spec.get("name", f"{pname}-samples")
    src = {"type": "gmm_samples", "name": name, "prior": pname, "n": n, "seed": seed, "synthetic": True,
           "note": "exact prior samples, model_to_pixel, unclipped", "limit": spec.get("limit")}
    return TensorDataset(name, x, [f"sample{i:04d}" for i in range(n)], src, synthetic=True)


_TYPES = {"folder": _folder, "list": _list, "bundled": _bundled, "digits": _digits, "gmm_samples": _gmm_samples}


def build(spec: dict, base_dir: str | os.PathLike = ".") -> Dataset:
    """Build a dataset from its spec (a dict from the experiment file); relative paths are
    resolved against ``base_dir`` (the experiment file's folder)."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise DatasetError(f"dataset spec needs a 'type' (one of {', '.join(_TYPES)}), got {spec!r}")
    t = spec["type"]
    if t not in _TYPES:
        raise DatasetError(f"unknown dataset type {t!r}; valid: {', '.join(_TYPES)}")
    return _TYPES[t](spec, Path(base_dir))


__all__ = [
    "NAMED_LISTS",
    "Dataset",
    "DatasetError",
    "TensorDataset",
    "build",
    "digits_split_indices",
    "load_image_file",
    "make_manifest",
    "parse_manifest",
    "read_name_list",
]
