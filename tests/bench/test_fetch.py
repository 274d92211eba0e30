"""``invbench fetch`` against a local HTTP server on 127.0.0.1 started inside the tests.

Stand-in files (a few MiB of seeded random bytes) replace the table entries through
``monkeypatch.setitem(weights.TABLE, ...)`` with their checksums; an audit hook fails any
connection to an address other than 127.0.0.1. Covered: success, resume within one call and
across calls (the server drops mid-file), checksum mismatch, HTTP 404/500, offline, unwritable
folder, disk full, an already-present file (no request), manual-only files and ``--from``, and
the lookups of the metrics, the ADM priors and ``invbench check``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import socket
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
from invbench.assets import weights as W
from invbench.bench import cli, fetch, fetch_files

from tests.helpers.http_server import local_server

# --------------------------------------------------------------------------- loopback guard
_GUARD = {"on": False}


def _hook(event, args):
    if _GUARD["on"] and event == "socket.connect":
        addr = args[1]
        if isinstance(addr, tuple) and addr[0] not in ("127.0.0.1", "::1", "localhost"):
            raise RuntimeError(f"test tried to reach {addr!r}")


sys.addaudithook(_hook)  # cannot be removed; inert unless a test switches it on


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.0)
    _GUARD["on"] = True
    yield
    _GUARD["on"] = False


def test_guard_refuses_other_addresses():
    with pytest.raises(RuntimeError, match="tried to reach"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.01)  # TEST-NET-1: refused by the hook first


# --------------------------------------------------------------------------- server
@pytest.fixture
def server():
    with local_server() as srv:
        yield srv


def _data(n: int = 3 * (1 << 20) + 12345, seed: int = 0) -> bytes:
    import random

    return random.Random(seed).randbytes(n)


def _entry(monkeypatch, server, data: bytes, name: str = "standin", sha256: str | None = "auto",
           prefix: str | None = None, size: int | None = None, route: dict | None = None,
           filename: str = "standin-weights.bin") -> W.WeightFile:
    path = f"/{filename}"
    server.routes[path] = {"data": data, **(route or {})}
    w = W.WeightFile(name=name, filename=filename, urls=(server.url + path,), size=size,
                     sha256=hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256,
                     sha256_prefix=prefix, used_by="tests", source="tests")
    monkeypatch.setitem(W.TABLE, name, w)
    return w


def _run(capsys, argv):
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- download paths
def test_success_writes_verified_file_atomically(tmp_path, server, monkeypatch, capsys):
    data = _data()
    _entry(monkeypatch, server, data, size=len(data))
    rc, out, err = _run(capsys, ["fetch", "standin", "--dir", str(tmp_path / "w"), "--no-progress"])
    assert rc == 0, err
    f = tmp_path / "w" / "standin-weights.bin"
    assert f.read_bytes() == data
    assert sorted(p.name for p in f.parent.iterdir()) == ["manifest.json", "standin-weights.bin"]  # no .part
    rec = json.loads((f.parent / "manifest.json").read_text())["standin-weights.bin"]
    assert rec["sha256"] == hashlib.sha256(data).hexdigest() and rec["bytes"] == len(data)
    assert rec["url"] == server.url + "/standin-weights.bin" and rec["check"] == "published checksum"
    assert hashlib.sha256(data).hexdigest() in out and server.log == [("/standin-weights.bin", None)]


def test_concurrent_fetches_into_one_folder_download_once(tmp_path, server, monkeypatch):
    """Two fetches of one file into one folder at once (two jobs of an array): the folder lock
    serialises them; the file is requested once, both succeed, the file and manifest are whole."""
    data = _data()
    _entry(monkeypatch, server, data, size=len(data), route={"slow": 0.02})
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(fetch.run(["standin"], tmp_path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert codes == [0, 0]
    assert server.log == [("/standin-weights.bin", None)]          # one request, no second download
    assert (tmp_path / "standin-weights.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "standin-weights.bin"]
    assert W.locate("standin", [tmp_path]).verified


def test_torchvision_prefix_convention_is_checked(tmp_path, server, monkeypatch):
    data = _data(200_000, seed=1)
    good = hashlib.sha256(data).hexdigest()[:8]
    _entry(monkeypatch, server, data, sha256=None, prefix=good)
    assert fetch.run(["standin"], tmp_path) == 0
    assert W.locate("standin", [tmp_path]).verified
    bad = "0" * 8 if good != "0" * 8 else "1" * 8
    _entry(monkeypatch, server, data, name="standin2", sha256=None, prefix=bad, filename="other.bin")
    assert fetch.run(["standin2"], tmp_path) == 1
    assert not (tmp_path / "other.bin").exists() and not (tmp_path / "other.bin.part").exists()


def test_dropped_connection_is_resumed_with_range(tmp_path, server, monkeypatch, capsys):
    data = _data()
    _entry(monkeypatch, server, data, route={"drops": 2, "drop_after": 1_500_000})
    assert fetch.run(["standin"], tmp_path, retries=3, progress=True) == 0
    assert "standin-weights.bin" in capsys.readouterr().err     # the progress bar (stderr)
    assert (tmp_path / "standin-weights.bin").read_bytes() == data
    ranges = [r for _, r in server.log]
    assert ranges == [None, "bytes=1500000-", "bytes=3000000-"]


def test_interrupted_download_resumes_on_the_next_run(tmp_path, server, monkeypatch, capsys):
    data = _data()
    _entry(monkeypatch, server, data, route={"drops": 1, "drop_after": 1_000_000})
    assert fetch.run(["standin"], tmp_path, retries=0) == 1
    err = capsys.readouterr().err
    part = tmp_path / "standin-weights.bin.part"
    assert "rerun to resume" in err and "standin-weights.bin" in err and err.count("\n") == 1
    assert part.stat().st_size == 1_000_000 and not (tmp_path / "standin-weights.bin").exists()
    assert fetch.run(["standin"], tmp_path, retries=0) == 0
    assert (tmp_path / "standin-weights.bin").read_bytes() == data and not part.exists()
    assert server.log[-1] == ("/standin-weights.bin", "bytes=1000000-")


def test_server_ignoring_range_restarts_cleanly(tmp_path, server, monkeypatch):
    data = _data()
    _entry(monkeypatch, server, data, route={"ignore_range": True})
    (tmp_path / "standin-weights.bin.part").write_bytes(b"garbage from an older attempt")
    assert fetch.run(["standin"], tmp_path) == 0
    assert (tmp_path / "standin-weights.bin").read_bytes() == data


def test_checksum_mismatch_deletes_the_temporary_file(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server, _data(), sha256="ab" * 32)
    rc, _out, err = _run(capsys, ["fetch", "standin", "--dir", str(tmp_path), "--no-progress"])
    assert rc == 1
    assert "does not match the expected sha256 " + "ab" * 32 in err and "temporary file was deleted" in err
    assert server.url + "/standin-weights.bin" in err and err.startswith("invbench: error: standin:")
    assert list(tmp_path.iterdir()) == []


def test_size_mismatch_deletes_the_temporary_file(tmp_path, server, monkeypatch, capsys):
    data = _data(100_000)
    _entry(monkeypatch, server, data, size=len(data) + 1)
    assert fetch.run(["standin"], tmp_path) == 1
    assert "expected 100001" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status,requests", [(404, 1), (500, 3)])
def test_server_error_is_one_line_naming_file_and_url(tmp_path, server, monkeypatch, capsys, status, requests):
    _entry(monkeypatch, server, b"x", route={"status": status})
    rc = fetch.run(["standin"], tmp_path, retries=2)
    err = capsys.readouterr().err
    assert rc == 1 and f"HTTP {status}" in err and server.url + "/standin-weights.bin" in err
    assert err.count("\n") == 1 and len(server.log) == requests   # 404 is final, 500 is retried
    assert list(tmp_path.iterdir()) == []


def test_offline_fails_clearly_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    w = W.WeightFile("standin", "f.bin", (f"http://127.0.0.1:{port}/f.bin",), None, None, None, "tests", "tests")
    monkeypatch.setitem(W.TABLE, "standin", w)
    rc, _out, err = _run(capsys, ["fetch", "standin", "--dir", str(tmp_path / "w"), "--no-progress"])
    assert rc == 1 and "cannot connect" in err and f"127.0.0.1:{port}/f.bin" in err
    assert [p.name for p in (tmp_path / "w").iterdir()] == []


def test_unwritable_folder_is_bad_input(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server, _data(1000))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    rc, _out, err = _run(capsys, ["fetch", "standin", "--dir", str(blocker / "sub"), "--no-progress"])
    assert rc == 2 and "cannot create it" in err and str(blocker / "sub") in err and server.log == []


@pytest.mark.skipif(sys.platform == "win32" or __import__("os").geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_is_bad_input(tmp_path, server, monkeypatch, capsys):
    _entry(monkeypatch, server, _data(1000))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert fetch.run(["standin"], ro) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        ro.chmod(0o700)


def test_disk_full_leaves_nothing_half_written(tmp_path, server, monkeypatch, capsys):
    """The .part's writes fail with ENOSPC after the first MiB (what a full disk does)."""
    _entry(monkeypatch, server, _data())
    real_open = open

    class _FullDisk:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            if self.n >= 1 << 20:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.n += len(b)
            return self.f.write(b)

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return _FullDisk(f) if str(path).endswith(".part") and "a" in mode else f

    monkeypatch.setattr(fetch_files, "open", fake_open, raising=False)
    assert fetch.run(["standin"], tmp_path) == 1
    err = capsys.readouterr().err
    assert "disk full" in err and "partial file was deleted" in err
    assert list(tmp_path.iterdir()) == []


