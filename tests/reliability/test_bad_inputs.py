"""The bad-input corpus (one line per case in docs/reliability.md).

Every case builds its inputs in a fresh folder, runs ``invbench`` in process
(``invbench.bench.cli.main``) and asserts the failure rules of docs/design.md §8:

* the documented exit code (2 for bad input);
* stderr is exactly one line ``invbench: error: ...`` that names the problem (a key path, a
  file name, an option) and holds only printable characters; no traceback;
* nothing is written: the case's whole folder (config, data, an existing run directory) has the
  same sha256 digest before and after, so no RUN_DIR is created and an existing store is
  unchanged.

A few cases are also run through the installed ``invbench`` console script in a subprocess to
check the real process exit code. Cases that fail *during* a run (disk full) and missing metric
weights (not an error) have their own tests below, with their documented outcomes.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from invbench.bench.datasets import make_manifest
from PIL import Image

from tests.helpers import parts
from tests.helpers.reliability import cli, tree_digest

BASE = parts.toml_config()          # _test-gauss prior (1, 8, 8) on 3 digits, 2 tasks, 1 solver
DIGITS = '[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 3\n'
SENTINEL = "PWNED-by-checkpoint"


@dataclass
class Case:
    """argv (``CFG`` is replaced by the config path, ``OUT`` by the run dir), the expected exit code
    and substrings the error line must contain."""

    argv: list[str]
    needles: tuple[str, ...]
    rc: int = 2
    config: str | bytes | None = None
    out: str = "out"
    after: Callable[[Path], None] | None = None     # extra assertion on the case folder
    extra: dict = field(default_factory=dict)


CASES: dict[str, Callable[[Path], Case]] = {}


def case(name: str):
    def deco(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn
    return deco


def run_argv(sets: tuple[str, ...] = ()) -> list[str]:
    argv = ["run", "CFG", "--out", "OUT", "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    return argv


def _cfg(text: str, needles, sets=(), **kw) -> Case:
    return Case(run_argv(tuple(sets)), tuple(needles), config=text, **kw)


def _with_dataset(section: str, prior_datasets: str | None = None) -> str:
    text = BASE.replace(DIGITS, section)
    if prior_datasets is not None:
        text = text.replace('name = "_test-gauss"', f'name = "_test-gauss"\ndatasets = {prior_datasets}')
    return text


FOLDER = ('[[datasets]]\nname = "imgs"\ntype = "folder"\nroot = "imgs"\n'
          'manifest = "imgs/MANIFEST.sha256"\nchannels = 1\n')


def _folder(tmp: Path, files: dict[str, np.ndarray | bytes], manifest: str | None = None) -> Path:
    """imgs/ with ``.npy`` arrays, 8-bit PNGs (uint8 arrays) or raw bytes, plus a manifest."""
    root = tmp / "imgs"
    root.mkdir(parents=True, exist_ok=True)
    for name, a in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(a, bytes):
            p.write_bytes(a)
        elif name.endswith(".npy"):
            np.save(p, a, allow_pickle=a.dtype == object)
        else:
            Image.fromarray(a).save(p)
    (root / "MANIFEST.sha256").write_text(manifest if manifest is not None else make_manifest(root))
    return root


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


GOOD = np.full((1, 8, 8), 0.5)

# ----------------------------------------------------------------------------- configs


@case("config: malformed TOML (unclosed table header)")
def _(t): return _cfg(BASE + "\n[solvers\n", ["malformed TOML", "c.toml"])


@case("config: not UTF-8")
def _(t): return _cfg(b"name = \"\xff\xfe\"\n", ["cannot read config", "c.toml"])


@case("config: file does not exist")
def _(t): return Case(["run", str(t / "missing.toml"), "--out", "OUT"], ("config file not found", "missing.toml"))


@case("config: path is a directory")
def _(t):
    (t / "adir.toml").mkdir()
    return Case(["run", str(t / "adir.toml"), "--out", "OUT"], ("cannot read config", "adir.toml"))


@case("config: nesting deeper than the parser's recursion limit")
def _(t): return _cfg(BASE + "\ndeep = " + "[" * 3000 + "]" * 3000 + "\n", ["malformed TOML", "nest"])


@case("config: unknown top-level key")
def _(t): return _cfg(BASE.replace("batch_size = 1", "batch_size = 1\nbatchsize = 4"), ["batchsize: unknown key"])


@case("config: unknown key in [[tasks]]")
def _(t): return _cfg(BASE.replace('noise_sigma = 0.02', 'noise_sigma = 0.02\nsigma = 0.1'), [("tasks[1].sigma: "
                                                                                               "unknown key")])


@case("config: unknown key in [execution]")
def _(t): return _cfg(BASE + "\n[execution]\nshard = 2\n", ["execution.shard: unknown key"])


@case("config: unknown solver resource key")
def _(t): return _cfg(BASE, ["solvers[0].resources.gpus"], ["solvers[0].resources.gpus=1"])


@case("config: unknown key with control characters is quoted, not echoed raw")
def _(t): return _cfg(BASE.replace("batch_size = 1", 'batch_size = 1\n"evil\\u001b[2J\\nkey" = 1'),
                      ['"evil\\u001b[2J\\nkey": unknown key'])


@case("config: seeds is a string")
def _(t): return _cfg(BASE.replace("seeds = [0]", 'seeds = "0"'), ["seeds: expected an array of integers"])


@case("config: batch_size is a string")
def _(t): return _cfg(BASE.replace("batch_size = 1", 'batch_size = "4"'),
                      ["batch_size: expected an integer, got string"])


@case("config: batch_size is a bool")
def _(t): return _cfg(BASE.replace("batch_size = 1", "batch_size = true"),
                      ["batch_size: expected an integer, got bool"])


@case("config: noise_sigma is a string")
def _(t): return _cfg(BASE.replace("noise_sigma = 0.05", 'noise_sigma = "0.05"'), [("tasks[0].noise_sigma: expected "
                                                                                    "a number")])


@case("config: noise_sigma is NaN")
def _(t): return _cfg(BASE.replace("noise_sigma = 0.05", "noise_sigma = nan"), ["tasks[0].noise_sigma: must be finite"])


@case("config: noise_sigma above 1 (pixel units)")
def _(t): return _cfg(BASE.replace("noise_sigma = 0.02", "noise_sigma = 1.5"), ["tasks[1].noise_sigma", "[0, 1]"])


@case("config: negative warmup")
def _(t): return _cfg(BASE, ["warmup: must be >= 0"], ["warmup=-1"])


@case("config: negative seed")
def _(t): return _cfg(BASE.replace("seeds = [0]", "seeds = [-1]"), ["seeds:"])


@case("config: duplicate seeds")
def _(t): return _cfg(BASE.replace("seeds = [0]", "seeds = [3, 3]"), ["seeds:", "distinct"])


@case("config: dtype float16 not supported")
def _(t): return _cfg(BASE, ["dtype: must be float32 or float64"], ['dtype="float16"'])


@case("config: device name not recognised")
def _(t): return _cfg(BASE, ["device: must be cpu, cuda, cuda:N or mps"], ['device="gpu0"'])


@case("config: a date where a string is expected")
def _(t): return _cfg(BASE.replace('name = "t"', "name = 1979-05-27"), ["name: expected a string, got date"])


@case("config: datetime inside solver overrides")
def _(t): return _cfg(BASE.replace('name = "_test_noisy"', 'name = "_test_noisy"\noverrides = { when = '
                                                           '1979-05-27T07:32:00 }'),
                      ["solvers[0].overrides.when: unsupported value type"])


@case("config: experiment name with a path separator")
def _(t): return _cfg(BASE.replace('name = "t"', 'name = "../escape"'), ["name: names use letters"])


@case("config: empty grid (no [[datasets]])")
def _(t): return _cfg(BASE.replace(DIGITS, "datasets = []\n"), ["datasets: at least one"])


@case("config: no [[solvers]] at all")
def _(t): return _cfg(BASE.split("[[solvers]]")[0], ["solvers: required key missing"])


@case("config: empty grid (every solver restricted to no task)")
def _(t): return _cfg(BASE, ["grid is empty"], ["solvers[0].tasks=[]"])


@case("config: empty grid (prior pairs with no dataset of its shape)")
def _(t): return _cfg(BASE.replace(DIGITS, '[[datasets]]\nname = "crops"\ntype = "bundled"\nn = 1\nsize = 8\n'),
                                ["grid is empty", "prior '_test-gauss' takes 1×8×8", "'crops' gives 3×8×8"])


@case("config: duplicate dataset names")
def _(t): return _cfg(BASE.replace(DIGITS, DIGITS + "\n" + DIGITS), ["datasets[1].name: duplicate name 'digits'"])


@case("config: duplicate task names")
def _(t): return _cfg(BASE, ["tasks[1].name: duplicate name 'inpaint'"], ['tasks[1].name="inpaint"'])


@case("config: duplicate solver labels")
def _(t): return _cfg(BASE + '\n[[solvers]]\nname = "_test_noisy"\n',
                      ["solvers[1].label: duplicate label '_test_noisy'"])


@case("config: duplicate prior labels")
def _(t): return _cfg(BASE.replace('[[priors]]\nname = "_test-gauss"\n',
                                   '[[priors]]\nname = "_test-gauss"\n\n[[priors]]\nname = "_test-gauss"\n'),
                      ["priors[1].label: duplicate label '_test-gauss'"])


@case("config: solver restricted to an undeclared task")
def _(t): return _cfg(BASE, ["solvers[0].tasks[0]: unknown task 'deblur'"], ['solvers[0].tasks=["deblur"]'])


@case("config: task_presets names an undeclared task")
def _(t): return _cfg(BASE, ["solvers[0].task_presets.deblur: unknown task"],
                      ['solvers[0].task_presets.deblur="default"'])


@case("config: unknown prior option")
def _(t): return _cfg(BASE, ["priors[0] (_test-gauss)", "bogus"], ["priors[0].options.bogus=1"])


@case("config: option table for a metric that takes no options")
def _(t): return _cfg(BASE + "\n[metrics.psnr]\ndata_range = 2\n", ["metrics.psnr", "takes no options", "data_range"])


@case("config: unknown option of a metric that has options")
def _(t): return _cfg(BASE.replace('"consistency"]', '"consistency", "lpips"]') + "\n[metrics.lpips]\nnett = 'vgg'\n",
                      ["metrics.image", "lpips", "nett"])

DPS_STEPS = ['solvers[0].name="dps"']


@case("overrides: DPS steps = 0 (refused before the run, not a grid of error rows)")
def _(t): return _cfg(BASE, ["solvers[0] (dps", "steps must be an integer in [1, 1000], got 0"],
                      [*DPS_STEPS, "solvers[0].overrides.steps=0"])


@case("overrides: DPS steps = -5")
def _(t): return _cfg(BASE, ["solvers[0] (dps", "steps must be an integer in [1, 1000], got -5"],
                      [*DPS_STEPS, "solvers[0].overrides.steps=-5"])


@case("overrides: DPS steps = 2.5 (not an integer)")
def _(t): return _cfg(BASE, ["solvers[0].overrides.steps", "must be an integer, got 2.5"],
                      [*DPS_STEPS, "solvers[0].overrides.steps=2.5"])


@case("overrides: DPS steps = 1e12 (a float)")
def _(t): return _cfg(BASE, ["solvers[0].overrides.steps", "must be an integer"],
                      [*DPS_STEPS, "solvers[0].overrides.steps=1e12"])


@case("overrides: DPS steps = 'many'")
def _(t): return _cfg(BASE, ["solvers[0].overrides.steps", "must be an integer, got 'many'"],
                      [*DPS_STEPS, "solvers[0].overrides.steps=many"])


@case("overrides: DPS steps = 2^63 (does not fit int64)")
def _(t): return _cfg(BASE, ["solvers[0].overrides.steps", "signed 64-bit"],
                      [*DPS_STEPS, f"solvers[0].overrides.steps={2**63}"])


@case("overrides: DPS steps = 2^63 - 1 (beyond the prior's grid)")
def _(t): return _cfg(BASE, ["solvers[0] (dps", "steps must be an integer in [1, 1000]"],
                      [*DPS_STEPS, f"solvers[0].overrides.steps={2**63 - 1}"])


@case("overrides: VML-MAP n_levels = 1e8 (a float)")
def _(t): return _cfg(BASE, ["solvers[0].overrides.n_levels", "must be an integer"],
                      ['solvers[0].name="vml_map"', "solvers[0].overrides.n_levels=1e8"])


@case("overrides: VML-MAP n_levels = 100000000 (cost estimate above the cap)")
def _(t): return _cfg(BASE, ["cost estimate", "network evaluations", "--allow-large-cost"],
                      ['solvers[0].name="vml_map"', "solvers[0].overrides.n_levels=100000000"])


@case("config: seed beyond int64")
def _(t): return _cfg(BASE.replace("seeds = [0]", "seeds = [100000000000000000000]"), ["seeds[0]", "signed 64-bit"])


@case("config: task name of 300 characters (file-name limit)")
def _(t): return _cfg(BASE, ["tasks[0].name", "at most 200 bytes"], [f'tasks[0].name="{"t" * 300}"'])


# ----------------------------------------------------------------------------- registry names (configs are data)


@case("names: solver 'os.system' is not imported, it is unknown")
def _(t): return _cfg(BASE, ["solvers[0].name", "unknown solver 'os.system'"], ['solvers[0].name="os.system"'])


@case("names: prior '__import__' is unknown")
def _(t): return _cfg(BASE, ["priors[0]", "unknown prior '__import__'"], ['priors[0].name="__import__"'])


@case("names: dataset type 'builtins.eval' is unknown")
def _(t): return _cfg(BASE, ["datasets[0]", "unknown dataset type 'builtins.eval'"],
                      ['datasets[0].type="builtins.eval"'])


@case("names: operator 'subprocess.Popen' is unknown")
def _(t): return _cfg(BASE, ["tasks[0].operator: unknown operator preset 'subprocess.Popen'"],
                      ['tasks[0].operator="subprocess.Popen"'])


@case("names: metric 'pickle.loads' is unknown")
def _(t): return _cfg(BASE, ["metrics.image", "unknown metric 'pickle.loads'"], [('metrics.image=["psnr", '
                                                                                  '"pickle.loads"]')])

# ----------------------------------------------------------------------------- data


@case("data: dataset root does not exist")
def _(t): return _cfg(_with_dataset(FOLDER), ["datasets[0] (imgs)", "is not a directory"])


@case("data: manifest missing")
def _(t):
    (t / "imgs").mkdir()
    np.save(t / "imgs" / "a.npy", GOOD)
    return _cfg(_with_dataset(FOLDER), ["datasets[0] (imgs)", "MANIFEST.sha256 not found"])


@case("data: manifest line without a sha256")
def _(t):
    _folder(t, {"a.npy": GOOD}, manifest="a.npy\n")
    return _cfg(_with_dataset(FOLDER), ["MANIFEST.sha256:1", "expected '<relative path> <sha256>'"])


@case("data: manifest lists no files")
def _(t):
    _folder(t, {"a.npy": GOOD}, manifest="# nothing\n")
    return _cfg(_with_dataset(FOLDER), ["lists no files"])


@case("data: listed file missing")
def _(t):
    root = _folder(t, {"a.npy": GOOD, "b.npy": GOOD})
    (root / "b.npy").unlink()
    return _cfg(_with_dataset(FOLDER), ["b.npy: file not found"])


@case("data: corrupt PNG (garbage bytes)")
def _(t):
    _folder(t, {"a.npy": GOOD, "bad.png": b"\x89PNG\r\n\x1a\nthis is not an image"})
    return _cfg(_with_dataset(FOLDER), ["bad.png: unreadable or corrupt image"])


@case("data: truncated PNG")
def _(t):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, format="PNG")
    _folder(t, {"cut.png": buf.getvalue()[: len(buf.getvalue()) // 2]})
    return _cfg(_with_dataset(FOLDER), ["cut.png: unreadable or corrupt image"])


@case("data: images of different sizes")
def _(t):
    _folder(t, {"a.npy": GOOD, "b.npy": np.full((1, 9, 9), 0.5)})
    return _cfg(_with_dataset(FOLDER), ["b.npy: image shape (1, 9, 9) differs"])


@case("data: image size does not match the prior it is paired with")
def _(t):
    _folder(t, {"a.npy": np.full((1, 16, 16), 0.5)})
    return _cfg(_with_dataset(FOLDER, '["imgs"]'), ["priors[0].datasets[0]", "(1, 8, 8)", "(1, 16, 16)"])


@case("data: RGBA PNG where 1 channel is declared")
def _(t):
    _folder(t, {"rgba.png": np.zeros((8, 8, 4), np.uint8)})
    return _cfg(_with_dataset(FOLDER), ["rgba.png: has 4 channels"])


@case("data: integer .npy (dtype)")
def _(t):
    _folder(t, {"int.npy": np.zeros((1, 8, 8), np.int64)})
    return _cfg(_with_dataset(FOLDER), ["int.npy", "must be float"])


@case("data: .npy holding a pickled object array")
def _(t):
    _folder(t, {"obj.npy": np.array([{"x": 1}, None], dtype=object)})
    return _cfg(_with_dataset(FOLDER), ["obj.npy: unreadable .npy file"])


@case("data: +Inf in a .npy image")
def _(t):
    a = GOOD.copy()
    a[0, 1, 1] = np.inf
    _folder(t, {"inf.npy": a})
    return _cfg(_with_dataset(FOLDER), ["inf.npy: contains NaN or Inf"])


@case("data: values outside [0, 1]")
def _(t):
    _folder(t, {"hot.npy": np.full((1, 8, 8), 1.25)})
    return _cfg(_with_dataset(FOLDER), ["hot.npy: values outside [0, 1]"])


@case("data: manifest lists the same file twice")
def _(t):
    root = _folder(t, {"a.npy": GOOD})
    line = f"a.npy {_sha(root / 'a.npy')}\n"
    (root / "MANIFEST.sha256").write_text(line + line)
    return _cfg(_with_dataset(FOLDER), ["duplicate entry 'a.npy'"])


@case("data: manifest sha256 of a different file (tampered image)")
def _(t):
    root = _folder(t, {"a.npy": GOOD, "b.npy": GOOD})
    np.save(root / "b.npy", np.full((1, 8, 8), 0.75))
    return _cfg(_with_dataset(FOLDER), ["b.npy: sha256 mismatch"])


@case("data: manifest path escaping the root with ../")
def _(t):
    np.save(t / "secret.npy", GOOD)
    _folder(t, {"a.npy": GOOD}, manifest=f"../secret.npy {_sha(t / 'secret.npy')}\n")
    return _cfg(_with_dataset(FOLDER), ["../secret.npy: path escapes the dataset root"])


@case("data: absolute path in the manifest")
def _(t):
    np.save(t / "secret.npy", GOOD)
    _folder(t, {"a.npy": GOOD}, manifest=f"{t / 'secret.npy'} {_sha(t / 'secret.npy')}\n")
    return _cfg(_with_dataset(FOLDER), ["absolute path in manifest"])


@case("data: symlink inside the root pointing outside it")
def _(t):
    np.save(t / "secret.npy", GOOD)
    root = _folder(t, {"a.npy": GOOD}, manifest="")
    (root / "link.npy").symlink_to(t / "secret.npy")
    (root / "MANIFEST.sha256").write_text(f"link.npy {_sha(t / 'secret.npy')}\n")
    return _cfg(_with_dataset(FOLDER), ["link.npy: path escapes the dataset root"])

def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` 8-bit grayscale pixels (no pixel data)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@case("data: PNG whose header claims 60000x60000 pixels (decompression bomb)")
def _(t):
    _folder(t, {"a.npy": GOOD, "huge.png": _png_header_only(60000, 60000)})
    return _cfg(_with_dataset(FOLDER), ["huge.png", "larger than the cap", "pixels"])


@case("data: PNG of 90 Mpx by its header (PIL's warning range)")
def _(t):
    _folder(t, {"a.npy": GOOD, "big.png": _png_header_only(10000, 9000)})
    return _cfg(_with_dataset(FOLDER), ["big.png", "larger than the cap"])


@case("data: .npy whose header claims 60000x60000 pixels")
def _(t):
    import io

    buf = io.BytesIO()   # the header of a (1, 60000, 60000) float32 array, no data
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": (1, 60000, 60000)})
    _folder(t, {"a.npy": GOOD, "big.npy": buf.getvalue()})
    return _cfg(_with_dataset(FOLDER), ["big.npy", "exceeds the cap"])


@case("data: palette GIF where 1 channel is declared")
def _(t):
    root = _folder(t, {"a.npy": GOOD}, manifest="")
    Image.fromarray(np.zeros((8, 8), np.uint8)).convert("P").save(root / "pal.gif")
    (root / "MANIFEST.sha256").write_text(make_manifest(root) + f"pal.gif {_sha(root / 'pal.gif')}\n")
    return _cfg(_with_dataset(FOLDER), ["pal.gif", "palette image (mode P)", "convert it"])


@case("data: a 1x1 image among 8x8 ones names the odd file")
def _(t):
    _folder(t, {"a_tiny.png": np.zeros((1, 1), np.uint8), "b.png": np.zeros((8, 8), np.uint8),
                "c.png": np.zeros((8, 8), np.uint8)})
    return _cfg(_with_dataset(FOLDER), ["a_tiny.png: image shape (1, 1, 1) differs from (1, 8, 8)"])


@case("config: /dev/zero as the config file")
def _(t): return Case(["run", "/dev/zero", "--out", "OUT"], ("/dev/zero", "not a regular file"))


@case("config: a FIFO as the config file (would block forever)")
def _(t):
    os.mkfifo(t / "fifo.toml")
    return Case(["run", str(t / "fifo.toml"), "--out", "OUT"], ("fifo.toml", "not a regular file"))


@case("config: larger than the 4 MiB cap")
def _(t): return _cfg(BASE + ("# padding\n" * 500_000), ["cannot read config", "at most"])


# ----------------------------------------------------------------------------- priors (checkpoints)

# small-cpu with a checkpoint from the case folder; a shipped solver, so that the installed console
# script (without the test-only parts) reaches the checkpoint too
SMALL = (BASE.replace('name = "_test-gauss"', 'name = "small-cpu"\ncheckpoint = "ck.pt"')
         .replace('name = "_test_noisy"', 'name = "dps"\noverrides = { steps = 2 }'))


def _small_cpu_state() -> dict:
    from invbench.priors.small_unet import build_small_unet

    torch.manual_seed(0)
    return build_small_unet().state_dict()


class _Evil:
    """Unpickling this would run ``os.system('touch <sentinel>')``."""

    def __init__(self, target: Path):
        self.cmd = f"touch {target}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _never_ran(t: Path) -> None:
    assert not (t / SENTINEL).exists(), "code from the checkpoint was executed"


@case("priors: checkpoint file missing")
def _(t): return _cfg(SMALL, ["priors[0].checkpoint: file not found", "ck.pt"])


@case("priors: checkpoint is an empty file")
def _(t):
    (t / "ck.pt").write_bytes(b"")
    return _cfg(SMALL, ["priors[0] (small-cpu)", "ck.pt", "weights_only=True"])


@case("priors: truncated checkpoint")
def _(t):
    torch.save(_small_cpu_state(), t / "full.pt")
    data = (t / "full.pt").read_bytes()
    (t / "ck.pt").write_bytes(data[: len(data) // 2])
    return _cfg(SMALL, ["priors[0] (small-cpu)", "ck.pt", "cannot be loaded"])


@case("priors: checkpoint of another architecture")
def _(t):
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(4, 4)).state_dict(), t / "ck.pt")
    return _cfg(SMALL, ["priors[0] (small-cpu)", "ck.pt does not match", "missing"])


@case("priors: checkpoint that is not a state dict")
def _(t):
    torch.save([torch.zeros(2), torch.ones(3)], t / "ck.pt")
    return _cfg(SMALL, ["ck.pt is not a state dict of tensors"])


@case("priors: pinned sha256 does not match")
def _(t):
    torch.save(_small_cpu_state(), t / "ck.pt")
    return _cfg(SMALL, ["ck.pt: sha256", "does not match pinned"], [f'priors[0].options.sha256="{"0" * 64}"'])


@case("priors: torch checkpoint whose unpickling runs os.system (__reduce__)")
def _(t):
    torch.save({"w": torch.zeros(2), "payload": _Evil(t / SENTINEL)}, t / "ck.pt")
    return _cfg(SMALL, ["ck.pt cannot be loaded", "weights_only=True", "UnpicklingError", "GLOBAL posix.system",
                        "nothing in the file was executed"], after=_never_ran)


@case("priors: legacy (non-zip) torch checkpoint with a __reduce__ payload")
def _(t):
    torch.save({"payload": _Evil(t / SENTINEL)}, t / "ck.pt", _use_new_zipfile_serialization=False)
    return _cfg(SMALL, ["ck.pt cannot be loaded", "weights_only=True", "GLOBAL posix.system"], after=_never_ran)


@case("priors: raw pickle with a __reduce__ payload")
def _(t):
    (t / "ck.pt").write_bytes(pickle.dumps(_Evil(t / SENTINEL)))
    return _cfg(SMALL, ["ck.pt cannot be loaded", "weights_only=True", "refused"], after=_never_ran)


@case("priors: checkpoint is a directory")
def _(t):
    (t / "ck.pt").mkdir()
    return _cfg(SMALL, ["priors[0].checkpoint", "ck.pt is a directory, not a regular file"])


@case("priors: checkpoint is /dev/zero")
def _(t): return _cfg(SMALL, ["priors[0].checkpoint", "/dev/zero is a device"], ['priors[0].checkpoint="/dev/zero"'])


@case("priors: unknown prior name")
def _(t): return _cfg(BASE, ["priors[0]", "unknown prior 'gmm-digitz'"], ['priors[0].name="gmm-digitz"'])

# ----------------------------------------------------------------------------- stores / run directory


def _existing_run(t: Path, *, corrupt: bytes | None = None, schema: str | None = None) -> None:
    out = t / "out"
    out.mkdir()
    db = out / "results.sqlite"
    if corrupt is not None:
        db.write_bytes(corrupt)
    if schema is not None:
        con = sqlite3.connect(db)
        con.executescript(schema)
        con.close()


@case("store: corrupt results.sqlite with --resume")
def _(t):
    _existing_run(t, corrupt=b"SQLite format 3\x00" + os.urandom(3000))
    return Case(["run", "CFG", "--out", "OUT", "--resume", "--no-progress"], ("results.sqlite", "store"), config=BASE)


@case("store: results.sqlite that is a text file, with --resume")
def _(t):
    _existing_run(t, corrupt=b"this is not a database\n" * 100)
    return Case(["run", "CFG", "--out", "OUT", "--resume", "--no-progress"], ("results.sqlite", "not a database"),
                config=BASE)


@case("store: store of an older schema (missing columns), with --resume")
def _(t):
    _existing_run(t, schema="CREATE TABLE results (row_id TEXT PRIMARY KEY, status TEXT);"
                            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);")
    return Case(["run", "CFG", "--out", "OUT", "--resume", "--no-progress"], ("results table lacks columns",),
                config=BASE)


@case("store: --out is an existing file")
def _(t):
    (t / "out").write_text("not a folder")
    return _cfg(BASE, ["--out", "exists and is not a directory"])


@case("store: read-only output folder (EACCES on the write probe)")
def _(t):
    (t / "ro").mkdir()
    return Case(["run", "CFG", "--out", str(t / "ro" / "run"), "--no-progress"], ("not writable", "ro/run"),
                config=BASE, extra={"readonly": t / "ro"})

@case("store: --out is a non-empty folder that holds no run (user files never swept)")
def _(t):
    (t / "out" / "p" / "s").mkdir(parents=True)
    (t / "out" / "p" / ".notes.tmp").write_text("x")
    (t / "out" / "p" / "s" / ".d.tmp").write_text("y")
    return _cfg(BASE, ["--out", "folder is not empty and holds no run", "--allow-nonempty-out"])


@case("store: --out is a dangling symbolic link")
def _(t):
    (t / "out").symlink_to(t / "gone")
    return _cfg(BASE, ["--out", "symbolic link to a missing target"])


# ----------------------------------------------------------------------------- resume with changed inputs


def _run_api(cfg_text: str, t: Path, out: str = "out", delete_rows: int = 0) -> None:
    """Write ``c.toml`` and run it into ``t/out`` through the API (the case's starting state);
    then delete ``delete_rows`` rows so that a resume has work to do."""
    from invbench.bench import config, run

    (t / "c.toml").write_text(cfg_text)
    exp = config.load(t / "c.toml")
    run.run(run.prepare(exp, t / out), t / out)
    if delete_rows:
        con = sqlite3.connect(t / out / "results.sqlite")
        con.execute(f"DELETE FROM results WHERE row_id IN (SELECT row_id FROM results LIMIT {delete_rows})")
        con.commit()
        con.close()


RESUME = ["run", "CFG", "--out", "OUT", "--resume", "--no-progress"]


@case("resume: dataset images and manifest rewritten since the run started")
def _(t):
    root = _folder(t, {"a.npy": GOOD, "b.npy": np.full((1, 8, 8), 0.25)})
    _run_api(_with_dataset(FOLDER), t, delete_rows=2)
    np.save(root / "b.npy", np.full((1, 8, 8), 0.75))
    (root / "MANIFEST.sha256").write_text(make_manifest(root))
    return Case(RESUME, ("--resume refused", "inputs changed", "datasets.imgs.images", "datasets.imgs.manifest"))


@case("resume: checkpoint file replaced at the same path")
def _(t):
    torch.save(_small_cpu_state(), t / "ck.pt")
    text = (SMALL.replace(DIGITS, '[[datasets]]\nname = "crops"\ntype = "bundled"\nn = 1\nsize = 32\n')
            .replace("steps = 2", "steps = 1"))
    text = text.split("[[tasks]]")[0] + '[[tasks]]\nname = "sr"\noperator = "sr4_avgpool"\nnoise_sigma = 0.02\n' \
        + "\n[[solvers]]" + text.split("[[solvers]]")[1]
    _run_api(text, t, delete_rows=1)
    sd = _small_cpu_state()
    k = next(iter(sd))
    sd[k] = sd[k] + 1.0
    torch.save(sd, t / "ck.pt")
    return Case(RESUME, ("--resume refused", "inputs changed", "priors.small-cpu.checkpoint"))


# ----------------------------------------------------------------------------- CLI misuse


@case("cli: no arguments")
def _(t): return Case([], ("required",))


@case("cli: unknown subcommand")
def _(t): return Case(["runn", "CFG"], ("invalid choice: 'runn'",), config=BASE)


@case("cli: run without CONFIG")
def _(t): return Case(["run", "--out", "OUT"], ("required: config",))


@case("cli: unknown option")
def _(t): return Case(["run", "CFG", "--bogus"], ("unrecognized arguments: --bogus",), config=BASE)


@case("cli: --executor not a choice")
def _(t): return Case(["run", "CFG", "--executor", "ssh"], ("--executor", "invalid choice: 'ssh'"), config=BASE)


@case("cli: --shards not an integer")
def _(t): return Case(["run", "CFG", "--shards", "two"], ("--shards", "invalid int value: 'two'"), config=BASE)


@case("cli: --shards 0 (would submit no job)")
def _(t): return Case(["run", "CFG", "--out", "OUT", "--executor", "submitit-debug", "--shards", "0"],
                      ("--shards", "must be >= 1"), config=BASE)


@case("cli: --set without '='")
def _(t): return _cfg(BASE, ["--set 'batch_size'", "expected KEY=VALUE"], ["batch_size"])


@case("cli: --set with a malformed key path")
def _(t): return _cfg(BASE, ["bad key path 'solvers[x].name'"], ["solvers[x].name=dps"])


@case("cli: --set an unknown key")
def _(t): return _cfg(BASE, ["solvers[0].stepz: unknown key"], ["solvers[0].stepz=3"])


@case("cli: --set an index that does not exist")
def _(t): return _cfg(BASE, ["solvers[5] does not exist"], ["solvers[5].name=dps"])


@case("cli: --set into a scalar")
def _(t): return _cfg(BASE, ["seeds.x is not inside a table"], ["seeds.x=1"])


@case("cli: --set with an unclosed inline table")
def _(t): return _cfg(BASE, ["--set", "solvers[0].overrides={steps=3", "malformed TOML value"],
                      ["solvers[0].overrides={steps=3"])


@case("report: --out is an existing file")
def _(t):
    _run_api(BASE, t, out="run")
    (t / "report.txt").write_text("mine")
    return Case(["report", str(t / "run"), "--out", str(t / "report.txt")],
                ("report --out", "exists and is not a directory"))


@case("report: --out inside the run folder")
def _(t):
    _run_api(BASE, t, out="run")
    return Case(["report", str(t / "run"), "--out", str(t / "run" / "recon")],
                ("report --out", "inside the run folder"))


@case("report: --out is a dangling symbolic link")
def _(t):
    _run_api(BASE, t, out="run")
    (t / "rep").symlink_to(t / "gone")
    return Case(["report", str(t / "run"), "--out", str(t / "rep")],
                ("report --out", "symbolic link to a missing target"))


@case("cli: report on a folder that is not a run")
def _(t):
    (t / "notarun").mkdir()
    return Case(["report", str(t / "notarun"), "--out", "OUT"], ("notarun", "results.sqlite"))


# ----------------------------------------------------------------------------- the test


def _materialise(t: Path, c: Case) -> list[str]:
    cfg = t / "c.toml"
    if c.config is not None:
        if isinstance(c.config, bytes):
            cfg.write_bytes(c.config)
        else:
            cfg.write_text(c.config)
    return [str(cfg) if a == "CFG" else str(t / c.out) if a == "OUT" else a for a in c.argv]


def check_error_line(err: str, needles) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got:\n{err}"
    line = lines[0]
    assert line.startswith("invbench: error: "), line
    assert "Traceback" not in err and line.isprintable(), repr(line)
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, capsys, monkeypatch, figures):
    t = tmp_path / "case"
    t.mkdir()
    c = CASES[name](t)
    argv = _materialise(t, c)
    ro = c.extra.get("readonly")
    if ro is not None:
        os.chmod(ro, 0o555)
        if os.geteuid() == 0:   # root ignores permissions: make the probe fail as it would for a user
            import tempfile

            real = tempfile.mkstemp

            def mkstemp(*a, **kw):
                if Path(kw.get("dir", "")).resolve() == ro.resolve():
                    raise PermissionError(errno.EACCES, "Permission denied")
                return real(*a, **kw)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    before = tree_digest(t)
    try:
        rc, _, err = cli(capsys, argv)
    finally:
        if ro is not None:
            os.chmod(ro, 0o755)
    assert rc == c.rc, (rc, err)
    check_error_line(err, c.needles)
    assert tree_digest(t) == before, "the command wrote into the case folder"
    if c.after is not None:
        c.after(t)


def test_corpus_size(figures):
    """The corpus has at least 40 named cases (the campaign's floor, docs/reliability.md); the count goes
    to the report."""
    figures.record("corpus_cases", len(CASES))
    assert len(CASES) >= 40


# ----------------------------------------------------------------------------- real process exit codes

SUBPROCESS_CASES = [
    "cli: no arguments",
    "priors: raw pickle with a __reduce__ payload",   # torch warns on stderr for this one: still one line
]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_real_process(name, tmp_path):
    """Through the installed console script: the process exit code and stderr are the same."""
    exe = Path(sys.executable).with_name("invbench")
    if not exe.exists():
        pytest.skip("invbench console script not installed next to the interpreter")
    t = tmp_path / "case"
    t.mkdir()
    c = CASES[name](t)
    argv = _materialise(t, c)
    before = tree_digest(t)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=300, env=env, cwd=t, check=False)
    assert r.returncode == c.rc, r.stderr
    check_error_line(r.stderr, c.needles)
    assert tree_digest(t) == before
    if c.after is not None:
        c.after(t)


# ----------------------------------------------------------------------------- failures during a run


def _snapshot(run_dir: Path):
    from invbench.bench import store

    df = store.load_results(run_dir).sort_values("row_id").reset_index(drop=True)
    files = {rel: (run_dir / rel).read_bytes() for rel in df.recon_path.dropna()}
    return df, files


@pytest.mark.parametrize("where", ["file", "sqlite"])
def test_disk_full_mid_run_exit_1_then_resume(tmp_path, capsys, monkeypatch, where):
    """ENOSPC while writing a reconstruction (``os.replace`` of the atomic write) or while
    committing rows (SQLite 'database or disk is full'), simulated in process after some rows:
    exit 1 with one line naming the error; the store holds only complete rows (each with its
    files, no temp files left); --resume finishes the run identical to an uninterrupted one."""
    from invbench.bench import store

    cfg = tmp_path / "c.toml"
    cfg.write_text(BASE.replace("limit = 3", "limit = 4"))
    ref = tmp_path / "ref"
    rc, _, err = cli(capsys, ["run", cfg, "--out", ref, "--no-progress"])
    assert rc == 0, err
    out = tmp_path / "full"
    calls = {"n": 0}
    if where == "file":
        real = os.replace

        def replace(src, dst, *a, **kw):
            if str(dst).endswith(".png") and "/recon/" in str(dst):
                calls["n"] += 1
                if calls["n"] > 3:
                    raise OSError(errno.ENOSPC, "No space left on device", str(dst))
            return real(src, dst, *a, **kw)

        monkeypatch.setattr(os, "replace", replace)
        needle = ["No space left on device", "/recon/", "--resume"]
    else:
        real_w = store.Store.write_rows

        def write_rows(self, rows):
            calls["n"] += 1
            if calls["n"] > 3:
                raise sqlite3.OperationalError("database or disk is full")
            return real_w(self, rows)

        monkeypatch.setattr(store.Store, "write_rows", write_rows)
        needle = ["database or disk is full", "results.sqlite", "--resume"]
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress"])
    assert rc == 1
    check_error_line(err, needle)   # names the file and how to continue
    monkeypatch.undo()
    df = store.load_results(out)
    assert 0 < len(df) < 8 and set(df.status) == {"ok"}
    assert all((out / rel).is_file() for rel in df.recon_path)
    assert not [p for p in out.rglob("*tmp")]
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--resume", "--no-progress"])
    assert rc == 0, err
    a, fa = _snapshot(ref)
    b, fb = _snapshot(out)
    cols = ["row_id", "status", "psnr", "mse", "consistency", "recon_path"]
    assert a[cols].equals(b[cols]) and fa == fb


# ----------------------------------------------------------------------------- metrics without weights


def test_missing_metric_weights_are_unavailable_not_an_error(tmp_path, capsys, monkeypatch):
    """Documented outcome (docs/metrics.md, docs/reliability.md): a metric whose weights are
    missing is recorded as 'unavailable: <why>' (exit 0, NULL column), because a run without
    LPIPS/FID is still useful. A config that *demands* the metric names its weights file;
    ``invbench check --config`` then exits 1 while that file is missing — the pre-flight gate."""
    from invbench.bench import store

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    text = BASE.replace('image = ["psnr", "mse", "consistency"]',
                        'image = ["psnr", "lpips"]\nset = ["fid"]\n[metrics.lpips]\nweights = '
                        '"w/alexnet-owt-7be5be79.pth"\n[metrics.fid]\ninception_path = "w/inception-2015-12-05.pt"')
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    out = tmp_path / "run"
    rc, _, err = cli(capsys, ["run", cfg, "--out", out, "--no-progress"])
    assert rc == 0, err
    df = store.load_results(out)
    ms = store.load_metric_status(out).set_index("metric")
    assert set(df.status) == {"ok"} and df.lpips.isna().all() and df.psnr.notna().all()
    for m, f in (("lpips", "alexnet-owt-7be5be79.pth"), ("fid", "inception-2015-12-05.pt")):
        assert ms.loc[m, "available"] == 0 and ms.loc[m, "note"].startswith("unavailable:") and f in ms.loc[m, "note"]
    sm = store.load_set_metrics(out)
    assert sm.value.isna().all() and sm.note.str.startswith("unavailable").all()
    rc, o, _ = cli(capsys, ["check", "--config", cfg])
    assert rc == 1 and "metrics.lpips.weights" in o and "MISSING" in o
