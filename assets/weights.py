"""The one table of downloadable weight files, and where they live on disk.

Every file the suite can use but does not ship (metric backbones, ADM checkpoints) is listed in
:data:`TABLE` with its official source, its expected size and checksum where one is published,
the folder it goes to, and the manual steps where a program cannot fetch it. ``invbench fetch``
(:mod:`invbench.bench.fetch`) downloads from this table; the metrics, the ADM priors and
``invbench check`` look files up through :func:`locate`. Nothing here touches the network.

Cache folder (:func:`cache_dir`): ``$INVBENCH_WEIGHTS`` if set, else
``$XDG_CACHE_HOME/invbench/weights``, else ``~/.cache/invbench/weights``. ``invbench fetch
--dir DIR`` writes elsewhere; the metrics then find the files only when ``INVBENCH_WEIGHTS=DIR``.

Checksums. torchvision names its checkpoints ``<arch>-<first 8 hex of sha256>.pth`` and
checks that prefix when it downloads; the same prefix is the official check here
(``sha256_prefix``). Where no checksum is published (clean-fid's Inception file, both ADM
checkpoints) ``sha256`` is None: ``invbench fetch`` then records the digest and size of the file
it downloaded from the official address in the cache folder's manifest (:data:`MANIFEST_NAME`),
and later lookups accept exactly that file ("recorded at download", never called "official").
A file the user imported with ``invbench fetch NAME --from FILE`` for such an entry cannot be
verified at all: its record says ``"verified": false``, and lookups accept it only when the user
vouched for it with ``--trust-unverified`` (``"trusted_by_user": true``; :attr:`Located.usable`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENV_VAR",
    "IMPORT_PREFIX",
    "MANIFEST_NAME",
    "TABLE",
    "Located",
    "WeightFile",
    "cache_dir",
    "check_file",
    "fetch_hint",
    "locate",
    "read_manifest",
    "record_state",
    "sha256_file",
    "write_manifest_entry",
]

ENV_VAR = "INVBENCH_WEIGHTS"
MANIFEST_NAME = "manifest.json"
IMPORT_PREFIX = "local copy of "  # the manifest "url" of a file imported with ``--from``


@dataclass(frozen=True)
class WeightFile:
    """One downloadable file.

    name: the ``invbench fetch`` name. filename: the file's official name (kept on disk).
    urls: official download addresses, tried in order (empty when only manual steps work).
    size: expected size in bytes, None when unknown. sha256: full published hex digest, or None.
    sha256_prefix: torchvision's file-name prefix of the sha256, or None. used_by: what reads
    the file. manual: steps for a human when ``urls`` is empty. source: where the facts above come from.
    max_bytes: with no published size, the most a download may write (about 4x the size of the
    file as we know it: SqueezeNet 1.1 5 MB, Inception about 100 MB, ADM ImageNet 2.2 GB, ADM FFHQ
    374 MB).
    """

    name: str
    filename: str
    urls: tuple[str, ...]
    size: int | None
    sha256: str | None
    sha256_prefix: str | None
    used_by: str
    source: str
    manual: str | None = None
    max_bytes: int | None = None

    @property
    def limit(self) -> int | None:
        """Most bytes a download may write: the published ``size``, else ``max_bytes`` (a bound set
        generously above the file's known size, so that a server cannot fill the disk)."""
        return self.size if self.size is not None else self.max_bytes

    @property
    def fetchable(self) -> bool:
        """True when a program can download the file (at least one URL)."""
        return bool(self.urls)

    @property
    def verifiable(self) -> bool:
        """True when a checksum is published (full sha256 or torchvision's prefix)."""
        return bool(self.sha256 or self.sha256_prefix)

    def check_digest(self, digest: str) -> bool | None:
        """True/False against the published checksum; None when nothing is published."""
        if self.sha256:
            return digest.lower() == self.sha256.lower()
        if self.sha256_prefix:
            return digest.lower().startswith(self.sha256_prefix.lower())
        return None

    def expected(self) -> str:
        """The published checksum in words (for messages)."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return f"sha256 starting with {self.sha256_prefix} (torchvision's file-name convention)"
        return "no published checksum"


_DPS_DRIVE = "https://drive.google.com/drive/folders/1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh"

# Sources of the facts in this table:
# * torchvision 0.29.1, torchvision/models/alexnet.py, vgg.py and squeezenet.py: the URLs, the file names (hence
#   the sha256 prefixes) and "_file_size" 233.087 / 527.796 (MiB). The byte counts 244408911 and
#   553433881 equal those to the last digit and are the Content-Length reported by
#   download.pytorch.org in published download logs.
# * clean-fid 0.1.35, cleanfid/downloads_helper.py (``inception_url``) and
#   cleanfid/inception_torchscript.py: the Inception URL (StyleGAN2-ADA's TorchScript file).
#   Neither clean-fid nor StyleGAN2-ADA publishes its checksum or size.
# * openai/guided-diffusion README ("Download pre-trained models"): the 256x256 unconditional
#   checkpoint URL. No checksum or size is published.
# * DPS2022/diffusion-posterior-sampling README ("Download pretrained checkpoint"): ffhq_10m.pt
#   is in a Google Drive folder; no direct URL, checksum or size is published.
TABLE: dict[str, WeightFile] = {
    w.name: w
    for w in (
        WeightFile(
            name="lpips",
            filename="alexnet-owt-7be5be79.pth",
            urls=("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",),
            size=244_408_911,
            sha256=None,
            sha256_prefix="7be5be79",
            used_by="metrics.lpips (net = alex, the default): torchvision AlexNet trunk",
            source="torchvision.models.AlexNet_Weights.IMAGENET1K_V1",
        ),
        WeightFile(
            name="lpips-vgg",
            filename="vgg16-397923af.pth",
            urls=("https://download.pytorch.org/models/vgg16-397923af.pth",),
            size=553_433_881,
            sha256=None,
            sha256_prefix="397923af",
            used_by="metrics.lpips (net = vgg): torchvision VGG16 trunk",
            source="torchvision.models.VGG16_Weights.IMAGENET1K_V1",
        ),
        WeightFile(
            name="lpips-squeeze",
            filename="squeezenet1_1-b8a52dc0.pth",
            urls=("https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",),
            size=None,
            sha256=None,
            sha256_prefix="b8a52dc0",
            max_bytes=32 << 20,
            used_by="metrics.lpips (net = squeeze): torchvision SqueezeNet 1.1 trunk",
            source="torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1",
        ),
        WeightFile(
            name="fid",
            filename="inception-2015-12-05.pt",
            urls=("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",),
            size=None,
            sha256=None,
            sha256_prefix=None,
            max_bytes=512 << 20,
            used_by="set metric fid: clean-fid's TorchScript Inception-V3",
            source="cleanfid.downloads_helper.inception_url",
        ),
        WeightFile(
            name="adm-imagenet",
            filename="256x256_diffusion_uncond.pt",
            urls=("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",),
            size=None,
            sha256=None,
            sha256_prefix=None,
            max_bytes=8 << 30,
            used_by="prior adm-imagenet (guided-diffusion ImageNet 256, unconditional)",
            source="openai/guided-diffusion README",
        ),
        WeightFile(
            name="adm-ffhq",
            filename="ffhq_10m.pt",
            urls=(),
            size=None,
            sha256=None,
            sha256_prefix=None,
            max_bytes=2 << 30,
            used_by="prior adm-ffhq (DPS FFHQ 256)",
            source="DPS2022/diffusion-posterior-sampling README",
            manual=(
                f"1. open {_DPS_DRIVE} in a browser (Google Drive; a program cannot download it reliably)\n"
                "2. download ffhq_10m.pt from that folder\n"
                "3. run: invbench fetch adm-ffhq --from PATH/TO/ffhq_10m.pt --trust-unverified\n"
                "   (copies it into the weights folder and records its size and sha256 there, marked as trusted "
                "by you: no checksum is published for this file, so compare the printed sha256 with your "
                "collaborators')"
            ),
        ),
    )
}


def cache_dir() -> Path:
    """The weights folder: ``$INVBENCH_WEIGHTS``, else ``$XDG_CACHE_HOME/invbench/weights``,
    else ``~/.cache/invbench/weights`` (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "invbench" / "weights"


def fetch_hint(name: str) -> str:
    """The command that makes ``name`` available, for "unavailable" messages."""
    w = TABLE.get(name)
    if w is not None and not w.fetchable:
        return f"run `invbench fetch {name}` for the manual steps"
    return f"run `invbench fetch {name}`"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> dict[str, dict]:
    """``folder``'s manifest: ``{filename: {"sha256", "bytes", "url", "fetched_at", "check",
    "verified", "trusted_by_user"}}``; empty when missing or unreadable."""
    try:
        data = json.loads((Path(folder) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest_entry(folder: Path, filename: str, entry: dict) -> None:
    """Add or replace ``filename``'s entry in ``folder``'s manifest (atomic rename).

    The new manifest is written to a new, uniquely named temporary file created with
    ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a link planted in a shared folder is never written
    through), then renamed onto :data:`MANIFEST_NAME` (a rename replaces a link at that name)."""
    folder = Path(folder)
    data = read_manifest(folder)
    data[filename] = entry
    text = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = folder / f".{MANIFEST_NAME}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:   # a name taken (or planted): draw another
            continue
    else:
        raise FileExistsError(f"{folder}: cannot create a temporary manifest file")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        os.replace(tmp, folder / MANIFEST_NAME)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def record_state(entry: dict) -> str:
    """How a manifest entry says its file was checked, in words (for listings)."""
    if _record_verified(entry):
        return entry.get("check") or "sha256 recorded at download"
    if entry.get("trusted_by_user"):
        return "no published checksum; trusted by the user at import (--trust-unverified)"
    return "imported with --from, no published checksum, not trusted: UNVERIFIED"


def _record_verified(entry: dict) -> bool:
    """A record's own ``verified`` flag; records written before it existed are verified unless
    they are imports (``url`` "local copy of ..."), which nothing could check."""
    if "verified" in entry:
        return entry["verified"] is True
    return not str(entry.get("url", "")).startswith(IMPORT_PREFIX)


@dataclass(frozen=True)
class Located:
    """Result of :func:`locate`.

    path: the file (or where it would be in the weights folder when absent). present: it exists.
    verified: its digest matches the published checksum, or (nothing published) the digest
    recorded by ``invbench fetch`` in that folder's manifest when it downloaded the file from the
    official address. trusted_by_user: not verified, but its digest matches the record of a
    ``--from`` import the user vouched for (``--trust-unverified``). sha256: its digest (None if
    absent). how: one line saying how it was checked.
    """

    path: Path
    present: bool
    verified: bool
    sha256: str | None
    how: str
    trusted_by_user: bool = False

    @property
    def usable(self) -> bool:
        """Verified, or vouched for by the user: the file may be used."""
        return self.verified or self.trusted_by_user


def check_file(w: WeightFile, path: Path, digest: str | None = None) -> Located:
    """Check a present file against ``w`` (published checksum, else its folder's manifest)."""
    digest = digest or sha256_file(path)
    ok = w.check_digest(digest)
    if ok is not None:
        how = ("matches the published " + w.expected().split(" (")[0] if ok
               else f"does not match the published {w.expected()}")
        return Located(path, True, ok, digest, how)
    entry = read_manifest(path.parent).get(path.name, {})
    if entry.get("sha256") == digest:
        if _record_verified(entry):
            return Located(path, True, True, digest, "matches the sha256 recorded at download "
                                                     f"({entry.get('url', 'local copy')})")
        if entry.get("trusted_by_user") is True:
            return Located(path, True, False, digest, "no published checksum; trusted by the user at import "
                           f"(--trust-unverified; {entry.get('url', 'local copy')})", trusted_by_user=True)
        return Located(path, True, False, digest, "imported with --from and no published checksum, not trusted "
                       "(import it again with --trust-unverified once you have checked it)")
    if entry:
        return Located(path, True, False, digest, "differs from the sha256 recorded at download (file changed?)")
    return Located(path, True, False, digest, "no published checksum and no record of its download")


def locate(name: str, folders: list[Path] | None = None, verify: bool = True) -> Located:
    """Find ``name``'s file in ``folders`` (default: :func:`cache_dir`), first present wins.

    With ``verify`` the file is hashed and checked (see :class:`Located`); without, only its
    presence is reported. An absent file gives ``present=False`` and the weights-folder path.
    """
    w = TABLE[name]
    folders = list(folders) if folders is not None else [cache_dir()]
    for folder in folders:
        p = Path(folder) / w.filename
        if p.is_file():
            return check_file(w, p) if verify else Located(p, True, False, None, "not checked")
    where = Path(folders[0]) / w.filename if folders else cache_dir() / w.filename
    return Located(where, False, False, None, "not found; " + fetch_hint(name))
