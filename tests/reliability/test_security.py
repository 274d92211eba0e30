"""Security (docs/reliability.md, "Security"): checkpoints only through ``torch.load(weights_only=True)``, nothing in
the package unpickles / evaluates / imports by a user-given name, configs are data, user strings
are escaped in every report format, manifest paths stay in the dataset root, no network at run
time.

Covered elsewhere and referenced in docs/reliability.md (not repeated): escaping of hostile
solver labels in md/tex/html (tests/bench/test_report.py::test_escaping_*), report paths that
cannot leave the run dir (tests/bench/test_report.py::test_paths_cannot_leave_run_dir), manifest
escapes at the library level (tests/bench/test_datasets.py::test_missing_file_and_escaping_paths;
through the CLI: the "data: ..." cases of test_bad_inputs.py), crafted checkpoints at the prior
level (tests/priors/test_adm.py::test_pickle_with_custom_class_refused; through the CLI: the
"priors: ..." cases of test_bad_inputs.py), network audit of a test-prior run
(tests/bench/test_cli.py::test_run_makes_no_network_access).
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.reliability import REPO, gmm_text

PACKAGES = ("operators", "priors", "solvers", "bench")


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def _call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _kw(node: ast.Call, name: str):
    for k in node.keywords:
        if k.arg == name:
            return k.value
    return None


def audit_sources() -> dict[str, list[str]]:
    """Parse every package module; return the findings by rule (empty lists = clean)."""
    bad: dict[str, list[str]] = {"torch.load without weights_only=True": [], "pickle / marshal / shelve loads": [],
                                 "eval / exec / compile / __import__": [], "np.load with allow_pickle=True": [],
                                 "subprocess with shell=True / os.system": [],
                                 "import_module of a non-constant name": []}
    n_torch_load = 0
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        lazy_tables = {n.targets[0].id for n in ast.walk(tree) if isinstance(n, ast.Assign)
                       and isinstance(n.value, ast.Dict) and isinstance(n.targets[0], ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = _call_name(node)
            where = f"{path.relative_to(REPO)}:{node.lineno} {name}"
            if name.endswith("torch.load") or name == "load" and "torch" in ast.unparse(node.func):
                n_torch_load += 1
                wo = _kw(node, "weights_only")
                if not (isinstance(wo, ast.Constant) and wo.value is True):
                    bad["torch.load without weights_only=True"].append(where)
            if name.split(".")[0] in ("pickle", "marshal", "shelve", "dill", "cloudpickle", "joblib") and \
                    name.split(".")[-1] in ("load", "loads", "Unpickler", "open"):
                bad["pickle / marshal / shelve loads"].append(where)
            bare = isinstance(node.func, ast.Name) or name.startswith("builtins.")   # not model.eval()
            if bare and name.split(".")[-1] in ("eval", "exec", "compile", "__import__"):
                bad["eval / exec / compile / __import__"].append(where)
            if name.endswith("np.load") or name == "numpy.load":
                ap = _kw(node, "allow_pickle")
                if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                    bad["np.load with allow_pickle=True"].append(where)
            if name in ("os.system",
                        "os.popen") or (name.startswith("subprocess.") and isinstance(_kw(node, "shell"), ast.Constant)
                                                     and _kw(node, "shell").value):
                bad["subprocess with shell=True / os.system"].append(where)
            if name.endswith("import_module"):
                arg = node.args[0] if node.args else None
                # allowed: a constant, or a value looked up in a module-level dict literal (bench.__getattr__'s _LAZY)
                ok = isinstance(arg, ast.Constant) or (isinstance(arg, ast.Name) and lazy_tables)
                if not ok:
                    bad["import_module of a non-constant name"].append(where)
    bad["_torch_load_calls"] = [str(n_torch_load)]
    return bad


def test_package_has_no_unsafe_loads_eval_or_dynamic_imports(figures):
    found = audit_sources()
    n_loads = int(found.pop("_torch_load_calls")[0])
    assert n_loads >= 2   # priors/checkpoint.py and the LPIPS trunk: the audit really sees them
    for rule, hits in found.items():
        assert not hits, f"{rule}: {hits}"
    figures.record("security_source_audit", {"modules": len(_sources()), "torch_load_calls": n_loads,
                                             "rules": list(found), "findings": 0})


def test_the_audit_catches_what_it_looks_for(tmp_path, monkeypatch):
    """The source audit is not vacuous: a module with each forbidden pattern is flagged."""
    pkg = tmp_path / "bench"
    pkg.mkdir()
    (pkg / "evil.py").write_text(
        "import torch, pickle, os, importlib, numpy as np, subprocess\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\npickle.loads(b'')\neval('1')\n"
        "np.load('x', allow_pickle=True)\nos.system('true')\nsubprocess.run('true', shell=True)\n"
        "importlib.import_module(input())\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    found = audit_sources()
    found.pop("_torch_load_calls")
    assert len(found["torch.load without weights_only=True"]) == 2
    assert all(found[r] for r in found), found


class _Payload:
    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_crafted_checkpoint_refused_and_its_code_never_runs(tmp_path):
    """Positive control first: plain ``pickle.loads`` of the payload *does* run the command.
    ``invbench.priors.checkpoint.load_state_dict_file`` refuses the same payload in a torch checkpoint,
    in a legacy torch file and as a raw pickle, naming the file, and the command never runs."""
    from invbench.priors import PriorError
    from invbench.priors.checkpoint import load_state_dict_file

    control = tmp_path / "control-ran"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()
    target = tmp_path / "must-not-exist"
    files = {"zip.pt": lambda p: torch.save({"w": torch.zeros(1), "x": _Payload(target)}, p),
             "legacy.pt": lambda p: torch.save({"x": _Payload(target)}, p, _use_new_zipfile_serialization=False),
             "raw.pkl": lambda p: p.write_bytes(pickle.dumps(_Payload(target)))}
    for name, make in files.items():
        make(tmp_path / name)
        with pytest.raises(PriorError, match=rf"{name} cannot be loaded .*weights_only=True.*refused") as e:
            load_state_dict_file(tmp_path / name, "a test model")
        assert "\n" not in str(e.value)
        assert not target.exists(), f"{name}: the payload ran"


@pytest.mark.parametrize("field, value", [
    ("solvers[0].name", "os.system"), ("solvers[0].name", "invbench.solvers.dps.DPS"),
    ("priors[0].name", "__import__"), ("priors[0].name", "invbench.priors.gmm:GMMPrior"),
    ("datasets[0].type", "builtins.eval"), ("datasets[0].type", "invbench.bench.datasets._folder"),
    ("tasks[0].operator", "subprocess.Popen"), ("tasks[0].operator", "invbench.operators.registry.build"),
    ("metrics.image", ["psnr", "importlib.import_module"]),
])
def test_configs_are_data_names_are_registry_keys(field, value, tmp_path):
    """Names that look like importable objects are rejected as unknown registry names (no import)."""
    from invbench.bench import config, run

    from tests.helpers import parts

    sets = [f"{field}={value!r}".replace("'", '"')]
    exp_or_err = None
    try:
        exp_or_err = run.prepare(config.loads(parts.toml_config(), sets, base_dir=tmp_path))
    except config.ConfigError as e:
        exp_or_err = str(e)
    assert isinstance(exp_or_err, str) and "unknown" in exp_or_err and field.split(".")[0].split("[")[0] in exp_or_err


# ----------------------------------------------------------------------------- full CLI path, offline

HOSTILE_DESC = "<script>alert('desc')</script> \\input{/etc/passwd}"
HOSTILE_PROTO = "<img src=x onerror=alert(2)> \\write18{touch pwned} | pipe | `tick`"
HOSTILE_FILES = ["<svg onload=alert(3)>.npy", "\\input{evil}.npy", "a|b [c](javascript:x).npy"]

_AUDITED = r"""
import os, sys
net, spawned, unpickled = [], [], []
def hook(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.bind", "urllib.Request"):
        net.append(event)
        raise RuntimeError(f"network access attempted: {event}")
    if event in ("subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"):
        argv = args[1] if event == "subprocess.Popen" else args[0]
        first = argv[0] if isinstance(argv, (list, tuple)) and argv else argv
        spawned.append(os.path.basename(os.fsdecode(first)))
    if event == "pickle.find_class":
        unpickled.append(f"{args[0]}.{args[1]}")
sys.addaudithook(hook)
from invbench.bench.cli import main
rc = main(%(run)r)
rc2 = main(%(report)r) if rc == 0 else None
print("RESULT", rc, rc2, "NET", net, "SPAWNED", spawned, "UNPICKLED", sorted(set(unpickled)))
sys.exit(rc or rc2 or 0)
"""


@pytest.mark.slow
def test_offline_gmm_run_and_report_escape_hostile_strings(tmp_path, figures):
    """One subprocess under audit hooks: ``invbench run`` of a GMM config (real solvers) on a
    folder dataset whose file names are hostile, with hostile description/protocol, then
    ``invbench report``. No network event, no process spawned except ``git describe`` (the code
    version) and the system queries of ``platform``/``ctypes`` (uname, ldconfig), nothing
    unpickled; the hostile strings appear in md/tex/html only escaped."""
    from invbench.bench.datasets import make_manifest

    root = tmp_path / "imgs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for f in HOSTILE_FILES:
        np.save(root / f, rng.uniform(0, 1, (1, 8, 8)))
    (root / "MANIFEST.sha256").write_text(make_manifest(root))
    text = gmm_text("rel-hostile", limit=3, seeds="[0]").replace(
        '[[datasets]]\nname = "digits"\ntype = "digits"\nsplit = "test"\nlimit = 3\n',
        '[[datasets]]\nname = "digits"\ntype = "folder"\nroot = "imgs"\nchannels = 1\n')
    text = f"description = {json.dumps(HOSTILE_DESC)}\nprotocol = {json.dumps(HOSTILE_PROTO)}\n" + text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    out, rep = tmp_path / "run", tmp_path / "report"
    code = _AUDITED % {"run": ["run", str(cfg), "--out", str(out), "--no-progress"],
                       "report": ["report", str(out), "--out", str(rep)]}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path,
                       check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT"))
    assert "NET []" in line and "UNPICKLED []" in line, line
    spawned = line.split("SPAWNED ")[1].split(" UNPICKLED")[0]
    # git describe (code version); uname / ldconfig: platform.platform() and ctypes.util.find_library
    assert set(ast.literal_eval(spawned)) <= {"git", "uname", "ldconfig"}, spawned
    from invbench.bench import store

    meta = store.load_meta(out)
    assert meta["description"] == HOSTILE_DESC and meta["protocol"] == HOSTILE_PROTO   # stored verbatim
    html = (rep / "index.html").read_text()
    tex = "\n".join(p.read_text() for p in rep.rglob("*.tex"))
    md = "\n".join(p.read_text() for p in rep.rglob("*.md"))
    assert tex and md
    for raw in ("<script>alert", "<img src=x", "<svg onload"):
        assert raw not in html and raw not in md and raw not in tex, raw
    assert "&lt;img src=x onerror=alert(2)&gt;" in html   # the protocol is shown, escaped
    for raw in ("\\input{", "\\write18"):
        assert raw not in tex, raw
    figures.record("security_offline_run", {"network_events": 0, "spawned": spawned, "unpickled": 0})