def test_present_verified_file_makes_no_request(tmp_path, server, monkeypatch, capsys):
    data = _data(50_000)
    _entry(monkeypatch, server, data)
    (tmp_path / "standin-weights.bin").write_bytes(data)     # placed by hand, matches the table
    assert fetch.run(["standin"], tmp_path) == 0
    assert "already present" in capsys.readouterr().out and server.log == []


def test_present_corrupt_file_is_replaced(tmp_path, server, monkeypatch):
    data = _data(50_000)
    _entry(monkeypatch, server, data)
    (tmp_path / "standin-weights.bin").write_bytes(b"truncated")
    assert fetch.run(["standin"], tmp_path) == 0
    assert (tmp_path / "standin-weights.bin").read_bytes() == data and len(server.log) == 1


def test_unpublished_checksum_is_recorded_then_trusted(tmp_path, server, monkeypatch, capsys):
    data = _data(60_000)
    _entry(monkeypatch, server, data, sha256=None)
    assert fetch.run(["standin"], tmp_path) == 0
    loc = W.locate("standin", [tmp_path])
    assert loc.verified and "recorded at download" in loc.how
    assert fetch.run(["standin"], tmp_path) == 0 and len(server.log) == 1   # second run: no request
    (tmp_path / "standin-weights.bin").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # changed afterwards
    assert not W.locate("standin", [tmp_path]).verified


