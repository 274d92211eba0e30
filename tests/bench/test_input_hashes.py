"""bench.input_hashes: content hashes are stable across processes and CPU thread counts, and
change when the content does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from invbench.bench import input_hashes

from tests.helpers import parts

REPO = Path(__file__).resolve().parents[2]
_PRINT = """
import json, sys
from tests.helpers.reliability import gmm_text
from invbench.bench import config, run
import pathlib, tempfile
d = pathlib.Path(tempfile.mkdtemp()); (d / "c.toml").write_text(gmm_text("h", limit=2, seeds="[0]"))
print(json.dumps(run.prepare(config.load(d / "c.toml")).input_hashes, sort_keys=True))
"""


def _hashes(*threads: int) -> list[dict]:
    """The input hashes printed by one fresh process per thread count (run side by side)."""
    procs = [subprocess.Popen([sys.executable, "-c", _PRINT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=parts.subprocess_env(OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t)))
             for t in threads]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-2000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def test_hashes_equal_across_processes_and_thread_counts():
    """A resume on another thread count must not be refused: 1 vs 2 threads give equal hashes
    (LAPACK-derived SVD / eigen factors are left out; their inputs are hashed)."""
    a, b = _hashes(1, 2)
    assert a == b
    assert {"datasets.digits.images", "priors.gmm-digits.weights_file"} <= set(a)
    assert any(k.startswith("tasks.inpaint.operator") for k in a)


def test_state_hash_changes_with_content_and_file_hash_is_cached(tmp_path):
    x = {"w": torch.zeros(3), "mode": "reflect"}
    h = input_hashes.state_sha256(x)
    assert input_hashes.state_sha256({"w": torch.zeros(3), "mode": "reflect"}) == h
    assert input_hashes.state_sha256({"w": torch.tensor([0.0, 0.0, 1e-12]), "mode": "reflect"}) != h
    assert input_hashes.state_sha256({"w": torch.zeros(3), "mode": "zero"}) != h   # strings count
    w64 = torch.zeros(3, dtype=torch.float64)
    assert input_hashes.state_sha256({"w": w64, "mode": "reflect"}) != h   # dtype counts
    with pytest.raises(TypeError):   # only declared data is hashed, never an object's attributes
        input_hashes.state_sha256({"w": object()})
    f = tmp_path / "ck.bin"
    f.write_bytes(b"a")
    first = input_hashes.file_sha256(f)
    f.write_bytes(b"bb")   # size changes: hashed again
    assert input_hashes.file_sha256(f) != first
    assert input_hashes.changed({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == ["b", "c"]


def test_operator_hash_is_its_declared_state():
    from invbench import operators

    def op(seed, **kw):
        g = torch.Generator().manual_seed(seed)
        return operators.build("inpaint_random", (1, 8, 8), g, **kw)

    assert input_hashes.operator_sha256(op(1)) == input_hashes.operator_sha256(op(1))
    # another mask, another hash
    assert input_hashes.operator_sha256(op(1)) != input_hashes.operator_sha256(op(2))
    a = op(1)
    a.svd.singular_values = a.svd.singular_values * (1 + 1e-15)   # derived: not part of the state
    assert input_hashes.operator_sha256(a) == input_hashes.operator_sha256(op(1))


@pytest.mark.parametrize("a, b", [
    ([1, 23], [12, 3]),                                   # numbers are framed
    ({"ab": "c"}, {"a": "bc"}),                           # keys and values are framed
    ([[1, 2], [3]], [[1], [2, 3]]),                       # lists carry their length
    ({"k": [1]}, {"k": 1}),                               # a list of one is not its element
    (1, 1.0),                                             # the type is part of the value
    (["a", "b"], ["ab"]),
    (torch.zeros(2, 1), torch.zeros(1, 2)),               # shape counts, not only the bytes
])
def test_state_encoding_is_prefix_free(a, b):
    """Two different states never share an encoding (so never a hash, short of a sha256 collision)."""
    assert input_hashes.state_sha256(a) != input_hashes.state_sha256(b)


def test_prior_hash_reads_the_declared_networks_only():
    """A prior's content hash is its declared networks' weights: a module held elsewhere on the
    prior (a cache, a helper) is not read, and a changed weight changes the hash."""
    from invbench.priors.base import CountingPrior
    from invbench.priors.vp import VPPrior

    net = torch.nn.Conv2d(1, 1, 1)
    prior = VPPrior(net, (1, 4, 4))
    h = input_hashes.prior_hashes("p", "p", prior, None)
    assert set(h) == {"priors.p.state"}
    prior.helper = torch.nn.Linear(2, 2)          # not declared: not hashed
    assert input_hashes.prior_hashes("p", "p", prior, None) == h
    assert input_hashes.prior_hashes("p", "p", CountingPrior(prior), None) == h   # wrappers delegate
    with torch.no_grad():
        net.weight.add_(1e-6)
    assert input_hashes.prior_hashes("p", "p", prior, None) != h
    assert input_hashes.prior_hashes("g", "g", VPPrior(lambda x, t: x, (1, 4, 4)), None) == {}
