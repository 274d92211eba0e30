"""``invbench fetch`` on a weights folder other people can write into, and against servers
and files that are not what the table says (the third reliability round).

* Planted links: a symbolic link (or a second hard link) at ``<file>.part``, at the manifest's
  temporary name or at the final name never makes fetch write into the file it points to; the
  victim file is byte-identical afterwards.
* Published size: a download stops once it has more bytes than the table's size (an endless
  body is cut after at most size + 1 bytes read), the entry and the size are named and nothing
  is kept.
* ``--from``: a file that cannot be checked (no published checksum) is refused unless the user
  passes ``--trust-unverified``, which the manifest, ``invbench fetch`` (listing) and
  ``invbench check`` show; FID never loads (``torch.jit.load``) an Inception file whose record
  is an unchecked import, and it loads exactly the bytes it hashed.

Every request goes to an HTTP server on 127.0.0.1 started by the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from pathlib import Path

import pytest
import torch
from invbench.assets import weights as W
from test_bad_inputs import check_error_line

from tests.helpers.http_server import local_server
from tests.helpers.reliability import cli

FILENAME = "standin-weights.bin"


# --------------------------------------------------------------------------- server
@pytest.fixture
def server():
    with local_server() as srv:
        yield srv


def _data(n: int = 300_000, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _entry(monkeypatch, server, data: bytes, *, size: int | None = None, sha256: str | None = "auto",
           route: dict | None = None) -> W.WeightFile:
    """A stand-in table entry ``standin`` served at ``/standin-weights.bin``."""
    server.routes["/" + FILENAME] = route or {"data": data}
    w = W.WeightFile(name="standin", filename=FILENAME, urls=(f"{server.url}/{FILENAME}",), size=size,
                     sha256=hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256,
                     sha256_prefix=None, used_by="tests", source="tests")
    monkeypatch.setitem(W.TABLE, "standin", w)
    return w


def _victim(tmp_path: Path) -> tuple[Path, bytes]:
    """A file of the user's own, outside the weights folder, that nothing may change."""
    victim = tmp_path / "victim.txt"
    content = b"my thesis, chapter 3\n"
    victim.write_bytes(content)
    return victim, content


def _fetch(capsys, folder: Path, *extra: str) -> tuple[int, str, str]:
    return cli(capsys, ["fetch", "standin", "--dir", folder, "--no-progress", *extra])


# --------------------------------------------------------------------------- planted links
@pytest.mark.parametrize("how", ["download", "from"])
def test_symlink_planted_at_part_is_refused_and_victim_unchanged(tmp_path, server, monkeypatch, capsys, how):
    data = _data()
    _entry(monkeypatch, server, data)
    victim, content = _victim(tmp_path)
    folder = tmp_path / "w"
    folder.mkdir()
    part = folder / (FILENAME + ".part")
    part.symlink_to(victim)
    extra = ()
    if how == "from":
        src = tmp_path / "by-hand.bin"
        src.write_bytes(data)
        extra = ("--from", str(src))
    rc, _out, err = _fetch(capsys, folder, *extra)
    assert rc == 2, err
    check_error_line(err, [str(part), "symbolic link"])
    assert victim.read_bytes() == content
    assert not (folder / FILENAME).exists() and server.log == []


def test_hard_link_planted_at_part_is_refused_and_victim_unchanged(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server, _data())
    victim, content = _victim(tmp_path)
    folder = tmp_path / "w"
    folder.mkdir()
    part = folder / (FILENAME + ".part")
    os.link(victim, part)
    rc, _out, err = _fetch(capsys, folder)
    assert rc == 2, err
    check_error_line(err, [str(part), "hard link"])
    assert victim.read_bytes() == content and server.log == []