# --------------------------------------------------------------------------- names, manual steps, --from
def test_unknown_name_is_bad_input(capsys, tmp_path):
    rc, _out, err = _run(capsys, ["fetch", "lpips", "nope", "--dir", str(tmp_path)])
    assert rc == 2 and "'nope'" in err and "adm-ffhq" in err and list(tmp_path.iterdir()) == []


def test_listing_names_every_entry(capsys, tmp_path):
    rc, out, _ = _run(capsys, ["fetch", "--dir", str(tmp_path)])
    assert rc == 0 and all(out.count(f"{n}: ") >= 1 for n in W.TABLE)


def test_manual_file_prints_steps_then_imports_from_file(tmp_path, capsys):
    rc, out, _err = _run(capsys, ["fetch", "adm-ffhq", "--dir", str(tmp_path / "w")])
    assert rc == 3 and "drive.google.com" in out and "--from" in out
    src = tmp_path / "ffhq_10m.pt"
    src.write_bytes(b"stand-in checkpoint bytes")
    assert "--trust-unverified" in out                              # no published checksum
    rc, out, err = _run(capsys, ["fetch", "adm-ffhq", "--dir", str(tmp_path / "w"), "--from", str(src)])
    assert rc == 2 and "--trust-unverified" in err and not (tmp_path / "w" / "ffhq_10m.pt").exists()
    rc, out, _err = _run(capsys, ["fetch", "adm-ffhq", "--dir", str(tmp_path / "w"), "--from", str(src),
                                  "--trust-unverified"])
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    assert rc == 0 and digest in out and "trusted by the user" in out
    rec = json.loads((tmp_path / "w" / "manifest.json").read_text())["ffhq_10m.pt"]
    assert rec["sha256"] == digest and rec["bytes"] == src.stat().st_size
    assert rec["verified"] is False and rec["trusted_by_user"] is True
    rc, out, _ = _run(capsys, ["fetch", "adm-ffhq", "--dir", str(tmp_path / "w")])
    assert rc == 0 and "already present" in out


def test_from_missing_file_is_bad_input(tmp_path, capsys):
    rc, _, err = _run(capsys, ["fetch", "adm-ffhq", "--dir", str(tmp_path), "--from", str(tmp_path / "nope.pt")])
    assert rc == 2 and "nope.pt" in err


# --------------------------------------------------------------------------- the table itself
def test_table_matches_the_libraries_own_addresses():
    import torchvision.models as tvm
    from cleanfid.downloads_helper import inception_url

    assert W.TABLE["lpips"].urls == (tvm.AlexNet_Weights.IMAGENET1K_V1.url,)
    assert W.TABLE["lpips-vgg"].urls == (tvm.VGG16_Weights.IMAGENET1K_V1.url,)
    assert W.TABLE["lpips-squeeze"].urls == (tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1.url,)
    assert W.TABLE["fid"].urls == (inception_url,)
    from invbench.bench.metrics.fid import INCEPTION_FILE
    from invbench.bench.metrics.lpips_metric import FETCH_NAMES, TRUNK_FILES

    assert W.TABLE["fid"].filename == INCEPTION_FILE
    for net, name in FETCH_NAMES.items():
        w = W.TABLE[name]
        assert w.filename == TRUNK_FILES[net][0] and w.sha256_prefix == Path(w.filename).stem.rsplit("-", 1)[1]
    for w in W.TABLE.values():
        assert all(u.startswith("https://") for u in w.urls) and (w.urls or w.manual)
        assert w.sha256 is None or len(w.sha256) == 64