def test_symlink_planted_at_manifest_tmp_is_never_written_through(tmp_path, server, monkeypatch, capsys):
    data = _data()
    _entry(monkeypatch, server, data)
    victim, content = _victim(tmp_path)
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / (W.MANIFEST_NAME + ".tmp")).symlink_to(victim)
    rc, _out, err = _fetch(capsys, folder)
    assert rc == 0, err
    assert victim.read_bytes() == content
    manifest = folder / W.MANIFEST_NAME
    assert not manifest.is_symlink()
    assert json.loads(manifest.read_text())[FILENAME]["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in folder.iterdir()) == sorted([FILENAME, W.MANIFEST_NAME, W.MANIFEST_NAME + ".tmp"])


def test_symlink_planted_at_final_name_is_replaced_not_written_through(tmp_path, server, monkeypatch, capsys):
    data = _data()
    _entry(monkeypatch, server, data)
    victim, content = _victim(tmp_path)
    folder = tmp_path / "w"
    folder.mkdir()
    (folder / FILENAME).symlink_to(victim)
    rc, _out, err = _fetch(capsys, folder)
    assert rc == 0, err
    assert victim.read_bytes() == content
    assert not (folder / FILENAME).is_symlink() and (folder / FILENAME).read_bytes() == data


# --------------------------------------------------------------------------- published size
def test_download_stops_at_the_published_size(tmp_path, server, monkeypatch, capsys):
    """An endless body (no Content-Length) for a 300 kB entry: fetch reads at most size + 1 bytes,
    hangs up, names the entry and the size, and keeps nothing. The server can push only what
    the socket buffers hold after that, far below what it would send to a reader that goes on."""
    size = 300_000
    endless = 256 << 20
    _entry(monkeypatch, server, b"", size=size, sha256="ab" * 32, route={"endless": endless})
    folder = tmp_path / "w"
    rc, _out, err = _fetch(capsys, folder)
    assert rc == 1, err
    check_error_line(err, ["standin", FILENAME, f"published size of {size} bytes", "deleted"])
    assert sorted(p.name for p in folder.iterdir()) == []
    assert server.sent < 64 << 20


def test_entries_without_a_published_size_stop_at_their_limit(tmp_path, server, monkeypatch, capsys):
    """With no published size (FID's Inception, ADM), an endless body used to be written until the
    disk was full; the entry's ``max_bytes`` now bounds it, and every such entry has one."""
    import dataclasses

    assert all(w.limit is not None for w in W.TABLE.values()), "an entry with no bound on its size"
    w = _entry(monkeypatch, server, b"", size=None, sha256=None, route={"endless": 64 << 20})
    monkeypatch.setitem(W.TABLE, "standin", dataclasses.replace(w, max_bytes=1 << 20))
    folder = tmp_path / "w"
    rc, _out, err = _fetch(capsys, folder)
    assert rc == 1, err
    check_error_line(err, ["standin", FILENAME, f"limit of {1 << 20} bytes", "deleted"])
    assert sorted(p.name for p in folder.iterdir()) == []
    assert server.sent < 32 << 20


def test_content_length_above_the_published_size_is_refused_before_writing(tmp_path, server, monkeypatch, capsys):
    data = _data(500_000)
    _entry(monkeypatch, server, data, size=300_000)
    folder = tmp_path / "w"
    rc, _out, err = _fetch(capsys, folder)
    assert rc == 1, err
    check_error_line(err, ["standin", FILENAME, "published size of 300000 bytes", "500000"])
    assert list(folder.iterdir()) == [] and len(server.log) == 1    # a final error: not retried


# --------------------------------------------------------------------------- --from without a checksum
def _random_inception(tmp_path: Path) -> Path:
    src = tmp_path / "downloaded-somewhere.pt"
    src.write_bytes(_data(5000, seed=3))
    return src


def test_from_unverifiable_file_is_refused_without_the_flag(tmp_path, capsys):
    src = _random_inception(tmp_path)
    folder = tmp_path / "w"
    rc, _out, err = cli(capsys, ["fetch", "fid", "--dir", folder, "--from", src])
    assert rc == 2
    check_error_line(err, ["fid", str(src), "no published checksum", "--trust-unverified"])
    assert not folder.exists() or list(folder.iterdir()) == []


def test_trust_unverified_is_recorded_and_shown(tmp_path, capsys, monkeypatch):
    src = _random_inception(tmp_path)
    folder = tmp_path / "w"
    rc, out, err = cli(capsys, ["fetch", "fid", "--dir", folder, "--from", src, "--trust-unverified"])
    assert rc == 0, err
    assert "trusted by the user" in out
    rec = json.loads((folder / W.MANIFEST_NAME).read_text())["inception-2015-12-05.pt"]
    assert rec["verified"] is False and rec["trusted_by_user"] is True
    assert rec["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    rc, out, _err = cli(capsys, ["fetch", "--dir", folder])             # the listing
    (line,) = [ln for ln in out.splitlines() if ln.startswith("fid: ")]
    assert rc == 0 and "present" in line and "trusted by the user" in line
    monkeypatch.setenv(W.ENV_VAR, str(folder))
    rc, out, _err = cli(capsys, ["check"])
    (line,) = [ln for ln in out.splitlines() if ln.startswith("weights fid: ")]
    assert "UNVERIFIED" in line and "trusted by the user" in line
    rc, out, _err = cli(capsys, ["fetch", "fid", "--dir", folder])      # accepted: nothing requested
    assert rc == 0 and "already present" in out


def test_trust_unverified_needs_from(tmp_path, capsys):
    rc, _out, err = cli(capsys, ["fetch", "fid", "--dir", tmp_path, "--trust-unverified"])
    assert rc == 2
    check_error_line(err, ["--trust-unverified", "--from"])


# --------------------------------------------------------------------------- FID's loading path
@pytest.fixture
def jit_loads(monkeypatch) -> list:
    """Every ``torch.jit.load`` call (then the real one)."""
    calls: list = []
    real = torch.jit.load

    def spy(f, *a, **k):
        calls.append(f)
        return real(f, *a, **k)

    monkeypatch.setattr(torch.jit, "load", spy)
    return calls


@pytest.mark.parametrize("record", [
    # what `fetch fid --from FILE` recorded before the third reliability round
    {"url": "local copy of /somewhere/inception.pt", "check": "none published: sha256 recorded at download"},
    {"url": "local copy of /somewhere/inception.pt", "verified": False, "trusted_by_user": False},
], ids=["old-import-record", "unverified-record"])
def test_fid_does_not_load_an_unverified_import(tmp_path, monkeypatch, jit_loads, record):
    from invbench.bench import metrics as M

    folder = tmp_path / "w"
    folder.mkdir()
    inc = folder / "inception-2015-12-05.pt"
    inc.write_bytes(_data(5000, seed=3))
    W.write_manifest_entry(folder, inc.name, {"sha256": W.sha256_file(inc), "bytes": 5000, **record})
    monkeypatch.setenv(W.ENV_VAR, str(folder))
    (f,) = M.build_set(["fid"])
    assert not f.verified and "unverified" in f.unavailable and "--trust-unverified" in f.unavailable
    assert jit_loads == []


class _Scaled(torch.nn.Module):
    """A TorchScript stand-in with clean-fid's interface; features = ``scale`` x mean colour."""

    def __init__(self, scale: float):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(3, 2048, 1, bias=False))
        torch.nn.init.constant_(self.layers[1].weight, scale)

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


def _save_scripted(module: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():  # torch.jit.script deprecation notice
        warnings.simplefilter("ignore")
        torch.jit.script(module).save(str(path))


def test_fid_loads_the_bytes_it_checked(tmp_path, monkeypatch, jit_loads):
    """The recorded Inception file is replaced right after FID hashed it (another user of a shared
    folder): the network FID uses is the checked one, not the replacement."""
    from invbench.bench.metrics import fid as F

    folder = tmp_path / "w"
    folder.mkdir()
    inc = folder / F.INCEPTION_FILE
    _save_scripted(_Scaled(1.0), inc)
    W.write_manifest_entry(folder, inc.name, {"sha256": W.sha256_file(inc), "url": "test"})
    _save_scripted(_Scaled(-7.0), tmp_path / "swap.pt")
    real = F._digest

    def digest_then_swap(data: bytes) -> str:
        out = real(data)
        os.replace(tmp_path / "swap.pt", inc)
        return out

    monkeypatch.setattr(F, "_digest", digest_then_swap)
    monkeypatch.setenv(W.ENV_VAR, str(folder))
    m = F.FIDMetric()
    assert m.verified and m.unavailable is None and len(jit_loads) == 1
    with torch.no_grad():
        feats = m.extractor(torch.full((1, 3, 299, 299), 200.0))
    assert float(feats.mean()) > 0          # scale 1.0: the checked network (-7.0 would be negative)