# --------------------------------------------------------------------------- who looks where
def test_metrics_priors_and_check_find_the_weights_folder(tmp_path, monkeypatch, capsys):
    import torch
    from invbench.bench import metrics as M

    from invbench import priors

    folder = tmp_path / "w"
    folder.mkdir()
    monkeypatch.setenv("INVBENCH_WEIGHTS", str(folder))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    (m,) = M.build(["lpips"])
    assert str(folder) in m.unavailable and "`invbench fetch lpips`" in m.unavailable
    (f,) = M.build_set(["fid"])
    assert str(folder) in f.unavailable and "`invbench fetch fid`" in f.unavailable
    with pytest.raises(Exception, match="invbench fetch adm-ffhq"):
        priors.build("adm-ffhq")
    rc, out, _ = _run(capsys, ["check"])
    assert rc == 0 and "weights lpips:" in out and "MISSING; run `invbench fetch lpips`" in out
    # a right-named stand-in trunk in the folder is found, and refused as not the official file
    torch.save({"features.0.weight": torch.zeros(1)}, folder / "squeezenet1_1-b8a52dc0.pth")
    (s,) = M.build(["lpips"], {"lpips": {"net": "squeeze"}})
    assert "do not match the official" in s.unavailable and "`invbench fetch lpips-squeeze`" in s.unavailable
    # an Inception file recorded by fetch is verified (this stand-in then fails to load as TorchScript)
    inc = folder / "inception-2015-12-05.pt"
    inc.write_bytes(b"not torchscript")
    (f,) = M.build_set(["fid"])
    assert "unverified" in f.unavailable
    W.write_manifest_entry(folder, inc.name, {"sha256": W.sha256_file(inc), "bytes": 15, "url": "test"})
    (f,) = M.build_set(["fid"])
    assert f.verified and "recorded at download" in f.backbone and f.unavailable.startswith("unavailable: could not "
                                                                                            "load")


class _InceptionStandIn(torch.nn.Module):
    """A TorchScript stand-in with clean-fid's interface (``layers``: (B, 3, 299, 299) -> (B, 2048, 1, 1))."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(3, 2048, 1))

    def forward(self, x, return_features: bool = False):
        return self.layers(x)


def _fetched_inception_standin(folder: Path) -> None:
    """What ``invbench fetch fid`` leaves behind, with a stand-in file: the file and its manifest record."""
    with warnings.catch_warnings():  # torch.jit.script deprecation notice
        warnings.simplefilter("ignore")
        torch.jit.script(_InceptionStandIn()).save(str(folder / "inception-2015-12-05.pt"))
    W.write_manifest_entry(folder, "inception-2015-12-05.pt",
                           {"sha256": W.sha256_file(folder / "inception-2015-12-05.pt"), "url": "test"})


def _tiny_fid_config(tmp_path: Path) -> Path:
    from tests.helpers import parts
    parts.register()
    cfg = tmp_path / "c.toml"
    cfg.write_text(parts.toml_config().replace('image = ["psnr", "mse", "consistency"]',
                                               'image = ["psnr"]\nset = ["fid"]'))
    return cfg


def test_demo_is_redone_when_metric_weights_change(tmp_path, monkeypatch, capsys):
    """A demo finished before ``invbench fetch`` has NULL metric columns; ``invbench demo``
    must then rerun it rather than resume it (cli._metric_weights_changed)."""
    from invbench.bench import config

    folder = tmp_path / "w"
    folder.mkdir()
    monkeypatch.setenv("INVBENCH_WEIGHTS", str(folder))
    cfg = _tiny_fid_config(tmp_path)
    out = tmp_path / "run"
    rc, _, err = _run(capsys, ["run", str(cfg), "--out", str(out), "--no-progress"])
    assert rc == 0, err
    exp = config.load(cfg)
    assert not cli._metric_weights_changed(out, exp)
    _fetched_inception_standin(folder)
    assert cli._metric_weights_changed(out, exp)


@pytest.mark.slow
def test_run_fills_fid_from_the_fetched_file(tmp_path, monkeypatch, capsys):
    """After a fetch, a run computes FID from the weights folder with no option naming the file
    (stand-in Inception; slow: clean-fid's 2048x2048 matrix square roots per cell)."""
    from invbench.bench import store

    folder = tmp_path / "w"
    folder.mkdir()
    monkeypatch.setenv("INVBENCH_WEIGHTS", str(folder))
    _fetched_inception_standin(folder)
    rc, _, err = _run(capsys, ["run", str(_tiny_fid_config(tmp_path)), "--out", str(tmp_path / "run"), "--no-progress"])
    assert rc == 0, err
    sm = store.load_set_metrics(tmp_path / "run")
    assert len(sm) and sm.value.notna().all() and not sm.note.str.contains("UNVERIFIED").any(), sm.note.tolist()
